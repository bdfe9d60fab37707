//! Watches the listener's own accept queue: TCP_INFO on the listening socket every
//! `sample_every` (default 1 ms; a call costs ~200 ns, docs/kernel.md §5). Each sample updates
//! the current length and the maximum, goes into the bounded timeline and out to live
//! `WatchQueue` subscribers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use stampede_proto::pb;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::Shared;

/// Takes one sample now.
pub(crate) fn sample(shared: &Shared) {
    let q = match shared.listener.queue() {
        Ok(q) => q,
        Err(e) => {
            tracing::warn!(cause = %e, "reading the accept queue failed");
            return;
        }
    };
    let since_start_us = shared.elapsed().as_micros() as u64;
    let accepted = shared.accepted.load(Ordering::Relaxed);
    shared.queue_len.store(q.len, Ordering::Relaxed);
    shared.queue_max.fetch_max(q.len, Ordering::Relaxed);
    shared.backlog_effective.store(q.backlog, Ordering::Relaxed);
    shared.samples.fetch_add(1, Ordering::Relaxed);
    shared
        .timeline
        .lock()
        .expect("timeline lock poisoned")
        .record(since_start_us, q.len, accepted);
    if shared.queue_tx.receiver_count() > 0 {
        let _ = shared.queue_tx.send(pb::QueueSample {
            since_start_us,
            queue_len: q.len,
            backlog_effective: q.backlog,
            accepted,
        });
    }
}

/// Samples every `every` until `cancel`.
pub(crate) async fn run(shared: Arc<Shared>, every: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    // After a stall, sample now rather than firing a burst of stale ticks.
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => sample(&shared),
        }
    }
}
