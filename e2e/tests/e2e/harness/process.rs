//! Child processes (Synapse, bridges): spawning with a log file, signals, free ports, log tails.

use std::fs::OpenOptions;
use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// `count` distinct TCP ports on 127.0.0.1 that were free a moment ago.
///
/// All probe listeners stay open until every port is picked, so the kernel cannot hand out
/// the same port twice. They are closed before the ports are used, so another process could
/// take one in between; on a test machine that is rare enough, and the alternative (passing
/// bound sockets to Synapse and the bridge) is not something either of them supports.
pub fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("binding 127.0.0.1:0 to find free ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// Spawns `command` with stdin closed and stdout + stderr appended to `log` (created if
/// missing), so a restarted process keeps adding to the same file.
///
/// The child gets SIGKILL if the thread that spawned it dies first (Linux `PR_SET_PDEATHSIG`):
/// a harness killed with -9 must not leave a Synapse or a bridge running. The normal path never
/// relies on it; handles stop their children in `Drop`.
pub fn spawn_logged(command: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log file {}", log.display()))?;
    let stderr = file.try_clone()?;
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe; it touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(stderr))
        .spawn()
        .with_context(|| format!("spawning {command:?}"))
}

/// Sends `signal` (e.g. `libc::SIGTERM`) to `child` unless it has already exited.
pub fn signal(child: &mut Child, signal: libc::c_int) -> anyhow::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    // SAFETY: kill(2) has no memory-safety requirements; the pid is our own unreaped child, so
    // it cannot have been recycled for another process.
    if unsafe { libc::kill(pid, signal) } == -1 {
        return Err(io::Error::last_os_error()).context("kill(2)");
    }
    Ok(())
}

/// Asks `child` to stop with SIGTERM, waits up to `grace` for it to exit, then kills it.
///
/// Blocking: for `Drop` and for the harness's own set-up and tear-down, not for tests.
pub fn terminate_blocking(child: &mut Child, grace: Duration) -> anyhow::Result<ExitStatus> {
    signal(child, libc::SIGTERM)?;
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill()?;
    Ok(child.wait()?)
}

/// The last `lines` lines of the file at `path`, or a note saying why there are none.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}

/// Removes `ST2_MATRIX_*` variables from a child's environment.
pub trait EnvClearSt2Matrix {
    /// The bridge reads `ST2_MATRIX_<SECTION>__<KEY>` overrides; whatever the developer's
    /// shell exports (or the test script's `ST2_MATRIX_BIN`) must not change the slot config.
    fn env_clear_st2_matrix(&mut self) -> &mut Self;
}

impl EnvClearSt2Matrix for Command {
    fn env_clear_st2_matrix(&mut self) -> &mut Self {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ST2_MATRIX_") {
                self.env_remove(key);
            }
        }
        self
    }
}
