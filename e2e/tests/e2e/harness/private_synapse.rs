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
///
/// Synapse runs as a child of a thread of its own (the keeper), which lives as long as this
/// handle: children are spawned with `PR_SET_PDEATHSIG` (see [`super::process`]), so a child
/// of a short-lived thread, such as one of tokio's blocking pool (which exit after 10 s idle),
/// would be killed with it.
pub struct PrivateSynapse {
    /// Jobs for the keeper thread, which owns the Synapse; `None` once dropped.
    keeper: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    homeserver: Homeserver,
    slots: SlotPool,
    bin: PathBuf,
    /// The test's list of logs to print if it fails.
    logs: Arc<Mutex<Vec<PathBuf>>>,
    dir: Option<tempfile::TempDir>,
}

/// Work for the keeper thread, on the Synapse it owns.
type Job = Box<dyn FnOnce(&mut Synapse) + Send>;

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
        let (started, outcome) = tokio::sync::oneshot::channel();
        let (keeper, jobs) = std::sync::mpsc::channel::<Job>();
        let thread = {
            let dir = dir.path().to_owned();
            let bin = bin.clone();
            std::thread::Builder::new()
                .name("private-synapse".into())
                .spawn(move || {
                    let mut synapse = match synapse_with_slots(&dir, slot_count, &bin) {
                        Ok((synapse, slots)) => {
                            let _ =
                                started.send(Ok((synapse.homeserver(), synapse.log_path(), slots)));
                            synapse
                        }
                        Err(e) => {
                            let _ = started.send(Err(e));
                            return;
                        }
                    };
                    // Until the handle is dropped; then Synapse is stopped here, by its Drop.
                    while let Ok(job) = jobs.recv() {
                        job(&mut synapse);
                    }
                })
                .context("spawning the private Synapse's thread")?
        };
        let (homeserver, log, slots) = outcome
            .await
            .context("the private Synapse's thread ended while starting it")??;
        logs.lock().expect("log list lock").push(log);
        Ok(PrivateSynapse {
            keeper: Some(keeper),
            thread: Some(thread),
            homeserver,
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

    /// Runs a blocking operation on the Synapse, on its keeper thread.
    async fn blocking(
        &mut self,
        operation: fn(&mut Synapse) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let (done, outcome) = tokio::sync::oneshot::channel();
        self.keeper
            .as_ref()
            .context("the private Synapse is gone")?
            .send(Box::new(move |synapse: &mut Synapse| {
                let _ = done.send(operation(synapse));
            }))
            .map_err(|_| anyhow::anyhow!("the private Synapse's thread has ended"))?;
        outcome
            .await
            .context("the private Synapse's thread ended during a stop or start")?
    }
}

impl Drop for PrivateSynapse {
    fn drop(&mut self) {
        // Synapse stops (on its thread) before the temp dir holding its data goes.
        drop(self.keeper.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        keep_dir_if_asked(&mut self.dir);
    }
}
