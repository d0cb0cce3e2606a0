//! The command path, whole, over loopback (issue 13): a homeserver PUTs a transaction holding
//! one `!st2 …` command to the running bridge, and StackStorm receives
//! `POST /api/v1/aliasexecution` for it.
//!
//! - **The bridge** is the release binary, run as a separate process (as `idle_memory` runs it
//!   and as production runs it), with its defaults: SQLite file, `synchronous = normal`,
//!   encryption on, logs at `info` (to /dev/null, so the terminal is not timed).
//! - **The homeserver side** is a keep-alive HTTP/1.1 connection per sender, as Synapse keeps
//!   one to an appservice: hyper's connection API, so every request of a series provably goes
//!   over the same connection. Acks and results go to the testkit's homeserver double.
//! - **StackStorm** is a double written here, not the testkit's `St2Double` (which parses the
//!   command, renders templates and records executions before it answers): the handler of
//!   `POST /api/v1/aliasexecution` takes its timestamp before it reads the body, then answers
//!   `201` as st2 does. It serves only what the bridge needs to start (the alias list, the
//!   notify rule, the two streams, empty execution and inquiry lists).
//!
//! Measured, each as median and p99:
//! 1. **alone**: one command at a time (rooms in turn; the next after the previous command's ack
//!    reached the homeserver and the bridge is quiet): PUT → `200`, PUT → aliasexecution
//!    arrival; and, interleaved with them under the same conditions, a `GET /health` round trip
//!    on the same connection and the double's own arrival floor (a POST of the same size from a
//!    keep-alive connection to the double, send → the handler's timestamp);
//! 2. **100 rooms at once**: 100 senders, each with its own keep-alive connection and room, PUT
//!    one command each at the same moment (the round ends when all 100 acks arrived);
//! 3. **one transaction of 100 commands from 100 rooms**: how Synapse itself delivers such a
//!    burst to one appservice (one transaction in flight at a time).
//!
//! The ratios of the targets are printed too. It reports; it asserts nothing.
//! `cargo bench --bench command_path` (`COMMAND_PATH_ROUNDS=N` multiplies the sample counts).
//!
//! **Breakdown** (`COMMAND_PATH_BREAKDOWN=1`): only the one-at-a-time series, with the bridge
//! logging JSON at `debug` for itself and for sqlx's statements. Every log line is placed on
//! its command's timeline (its timestamp minus the moment the PUT was sent; the bridge and the
//! bench read the same clock) and the table gives, for each step, its median time since the
//! PUT and, for SQL statements, their median own duration as sqlx measures it. Logging costs
//! time itself (a line is formatted and written while the path waits), so the totals there are
//! larger than without it; the shares are what it is for.

use std::{
    collections::HashMap,
    net::SocketAddr,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use st2_matrix::{config::Config, registration};
use st2_matrix_testkit::homeserver::{HomeserverDouble, events};
use tokio::sync::Notify;

/// Rooms in the concurrent phase (and rooms the single commands rotate over).
const ROOMS: usize = 100;
/// The person typing the commands.
const SENDER: &str = "@alice:example.org";
/// The command, without its prefix; the double's one alias matches it.
const COMMAND: &str = "deploy web to prod";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and friends: nothing to enumerate.
    }
    // Two workers, as the machine has two cores; the bridge is another process beside them.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run());
}

async fn run() {
    st2_matrix::tls::install_crypto_provider();
    let scale: usize = std::env::var("COMMAND_PATH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let breakdown = std::env::var_os("COMMAND_PATH_BREAKDOWN").is_some();
    let st2 = FastSt2::start().await;
    let bridge = Bridge::start(&st2, breakdown).await;

    // Warm-up: connections, the bridge's caches and SQLite's pages; not recorded.
    let mut conn = Connection::open(bridge.addr).await;
    let mut st2_conn = Connection::open(st2.addr).await;
    let mut next_event = 0usize;
    for _ in 0..50 {
        let event = bridge.event_id(&mut next_event);
        one_command(&bridge, &st2, &mut conn, 0, &event).await;
    }

    // 1. One command at a time.
    let rounds = 300 * scale;
    let (mut put_200, mut put_arrival, mut health, mut floor) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    let mut timelines = Vec::new();
    for i in 0..rounds {
        let event = bridge.event_id(&mut next_event);
        let sent_wall = std::time::SystemTime::now();
        let (ok, arrived) = one_command(&bridge, &st2, &mut conn, i % ROOMS, &event).await;
        timelines.push((sent_wall, ok, arrived));
        put_200.push(ok);
        put_arrival.push(arrived);
        if !breakdown {
            health.push(conn.health().await);
            floor.push(st2.floor(&mut st2_conn).await);
        }
    }
    if breakdown {
        print_breakdown(&bridge, &timelines).await;
        bridge.stop().await;
        return;
    }
    println!("command path, one command at a time ({rounds} commands, rooms in turn):");
    put_200.print("PUT → 200");
    put_arrival.print("PUT → aliasexecution arrival");
    health.print("GET /health round trip, same connection");
    floor.print("StackStorm double's arrival floor (POST → handler)");
    println!(
        "  ratios (medians): PUT→200 / health = {:.1}× (target ≤ 2×); \
         PUT→arrival / (health + floor) = {:.1}× (target ≤ 2×, and ≤ 1 ms median)",
        put_200.median() / health.median(),
        put_arrival.median() / (health.median() + floor.median())
    );

    // 2. 100 rooms at once, a connection each.
    let rounds = 20 * scale;
    let mut conns = Vec::with_capacity(ROOMS);
    for _ in 0..ROOMS {
        conns.push(Connection::open(bridge.addr).await);
    }
    let (mut put_200, mut put_arrival) = (Samples::default(), Samples::default());
    for _ in 0..rounds {
        let acks = bridge.hs.sent_count() + ROOMS;
        let start = Arc::new(tokio::sync::Barrier::new(ROOMS));
        let mut senders = tokio::task::JoinSet::new();
        for (room, mut conn) in conns.drain(..).enumerate() {
            let event = bridge.event_id(&mut next_event);
            let body = transaction(&[(room, event.clone())]);
            let (st2, start, path) = (st2.clone(), start.clone(), bridge.txn_path());
            senders.spawn(async move {
                start.wait().await;
                let sent = Instant::now();
                let ok = conn.put(&path, body).await;
                let arrived = st2.arrival(&event).await;
                (conn, ok - sent, arrived - sent)
            });
        }
        while let Some(done) = senders.join_next().await {
            let (conn, ok, arrived) = done.expect("a sender");
            conns.push(conn);
            put_200.push(ok);
            put_arrival.push(arrived);
        }
        bridge.wait_for_acks(acks).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "command path, {ROOMS} rooms at once ({rounds} rounds, a keep-alive connection per room):"
    );
    put_200.print("PUT → 200");
    put_arrival.print("PUT → aliasexecution arrival");

    // 3. One transaction carrying a command from each of 100 rooms.
    let (mut put_200, mut put_arrival) = (Samples::default(), Samples::default());
    for _ in 0..rounds {
        let acks = bridge.hs.sent_count() + ROOMS;
        let commands: Vec<(usize, String)> = (0..ROOMS)
            .map(|room| (room, bridge.event_id(&mut next_event)))
            .collect();
        let body = transaction(&commands);
        let sent = Instant::now();
        put_200.push(conn.put(&bridge.txn_path(), body).await - sent);
        for (_, event) in &commands {
            put_arrival.push(st2.arrival(event).await - sent);
        }
        bridge.wait_for_acks(acks).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "command path, one transaction of {ROOMS} commands from {ROOMS} rooms ({rounds} rounds):"
    );
    put_200.print("PUT → 200 (per transaction)");
    put_arrival.print("PUT → aliasexecution arrival (per command)");
    bridge.stop().await;
}

/// One command, alone: PUT → 200 and PUT → arrival; returns once its ack reached the
/// homeserver and a moment passed, so the next one meets a quiet bridge.
async fn one_command(
    bridge: &Bridge,
    st2: &FastSt2,
    conn: &mut Connection,
    room: usize,
    event: &str,
) -> (Duration, Duration) {
    let acks = bridge.hs.sent_count() + 1;
    let body = transaction(&[(room, event.to_owned())]);
    let sent = Instant::now();
    let ok = conn.put(&bridge.txn_path(), body).await;
    let arrived = st2.arrival(event).await;
    bridge.wait_for_acks(acks).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    (ok - sent, arrived - sent)
}

/// A transaction body: one `!st2` command per `(room, event id)`.
fn transaction(commands: &[(usize, String)]) -> Bytes {
    let body = events::transaction(commands.iter().map(|(room, event)| {
        events::text(&room_id(*room), SENDER, event, &format!("!st2 {COMMAND}"))
    }));
    Bytes::from(serde_json::to_vec(&body).expect("JSON"))
}

fn room_id(i: usize) -> String {
    format!("!bench{i}:example.org")
}

/// Durations, summarised as median and p99.
#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted[index]
    }

    /// The median, in milliseconds.
    fn median(&self) -> f64 {
        self.quantile(0.5).as_secs_f64() * 1000.0
    }

    fn print(&self, what: &str) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "  {what:<52} median {:>6.3} ms   p99 {:>6.3} ms   (n = {})",
            self.median(),
            ms(self.quantile(0.99)),
            self.0.len()
        );
    }
}

/// One keep-alive HTTP/1.1 connection (hyper's connection API: one socket for its life).
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Connection {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // Small requests leave at once, as from any HTTP client that sets TCP_NODELAY: the
        // bridge's handling is measured, not Nagle's algorithm on the client's side.
        tcp.set_nodelay(true).expect("TCP_NODELAY");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        Connection {
            sender,
            host: addr.to_string(),
        }
    }

    /// Sends a request and reads the whole answer; returns when the body is read and the status
    /// checked.
    async fn request(&mut self, request: http::request::Builder, body: Bytes) -> Instant {
        let request = request
            .header(header::HOST, &self.host)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .expect("a request");
        self.sender.ready().await.expect("the connection is open");
        let response = self.sender.send_request(request).await.expect("an answer");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the body")
            .to_bytes();
        let done = Instant::now();
        assert!(
            status.is_success(),
            "{status}: {}",
            String::from_utf8_lossy(&body)
        );
        done
    }

    /// PUTs a transaction with the hs_token as Synapse sends it; the instant its `200` was
    /// read.
    async fn put(&mut self, (path, hs_token): &(String, String), body: Bytes) -> Instant {
        let request = http::Request::put(path.as_str())
            .header(header::AUTHORIZATION, format!("Bearer {hs_token}"));
        self.request(request, body).await
    }

    /// One `GET /health` round trip.
    async fn health(&mut self) -> Duration {
        let sent = Instant::now();
        self.request(http::Request::get("/health"), Bytes::new())
            .await
            - sent
    }
}

/// The bridge process and the homeserver double it talks to.
struct Bridge {
    child: tokio::process::Child,
    addr: SocketAddr,
    hs_token: String,
    hs: HomeserverDouble,
    /// The bridge's log lines, when it logs for a breakdown.
    log: Arc<Mutex<Vec<LogLine>>>,
    _dir: tempfile::TempDir,
}

impl Bridge {
    /// Starts the bridge; with `breakdown`, logging JSON at `debug` into [`Bridge::log`].
    async fn start(st2: &FastSt2, breakdown: bool) -> Bridge {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = listener.local_addr().expect("its address");
        drop(listener);
        // The default level (`info`) when timing; `debug` for the bridge and its SQL for the
        // breakdown, as JSON so the bench can read the timestamps.
        let log = if breakdown {
            "format = \"json\"\nfilter = \"warn,st2_matrix=debug,sqlx::query=debug\""
        } else {
            "filter = \"info\""
        };
        let write_config = |hs_url: &str| {
            let text = format!(
                "[homeserver]\nurl = \"{hs_url}\"\nserver_name = \"example.org\"\n[appservice]\nbind = \"{addr}\"\n\
                 url = \"http://{addr}\"\n[database]\nurl = \"sqlite://{}\"\n[log]\n{log}\n\
                 [stackstorm]\nurl = \"http://{}\"\napi_key = \"bench-api-key\"\n",
                dir.path().join("bridge.db").display(),
                st2.addr,
            );
            std::fs::write(dir.path().join("config.toml"), text).expect("write the config");
        };
        write_config("http://127.0.0.1:1");
        let config = Config::load(&dir.path().join("config.toml")).expect("the config");
        let reg = registration::generate(&config);
        registration::write(
            &reg,
            &dir.path().join("registration.yaml"),
            false,
            config.encryption.enabled,
        )
        .expect("write the registration");
        let hs = HomeserverDouble::start(&reg.as_token, "@st2bot:example.org").await;
        hs.set_appservice(&format!("http://{addr}"), &reg.hs_token);
        write_config(&hs.url());

        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_st2-matrix"))
            .args(["run", "--config"])
            .arg(dir.path().join("config.toml"))
            .stdout(Stdio::null())
            .stderr(if breakdown {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .expect("start the bridge");
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(read_log(stderr, log.clone()));
        }
        let bridge = Bridge {
            child,
            addr,
            hs_token: reg.hs_token.clone(),
            hs,
            log,
            _dir: dir,
        };
        bridge.wait_until_loaded().await;
        bridge
    }

    /// Waits for `/ready`, then for the alias list to be loaded (commands match from then on).
    async fn wait_until_loaded(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < deadline,
                "the bridge did not load its aliases"
            );
            let loaded = async {
                let ready = client
                    .get(format!("http://{}/ready", self.addr))
                    .send()
                    .await
                    .ok()?;
                if ready.status() != 200 {
                    return None;
                }
                let metrics = client
                    .get(format!("http://{}/metrics", self.addr))
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                metrics
                    .lines()
                    .any(|l| l.starts_with("st2_matrix_aliases ") && l.ends_with(" 1"))
                    .then_some(())
            };
            if loaded.await.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A fresh transaction's path, and the hs_token to send with it.
    fn txn_path(&self) -> (String, String) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let txn = NEXT.fetch_add(1, Ordering::Relaxed);
        (
            format!("/_matrix/app/v1/transactions/{txn}"),
            self.hs_token.clone(),
        )
    }

    fn event_id(&self, next: &mut usize) -> String {
        *next += 1;
        format!("$bench{next}")
    }

    /// Waits until the homeserver double has received `n` messages from the bridge.
    async fn wait_for_acks(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.hs.sent_count() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} acks arrived",
                self.hs.sent_count()
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A StackStorm double that answers fast and timestamps each alias execution on arrival.
#[derive(Clone)]
struct FastSt2 {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// When `POST /api/v1/aliasexecution` arrived, by the command's event id.
    arrivals: Mutex<HashMap<String, Instant>>,
    /// Floor probes (`POST /floor`), by the id they carry.
    probes: Mutex<HashMap<u64, Instant>>,
    arrived: Notify,
    next_execution: std::sync::atomic::AtomicU64,
}

impl FastSt2 {
    async fn start() -> FastSt2 {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/api/v1/aliasexecution", post(alias_execution))
            .route("/floor", post(floor_probe))
            .route("/api/v1/actionalias", get(aliases))
            .route("/api/v1/rules/{reference}", get(rule))
            .route("/api/v1/executions", get(empty_list))
            .route("/api/v1/inquiries", get(empty_list))
            .route("/stream/v1/stream", get(stream))
            .fallback(unknown)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the StackStorm double");
        let addr = listener.local_addr().expect("its address");
        tokio::spawn(async move {
            use axum::serve::ListenerExt as _;
            // Answers leave at once: the double's own latency is the floor, kept small.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, app).await;
        });
        FastSt2 { addr, shared }
    }

    /// When the alias execution for `event` arrived (waits for it).
    async fn arrival(&self, event: &str) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let notified = self.shared.arrived.notified();
            if let Some(at) = self.shared.arrivals.lock().expect("lock").remove(event) {
                return at;
            }
            assert!(
                Instant::now() < deadline,
                "no alias execution arrived for {event}"
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    /// The double's own floor: a POST the size of an alias execution, from a keep-alive
    /// connection, send → the handler's timestamp.
    async fn floor(&self, conn: &mut Connection) -> Duration {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = json!({
            "probe": id, "name": "bench_deploy", "format": "deploy {{app}} to {{env}}", "command": COMMAND,
            "user": SENDER, "source_channel": room_id(0), "notification_route": "matrix",
            "source_context": {"room_id": room_id(0), "event_id": "$bench0", "thread_root": null, "sender": SENDER},
        });
        let sent = Instant::now();
        conn.request(
            http::Request::post("/floor"),
            Bytes::from(serde_json::to_vec(&body).expect("JSON")),
        )
        .await;
        let at = self
            .shared
            .probes
            .lock()
            .expect("lock")
            .remove(&id)
            .expect("the probe was recorded before its answer");
        at - sent
    }
}

/// `POST /api/v1/aliasexecution`: the timestamp is taken before the body is read, then the
/// answer is st2's `201` with the execution and the rendered ack.
async fn alias_execution(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
) -> Response {
    let at = Instant::now();
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let event = body["source_context"]["event_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    shared.arrivals.lock().expect("lock").insert(event, at);
    shared.arrived.notify_waiters();
    let n = shared
        .next_execution
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("{n:024x}");
    let answer = json!({
        "execution": {
            "id": id, "status": "requested", "action": {"ref": "core.local"},
            "web_url": format!("https://st2.example.org/#/history/{id}/general"),
            "start_timestamp": "2026-12-07T10:00:00.000000Z",
        },
        "message": "Deploying web to prod.",
        "actionalias": {"ref": "bench.deploy", "name": "deploy"},
    });
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

async fn floor_probe(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
) -> StatusCode {
    let at = Instant::now();
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = body["probe"].as_u64().unwrap_or_default();
    shared.probes.lock().expect("lock").insert(id, at);
    StatusCode::CREATED
}

/// The one alias, as st2's API lists it.
async fn aliases() -> Response {
    let list = json!([{
        "id": "5f0000000000000000000001", "name": "deploy", "pack": "bench", "ref": "bench.deploy",
        "action_ref": "core.local", "enabled": true, "description": "Deploy an app",
        "formats": ["deploy {{app}} to {{env}}"],
        "ack": {"enabled": true, "format": "Deploying {{ execution.parameters.app }}."},
        "result": {"enabled": true},
    }]);
    ([("x-total-count", "1")], axum::Json(list)).into_response()
}

/// The route's notify rule, enabled (the bridge's start-up check).
async fn rule(axum::extract::Path(reference): axum::extract::Path<String>) -> Response {
    axum::Json(
        json!({"ref": reference, "enabled": true, "pack": "st2_matrix", "name": "notify_matrix"}),
    )
    .into_response()
}

async fn empty_list() -> Response {
    ([("x-total-count", "0")], axum::Json(json!([]))).into_response()
}

/// The stream: st2's `\n` on connect, then a `\n` heartbeat every 5 s; nothing is announced.
async fn stream() -> Response {
    let beats = futures_util::stream::unfold(true, |first| async move {
        if !first {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from_static(b"\n")),
            false,
        ))
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream; charset=UTF-8")],
        axum::body::Body::from_stream(beats),
    )
        .into_response()
}

/// Anything else: said on stderr, so a call of the bridge that this double lacks is noticed.
async fn unknown(request: axum::extract::Request) -> Response {
    eprintln!(
        "StackStorm double: no route for {} {}",
        request.method(),
        request.uri()
    );
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"faultstring": "not found"})),
    )
        .into_response()
}

/// One line of the bridge's JSON log: when, and what (the message, or the SQL statement's
/// summary with its own duration).
struct LogLine {
    at: std::time::SystemTime,
    what: String,
    statement_secs: Option<f64>,
}

/// Reads the bridge's JSON log lines as they come.
async fn read_log(stderr: tokio::process::ChildStderr, log: Arc<Mutex<Vec<LogLine>>>) {
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(json) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let Some(at) = json["timestamp"].as_str().and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        }) else {
            continue;
        };
        let what = match json["summary"].as_str() {
            Some(summary) => format!("sql: {summary}"),
            None => json["message"].as_str().unwrap_or("?").to_owned(),
        };
        log.lock().expect("lock").push(LogLine {
            at: at.into(),
            what,
            statement_secs: json["elapsed_secs"].as_f64(),
        });
    }
}

/// Places every log line on its command's timeline (from the PUT being sent to the next
/// command's) and prints each step's median time since the PUT, in that order.
async fn print_breakdown(
    bridge: &Bridge,
    timelines: &[(std::time::SystemTime, Duration, Duration)],
) {
    tokio::time::sleep(Duration::from_millis(200)).await; // the last lines reach the reader
    let log = bridge.log.lock().expect("lock");
    // Per step: times since the PUT, and the statement's own durations.
    let mut steps: HashMap<String, (Vec<Duration>, Vec<Duration>)> = HashMap::new();
    for (i, &(sent, ok, arrived)) in timelines.iter().enumerate() {
        let end = timelines.get(i + 1).map(|t| t.0);
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut add = |what: String, at: Duration, own: Option<Duration>| {
            let step = steps.entry(what).or_default();
            step.0.push(at);
            step.1.extend(own);
        };
        add("[bench] the 200 read by the client".into(), ok, None);
        add(
            "[bench] aliasexecution arrived at the double".into(),
            arrived,
            None,
        );
        for line in log
            .iter()
            .filter(|l| l.at >= sent && end.is_none_or(|end| l.at < end))
        {
            let n = seen.entry(&line.what).or_default();
            *n += 1;
            let what = if *n == 1 {
                line.what.clone()
            } else {
                format!("{} (#{n})", line.what)
            };
            let at = line.at.duration_since(sent).unwrap_or_default();
            add(what, at, line.statement_secs.map(Duration::from_secs_f64));
        }
    }
    let median = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    let mut rows: Vec<(Duration, &String, usize, Option<Duration>)> = steps
        .iter()
        .filter(|(_, (at, _))| at.len() * 2 >= timelines.len())
        .map(|(what, (at, own))| {
            (
                median(at),
                what,
                at.len(),
                (!own.is_empty()).then(|| median(own)),
            )
        })
        .collect();
    rows.sort();
    println!(
        "breakdown of {} commands, one at a time (median ms since the PUT was sent; steps seen in at least half of them):",
        timelines.len()
    );
    for (at, what, n, own) in rows {
        let own = own.map_or(String::new(), |d| {
            format!("  (statement {:.3} ms)", d.as_secs_f64() * 1000.0)
        });
        let what: String = what.chars().take(90).collect();
        println!(
            "  {:>7.3}  {what}{own}  [n = {n}]",
            at.as_secs_f64() * 1000.0
        );
    }
}
