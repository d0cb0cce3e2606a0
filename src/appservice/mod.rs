//! Homeserver → us: the application service API, served with axum.
//!
//! `PUT /_matrix/app/v1/transactions/{txnId}` carries the events; `users`/`rooms` queries and
//! `ping` complete the API. The un-prefixed legacy paths are served too, for old homeservers.
//! Every route here requires the `hs_token` ([`auth`]); unknown paths answer `M_UNRECOGNIZED`.

pub mod auth;
pub mod error;
pub mod queries;
pub mod transactions;

use std::sync::Arc;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware,
    routing::{get, post, put},
};

use crate::state::AppState;
use error::ApiError;

/// Largest transaction body accepted: Synapse sends up to 100 events of at most 64 KiB each.
pub const MAX_TRANSACTION_BYTES: usize = 16 * 1024 * 1024;

/// The appservice routes, authenticated.
pub fn router(bridge: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/_matrix/app/v1/transactions/{txn_id}",
            put(transactions::push),
        )
        .route("/transactions/{txn_id}", put(transactions::push))
        .route("/_matrix/app/v1/users/{user_id}", get(queries::user))
        .route("/users/{user_id}", get(queries::user))
        .route(
            "/_matrix/app/v1/rooms/{room_alias}",
            get(queries::room_alias),
        )
        .route("/rooms/{room_alias}", get(queries::room_alias))
        .route("/_matrix/app/v1/ping", post(queries::ping))
        // route_layer: the token is checked only on routes that exist, so an unknown path is a
        // 404 for everyone rather than a 401.
        .route_layer(middleware::from_fn_with_state(
            bridge.clone(),
            auth::require_hs_token,
        ))
        .layer(DefaultBodyLimit::max(MAX_TRANSACTION_BYTES))
        .with_state(bridge)
}

/// Answer for paths nobody serves.
pub async fn unrecognized() -> ApiError {
    ApiError::Unrecognized
}

/// Answer for a known path with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
