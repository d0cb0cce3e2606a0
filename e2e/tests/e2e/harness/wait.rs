//! Polling with a deadline: the only way e2e tests wait.
//!
//! Everything the tests observe (a bridge becoming ready, an event reaching the user's sync)
//! happens in other processes, so a test asks again with a short backoff until the answer comes
//! or the deadline passes. There are no fixed sleeps: a passing test waits only as long as the
//! system under test needs.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, sleep};

/// How long a test waits for something the bridge should do promptly (join, reply, notice).
/// Generous on purpose: a slow CI machine only makes a passing test slower, never a failure.
pub const PROMPTLY: Duration = Duration::from_secs(30);

/// How long "nothing more happens" is watched for; see [`assert_count_stays`].
pub const SETTLE: Duration = Duration::from_secs(3);

/// First pause between two polls; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
/// Longest pause between two polls: short, so a test notices a change quickly.
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// Polls `check` until it returns `Some`, and returns that value.
///
/// Panics after `timeout` with a message naming `what` was being waited for. The general form,
/// for waits on anything but a user's sync (which `User` wraps): a bridge, StackStorm.
pub async fn wait_until<T, F, Fut>(what: impl Display, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll_until(timeout, check).await {
        Some(value) => value,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Polls `check` until it returns `Some` (and returns it) or `timeout` passes (`None`), for
/// callers that add their own context to the failure.
pub async fn poll_until<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut backoff = FIRST_BACKOFF;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(backoff.min(deadline - Instant::now())).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Polls `count` for the whole of `settle` and panics, naming `what`, as soon as it is not
/// `expected`.
///
/// This is the only negative check the e2e tier makes ("no second reply arrives"): it can only
/// show that nothing happened *within* `settle`, so every use first waits (with
/// [`wait_until`] or a `User::wait_for_*`) for the positive outcome that the unwanted one would
/// follow, then watches for a bounded settle period.
pub async fn assert_count_stays<F, Fut>(
    what: impl Display,
    expected: usize,
    settle: Duration,
    mut count: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = usize>,
{
    let start = Instant::now();
    let deadline = start + settle;
    loop {
        let now = count().await;
        assert!(
            now == expected,
            "expected the number of {what} to stay at {expected} for {settle:?}, but it was {now} after {:?}",
            start.elapsed()
        );
        if Instant::now() >= deadline {
            return;
        }
        sleep(MAX_BACKOFF.min(deadline - Instant::now())).await;
    }
}
