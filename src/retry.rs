//! The one retry schedule: capped exponential backoff with jitter, and a wait that gives way
//! to shutdown.
//!
//! Every loop that retries (the outbox, the stream reader, the alias refresh, the inbox worker,
//! token renewal, the bot device's key uploads, start-up checks) uses it, so a retry never
//! outlives shutdown and many bridges (or many rooms) never retry in lockstep.

use std::time::Duration;

use rand::Rng as _;
use tokio_util::sync::CancellationToken;

/// How much a delay varies around its nominal value (±20 %).
const JITTER: f64 = 0.2;

/// A backoff schedule: `base`, doubled per failure, capped at `max`, with jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A schedule starting at `base` and never waiting longer than `max` (plus jitter).
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: 0,
        }
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Counts a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        delay(self.base, self.max, self.failures)
    }

    /// Counts a failure and waits the delay, unless `stop` comes first; `false` when stopped.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let delay = self.next_delay();
        sleep_unless_stopped(delay, stop).await
    }
}

/// The delay before attempt number `attempt + 1` after `attempt` failures (1-based): `base`
/// doubled `attempt - 1` times, capped at `max`, then ±20 % jitter.
pub fn delay(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)));
    exp.min(max)
        .mul_f64(rand::rng().random_range(1.0 - JITTER..1.0 + JITTER))
}

/// Sleeps `duration` unless `stop` is cancelled first; `false` when stopped.
pub async fn sleep_unless_stopped(duration: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(duration) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_are_capped_with_jitter() {
        let (base, max) = (Duration::from_millis(500), Duration::from_secs(10));
        let first = delay(base, max, 1);
        assert!(
            first >= base.mul_f64(0.8) && first <= base.mul_f64(1.2),
            "{first:?}"
        );
        let fourth = delay(base, max, 4);
        assert!(fourth >= Duration::from_millis(3200) && fourth <= Duration::from_millis(4800));
        assert!(delay(base, max, 50) <= max.mul_f64(1.2));
        let mut backoff = Backoff::new(base, max);
        backoff.next_delay();
        backoff.next_delay();
        assert_eq!(backoff.failures(), 2);
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
    }

    #[tokio::test]
    async fn a_wait_gives_way_to_shutdown() {
        let stop = CancellationToken::new();
        stop.cancel();
        let mut backoff = Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
        assert!(!backoff.wait(&stop).await);
    }
}
