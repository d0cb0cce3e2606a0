//! Operations endpoints: `/health` (the process is up), `/ready` (homeserver and database
//! answer) and `/metrics` (Prometheus text).
//!
//! These are unauthenticated on purpose, like every probe endpoint: they reveal counts and
//! up/down states, never a token, message, user or room id (the one id shown is the bot
//! device's, public to every member of its rooms). Bind `appservice.bind` to a private address.

use std::{sync::Arc, time::Duration};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::state::AppState;

/// How long `/ready` waits for each dependency.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// The operations routes.
pub fn router(bridge: Arc<AppState>, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready).with_state(bridge))
        .route("/metrics", get(move || render_metrics(metrics.clone())))
}

async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

async fn ready(State(bridge): State<Arc<AppState>>) -> impl IntoResponse {
    let database = match tokio::time::timeout(READY_TIMEOUT, bridge.store.ping()).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "error: timed out".to_owned(),
    };
    let homeserver = match tokio::time::timeout(READY_TIMEOUT, bridge.matrix.versions()).await {
        Ok(Ok(_)) => "ok".to_owned(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "error: timed out".to_owned(),
    };
    let status = if database == "ok" && homeserver == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // Informational: a stream outage delays results (they are recovered on reconnection) but
    // does not make the bridge unable to serve, so it does not fail readiness.
    let stream = match &bridge.st2 {
        None => "not configured".to_owned(),
        Some(_) => {
            let state = bridge.stream.get();
            match (state.connected, state.last_error) {
                (true, _) => "connected".to_owned(),
                (false, Some(e)) => format!("disconnected: {e}"),
                (false, None) => "connecting".to_owned(),
            }
        }
    };
    (
        status,
        Json(json!({"database": database, "homeserver": homeserver, "stackstorm_stream": stream})),
    )
}

async fn render_metrics(handle: PrometheusHandle) -> impl IntoResponse {
    handle.run_upkeep();
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
}
