//! A homeserver double: the client-server endpoints st2-matrix calls, answering as Synapse
//! does, recording every request, with failure injection.
//!
//! ```no_run
//! # async fn demo() {
//! use st2_matrix_testkit::homeserver::{Failure, HomeserverDouble};
//! let hs = HomeserverDouble::start("as-token", "@st2bot:example.org").await;
//! hs.fail_next_sends([Failure::RateLimited { retry_after_secs: 1 }, Failure::Status(502)]);
//! // … run the bridge against hs.url() …
//! let sent = hs.sent();
//! # }
//! ```
//!
//! Behaviour copied from Synapse (see `synapse.md`): `/register` answers `M_USER_IN_USE` the
//! second time; a send with a transaction id seen before returns the first event id (the
//! idempotency that makes outbox retries safe); a wrong `as_token` is `401 M_UNKNOWN_TOKEN`;
//! 429s carry both `Retry-After` and `retry_after_ms`.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde_json::{Value, json};

/// One message the bridge sent.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Room id.
    pub room_id: String,
    /// Event type.
    pub event_type: String,
    /// The bridge's transaction id.
    pub txn_id: String,
    /// Event content.
    pub content: Value,
    /// The event id the double assigned.
    pub event_id: String,
    /// `?user_id=` when the bridge acted as a namespaced user.
    pub user_id: Option<String>,
    /// When the double received it (for latency measurements).
    pub received_at: std::time::Instant,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// HTTP method.
    pub method: Method,
    /// Path.
    pub path: String,
    /// Query string.
    pub query: Option<String>,
}

/// A failure to inject into the next send.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// `429 M_LIMIT_EXCEEDED` with `Retry-After` (seconds) and `retry_after_ms`.
    RateLimited {
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// `429` with only `retry_after_ms` in the body (older servers).
    RateLimitedMs(u64),
    /// Any status with an `M_UNKNOWN` body (e.g. 500, 502, 503).
    Status(u16),
    /// `403 M_FORBIDDEN` (e.g. the bot is not in the room): permanent.
    Forbidden,
}

#[derive(Debug, Default)]
struct Inner {
    registered: HashSet<String>,
    displaynames: HashMap<String, String>,
    sent: Vec<Sent>,
    txns: HashMap<String, String>,
    joined: Vec<String>,
    left: Vec<(String, Option<String>)>,
    encrypted: HashSet<String>,
    failures: VecDeque<Failure>,
    requests: Vec<Request>,
    pings: u32,
    created: Vec<Value>,
    room_state: HashMap<String, Vec<Value>>,
    aliases: HashMap<String, String>,
    down: bool,
    appservice: Option<(String, String)>,
    next_event: u64,
}

#[derive(Debug)]
struct Shared {
    as_token: String,
    bot: String,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running homeserver double. Dropping it stops the server.
#[derive(Debug)]
pub struct HomeserverDouble {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HomeserverDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HomeserverDouble {
    /// Starts a double on 127.0.0.1 (random port) that accepts `as_token` and knows `bot`.
    pub async fn start(as_token: &str, bot: &str) -> Self {
        let shared = Arc::new(Shared {
            as_token: as_token.to_owned(),
            bot: bot.to_owned(),
            inner: Mutex::default(),
        });
        let app = Router::new()
            .route("/_matrix/client/versions", get(versions))
            .route("/_matrix/client/v3/account/whoami", get(whoami))
            .route("/_matrix/client/v3/register", post(register))
            .route(
                "/_matrix/client/v3/profile/{user}/displayname",
                put(displayname),
            )
            .route("/_matrix/client/v1/appservice/{id}/ping", post(ping))
            .route("/_matrix/client/v3/createRoom", post(create_room))
            .route("/_matrix/client/v3/directory/room/{alias}", get(directory))
            .route("/_matrix/client/v3/rooms/{room}/join", post(join))
            .route("/_matrix/client/v3/join/{room}", post(join))
            .route("/_matrix/client/v3/rooms/{room}/state", get(full_state))
            .route("/_matrix/client/v3/rooms/{room}/leave", post(leave))
            .route(
                "/_matrix/client/v3/rooms/{room}/state/{event_type}/",
                get(state),
            )
            .route(
                "/_matrix/client/v3/rooms/{room}/state/{event_type}",
                get(state),
            )
            .route(
                "/_matrix/client/v3/rooms/{room}/send/{event_type}/{txn}",
                put(send),
            )
            .fallback(unknown)
            .layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                record_and_gate,
            ))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the homeserver double");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Tells the double where the bridge is, so `ping` calls it back as Synapse does.
    pub fn set_appservice(&self, url: &str, hs_token: &str) {
        self.shared.lock().appservice = Some((url.to_owned(), hs_token.to_owned()));
    }

    /// Makes the next sends fail, in order.
    pub fn fail_next_sends(&self, failures: impl IntoIterator<Item = Failure>) {
        self.shared.lock().failures.extend(failures);
    }

    /// While down, every request is answered `502` (as a reverse proxy does for a dead
    /// homeserver).
    pub fn set_down(&self, down: bool) {
        self.shared.lock().down = down;
    }

    /// Marks `room` as having an `m.room.encryption` state event.
    pub fn set_encrypted(&self, room: &str) {
        self.shared.lock().encrypted.insert(room.to_owned());
    }

    /// Makes `alias` (e.g. `#ops:example.org`) resolve to `room`.
    pub fn set_alias(&self, alias: &str, room: &str) {
        self.shared
            .lock()
            .aliases
            .insert(alias.to_owned(), room.to_owned());
    }

    /// Sets the full state of `room` (what `GET /rooms/{room}/state` answers), e.g. its
    /// `m.room.create` and `m.room.power_levels` events.
    pub fn set_room_state(&self, room: &str, events: Vec<Value>) {
        self.shared
            .lock()
            .room_state
            .insert(room.to_owned(), events);
    }

    /// `createRoom` bodies received, in order (their rooms are `!created<n>:<server>`).
    pub fn created_rooms(&self) -> Vec<Value> {
        self.shared.lock().created.clone()
    }

    /// Every message successfully sent, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.shared.lock().sent.clone()
    }

    /// How many messages were sent (cheap: no copy).
    pub fn sent_count(&self) -> usize {
        self.shared.lock().sent.len()
    }

    /// Messages sent to `room`.
    pub fn sent_to(&self, room: &str) -> Vec<Sent> {
        self.shared
            .lock()
            .sent
            .iter()
            .filter(|s| s.room_id == room)
            .cloned()
            .collect()
    }

    /// Rooms joined, in order.
    pub fn joined(&self) -> Vec<String> {
        self.shared.lock().joined.clone()
    }

    /// Rooms left (with the reason), in order.
    pub fn left(&self) -> Vec<(String, Option<String>)> {
        self.shared.lock().left.clone()
    }

    /// Display names set, by user.
    pub fn displayname(&self, user: &str) -> Option<String> {
        self.shared.lock().displaynames.get(user).cloned()
    }

    /// Users registered.
    pub fn registered(&self) -> Vec<String> {
        self.shared.lock().registered.iter().cloned().collect()
    }

    /// Number of pings received.
    pub fn pings(&self) -> u32 {
        self.shared.lock().pings
    }

    /// Every request, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }
}

fn error(status: StatusCode, errcode: &str, message: &str) -> Response {
    (status, Json(json!({"errcode": errcode, "error": message}))).into_response()
}

async fn record_and_gate(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (down, authorized) = {
        let mut inner = shared.lock();
        inner.requests.push(Request {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            query: request.uri().query().map(str::to_owned),
        });
        let token = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        (inner.down, token.map(|t| t == shared.as_token))
    };
    if down {
        return (StatusCode::BAD_GATEWAY, "502 Bad Gateway").into_response();
    }
    let path = request.uri().path();
    // As in the spec (and Synapse): these need no access token.
    if path == "/_matrix/client/versions" || path.starts_with("/_matrix/client/v3/directory/room/")
    {
        return next.run(request).await;
    }
    match authorized {
        None => error(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "Missing access token",
        ),
        Some(false) => error(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "Unrecognised access token",
        ),
        Some(true) => next.run(request).await,
    }
}

async fn versions() -> Json<Value> {
    Json(json!({
        "versions": ["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12"],
        "unstable_features": {}
    }))
}

async fn whoami(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({"user_id": shared.bot, "is_guest": false}))
}

async fn register(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    if body["type"] != "m.login.application_service" {
        return error(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "Registration has been disabled",
        );
    }
    let Some(username) = body["username"].as_str() else {
        return error(StatusCode::BAD_REQUEST, "M_MISSING_PARAM", "username");
    };
    let server = shared.bot.split_once(':').map_or("", |(_, s)| s);
    let user_id = format!("@{username}:{server}");
    if !shared.lock().registered.insert(user_id.clone()) {
        return error(
            StatusCode::BAD_REQUEST,
            "M_USER_IN_USE",
            "User ID already taken.",
        );
    }
    let mut reply = json!({"user_id": user_id, "home_server": server});
    if body["inhibit_login"] != true {
        reply["access_token"] = "syt_double".into();
        reply["device_id"] = "DOUBLE".into();
    }
    Json(reply).into_response()
}

async fn displayname(
    State(shared): State<Arc<Shared>>,
    Path(user): Path<String>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let name = body["displayname"].as_str().unwrap_or_default().to_owned();
    shared.lock().displaynames.insert(user, name);
    Json(json!({}))
}

async fn ping(State(shared): State<Arc<Shared>>, Path(_id): Path<String>, body: Bytes) -> Response {
    let target = {
        let mut inner = shared.lock();
        inner.pings += 1;
        inner.appservice.clone()
    };
    let Some((url, hs_token)) = target else {
        return Json(json!({"duration_ms": 0})).into_response();
    };
    let started = std::time::Instant::now();
    let result = reqwest_free_post(&format!("{url}/_matrix/app/v1/ping"), &hs_token, &body).await;
    match result {
        Ok(200) => {
            Json(json!({"duration_ms": started.elapsed().as_millis() as u64})).into_response()
        }
        Ok(status) => error(
            StatusCode::BAD_GATEWAY,
            "M_BAD_STATUS",
            &format!("appservice answered {status}"),
        ),
        Err(e) => error(StatusCode::BAD_GATEWAY, "M_CONNECTION_FAILED", &e),
    }
}

/// A minimal HTTP/1.1 POST over a TCP stream, so the testkit needs no HTTP client crate.
async fn reqwest_free_post(url: &str, token: &str, body: &[u8]) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// is supported")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.write_all(body).await.map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "bad response".to_owned())
}

async fn create_room(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Json<Value> {
    let server = shared.bot.split_once(':').map_or("", |(_, s)| s).to_owned();
    let mut inner = shared.lock();
    inner.created.push(body);
    let room = format!("!created{}:{server}", inner.created.len());
    Json(json!({"room_id": room}))
}

async fn directory(State(shared): State<Arc<Shared>>, Path(alias): Path<String>) -> Response {
    match shared.lock().aliases.get(&alias) {
        Some(room) => Json(json!({"room_id": room, "servers": []})).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
            &format!("Room alias {alias} not found"),
        ),
    }
}

async fn full_state(State(shared): State<Arc<Shared>>, Path(room): Path<String>) -> Response {
    match shared.lock().room_state.get(&room) {
        Some(events) => Json(Value::Array(events.clone())).into_response(),
        None => error(StatusCode::FORBIDDEN, "M_FORBIDDEN", "User not in room"),
    }
}

async fn join(State(shared): State<Arc<Shared>>, Path(room): Path<String>) -> Json<Value> {
    shared.lock().joined.push(room.clone());
    Json(json!({"room_id": room}))
}

async fn leave(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
    body: Bytes,
) -> Json<Value> {
    let reason = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["reason"].as_str().map(str::to_owned));
    shared.lock().left.push((room, reason));
    Json(json!({}))
}

async fn state(
    State(shared): State<Arc<Shared>>,
    Path((room, event_type)): Path<(String, String)>,
) -> Response {
    if event_type == "m.room.encryption" && shared.lock().encrypted.contains(&room) {
        return Json(json!({"algorithm": "m.megolm.v1.aes-sha2"})).into_response();
    }
    error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "Event not found.")
}

async fn send(
    State(shared): State<Arc<Shared>>,
    Path((room, event_type, txn)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    Json(content): Json<Value>,
) -> Response {
    let mut inner = shared.lock();
    if let Some(event_id) = inner.txns.get(&txn) {
        // Synapse's idempotency: the same transaction id gets the same event back.
        return Json(json!({"event_id": event_id})).into_response();
    }
    if let Some(failure) = inner.failures.pop_front() {
        drop(inner);
        return match failure {
            Failure::RateLimited { retry_after_secs } => {
                let mut response = error(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", "Too Many Requests");
                let body = json!({"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": retry_after_secs * 1000});
                *response.body_mut() = axum::body::Body::from(body.to_string());
                response.headers_mut().insert("retry-after", retry_after_secs.into());
                response
            }
            Failure::RateLimitedMs(ms) => (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": ms})),
            )
                .into_response(),
            Failure::Status(code) => error(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "M_UNKNOWN", "Internal server error"),
            Failure::Forbidden => error(StatusCode::FORBIDDEN, "M_FORBIDDEN", "User not in room"),
        };
    }
    inner.next_event += 1;
    let event_id = format!("$double{}", inner.next_event);
    inner.txns.insert(txn.clone(), event_id.clone());
    let user_id = query.as_deref().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("user_id="))
            .map(|v| v.replace("%40", "@").replace("%3A", ":"))
    });
    inner.sent.push(Sent {
        room_id: room,
        event_type,
        txn_id: txn,
        content,
        event_id: event_id.clone(),
        user_id,
        received_at: std::time::Instant::now(),
    });
    Json(json!({"event_id": event_id})).into_response()
}

async fn unknown(method: Method, uri: Uri, _headers: HeaderMap) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
        &format!("Unrecognized request: {method} {}", uri.path()),
    )
}

/// Builders for the events a homeserver pushes, in client format (as Synapse sends them).
pub mod events {
    use serde_json::{Value, json};

    fn base(kind: &str, room: &str, sender: &str, event_id: &str) -> Value {
        json!({"type": kind, "room_id": room, "sender": sender, "event_id": event_id,
               "origin_server_ts": 1_700_000_000_000_u64, "unsigned": {"age": 10}})
    }

    /// An `m.text` message.
    pub fn text(room: &str, sender: &str, event_id: &str, body: &str) -> Value {
        let mut event = base("m.room.message", room, sender, event_id);
        event["content"] = json!({"msgtype": "m.text", "body": body});
        event
    }

    /// An `m.text` message in a thread.
    pub fn thread_text(room: &str, sender: &str, event_id: &str, root: &str, body: &str) -> Value {
        let mut event = text(room, sender, event_id, body);
        event["content"]["m.relates_to"] = json!({"rel_type": "m.thread", "event_id": root, "is_falling_back": true, "m.in_reply_to": {"event_id": root}});
        event
    }

    /// A membership event for `target`, sent by `sender`.
    pub fn member(
        room: &str,
        sender: &str,
        target: &str,
        membership: &str,
        event_id: &str,
    ) -> Value {
        let mut event = base("m.room.member", room, sender, event_id);
        event["state_key"] = target.into();
        event["content"] = json!({"membership": membership});
        event
    }

    /// An encrypted message.
    pub fn encrypted(room: &str, sender: &str, event_id: &str) -> Value {
        let mut event = base("m.room.encrypted", room, sender, event_id);
        event["content"] = json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "sender_key": "k",
                                   "device_id": "DEV", "session_id": "s"});
        event
    }

    /// A transaction body carrying `events`.
    pub fn transaction(events: impl IntoIterator<Item = Value>) -> Value {
        json!({"events": events.into_iter().collect::<Vec<_>>()})
    }
}
