//! A real Synapse: installed from PyPI by `scripts/synapse.sh`, configured in a temp dir,
//! started as a child process, stopped on drop. One serves the whole test run; a test that
//! must stop its homeserver gets one of its own (see `PrivateSynapse`).
//!
//! Synapse reads appservice registrations only when it starts, so the harness creates every
//! bridge slot's registration first and hands the list to [`Synapse::start`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha1::Sha1;

use super::process::{log_tail, spawn_logged, terminate_blocking};
use super::repo_root;

/// The Synapse release the harness is written against (the one `scripts/synapse.sh` installs).
const SYNAPSE_VERSION: &str = "1.163.2";

/// Matrix server name of the test homeserver; user ids end in `:localhost`.
pub const SERVER_NAME: &str = "localhost";

/// How long a fresh Synapse may take to answer `/health` (≈ 4 s measured; CI can be slower).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A Synapse child process and its data directory.
pub struct Synapse {
    /// `None` while stopped (see [`Synapse::stop`]).
    child: Option<Child>,
    /// Where homeserver.yaml, overrides.yaml, the SQLite DB and the logs live.
    dir: PathBuf,
    /// Client-server API base URL, e.g. `http://127.0.0.1:43123`.
    url: String,
    registration_shared_secret: String,
}

/// What tests need to talk to the homeserver: cheap to clone into every trial.
#[derive(Clone, Debug)]
pub struct Homeserver {
    /// Client-server API base URL.
    pub url: String,
    registration_shared_secret: String,
}

impl Synapse {
    /// Installs Synapse if needed, writes its config into `dir` (listening on `port`, loading
    /// the appservice `registrations`), starts it and waits until `/health` answers.
    pub fn start(dir: &Path, port: u16, registrations: &[PathBuf]) -> anyhow::Result<Synapse> {
        let venv = venv_dir();
        ensure_installed(&venv)?;
        std::fs::create_dir_all(dir)?;
        let python = venv.join("bin/python");

        let t0 = Instant::now();
        let status = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "--server-name", SERVER_NAME])
            .arg("--config-path")
            .arg(dir.join("homeserver.yaml"))
            .arg("--data-directory")
            .arg(dir)
            .arg("--config-directory")
            .arg(dir)
            .args(["--generate-config", "--report-stats=no"])
            .current_dir(dir)
            .output()
            .context("running synapse --generate-config")?;
        if !status.status.success() {
            bail!(
                "synapse --generate-config failed ({}):\n{}",
                status.status,
                String::from_utf8_lossy(&status.stderr)
            );
        }

        let registration_shared_secret = random_hex(24);
        let url = format!("http://127.0.0.1:{port}");
        std::fs::write(
            dir.join("overrides.yaml"),
            overrides(port, &registration_shared_secret, registrations),
        )?;

        let mut synapse = Synapse {
            child: None,
            dir: dir.to_owned(),
            url,
            registration_shared_secret,
        };
        synapse.spawn()?;
        eprintln!(
            "e2e: Synapse {SYNAPSE_VERSION} ready at {} after {:.1}s (config + start), {} appservice slots",
            synapse.url,
            t0.elapsed().as_secs_f64(),
            registrations.len()
        );
        Ok(synapse)
    }

    /// Stops Synapse (SIGTERM, then SIGKILL after 10 s). Its data directory stays as it is:
    /// [`Synapse::start_again`] brings back the same users, rooms and appservices.
    ///
    /// Blocking, like [`Synapse::start`]: from a test, call it in `spawn_blocking`.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            terminate_blocking(&mut child, Duration::from_secs(10)).context("stopping Synapse")?;
        }
        Ok(())
    }

    /// Starts a stopped Synapse again with the config and data of its first start, and waits
    /// until `/health` answers. Blocking, like [`Synapse::start`].
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("Synapse at {} is already running", self.url);
        }
        let t0 = Instant::now();
        self.spawn()?;
        eprintln!(
            "e2e: Synapse at {} back after {:.1}s",
            self.url,
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Path of Synapse's own log, for a failing test's message.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("homeserver.log")
    }

    /// Spawns Synapse from the config files in `dir` and waits until it is healthy.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(venv_dir().join("bin/python"));
        command
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(self.dir.join("homeserver.yaml"))
            .arg("-c")
            .arg(self.dir.join("overrides.yaml"))
            .current_dir(&self.dir);
        self.child = Some(spawn_logged(&mut command, &self.dir.join("stdout.log"))?);
        self.wait_healthy()
    }

    /// What the trials need to reach this homeserver.
    pub fn homeserver(&self) -> Homeserver {
        Homeserver {
            url: self.url.clone(),
            registration_shared_secret: self.registration_shared_secret.clone(),
        }
    }

    /// Polls `/health` until it says `OK`; fails early with the logs if Synapse exits.
    fn wait_healthy(&mut self) -> anyhow::Result<()> {
        // A runtime of its own: this runs in `main`, before any trial, or in a test's
        // `spawn_blocking`, outside any async context either way.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = reqwest::Client::new();
        let health = format!("{}/health", self.url);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().context("Synapse is not running")?;
            if let Some(status) = child.try_wait()? {
                bail!(
                    "Synapse exited with {status} before it was healthy\n{}",
                    self.log_tails()
                );
            }
            let ok = rt.block_on(async {
                match client
                    .get(&health)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                {
                    Ok(resp) => {
                        resp.status().is_success() && resp.text().await.is_ok_and(|t| t == "OK")
                    }
                    Err(_) => false,
                }
            });
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "Synapse not healthy after {START_TIMEOUT:?}\n{}",
                    self.log_tails()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The end of Synapse's logs, for error messages.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for name in ["stdout.log", "homeserver.log"] {
            let path = self.dir.join(name);
            let _ = write!(
                out,
                "--- {} (tail) ---\n{}\n",
                path.display(),
                log_tail(&path, 40)
            );
        }
        out
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Err(e) = terminate_blocking(&mut child, Duration::from_secs(10))
        {
            eprintln!("e2e: could not stop Synapse (pid {}): {e:#}", child.id());
        }
    }
}

/// The reply of the shared-secret registration API.
#[derive(Debug, Deserialize)]
pub struct Registered {
    /// The new user's full id, e.g. `@alice-x1y2:localhost`.
    pub user_id: String,
}

impl Homeserver {
    /// Creates an ordinary (non-admin) user with Synapse's shared-secret admin API, which
    /// works while open registration is off.
    pub async fn register_user(
        &self,
        localpart: &str,
        password: &str,
    ) -> anyhow::Result<Registered> {
        #[derive(Deserialize)]
        struct Nonce {
            nonce: String,
        }
        let http = reqwest::Client::new();
        let endpoint = format!("{}/_synapse/admin/v1/register", self.url);
        let Nonce { nonce } = http
            .get(&endpoint)
            .send()
            .await?
            .error_for_status()
            .context("GET nonce")?
            .json()
            .await?;
        // mac = hex(HMAC-SHA1(secret, nonce NUL user NUL password NUL "notadmin"))
        let mut mac = Hmac::<Sha1>::new_from_slice(self.registration_shared_secret.as_bytes())
            .expect("HMAC takes keys of any length");
        for (i, part) in [nonce.as_str(), localpart, password, "notadmin"]
            .iter()
            .enumerate()
        {
            if i > 0 {
                mac.update(b"\0");
            }
            mac.update(part.as_bytes());
        }
        let body = serde_json::json!({
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": false,
            "mac": hex::encode(mac.finalize().into_bytes()),
        });
        let resp = http.post(&endpoint).json(&body).send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("registering {localpart}: {status} {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }
}

/// The venv Synapse runs from: `$SYNAPSE_VENV`, or `<repo>/.test-deps/synapse-venv`.
fn venv_dir() -> PathBuf {
    std::env::var_os("SYNAPSE_VENV").map_or_else(
        || repo_root().join(".test-deps/synapse-venv"),
        PathBuf::from,
    )
}

/// Runs `scripts/synapse.sh install` unless Synapse is already importable from `venv`.
fn ensure_installed(venv: &Path) -> anyhow::Result<()> {
    let importable = Command::new(venv.join("bin/python"))
        .args(["-c", "import synapse"])
        .output()
        .is_ok_and(|o| o.status.success());
    if importable {
        return Ok(());
    }
    let script = repo_root().join("scripts/synapse.sh");
    eprintln!(
        "e2e: Synapse is not installed in {}; running {} install",
        venv.display(),
        script.display()
    );
    let t0 = Instant::now();
    // Inherit stdout/stderr so the (one-time, ~45 s) install shows its progress.
    let status = Command::new("bash")
        .arg(&script)
        .arg("install")
        .arg(venv)
        .env("SYNAPSE_VERSION", SYNAPSE_VERSION)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!("{} install failed ({status})", script.display());
    }
    eprintln!(
        "e2e: Synapse installed in {:.0}s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The test-specific part of Synapse's config; Synapse merges `-c` files per top-level key,
/// later files winning.
fn overrides(port: u16, shared_secret: &str, registrations: &[PathBuf]) -> String {
    let mut yaml = format!(
        r#"public_baseurl: "http://127.0.0.1:{port}/"
listeners:
  - port: {port}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]      # no 'federation' resource: nothing federates
        compress: false
# Closed federation: talk to no other server, ask no key server.
federation_domain_whitelist: []
trusted_key_servers: []
suppress_key_server_warning: true
report_stats: false
bcrypt_rounds: 4                     # test-only: fast password hashing
presence:
  enabled: false
enable_registration: false           # users come from the shared-secret admin API only
registration_shared_secret: "{shared_secret}"
# Tests create users, rooms, invites and messages far faster than Synapse's stock limits allow
# (e.g. 5 invites per invitee, 0.2 messages/s): lift every per-user limit.
rc_message:            {{per_second: 1000, burst_count: 10000}}
rc_registration:       {{per_second: 1000, burst_count: 10000}}
rc_room_creation:      {{per_second: 1000, burst_count: 10000}}
rc_login:
  address:             {{per_second: 1000, burst_count: 10000}}
  account:             {{per_second: 1000, burst_count: 10000}}
  failed_attempts:     {{per_second: 1000, burst_count: 10000}}
rc_joins:
  local:               {{per_second: 1000, burst_count: 10000}}
  remote:              {{per_second: 1000, burst_count: 10000}}
rc_joins_per_room:     {{per_second: 1000, burst_count: 10000}}
rc_invites:
  per_room:            {{per_second: 1000, burst_count: 10000}}
  per_user:            {{per_second: 1000, burst_count: 10000}}
  per_issuer:          {{per_second: 1000, burst_count: 10000}}
rc_admin_redaction:    {{per_second: 1000, burst_count: 10000}}
rc_presence:
  per_user:            {{per_second: 1000, burst_count: 10000}}
rc_profile:            {{per_second: 1000, burst_count: 10000}}
rc_reports:            {{per_second: 1000, burst_count: 10000}}
rc_media_create:       {{per_second: 1000, burst_count: 10000}}
rc_delayed_event_mgmt: {{per_second: 1000, burst_count: 10000}}
# The bot's end-to-end encryption: Synapse 1.163 sends an appservice no to-device events (room
# keys) without MSC2409, and no device list changes or one-time-key counts without MSC3202.
# (`/sync` is not an option: the appservice's own user cannot sync.) The registrations ask for
# them too (`receive_ephemeral`, `org.matrix.msc3202`).
experimental_features:
  msc2409_to_device_messages_enabled: true
  msc3202_transaction_extensions: true
app_service_config_files:
"#
    );
    for path in registrations {
        // JSON string syntax is valid YAML and escapes whatever the temp path contains.
        let _ = writeln!(
            yaml,
            "  - {}",
            serde_json::Value::from(path.display().to_string())
        );
    }
    yaml
}

/// `bytes` random bytes as lowercase hex (the shared secret; hex needs no YAML quoting care).
fn random_hex(bytes: usize) -> String {
    let raw: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(raw)
}
