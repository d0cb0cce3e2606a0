//! An HTTP proxy between a bridge and Synapse that can lose Synapse's answers.
//!
//! Every request is forwarded to Synapse as it came. A send whose body contains the text a
//! test asked for is forwarded too — Synapse stores the event — but its answer is held back
//! and never delivered: the bridge times out not knowing whether its message arrived, as with
//! a loaded homeserver behind a gateway. While Synapse is down, the proxy answers `502`, as a
//! reverse proxy does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// The proxy; stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    state: Mutex<Holding>,
}

#[derive(Default)]
struct Holding {
    /// Sends whose body contains this lose their answer.
    needle: Option<String>,
    /// Event ids Synapse gave for the sends whose answers were lost.
    lost: Vec<String>,
}

impl Proxy {
    /// Starts a proxy in front of the homeserver at `upstream` (e.g. `http://127.0.0.1:8008`).
    pub async fn start(upstream: &str) -> anyhow::Result<Proxy> {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .build()
                .context("the proxy's HTTP client")?,
            state: Mutex::new(Holding::default()),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy")?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Proxy { addr, shared, task })
    }

    /// The URL to give the bridge as its homeserver.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, a send (`PUT …/send/…`) whose body contains `needle` reaches Synapse but
    /// its answer never comes back.
    pub fn lose_answers_to_sends_containing(&self, needle: &str) {
        self.state().needle = Some(needle.to_owned());
    }

    /// Event ids of the sends whose answers were lost so far.
    pub fn lost(&self) -> Vec<String> {
        self.state().lost.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Holding> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let lose = method == Method::PUT
        && uri.path().contains("/send/")
        && shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .needle
            .as_deref()
            .is_some_and(|needle| String::from_utf8_lossy(&body).contains(needle));
    let mut request = shared
        .http
        .request(method, format!("{}{path}", shared.upstream))
        .body(body);
    for (name, value) in &headers {
        if name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH {
            request = request.header(name, value);
        }
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(_) => return (StatusCode::BAD_GATEWAY, "502 Bad Gateway").into_response(),
    };
    let status = response.status();
    let response_headers = response.headers().clone();
    let Ok(bytes) = response.bytes().await else {
        return (StatusCode::BAD_GATEWAY, "502 Bad Gateway").into_response();
    };
    if lose && status.is_success() {
        let event_id = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["event_id"].as_str().map(str::to_owned))
            .unwrap_or_default();
        shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lost
            .push(event_id);
        // Never answered: the bridge gives up waiting and the connection is dropped.
        std::future::pending::<()>().await;
    }
    let mut out = Response::builder().status(status);
    for (name, value) in &response_headers {
        if name != axum::http::header::CONTENT_LENGTH
            && name != axum::http::header::TRANSFER_ENCODING
        {
            out = out.header(name, value);
        }
    }
    out.body(Body::from(bytes))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}
