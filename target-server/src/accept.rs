//! The accept loop: accept() under the current policy (delay, token-bucket rate and burst,
//! pause), which can change at any moment through the control service.
//!
//! While the loop does not accept, connections wait in the kernel's accept queue, which is
//! the whole point: the queue fills to A+1 and the kernel's overflow behaviour shows.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Shared;
use crate::action;
use crate::config::AcceptPolicy;

/// A policy and the moment it took effect (its delay counts from then).
#[derive(Debug, Clone)]
pub(crate) struct PolicyState {
    pub(crate) policy: AcceptPolicy,
    pub(crate) since: Instant,
}

/// Tokens refill at `rate` per second up to `burst`; one accept takes one.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket whose refill starts at `start`.
    fn new(rate: f64, burst: u32, start: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: start,
        }
    }

    /// Adds what accrued since the last look, up to `burst`.
    fn refill(&mut self, now: Instant) {
        if now > self.last {
            let refill = (now - self.last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.burst);
            self.last = now;
        }
    }

    /// When the next token is available (`now` or later).
    fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens >= 1.0 {
            now
        } else {
            now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }

    /// One accept at `now`. The bucket is topped up to `now` first: a wait for a connection
    /// (the accept loop idle on an empty queue) accrues nothing past a full bucket, so the
    /// next token is a whole interval after this accept, not at once.
    fn take(&mut self, now: Instant) {
        self.refill(now);
        self.tokens -= 1.0;
    }
}

/// When the policy next allows an accept: `None` = not until the policy changes.
fn ready_at(
    state: &PolicyState,
    bucket: &mut Option<TokenBucket>,
    now: Instant,
) -> Option<Instant> {
    if state.policy.never_accepts() {
        return None;
    }
    let start = state.since + state.policy.delay;
    if now < start {
        return Some(start);
    }
    Some(bucket.as_mut().map_or(now, |b| b.ready_at(now)))
}

/// Runs until `cancel`; connection tasks go on `conns` and end with `conn_cancel`.
pub(crate) async fn run(
    shared: Arc<Shared>,
    conns: TaskTracker,
    cancel: CancellationToken,
    conn_cancel: CancellationToken,
) {
    let mut policy_rx = shared.policy.subscribe();
    let mut error_backoff = Duration::from_millis(1);
    loop {
        let state = policy_rx.borrow_and_update().clone();
        let mut bucket = state.policy.rate_per_sec.filter(|r| *r > 0.0).map(|rate| {
            TokenBucket::new(rate, state.policy.burst(), state.since + state.policy.delay)
        });
        loop {
            let now = Instant::now();
            let wait = ready_at(&state, &mut bucket, now);
            if wait != Some(now) {
                let sleep = async {
                    match wait {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    changed = policy_rx.changed() => match changed {
                        Ok(()) => break,
                        Err(_) => return,
                    },
                    _ = sleep => continue,
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = policy_rx.changed() => match changed {
                    Ok(()) => break,
                    Err(_) => return,
                },
                accepted = shared.listener.accept(|q| {
                    shared.queue_max.fetch_max(q.len, Ordering::Relaxed);
                }) => match accepted {
                    Ok((stream, _peer)) => {
                        error_backoff = Duration::from_millis(1);
                        shared.accepted.fetch_add(1, Ordering::Relaxed);
                        if let Some(b) = bucket.as_mut() {
                            b.take(Instant::now());
                        }
                        let action = *shared.on_accept.lock().expect("on_accept lock poisoned");
                        action::start(stream, action, &conns, &conn_cancel);
                    }
                    Err(e) if is_transient(&e) => {}
                    Err(e) => {
                        // Out of fds or memory: back off (bounded) instead of spinning; the
                        // connections stay queued in the kernel meanwhile.
                        tracing::warn!(cause = %e, backoff_ms = error_backoff.as_millis() as u64, "accept failed");
                        tokio::time::sleep(error_backoff).await;
                        error_backoff = (error_backoff * 2).min(Duration::from_millis(500));
                    }
                },
            }
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_paces_and_bursts() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5.0, 2, t0);
        // Two back to back (the burst), then one every 200 ms.
        for expected_ms in [0u64, 0, 200, 400, 600] {
            let at = b.ready_at(Instant::now());
            assert_eq!(at - t0, Duration::from_millis(expected_ms));
            tokio::time::sleep_until(at).await;
            assert_eq!(b.ready_at(Instant::now()), Instant::now());
            b.take(Instant::now());
        }
    }

    /// A bucket that was full while the loop waited for a connection allows one accept at
    /// once, then the next an interval later (it gave two at once before: what accrued during
    /// the wait was counted after the accept).
    #[tokio::test(start_paused = true)]
    async fn an_idle_wait_accrues_no_extra_token() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(50.0, 1, t0);
        assert_eq!(b.ready_at(t0), t0);
        // The loop now waits 300 ms on an empty queue; a connection comes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = Instant::now();
        b.take(now);
        assert_eq!(b.ready_at(now), now + Duration::from_millis(20));
    }

    #[tokio::test(start_paused = true)]
    async fn delay_pause_and_zero_rate() {
        let now = Instant::now();
        let mut none = None;
        let delayed = PolicyState {
            policy: AcceptPolicy {
                delay: Duration::from_millis(2500),
                ..Default::default()
            },
            since: now,
        };
        assert_eq!(
            ready_at(&delayed, &mut none, now),
            Some(now + Duration::from_millis(2500))
        );
        let later = now + Duration::from_secs(3);
        assert_eq!(ready_at(&delayed, &mut none, later), Some(later));
        for policy in [
            AcceptPolicy {
                paused: true,
                ..Default::default()
            },
            AcceptPolicy {
                rate_per_sec: Some(0.0),
                ..Default::default()
            },
        ] {
            let s = PolicyState { policy, since: now };
            assert_eq!(ready_at(&s, &mut none, later), None);
        }
    }
}
