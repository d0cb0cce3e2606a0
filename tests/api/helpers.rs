//! `TestApp`: the bridge in-process on 127.0.0.1:0, with a temp SQLite file and a homeserver
//! double; typed helpers to push transactions and read what the bridge said.

use std::{path::Path, time::Duration};

use serde_json::Value;
use st2_matrix::{config::Config, registration, startup::App};
use st2_matrix_testkit::{
    homeserver::{HomeserverDouble, Sent},
    human::HumanDevice,
    poll,
    st2::{St2Double, St2Options},
};
use tokio::sync::oneshot;

/// The homeserver's server name.
pub const SERVER: &str = "example.org";
/// The bot (the registration's sender).
pub const BOT: &str = "@st2bot:example.org";
/// A room tests talk in.
pub const ROOM: &str = "!room:example.org";
/// A person allowed to invite the bot.
pub const ALICE: &str = "@alice:example.org";
/// How long a test waits for something to happen before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The bridge running in-process, with its doubles and its directory.
pub struct TestApp {
    /// The homeserver double the bridge talks to.
    pub hs: HomeserverDouble,
    /// The running bridge's shared state.
    pub bridge: std::sync::Arc<st2_matrix::state::AppState>,
    /// The StackStorm double, when the test has one.
    pub st2: Option<St2Double>,
    /// The bridge's base URL.
    pub url: String,
    /// The token the homeserver pushes transactions with.
    pub hs_token: String,
    /// The bridge's directory: config, registration, database, crypto store.
    pub dir: tempfile::TempDir,
    /// A client for calling the bridge.
    pub http: reqwest::Client,
    /// People's devices made before the bridge started ([`Options::devices`]), which read the
    /// bot's encrypted messages for [`TestApp::wait_for_messages`] and [`TestApp::read`].
    pub humans: Vec<HumanDevice>,
    /// `[encryption] enabled`: transactions then carry what Synapse adds with MSC2409/MSC3202.
    pub encryption: bool,
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
    /// `[encryption] enabled = false`: the bridge without a device, telling encrypted rooms it
    /// cannot read them (encryption is on by default).
    pub encryption_off: bool,
    /// Users who get a device ([`HumanDevice`], device id `<LOCALPART>DEV`) before the bridge
    /// starts, so the bot shares its room keys with them from its first message (e.g. the
    /// admins of the admin room the bridge creates and writes to at once).
    pub devices: &'static [&'static str],
    /// `[live] enabled`: acks edited as executions move and ✅/❌ on commands. Off unless a
    /// test is about it, so the other tests see only the messages they are about.
    pub live: bool,
    /// `[inquiries] enabled`, listing every second. Off unless a test is about them: the
    /// listing is a StackStorm request of its own, which tests counting requests or failing
    /// the next one do not expect.
    pub inquiries: bool,
}

/// The device id [`Options::devices`] gives `user`: `@alice:x` → `ALICEDEV`.
pub fn device_id_of(user: &str) -> String {
    let localpart = user
        .trim_start_matches('@')
        .split(':')
        .next()
        .unwrap_or_default();
    format!("{}DEV", localpart.to_uppercase())
}

/// The bridge's StackStorm credential in a test.
#[derive(Clone, Copy)]
pub enum St2Auth {
    /// An API key of user `bot`.
    ApiKey,
    /// Username `bot` + password; tokens from the double.
    Password,
}

/// A StackStorm double with user `bot` (password `bot-password`), the fixture
/// aliases, and a fast heartbeat.
pub async fn st2_double() -> St2Double {
    let st2 = St2Double::start(St2Options {
        heartbeat: Duration::from_millis(500),
        ..St2Options::default()
    })
    .await;
    st2.add_user("bot", "bot-password");
    st2.load_fixture_aliases();
    st2
}

impl TestApp {
    /// A bridge with the default options.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(Options::default()).await
    }

    /// A bridge set up with `options`.
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
        let encryption = if options.encryption_off {
            "[encryption]\nenabled = false\n"
        } else {
            ""
        };
        let live = if options.live {
            ""
        } else {
            "[live]\nenabled = false\n"
        };
        let inquiries = if options.inquiries {
            "[inquiries]\npoll_interval = \"1s\"\n"
        } else {
            "[inquiries]\nenabled = false\n"
        };
        let extra = format!(
            "{}\n{st2_config}{encryption}{live}{inquiries}",
            options.extra_config
        );
        let (config, registration, listener) = prepare(dir.path(), &extra).await;
        let hs = HomeserverDouble::start(&registration.as_token, BOT).await;
        let mut humans = Vec::new();
        for user in options.devices {
            humans.push(HumanDevice::new(&hs, user, &device_id_of(user)).await);
        }
        let config = with_homeserver(config, &hs.url());
        Self::run(dir, hs, humans, st2, config, registration, listener).await
    }

    /// Starts a second bridge on the same database and homeserver double (a restart).
    pub async fn restart(mut self) -> TestApp {
        self.shutdown().await;
        let TestApp {
            hs,
            humans,
            st2,
            dir,
            ..
        } = self;
        let (config, _, listener) = prepare_existing(dir.path()).await;
        let registration = registration::load(&dir.path().join("registration.yaml")).unwrap();
        let config = with_homeserver(config, &hs.url());
        Self::run(dir, hs, humans, st2, config, registration, listener).await
    }

    async fn run(
        dir: tempfile::TempDir,
        hs: HomeserverDouble,
        humans: Vec<HumanDevice>,
        st2: Option<St2Double>,
        config: Config,
        registration: ruma::api::appservice::Registration,
        listener: tokio::net::TcpListener,
    ) -> TestApp {
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hs_token = registration.hs_token.clone();
        hs.set_appservice(&url, &hs_token);
        let encryption = config.encryption.enabled;
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
            humans,
            encryption,
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

    /// Pushes `events` as Synapse would: with encryption on, the transaction also carries the
    /// to-device messages waiting for the bot, its one-time-key counts and device list changes
    /// (MSC2409/MSC3202, which the registration asks for then).
    pub async fn push(&self, txn_id: &str, events: Vec<Value>) -> (u16, Value) {
        let body = if self.encryption {
            self.hs.appservice_transaction(events)
        } else {
            st2_matrix_testkit::homeserver::events::transaction(events)
        };
        self.push_body(txn_id, &body).await
    }

    /// Pushes `events` alone, as a homeserver without the MSC2409/MSC3202 extensions does.
    pub async fn push_without_extensions(&self, txn_id: &str, events: Vec<Value>) -> (u16, Value) {
        let body = st2_matrix_testkit::homeserver::events::transaction(events);
        self.push_body(txn_id, &body).await
    }

    /// Pushes a transaction body built by the test.
    pub async fn push_body(&self, txn_id: &str, body: &Value) -> (u16, Value) {
        self.push_raw(
            txn_id,
            Some(&self.hs_token),
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    /// Pushes `body` as transaction `txn_id` with `token`; the status and JSON answer.
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

    /// `GET path` on the bridge (with `token`); the status and the JSON (or text) answer.
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

    /// Waits until `room` has received `n` messages, and returns them as its members read them
    /// (see [`TestApp::read`]).
    pub async fn wait_for_messages(&self, room: &str, n: usize) -> Vec<Sent> {
        poll::wait_until(WAIT, &format!("{n} message(s) in {room}"), || async {
            let sent = self.read(room).await;
            (sent.len() >= n).then_some(sent)
        })
        .await
    }

    /// The messages sent to `room`, as its members read them: each `m.room.encrypted` one is
    /// decrypted by the first of [`TestApp::humans`] that can (its `event_type` and `content`
    /// are then the plain event's); what none can read stays as sent.
    pub async fn read(&self, room: &str) -> Vec<Sent> {
        let mut sent = self.hs.sent_to(room);
        for message in &mut sent {
            if message.event_type != "m.room.encrypted" {
                continue;
            }
            for human in &self.humans {
                if let Ok(plain) = human.decrypt(message).await {
                    message.event_type = plain["type"].as_str().unwrap_or_default().to_owned();
                    message.content = plain["content"].clone();
                    break;
                }
            }
        }
        sent
    }

    /// Waits until the bridge has sent to `room` an event for which `f` holds, and returns the
    /// first; on timeout, fails naming `what` and listing everything it sent there.
    pub async fn wait_for_sent(&self, room: &str, what: &str, f: impl Fn(&Sent) -> bool) -> Sent {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(found) = self.hs.sent_to(room).into_iter().find(|s| f(s)) {
                return found;
            }
            if std::time::Instant::now() > deadline {
                let said: Vec<String> = self
                    .hs
                    .sent_to(room)
                    .iter()
                    .map(|s| format!("{} {}", s.event_type, s.content))
                    .collect();
                panic!(
                    "no {what} within {WAIT:?}; the bot sent:\n{}",
                    said.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

    /// How many times the bridge has tried to deliver a message so far: sends, the check of a
    /// room's encryption that comes before the first send to it, and the look-up of a send
    /// in doubt that comes before its re-send.
    pub fn send_attempts(&self) -> usize {
        self.hs
            .requests()
            .iter()
            .filter(|r| {
                r.path.contains("/send/")
                    || r.path.contains("/state/m.room.encryption")
                    || r.path.ends_with("/messages")
            })
            .count()
    }

    /// Waits until the bridge has made `n` more delivery attempts than `since` (a
    /// [`TestApp::send_attempts`] count): the evidence that sends were tried (and, while the
    /// homeserver is down, failed), instead of sleeping and hoping they were.
    pub async fn wait_for_send_attempts(&self, since: usize, n: usize) {
        poll::wait_until(WAIT, &format!("{n} more delivery attempts"), || async {
            (self.send_attempts() >= since + n).then_some(())
        })
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
    let msc3202 = config.encryption.enabled;
    registration::write(
        &registration,
        &dir.join("registration.yaml"),
        false,
        msc3202,
    )
    .unwrap();
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
    let msc3202 = config.encryption.enabled;
    registration::write(&registration, &path, true, msc3202).unwrap();
    (config, (), listener)
}

fn with_homeserver(mut config: Config, url: &str) -> Config {
    config.homeserver.url = url.parse().unwrap();
    config
}
