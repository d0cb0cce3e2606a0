//! `TestApp`: the bridge in-process on 127.0.0.1:0, with a temp SQLite file and a homeserver
//! double; typed helpers to push transactions and read what the bridge said.

use std::{path::Path, time::Duration};

use serde_json::Value;
use st2_matrix::{config::Config, registration, startup::App};
use st2_matrix_testkit::{
    homeserver::{HomeserverDouble, Sent},
    poll,
    st2::{St2Double, St2Options},
};
use tokio::sync::oneshot;

pub const SERVER: &str = "example.org";
pub const BOT: &str = "@st2bot:example.org";
pub const ROOM: &str = "!room:example.org";
pub const ALICE: &str = "@alice:example.org";
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub hs: HomeserverDouble,
    /// The running bridge's shared state.
    pub bridge: std::sync::Arc<st2_matrix::bridge::Bridge>,
    pub st2: Option<St2Double>,
    pub url: String,
    pub hs_token: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    /// Dropping this sender (with the `TestApp`) also stops the bridge.
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// How a test bridge is set up.
#[derive(Default)]
pub struct Options {
    /// Extra config lines appended to the test config (e.g. a `[bridge]` section).
    pub extra_config: &'static str,
    /// A StackStorm double, and how the bridge authenticates to it.
    pub st2: Option<St2Auth>,
}

/// The bridge's StackStorm credential in a test.
#[derive(Clone, Copy)]
pub enum St2Auth {
    /// An API key of user `bot`.
    ApiKey,
    /// Username `bot` + password; tokens from the double.
    Password,
}

/// The double's parser replaced by the bridge's own, so the double answers what StackStorm's
/// parser would (our parser agrees with st2's on every reference vector).
pub fn real_parser() -> st2_matrix_testkit::st2::ParserFn {
    std::sync::Arc::new(|format: &str, command: &str| {
        let compiled = st2_matrix::alias::Format::compile(format).map_err(|e| e.to_string())?;
        let params = compiled.parse(command).map_err(|e| e.to_string())?;
        Ok(params
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    v.map_or(serde_json::Value::Null, serde_json::Value::String),
                )
            })
            .collect())
    })
}

/// A StackStorm double with user `bot` (password `bot-password`), the real parser, the fixture
/// aliases, and a fast heartbeat.
pub async fn st2_double() -> St2Double {
    let st2 = St2Double::start(St2Options {
        heartbeat: Duration::from_millis(500),
        ..St2Options::default()
    })
    .await;
    st2.add_user("bot", "bot-password");
    st2.set_parser(real_parser());
    st2.load_fixture_aliases();
    st2
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> TestApp {
        Self::spawn_with_double(options, None).await
    }

    /// Spawns against a StackStorm double the test prepared itself.
    pub async fn spawn_with_double(options: Options, st2: Option<St2Double>) -> TestApp {
        st2_matrix::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let st2 = match (options.st2, st2) {
            (Some(_), Some(st2)) => Some(st2),
            (Some(_), None) => Some(st2_double().await),
            (None, _) => None,
        };
        let st2_config = match (&st2, options.st2) {
            (Some(double), Some(St2Auth::ApiKey)) => {
                let key = double.add_api_key("bot");
                format!(
                    "[stackstorm]\nurl = \"{}\"\napi_key = \"{key}\"\ntimeout = \"3s\"\nheartbeat = \"500ms\"\nnotify_rule_recheck = \"300ms\"\n",
                    double.url()
                )
            }
            (Some(double), Some(St2Auth::Password)) => format!(
                "[stackstorm]\nurl = \"{}\"\nusername = \"bot\"\npassword = \"bot-password\"\ntimeout = \"3s\"\nheartbeat = \"500ms\"\nnotify_rule_recheck = \"300ms\"\n",
                double.url()
            ),
            _ => String::new(),
        };
        let extra = format!("{}\n{st2_config}", options.extra_config);
        let (config, registration, listener) = prepare(dir.path(), &extra).await;
        let hs_token = registration.hs_token.clone();
        let hs = HomeserverDouble::start(&registration.as_token, BOT).await;
        let config = with_homeserver(config, &hs.url());
        Self::run(dir, hs, st2, config, registration, listener, hs_token).await
    }

    /// Starts a second bridge on the same database and homeserver double (a restart).
    pub async fn restart(mut self) -> TestApp {
        self.shutdown().await;
        let TestApp { hs, st2, dir, .. } = self;
        let (config, _, listener) = prepare_existing(dir.path()).await;
        let registration = registration::load(&dir.path().join("registration.yaml")).unwrap();
        let hs_token = registration.hs_token.clone();
        let config = with_homeserver(config, &hs.url());
        Self::run(dir, hs, st2, config, registration, listener, hs_token).await
    }

    async fn run(
        dir: tempfile::TempDir,
        hs: HomeserverDouble,
        st2: Option<St2Double>,
        config: Config,
        registration: ruma::api::appservice::Registration,
        listener: tokio::net::TcpListener,
        hs_token: String,
    ) -> TestApp {
        let url = format!("http://{}", listener.local_addr().unwrap());
        hs.set_appservice(&url, &hs_token);
        let app = App::build(config, registration, listener)
            .await
            .expect("the bridge starts");
        let bridge = app.bridge();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        TestApp {
            hs,
            bridge,
            st2,
            url,
            hs_token,
            dir,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Graceful shutdown, waiting for it to finish.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub async fn push(&self, txn_id: &str, events: Vec<Value>) -> (u16, Value) {
        self.push_raw(
            txn_id,
            Some(&self.hs_token),
            serde_json::to_vec(&st2_matrix_testkit::homeserver::events::transaction(events))
                .unwrap(),
        )
        .await
    }

    pub async fn push_raw(&self, txn_id: &str, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
        let mut request = self
            .http
            .put(format!("{}/_matrix/app/v1/transactions/{txn_id}", self.url))
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Waits until `room` has received `n` messages, and returns them.
    pub async fn wait_for_messages(&self, room: &str, n: usize) -> Vec<Sent> {
        poll::wait_until(WAIT, &format!("{n} message(s) in {room}"), || async {
            let sent = self.hs.sent_to(room);
            (sent.len() >= n).then_some(sent)
        })
        .await
    }

    /// Asserts `room` keeps exactly `n` messages for a short settle period.
    pub async fn assert_message_count_stays(&self, room: &str, n: usize) {
        poll::stays(
            Duration::from_millis(500),
            &format!("exactly {n} message(s) in {room}"),
            || async { self.hs.sent_to(room).len() == n },
        )
        .await;
    }
}

fn config_text(dir: &Path, bind: &str, options_extra: &str) -> String {
    format!(
        r#"
[homeserver]
url = "http://127.0.0.1:1"
server_name = "{SERVER}"
startup_timeout = "2s"
[appservice]
id = "st2-matrix-test"
bind = "{bind}"
url = "http://{bind}"
registration = "registration.yaml"
[database]
url = "sqlite://{db}"
[outbox]
max_backoff = "2s"
shutdown_drain = "2s"
{options_extra}
"#,
        db = dir.join("bridge.db").display()
    )
}

async fn prepare(
    dir: &Path,
    extra: &str,
) -> (
    Config,
    ruma::api::appservice::Registration,
    tokio::net::TcpListener,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bind = listener.local_addr().unwrap().to_string();
    std::fs::write(dir.join("config.toml"), config_text(dir, &bind, extra)).unwrap();
    std::fs::write(dir.join("extra.toml"), extra).unwrap();
    let config = Config::load(&dir.join("config.toml")).unwrap();
    let registration = registration::generate(&config);
    registration::write(&registration, &dir.join("registration.yaml"), false, true).unwrap();
    (config, registration, listener)
}

/// Same config as before, on a new port (the registration's url is rewritten to match).
async fn prepare_existing(dir: &Path) -> (Config, (), tokio::net::TcpListener) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bind = listener.local_addr().unwrap().to_string();
    let extra = std::fs::read_to_string(dir.join("extra.toml")).unwrap();
    std::fs::write(dir.join("config.toml"), config_text(dir, &bind, &extra)).unwrap();
    let config = Config::load(&dir.join("config.toml")).unwrap();
    let path = dir.join("registration.yaml");
    let mut registration = registration::load(&path).unwrap();
    registration.url = Some(format!("http://{bind}"));
    registration::write(&registration, &path, true, true).unwrap();
    (config, (), listener)
}

fn with_homeserver(mut config: Config, url: &str) -> Config {
    config.homeserver.url = url.parse().unwrap();
    config
}
