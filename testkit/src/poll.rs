//! Polling assertions with a deadline: tests wait for a condition, never for a fixed time.

use std::{future::Future, time::Duration};

use tokio::time::Instant;

/// Polls `probe` until it returns `Some`, with a short growing backoff; panics naming `what`
/// when `timeout` passes first.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// The one negative check: `holds` must stay true for the whole `period` (e.g. "still exactly
/// one reply"). Used only after the positive condition was awaited with [`wait_until`].
pub async fn stays<F, Fut>(period: Duration, what: &str, mut holds: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + period;
    while Instant::now() < deadline {
        assert!(holds().await, "{what} stopped holding");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(holds().await, "{what} stopped holding");
}
