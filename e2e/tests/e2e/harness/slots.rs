//! Appservice slots: one per bridge instance a test may start.
//!
//! Synapse loads appservice registrations only at start-up, yet every test wants a bridge of
//! its own (own database, own bot, own namespace, free to be killed). So before Synapse starts,
//! the harness prepares a pool of slots: slot k has a free port, a directory, a bridge config
//! and the registration the bridge binary generated from that config. Synapse is started with
//! all of them; each test then claims unused slots.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, bail, ensure};
use serde::Deserialize;

use super::process::EnvClearSt2Matrix;
use super::synapse::SERVER_NAME;

/// One prepared bridge instance: its port, directory, config and registration.
#[derive(Debug)]
pub struct Slot {
    /// Position in the pool (part of every per-slot name).
    pub index: usize,
    /// Holds `config.toml`, `registration.yaml`, the SQLite database and `bridge.log`.
    pub dir: PathBuf,
    /// Where the bridge listens (`[appservice] bind`) and Synapse pushes transactions.
    pub port: u16,
    /// The config as first written; tests may change anything but `[appservice]`.
    pub config: toml::Table,
    /// What `generate-registration` wrote, as Synapse loaded it.
    pub registration: Registration,
}

/// The fields of `registration.yaml` the harness uses.
#[derive(Clone, Debug, Deserialize)]
pub struct Registration {
    /// Appservice id (also the ping path segment).
    pub id: String,
    /// Where Synapse pushes transactions.
    pub url: String,
    /// The token the bridge uses towards Synapse (a secret: tests check logs never show it).
    pub as_token: String,
    /// The token Synapse presents to the bridge.
    pub hs_token: String,
    /// Localpart of the bot user.
    pub sender_localpart: String,
    /// Whether Synapse is to push ephemeral events, to-device ones (room keys) among them.
    #[serde(default)]
    pub receive_ephemeral: bool,
    /// Whether Synapse is to add device list changes and one-time-key counts to transactions
    /// (MSC3202).
    #[serde(default, rename = "org.matrix.msc3202")]
    pub msc3202: bool,
}

impl Slot {
    /// Path of the bridge config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// Path of the appservice registration file.
    pub fn registration_path(&self) -> PathBuf {
        self.dir.join("registration.yaml")
    }

    /// Path of the file the bridge's stdout and stderr are appended to.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("bridge.log")
    }
}

/// The slots not yet claimed by a test.
pub struct SlotPool {
    free: Mutex<VecDeque<Slot>>,
    registrations: Vec<PathBuf>,
}

impl SlotPool {
    /// Prepares one slot per port in `ports` under `root`, running `bin generate-registration`
    /// for each, for a homeserver at `homeserver_url`.
    pub fn create(
        ports: &[u16],
        root: &Path,
        bin: &Path,
        homeserver_url: &str,
    ) -> anyhow::Result<SlotPool> {
        let mut free = VecDeque::with_capacity(ports.len());
        for (index, &port) in (1..).zip(ports) {
            free.push_back(
                Slot::create(index, port, root, bin, homeserver_url)
                    .with_context(|| format!("preparing slot {index}"))?,
            );
        }
        let registrations = free.iter().map(Slot::registration_path).collect();
        Ok(SlotPool {
            free: Mutex::new(free),
            registrations,
        })
    }

    /// Every slot's registration file, for Synapse's `app_service_config_files`.
    pub fn registration_files(&self) -> &[PathBuf] {
        &self.registrations
    }

    /// Takes an unused slot; panics when the pool is exhausted (the run's pool holds one slot
    /// per test plus two spares, so a test may use up to three bridges only if others use one;
    /// a private Synapse's pool holds as many as its test asked for).
    pub fn claim(&self) -> Slot {
        self.free
            .lock()
            .expect("slot pool lock")
            .pop_front()
            .expect(
                "no free appservice slot left: the run's pool has one per test plus 2 spares, \
             a private Synapse's the number its test asked for",
            )
    }
}

impl Slot {
    fn create(
        index: usize,
        port: u16,
        root: &Path,
        bin: &Path,
        homeserver_url: &str,
    ) -> anyhow::Result<Slot> {
        let dir = root.join(format!("slot-{index}"));
        std::fs::create_dir_all(&dir)?;
        let config = base_config(index, &dir, port, homeserver_url);
        let slot_config_path = dir.join("config.toml");
        std::fs::write(&slot_config_path, toml::to_string(&config)?)?;

        let registration_path = dir.join("registration.yaml");
        let out = Command::new(bin)
            .arg("generate-registration")
            .arg("--config")
            .arg(&slot_config_path)
            .arg("--output")
            .arg(&registration_path)
            .env_clear_st2_matrix()
            .output()
            .with_context(|| format!("running {} generate-registration", bin.display()))?;
        if !out.status.success() {
            bail!(
                "{} generate-registration --config {} failed ({}):\n{}{}",
                bin.display(),
                slot_config_path.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let yaml = std::fs::read_to_string(&registration_path)
            .with_context(|| format!("reading the generated {}", registration_path.display()))?;
        let registration: Registration = serde_saphyr::from_str(&yaml)
            .with_context(|| format!("parsing the generated {}", registration_path.display()))?;
        // The registration must describe this slot, or Synapse would push elsewhere.
        ensure!(
            registration.url.trim_end_matches('/') == format!("http://127.0.0.1:{port}"),
            "registration url {} does not match the slot's [appservice] url",
            registration.url
        );
        ensure!(
            registration.id == config["appservice"]["id"].as_str().unwrap_or_default(),
            "registration id {} does not match the config",
            registration.id
        );
        Ok(Slot {
            index,
            dir,
            port,
            config,
            registration,
        })
    }
}

/// The bridge config of slot `index`: every name that must be unique per appservice (id, bot,
/// user namespace) carries the index.
fn base_config(index: usize, dir: &Path, port: u16, homeserver_url: &str) -> toml::Table {
    let text = format!(
        r#"
[homeserver]
url = "{homeserver_url}"
server_name = "{SERVER_NAME}"

[appservice]
id = "st2-matrix-e2e-{index}"
bind = "127.0.0.1:{port}"
url = "http://127.0.0.1:{port}"
registration = {registration}
bot_localpart = "st2bot{index}"
bot_displayname = "StackStorm"
user_prefix = "st2_{index}_"

[database]
url = {database}

[bridge]
command_prefix = "!st2"
invite_allow = ["*:{SERVER_NAME}"]

[log]
format = "text"
filter = "info,st2_matrix=debug"
"#,
        registration = toml::Value::from(dir.join("registration.yaml").display().to_string()),
        database = toml::Value::from(format!("sqlite://{}", dir.join("st2-matrix.db").display())),
    );
    text.parse().expect("the base config is valid TOML")
}
