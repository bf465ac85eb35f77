//! Restarting a replication side after a failure, with bounded exponential backoff.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::ReplicationError;

/// Consecutive failures without progress before a long-running side gives up: with the
/// default backoff (100 ms doubling up to 10 s) about a quarter of an hour.
pub const DEFAULT_MAX_FAILURES: u32 = 100;

/// Consecutive failures without progress before a one-shot run (`push --once`,
/// `pull --idle-exit`) gives up: the waits between them (100 ms doubling) add up to 3.1 s, so
/// a refused connection is reported after about 3 s, an address that does not answer at all
/// after 6 connect timeouts and those 3.1 s.
pub const ONE_SHOT_MAX_FAILURES: u32 = 6;

/// How failures are retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the first failure; doubles after each further one.
    pub initial_delay: Duration,
    /// Longest wait between attempts.
    pub max_delay: Duration,
    /// Consecutive failures (without progress in between) before giving up.
    pub max_failures: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_failures: DEFAULT_MAX_FAILURES,
        }
    }
}

impl RetryPolicy {
    /// The default policy of a run that should end once caught up: [`ONE_SHOT_MAX_FAILURES`].
    pub fn one_shot() -> Self {
        RetryPolicy {
            max_failures: ONE_SHOT_MAX_FAILURES,
            ..RetryPolicy::default()
        }
    }

    /// How long waiting between attempts takes at most before giving up (the attempts' own
    /// time not counted).
    pub fn total_delay(&self) -> Duration {
        (1..self.max_failures)
            .map(|failures| self.delay(failures))
            .sum()
    }

    /// The wait after `failures` consecutive failures (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(20);
        self.initial_delay
            .saturating_mul(factor)
            .min(self.max_delay)
    }
}

/// A counter of replicated events, shared between a running side and [`run_with_retry`], which
/// resets its failure count whenever the counter moved.
#[derive(Clone, Debug, Default)]
pub struct Progress(Arc<AtomicU64>);

impl Progress {
    /// A counter at 0.
    pub fn new() -> Self {
        Progress::default()
    }

    /// Adds `n` events.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Events counted so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Asks a running side to stop: it finishes the batch in flight, stores its checkpoint (or
/// acknowledges what it appended) and returns its report. Clones share the request.
#[derive(Clone, Debug)]
pub struct StopHandle(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for StopHandle {
    fn default() -> Self {
        StopHandle(Arc::new(tokio::sync::watch::channel(false).0))
    }
}

impl StopHandle {
    /// A handle not stopped yet.
    pub fn new() -> Self {
        StopHandle::default()
    }

    /// Asks to stop (idempotent).
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    /// Whether stopping was asked for.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once stopping is asked for.
    pub async fn stopped(&self) {
        let mut receiver = self.0.subscribe();
        // The sender lives as long as `self`, so this only ends by the value turning true.
        let _ = receiver.wait_for(|stopped| *stopped).await;
    }
}

/// Runs `attempt` until it succeeds, retrying retryable errors ([`ReplicationError::is_retryable`])
/// after `policy.delay(failures)`, and giving up after `policy.max_failures` consecutive failures
/// without progress. Each failure is logged (tracing, warn) and passed to `on_failure`.
pub async fn run_with_retry<T, F, Fut>(
    policy: &RetryPolicy,
    progress: &Progress,
    on_failure: impl FnMut(&ReplicationError, u32, Duration),
    attempt: F,
) -> Result<T, ReplicationError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ReplicationError>>,
{
    run_with_retry_or_stop(policy, progress, &StopHandle::new(), on_failure, attempt).await
}

/// [`run_with_retry`], where a stop asked through `stop` cuts a wait between attempts short:
/// `attempt` is then called once more at once (a side asked to stop returns its report
/// without connecting).
pub async fn run_with_retry_or_stop<T, F, Fut>(
    policy: &RetryPolicy,
    progress: &Progress,
    stop: &StopHandle,
    mut on_failure: impl FnMut(&ReplicationError, u32, Duration),
    mut attempt: F,
) -> Result<T, ReplicationError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ReplicationError>>,
{
    let mut failures = 0u32;
    let mut seen = progress.get();
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => {
                if progress.get() != seen {
                    seen = progress.get();
                    failures = 0;
                }
                failures += 1;
                if !error.is_retryable() || failures >= policy.max_failures || stop.is_stopped() {
                    return Err(error);
                }
                let delay = policy.delay(failures);
                tracing::warn!(%error, failures, ?delay, "replication failed; retrying");
                on_failure(&error, failures, delay);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.stopped() => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_failures: 10,
        };
        assert_eq!(policy.delay(1), Duration::from_millis(100));
        assert_eq!(policy.delay(2), Duration::from_millis(200));
        assert_eq!(policy.delay(4), Duration::from_millis(800));
        assert_eq!(policy.delay(5), Duration::from_secs(1));
        assert_eq!(policy.delay(1_000), Duration::from_secs(1));
    }

    #[test]
    fn a_one_shot_run_gives_up_after_seconds_not_minutes() {
        assert_eq!(
            RetryPolicy::one_shot().total_delay(),
            Duration::from_millis(3_100)
        );
        assert!(RetryPolicy::default().total_delay() > Duration::from_secs(900));
    }

    #[tokio::test]
    async fn gives_up_after_max_failures_and_stops_on_fatal_errors() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_failures: 3,
        };
        let progress = Progress::new();
        let mut calls = 0;
        let result: Result<(), _> = run_with_retry(
            &policy,
            &progress,
            |_, _, _| {},
            || {
                calls += 1;
                async { Err(ReplicationError::JetStream("down".into())) }
            },
        )
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 3);

        let mut calls = 0;
        let result: Result<(), _> = run_with_retry(
            &policy,
            &progress,
            |_, _, _| {},
            || {
                calls += 1;
                async { Err(ReplicationError::Config("bad".into())) }
            },
        )
        .await;
        assert!(matches!(result, Err(ReplicationError::Config(_))));
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn progress_resets_the_failure_count() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            max_failures: 2,
        };
        let progress = Progress::new();
        let mut calls = 0;
        let result = run_with_retry(
            &policy,
            &progress,
            |_, _, _| {},
            || {
                calls += 1;
                let progress = progress.clone();
                let call = calls;
                async move {
                    if call < 5 {
                        progress.add(1);
                        Err(ReplicationError::JetStream("flaky".into()))
                    } else {
                        Ok(call)
                    }
                }
            },
        )
        .await;
        assert_eq!(result.unwrap(), 5);
    }
}
