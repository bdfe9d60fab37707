//! The late bound: a stalled worker (SIGSTOP, a VM pause, a starved CPU, a stall right after
//! the start wait) never makes up for lost time in a catch-up burst.
//!
//! A worker *reaches* an attempt when its issue loop looks at it. The attempt is overdue when
//! that happens more than [`LATE_BOUND`] after both its intended time and the worker's
//! previous connect(): a worker issuing a burst back to back is busy, not stalled, so the
//! tail of a large burst is not overdue however long the burst takes; a worker that stopped
//! running is. Once a stall is seen, every attempt that fell due before the worker noticed
//! it is overdue too, so after the stall the schedule resumes from now instead of firing
//! the backlog at once. Overdue attempts are cancelled (their sockets closed unconnected)
//! and counted (`skipped_overdue`).
//!
//! A stall can also land inside an issue (between reading the clock and the connect()
//! returning): an attempt whose connect() came back more than the bound after the later
//! of its intended time and the previous connect() is counted `issued_late`. Either count
//! makes the run partial (docs/design.md "Reports").

use std::time::Duration;

/// How far behind its schedule a worker may fall before the attempts it missed are
/// cancelled rather than fired late; well above scheduler noise, far below a real stall.
pub const LATE_BOUND: Duration = Duration::from_millis(250);

/// One worker's view of its own punctuality.
#[derive(Debug)]
pub(super) struct Lateness {
    bound_ns: u64,
    /// When the previous connect() returned (ns after start); the start instant before any.
    last_issue_ns: u64,
    /// Attempts due before this (ns after start) fell due during a stall: all overdue.
    resume_ns: u64,
    /// Attempts cancelled as overdue.
    pub(super) skipped: u64,
    /// Attempts issued more than the bound late.
    pub(super) issued_late: u64,
}

impl Lateness {
    /// A worker that has not issued anything yet, with `bound`.
    pub(super) fn new(bound: Duration) -> Lateness {
        Lateness {
            bound_ns: bound.as_nanos() as u64,
            last_issue_ns: 0,
            resume_ns: 0,
            skipped: 0,
            issued_late: 0,
        }
    }

    /// The worker reached an attempt due at `offset_ns` at `now` (both ns after start): true
    /// if it is overdue (and then counted as skipped).
    pub(super) fn overdue(&mut self, offset_ns: u64, now: u64) -> bool {
        let overdue = offset_ns < self.resume_ns || self.late(offset_ns, now);
        if overdue {
            self.resume_ns = self.resume_ns.max(now);
            self.skipped += 1;
        }
        overdue
    }

    /// An attempt due at `offset_ns` was issued; its connect() returned at `now`. A stall
    /// inside the issue (connect(), epoll_ctl) is a stall like any other: what fell due during
    /// it is skipped, never fired back to back once the worker runs again.
    pub(super) fn issued(&mut self, offset_ns: u64, now: u64) {
        if self.late(offset_ns, now) {
            self.issued_late += 1;
            self.resume_ns = self.resume_ns.max(now);
        }
        self.last_issue_ns = now;
    }

    /// More than the bound behind both the attempt's time and the previous connect().
    fn late(&self, offset_ns: u64, now: u64) -> bool {
        now.saturating_sub(offset_ns.max(self.last_issue_ns)) > self.bound_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn lateness() -> Lateness {
        Lateness::new(Duration::from_millis(100))
    }

    /// A burst issued back to back is never overdue, however long it takes: each connect()
    /// follows the previous one closely.
    #[test]
    fn a_long_burst_is_busy_not_late() {
        let mut l = lateness();
        let mut now = 0;
        for _ in 0..10_000 {
            assert!(!l.overdue(0, now));
            now += 50_000; // 50 µs a connect: 500 ms for the burst
            l.issued(0, now);
        }
        assert_eq!((l.skipped, l.issued_late), (0, 0));
    }

    /// A stall mid-ramp: what fell due during it is cancelled, including what fell due
    /// within the bound before the stall was noticed; the ramp then resumes on time.
    #[test]
    fn a_stall_mid_ramp_cancels_what_fell_due_and_resumes() {
        let mut l = lateness();
        // 1 per ms for 10 ms, on time.
        for i in 0..10 {
            assert!(!l.overdue(i * MS, i * MS));
            l.issued(i * MS, i * MS + 10_000);
        }
        // Stopped for 500 ms: the worker reaches attempt 10 at 510 ms.
        let resumed = 510 * MS;
        let skipped = (10..=510)
            .take_while(|i| l.overdue(i * MS, resumed))
            .count();
        assert_eq!(skipped, 500, "10 ms .. 510 ms fell due during the stall");
        l.issued(510 * MS, 510 * MS + 10_000);
        assert!(!l.overdue(511 * MS, 511 * MS));
        assert_eq!((l.skipped, l.issued_late), (500, 0));
    }

    /// A stall inside one connect(): that attempt counts as issued late, and what fell due
    /// while it was stuck is cancelled, not fired as a catch-up burst.
    #[test]
    fn a_stall_inside_an_issue_cancels_what_fell_due_meanwhile() {
        let mut l = lateness();
        for i in 0..10 {
            assert!(!l.overdue(i * MS, i * MS));
            l.issued(i * MS, i * MS + 10_000);
        }
        // The connect() of the attempt due at 10 ms returns at 510 ms.
        assert!(!l.overdue(10 * MS, 10 * MS));
        l.issued(10 * MS, 510 * MS);
        let skipped = (11..=510)
            .take_while(|i| l.overdue(i * MS, 510 * MS + 5_000))
            .count();
        assert_eq!(skipped, 500, "11 ms .. 510 ms fell due while it was stuck");
        assert!(!l.overdue(511 * MS, 511 * MS));
        assert_eq!((l.skipped, l.issued_late), (500, 1));
    }

    /// A stall between waiting for the start and the first connect: the whole burst is
    /// overdue, and nothing of it goes out.
    #[test]
    fn a_stall_after_the_start_wait_cancels_the_burst() {
        let mut l = lateness();
        for _ in 0..100 {
            assert!(l.overdue(0, 2_000 * MS));
        }
        assert_eq!(l.skipped, 100);
    }

    /// Within the bound is on time; a connect() that returned more than the bound late is
    /// counted.
    #[test]
    fn late_within_an_issue_is_counted() {
        let mut l = lateness();
        assert!(!l.overdue(0, 99 * MS));
        l.issued(0, 99 * MS);
        assert_eq!(l.issued_late, 0);
        assert!(!l.overdue(100 * MS, 100 * MS));
        l.issued(100 * MS, 300 * MS);
        assert_eq!(l.issued_late, 1);
    }
}
