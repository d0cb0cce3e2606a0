//! The homeserver's questions: does this user/alias exist (no: the bridge creates no virtual
//! users or rooms on demand), and the ping round trip.

use axum::{extract::Path, response::Response};
use ruma::api::appservice::ping::send_ping;

use super::error::{ApiError, ruma_response};

/// `GET /_matrix/app/v1/users/{userId}`: the bridge has no virtual users to create.
pub async fn user(Path(user_id): Path<String>) -> ApiError {
    ApiError::NotFound(format!("st2-matrix does not provide the user {user_id}"))
}

/// `GET /_matrix/app/v1/rooms/{roomAlias}`: the bridge provides no aliases.
pub async fn room_alias(Path(alias): Path<String>) -> ApiError {
    ApiError::NotFound(format!(
        "st2-matrix does not provide the room alias {alias}"
    ))
}

/// `POST /_matrix/app/v1/ping`: the homeserver checking it can reach us.
pub async fn ping() -> Response {
    tracing::debug!("ping from the homeserver");
    ruma_response(send_ping::v1::Response::new())
}
