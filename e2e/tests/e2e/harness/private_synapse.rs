//! A Synapse of one test's own, with bridge slots of its own, which the test may stop and
//! start again.
//!
//! The run's Synapse serves every test at once, so a test about a homeserver outage cannot stop
//! it. Such a test asks its [`Ctx`](super::Ctx) for a [`PrivateSynapse`] instead: the same
//! start-up code as the run's (config, appservice registrations written before the start), in a
//! temp dir of its own, on ports of its own. Its SQLite database stays in that dir across a stop
//! and a start, so users, rooms and memberships survive, as they do in production.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use super::bridge::Bridge;
use super::slots::SlotPool;
use super::synapse::{Homeserver, Synapse};
use super::user::User;
use super::{keep_dir_if_asked, synapse_with_slots};

/// A test's own Synapse and its bridge slots. Dropping it stops Synapse and deletes its files
/// (drop it after the bridges and users that use it: declare it first).
pub struct PrivateSynapse {
    // Field order is drop order: Synapse stops before the temp dir holding its data goes.
    /// `None` only while a blocking stop or start holds it.
    synapse: Option<Synapse>,
    homeserver: Homeserver,
    slots: SlotPool,
    bin: PathBuf,
    /// The test's list of logs to print if it fails.
    logs: Arc<Mutex<Vec<PathBuf>>>,
    dir: Option<tempfile::TempDir>,
}

impl PrivateSynapse {
    /// Configures and starts a Synapse with `slot_count` bridge slots for bridges run from
    /// `bin`; its log joins `logs`.
    pub(super) async fn start(
        bin: PathBuf,
        slot_count: usize,
        logs: Arc<Mutex<Vec<PathBuf>>>,
    ) -> anyhow::Result<PrivateSynapse> {
        let dir = tempfile::Builder::new()
            .prefix("st2-matrix-e2e-private-")
            .tempdir()
            .context("creating the private Synapse's temp dir")?;
        let (synapse, slots) = {
            let dir = dir.path().to_owned();
            let bin = bin.clone();
            tokio::task::spawn_blocking(move || synapse_with_slots(&dir, slot_count, &bin))
                .await
                .context("the private Synapse's start-up task")??
        };
        logs.lock().expect("log list lock").push(synapse.log_path());
        Ok(PrivateSynapse {
            homeserver: synapse.homeserver(),
            synapse: Some(synapse),
            slots,
            bin,
            logs,
            dir: Some(dir),
        })
    }

    /// A bridge on one of this Synapse's slots (not started: patch its config first if needed).
    pub fn bridge(&self) -> Bridge {
        let slot = self.slots.claim();
        self.logs
            .lock()
            .expect("log list lock")
            .push(slot.log_path());
        Bridge::new(self.bin.clone(), slot)
    }

    /// A new human user on this Synapse, logged in and syncing.
    pub async fn user(&self, name: &str) -> anyhow::Result<User> {
        User::register(&self.homeserver, name).await
    }

    /// Stops Synapse (SIGTERM), keeping its data. Everyone talking to it (bridges, users'
    /// syncs) gets connection errors until [`start_again`](PrivateSynapse::start_again).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.blocking(Synapse::stop).await
    }

    /// Starts the stopped Synapse again on the same port and data; returns once it is healthy.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.blocking(Synapse::start_again).await
    }

    /// Runs a blocking operation on the Synapse off the test's async workers.
    async fn blocking(
        &mut self,
        operation: fn(&mut Synapse) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut synapse = self
            .synapse
            .take()
            .context("the private Synapse was lost by an earlier failed stop or start")?;
        let (synapse, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = operation(&mut synapse);
            (synapse, outcome)
        })
        .await
        .context("the private Synapse's stop or start task")?;
        self.synapse = Some(synapse);
        outcome
    }
}

impl Drop for PrivateSynapse {
    fn drop(&mut self) {
        keep_dir_if_asked(&mut self.dir);
    }
}
