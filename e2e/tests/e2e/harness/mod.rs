//! The e2e harness: one real Synapse per run, a pool of bridge slots, and per-test contexts
//! (which can also start a Synapse of the test's own, for a test that stops its homeserver).
//!
//! [`main`] is the test binary's entry point (libtest-mimic, so `cargo test` filters, `--list`
//! and `--test-threads` work as usual). It starts Synapse only if at least one test will run,
//! runs the tests in parallel, each on its own tokio runtime, then stops Synapse and deletes
//! its temp dir, whatever the outcome.
//!
//! Tests that send to-device messages (room keys: anything in an encrypted room) take turns;
//! see [`main`] for why.

/// The bridge under test as a child process.
pub mod bridge;
/// Headless Chromium over WebDriver, for the pages the bridge serves.
pub mod browser;
/// Alice in a room with the bot: the arrangement most tests start from.
pub mod conversation;
/// A second device of a user whose room keys a test holds back.
pub mod device;
/// Accessors for the raw JSON events tests look at.
pub mod events;
/// A Synapse of a test's own, which it may stop and start.
pub mod private_synapse;
/// Spawning, signalling and reading the logs of child processes.
pub mod process;
/// A proxy in front of Synapse that can lose its answers.
pub mod proxy;
/// Appservice slots registered with Synapse before it starts.
pub mod slots;
/// The StackStorm double and the aliases tests give it.
pub mod stackstorm;
/// The Synapse homeserver.
pub mod synapse;
/// A human user on matrix-sdk.
pub mod user;
/// Polling with deadlines.
pub mod wait;

use std::fmt::Write as _;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use libtest_mimic::{Arguments, Failed, Trial};

use bridge::Bridge;
use private_synapse::PrivateSynapse;
use process::{free_ports, log_tail};
use slots::SlotPool;
use synapse::{Homeserver, Synapse};
use user::User;

/// A test: an async function of its [`Ctx`].
pub type TestFn = fn(Ctx) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// No test may take longer than this; a hung one fails instead of stalling the run.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The limit of the tests that push hundreds of messages ([`LONG_TESTS`]).
const LONG_TIMEOUT: Duration = Duration::from_secs(360);

/// Tests (name prefixes) that move hundreds of messages through Synapse and get
/// [`LONG_TIMEOUT`]: the chaos test (300 commands through restarts) and the 800-message burst,
/// which on 2 busy cores can take minutes.
const LONG_TESTS: &[&str] = &["chaos::", "in_doubt_sends::eight_hundred_messages"];

/// Spare slots beyond one per test, for tests that need a second bridge.
const SPARE_SLOTS: usize = 2;

/// Tests run concurrently unless `--test-threads` says otherwise. They mostly wait on other
/// processes, so more of them than the machine's 2 cores keeps the run short.
const DEFAULT_TEST_THREADS: usize = 4;

/// The repository root (the workspace this package belongs to).
pub fn repo_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        // Canonical only so that paths in messages read well; the raw form works as well.
        root.canonicalize().unwrap_or_else(|_| root.to_owned())
    })
}

/// What a test gets: the homeserver, and bridges and users on demand.
pub struct Ctx {
    shared: Arc<Shared>,
    /// Log files of the bridges (and private Synapses) this test used, printed when it fails.
    logs: Arc<Mutex<Vec<PathBuf>>>,
}

/// State shared by all tests of a run.
struct Shared {
    homeserver: Homeserver,
    slots: SlotPool,
    bin: PathBuf,
}

impl Ctx {
    /// A bridge on a slot of its own (not started: patch its config first if needed).
    pub fn bridge(&self) -> Bridge {
        let slot = self.shared.slots.claim();
        self.logs
            .lock()
            .expect("log list lock")
            .push(slot.log_path());
        Bridge::new(self.shared.bin.clone(), slot)
    }

    /// A new human user named `<name>-<random>`, logged in and syncing.
    pub async fn user(&self, name: &str) -> anyhow::Result<User> {
        User::register(&self.shared.homeserver, name).await
    }

    /// A Synapse of this test's own with `slot_count` bridge slots, for a test that stops its
    /// homeserver: stopping the run's Synapse would break every test running beside it.
    /// Starting one takes a few seconds of the test's time.
    pub async fn private_synapse(&self, slot_count: usize) -> anyhow::Result<PrivateSynapse> {
        PrivateSynapse::start(self.shared.bin.clone(), slot_count, Arc::clone(&self.logs)).await
    }
}

/// Starts a Synapse in `dir/synapse` with `slot_count` bridge slots (in `dir/slots`) registered
/// with it. Blocking: Synapse takes seconds to configure and start.
fn synapse_with_slots(
    dir: &Path,
    slot_count: usize,
    bin: &Path,
) -> anyhow::Result<(Synapse, SlotPool)> {
    let mut ports = free_ports(slot_count + 1)?;
    let synapse_port = ports.pop().expect("one port per slot, plus Synapse's");
    let homeserver_url = format!("http://127.0.0.1:{synapse_port}");
    let slots = SlotPool::create(&ports, &dir.join("slots"), bin, &homeserver_url)?;
    let synapse = Synapse::start(
        &dir.join("synapse"),
        synapse_port,
        slots.registration_files(),
    )?;
    Ok((synapse, slots))
}

/// Held by the test that is having its turn; see [`main`].
static TO_DEVICE_TURN: Mutex<()> = Mutex::new(());

/// Runs the `tests` (name, function) under libtest-mimic; see the module doc.
///
/// Tests whose name starts with one of `taking_turns` run one at a time (beside the others),
/// and their wait for a turn does not count towards their timeout. They are the tests that
/// send to-device messages, i.e. room keys, which the bot must receive through Synapse's
/// transactions: Synapse 1.163 loses some of those when to-device messages are sent at the
/// same moment. It tells every appservice about each to-device message in a background task,
/// and records "sent up to stream position N" for an appservice even when the message is not
/// for it; when the task for a later message overtakes the one for an earlier message to the
/// bot, the earlier one is never sent (`_notify_interested_services_ephemeral` in
/// `synapse/handlers/appservice.py`). With this run's dozens of appservices and tests in
/// parallel, that lost a room key in about one run in three, and the bot could never read the
/// room again with that key. Taken in turns, a test only races its own messages, as a bridge
/// on a homeserver with a few users at a time would.
pub fn main(tests: Vec<(&'static str, TestFn)>, taking_turns: &[&str]) -> ExitCode {
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = Some(DEFAULT_TEST_THREADS);
    }
    // Trials need the run's shared state, which exists only once Synapse is up; they reach
    // it through this cell, filled after we know that some trial will actually run.
    let shared: Arc<OnceLock<Arc<Shared>>> = Arc::new(OnceLock::new());
    let trials: Vec<Trial> = tests
        .into_iter()
        .map(|(name, test)| {
            let shared = Arc::clone(&shared);
            let takes_turn = taking_turns.iter().any(|prefix| name.starts_with(prefix));
            let timeout = if LONG_TESTS.iter().any(|prefix| name.starts_with(prefix)) {
                LONG_TIMEOUT
            } else {
                TEST_TIMEOUT
            };
            Trial::test(name, move || {
                // Before the test's runtime and timeout exist: waiting is not the test's time.
                let _turn = takes_turn.then(|| {
                    TO_DEVICE_TURN
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                });
                run_trial(shared.get().expect("the run was set up"), test, timeout)
            })
        })
        .collect();

    let to_run = trials
        .iter()
        .filter(|t| !args.is_filtered_out(t) && !args.is_ignored(t))
        .count();
    if args.list || to_run == 0 {
        return libtest_mimic::run(&args, trials).exit_code();
    }

    let t0 = Instant::now();
    let run = match Run::set_up(to_run + SPARE_SLOTS) {
        Ok(run) => run,
        Err(e) => {
            eprintln!("e2e: could not set up the end-to-end run: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let _ = shared.set(Arc::clone(&run.shared));
    let conclusion = libtest_mimic::run(&args, trials);
    drop(run);
    eprintln!(
        "e2e: whole run (set-up, tests, tear-down) took {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    conclusion.exit_code()
}

/// Everything one run owns. Field order is drop order: Synapse stops before the temp dir
/// holding its data (and the slots') is deleted.
struct Run {
    _synapse: Synapse,
    shared: Arc<Shared>,
    dir: Option<tempfile::TempDir>,
}

impl Run {
    fn set_up(slot_count: usize) -> anyhow::Result<Run> {
        let bin = bridge::binary()?;
        let dir = tempfile::Builder::new()
            .prefix("st2-matrix-e2e-")
            .tempdir()
            .context("creating the run's temp dir")?;
        let (synapse, slots) = synapse_with_slots(dir.path(), slot_count, &bin)?;
        let shared = Arc::new(Shared {
            homeserver: synapse.homeserver(),
            slots,
            bin,
        });
        Ok(Run {
            _synapse: synapse,
            shared,
            dir: Some(dir),
        })
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        keep_dir_if_asked(&mut self.dir);
    }
}

/// With `E2E_KEEP_DIR=1`, takes `dir` out so it is not deleted: Synapse's and the bridges'
/// files stay for a post-mortem, and their path is printed.
fn keep_dir_if_asked(dir: &mut Option<tempfile::TempDir>) {
    if std::env::var_os("E2E_KEEP_DIR").is_some_and(|v| v == "1")
        && let Some(dir) = dir.take()
    {
        eprintln!("e2e: keeping {}", dir.keep().display());
    }
}

/// Runs one test on a runtime of its own; a failure's message ends with the tails of the
/// logs of the bridges (and private Synapses) it used.
fn run_trial(shared: &Arc<Shared>, test: TestFn, timeout: Duration) -> Result<(), Failed> {
    let logs = Arc::new(Mutex::new(Vec::new()));
    let ctx = Ctx {
        shared: Arc::clone(shared),
        logs: Arc::clone(&logs),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failed::from(format!("building the test's runtime: {e}")))?;
    // The timeout's timer must be created inside the runtime, hence the async block.
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(async { tokio::time::timeout(timeout, test(ctx)).await })
    }));
    // Users' sync tasks may sit in a long-poll; don't wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));

    let failure = match outcome {
        Ok(Ok(Ok(()))) => return Ok(()),
        Ok(Ok(Err(e))) => format!("{e:#}"),
        Ok(Err(_elapsed)) => format!("the test did not finish within {timeout:?}"),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            format!("test panicked: {message}")
        }
    };
    let mut message = failure;
    for log in logs.lock().expect("log list lock").iter() {
        let _ = write!(
            message,
            "\n--- {} (last 60 lines) ---\n{}",
            log.display(),
            log_tail(log, 60)
        );
    }
    Err(message.into())
}
