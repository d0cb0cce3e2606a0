//! Results pushed over HTTP, for StackStorm rules or scripts that post instead of announcing:
//! errbot's `POST /chatops/message` (JSON) and hubot's `POST /hubot/st2` (JSON, or a form
//! field `payload=<json>`), on the bridge's own listener.
//!
//! Authenticated by a shared secret (`Authorization: Bearer <[webhook].secret>`, compared in
//! constant time). Without a secret the endpoints are not served at all, unless
//! `allow_unauthenticated` says so. Bodies over 1 MiB are refused (413), invalid ones get a 400
//! naming the problem, and `202` is answered only once the message is stored in the outbox.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};

use crate::{
    bridge::Bridge,
    results::{self, Announcement, Claim, Delivered, Source, Undeliverable},
    secret::token_matches,
};

/// Largest accepted body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The webhook routes, or `None` when they are off (no secret, not explicitly opened).
pub fn router(bridge: Arc<Bridge>) -> Option<Router> {
    let config = &bridge.config.webhook;
    if config.secret.is_none() && !config.allow_unauthenticated {
        return None;
    }
    if config.secret.is_none() {
        tracing::warn!(
            "webhook.allow_unauthenticated is on: anyone who reaches the bridge can post into its rooms"
        );
    }
    Some(
        Router::new()
            .route("/chatops/message", post(errbot))
            .route("/hubot/st2", post(hubot))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(bridge),
    )
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

fn authorized(bridge: &Bridge, headers: &HeaderMap) -> Result<(), &'static str> {
    let Some(secret) = &bridge.config.webhook.secret else {
        return Ok(());
    };
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if token_matches(token, secret.expose()) => Ok(()),
        Some(_) => Err("wrong webhook secret"),
        None => Err("missing `Authorization: Bearer <webhook secret>`"),
    }
}

/// `POST /chatops/message` (err-stackstorm's body).
async fn errbot(State(bridge): State<Arc<Bridge>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refusal) = authorized(&bridge, &headers) {
        return error(StatusCode::UNAUTHORIZED, refusal);
    }
    match parse_errbot(&body) {
        Ok(announcement) => accept(&bridge, announcement).await,
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

/// `POST /hubot/st2` (hubot's body: JSON, or a form with `payload=<json>`).
async fn hubot(State(bridge): State<Arc<Bridge>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refusal) = authorized(&bridge, &headers) {
        return error(StatusCode::UNAUTHORIZED, refusal);
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    match parse_hubot(content_type, &body) {
        Ok(announcement) => accept(&bridge, announcement).await,
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

/// The announcement in an err-stackstorm body, or the 400's message. Public for the fuzz
/// target: the handler adds only authentication and delivery.
pub fn parse_errbot(body: &[u8]) -> Result<Announcement, String> {
    let value =
        serde_json::from_slice::<Value>(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    announcement(value)
}

/// The announcement in a hubot body (a form with `payload=<json>` when `content_type` says
/// so, JSON otherwise), or the 400's message. Public for the fuzz target.
pub fn parse_hubot(content_type: Option<&str>, body: &[u8]) -> Result<Announcement, String> {
    let is_form = content_type.is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let value = if is_form {
        let Some(payload) = url::form_urlencoded::parse(body)
            .find(|(k, _)| k == "payload")
            .map(|(_, v)| v.into_owned())
        else {
            return Err("the form has no `payload` field".to_owned());
        };
        serde_json::from_str::<Value>(&payload).map_err(|e| format!("`payload` is not JSON: {e}"))
    } else {
        serde_json::from_slice::<Value>(body).map_err(|e| format!("the body is not JSON: {e}"))
    }?;
    announcement(value)
}

/// The field checks both endpoints share: an object with non-blank string `channel` and
/// `message`, then the lenient [`Announcement`] reading.
fn announcement(value: Value) -> Result<Announcement, String> {
    if !value.is_object() {
        return Err("the body must be a JSON object".to_owned());
    }
    for field in ["channel", "message"] {
        match value.get(field) {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(format!("missing field `{field}`"));
            }
            Some(_) => return Err(format!("field `{field}` must be a string")),
        }
    }
    serde_json::from_value(value).map_err(|e| format!("invalid body: {e}"))
}

async fn accept(bridge: &Bridge, announcement: Announcement) -> Response {
    match results::deliver(bridge, &announcement, Source::Webhook, Claim::ByContext).await {
        Ok(Delivered::Queued { room_id, messages }) => (
            StatusCode::ACCEPTED,
            Json(json!({"status": "accepted", "room_id": room_id, "messages": messages})),
        )
            .into_response(),
        Ok(Delivered::Duplicate) => {
            (StatusCode::OK, Json(json!({"status": "duplicate"}))).into_response()
        }
        Err(e @ (Undeliverable::NotInRoom(_) | Undeliverable::UnknownAlias(_))) => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(e @ (Undeliverable::BadChannel(_) | Undeliverable::NoTarget)) => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("{e}; try again")),
    }
}
