//! One worker thread's loop over its share of the attempts.
//!
//! A [`Worker`] owns its slots (in schedule order: their offsets are non-decreasing) and one
//! epoll instance. Each pass of [`Worker::run`] issues every connect whose intended time has
//! come, waits on epoll no longer than until the next thing due, hands each event to its
//! attempt, expires deadlines, checks due probes, ends holds and, at each interval boundary,
//! ships the interval's tally to the firing thread. Nothing else happens between two connect()
//! calls of a burst: completions seen meanwhile are only time-stamped, and handled once the
//! due connects are all out.

use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::Duration;

use hdrhistogram::Histogram;
use stampede_proto::histogram;
use tokio_util::sync::CancellationToken;

use super::context::{Cx, Ledger};
use super::lateness::{LATE_BOUND, Lateness};
use super::merge::{Report, WorkerSummary};
use super::slot::{Attempt, Slot};
use crate::arm::ArmedSocket;

/// Length of an interval.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Longest epoll sleep, so cancellation is noticed quickly.
const MAX_SLEEP_MS: u64 = 50;
/// Events taken per epoll_wait.
const EVENTS: usize = 1024;
/// During a burst, completions are collected (time-stamped, not yet processed) every this
/// many connects, so a connect's latency is not inflated by the rest of the burst.
const POLL_EVERY: usize = 32;

/// One worker thread's attempts and loop state.
pub(super) struct Worker<'a> {
    slots: Vec<Slot>,
    cx: Cx<'a>,
    ledger: Ledger,
    /// How late each connect() left its intended time, µs.
    issue_lag: Histogram<u64>,
    /// Stalls: attempts cancelled as overdue, attempts issued past the late bound.
    lateness: Lateness,
    first_issue_ns: Option<u64>,
    last_issue_ns: u64,
    /// The next attempt to issue: every one before it was issued.
    next: usize,
    /// The oldest attempt that may still be open: deadlines come in issue order (offset +
    /// the same timeout), so only this one's needs watching.
    cursor: usize,
    /// The interval being recorded, and its end (ns after start).
    seq: u32,
    boundary_ns: u64,
    /// epoll_wait's buffer.
    events: Vec<libc::epoll_event>,
    /// Events collected during a burst: (slot, event bits, when seen).
    ready: Vec<(usize, u32, u64)>,
}

impl<'a> Worker<'a> {
    /// A worker for `sockets` (in schedule order); every allocation happens here, before the
    /// start.
    pub(super) fn new(sockets: Vec<ArmedSocket>, cx: Cx<'a>) -> Worker<'a> {
        let attempts = sockets.len();
        Worker {
            slots: sockets.into_iter().map(Slot::from).collect(),
            ledger: Ledger::for_attempts(attempts, &cx.settings),
            cx,
            issue_lag: histogram::new_latency(),
            lateness: Lateness::new(LATE_BOUND),
            first_issue_ns: None,
            last_issue_ns: 0,
            next: 0,
            cursor: 0,
            seq: 0,
            boundary_ns: interval_ns(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS],
            // Each completion of the burst is stamped here while connects go on.
            ready: Vec::with_capacity(attempts),
        }
    }

    /// Runs every attempt to its end (or until `cancel`), shipping each interval on `tx`,
    /// then the worker's [`Report::Done`]. Returns early if the firing thread is gone.
    pub(super) fn run(mut self, cancel: &CancellationToken, tx: &mpsc::Sender<Report>) {
        let cancelled = loop {
            self.issue_due();
            let now = self.wait();
            self.expire(now);
            self.check_probes(now);
            self.end_holds(now);
            if self.all_done() {
                break false;
            }
            if cancel.is_cancelled() {
                break true;
            }
            if now >= self.boundary_ns && !self.ship_interval(tx) {
                return;
            }
        };
        let _ = tx.send(self.done(cancelled));
        // The slots drop here: whatever is left open (cancelled runs) is closed.
    }

    /// Issues every connect that is due (for a burst, the whole share back to back),
    /// time-stamping completions as they come, then handles them. An attempt the worker
    /// reaches only after a stall is cancelled instead (`lateness`).
    fn issue_due(&mut self) {
        let mut issued = 0usize;
        while self.next < self.slots.len() {
            let t = self.cx.now();
            let offset = self.slots[self.next].offset_ns;
            if offset > t {
                break;
            }
            if self.lateness.overdue(offset, t) {
                self.attempt(self.next).skip();
                self.next += 1;
                continue;
            }
            self.issue(self.next, t);
            self.next += 1;
            issued += 1;
            if issued.is_multiple_of(POLL_EVERY) {
                self.collect_ready();
            }
        }
        if issued > 0 {
            // Stamp the last completions before processing (closing) the earlier ones.
            self.collect_ready();
        }
        let mut ready = std::mem::take(&mut self.ready);
        for &(idx, bits, seen) in &ready {
            self.attempt(idx).on_event(bits, seen);
        }
        ready.clear();
        self.ready = ready;
    }

    /// Issues attempt `idx`; `t` is now (read just before, ns after start).
    fn issue(&mut self, idx: usize, t: u64) {
        let lag_us = t.saturating_sub(self.slots[idx].offset_ns) / 1_000;
        self.issue_lag.saturating_record(lag_us);
        // The interval's share travels in its IntervalResult (the coordinator's hlog).
        self.ledger.tally.issue_lag.saturating_record(lag_us);
        self.first_issue_ns.get_or_insert(t);
        self.last_issue_ns = t;
        self.attempt(idx).issue();
        let offset = self.slots[idx].offset_ns;
        self.lateness.issued(offset, self.cx.now());
    }

    /// Collects completions without processing them: time stamps only, no syscalls per
    /// attempt. The time seen goes along, so a completion or greeting that arrived while the
    /// issue loop went on is measured then, not when the loop ends.
    fn collect_ready(&mut self) {
        let got = self.epoll_wait(0);
        let now = self.cx.now();
        for ev in &self.events[..got] {
            self.ready.push((ev.u64 as usize, ev.events, now));
        }
    }

    /// Sleeps on epoll until the next thing due and hands each event to its attempt;
    /// returns now.
    fn wait(&mut self) -> u64 {
        let now = self.cx.now();
        // Whole milliseconds only: under 1 ms to go, poll without sleeping (spin), so a
        // ramp's connects leave on time.
        let timeout_ms = (self.next_due().saturating_sub(now) / 1_000_000).min(MAX_SLEEP_MS);
        let got = self.epoll_wait(timeout_ms as i32);
        let now = self.cx.now();
        for i in 0..got {
            let ev = self.events[i];
            self.attempt(ev.u64 as usize).on_event(ev.events, now);
        }
        now
    }

    /// The next thing due (ns after start): the interval boundary, the next connect, the
    /// oldest open attempt's deadline, a hold's end or a probe check.
    fn next_due(&self) -> u64 {
        let mut due = self.boundary_ns;
        if let Some(slot) = self.slots.get(self.next) {
            due = due.min(slot.offset_ns);
        }
        if self.cursor < self.next {
            due = due.min(self.deadline(self.cursor));
        }
        if let Some(t) = self.ledger.next_timer() {
            due = due.min(t);
        }
        due
    }

    /// Decides every attempt whose deadline has passed, in issue order.
    fn expire(&mut self, now: u64) {
        while self.cursor < self.next {
            let idx = self.cursor;
            if self.slots[idx].phase().is_open() {
                if self.deadline(idx) > now {
                    break;
                }
                self.attempt(idx).expire(now);
            }
            self.cursor += 1;
        }
    }

    /// Probes whose check is due: admitted once the byte is acknowledged, checked again
    /// later otherwise.
    fn check_probes(&mut self, now: u64) {
        while let Some(idx) = self.ledger.due_probe(now) {
            self.attempt(idx).on_probe_due(now);
        }
    }

    /// Holds that are over: their connections closed.
    fn end_holds(&mut self, now: u64) {
        while let Some(idx) = self.ledger.due_hold(now) {
            self.attempt(idx).end_hold();
        }
    }

    fn all_done(&self) -> bool {
        let n = self.slots.len();
        self.next == n && self.ledger.done == n
    }

    /// Sends the interval's tally and starts the next; false if the firing thread is gone.
    fn ship_interval(&mut self, tx: &mpsc::Sender<Report>) -> bool {
        let tally = std::mem::take(&mut self.ledger.tally);
        if tx.send(Report::Interval(self.seq, tally)).is_err() {
            return false;
        }
        self.seq += 1;
        self.boundary_ns += interval_ns();
        true
    }

    /// The worker's last report: the current interval's tally and its whole-run figures.
    fn done(&mut self, cancelled: bool) -> Report {
        // Held connections were classified already: only the unclassified are unfinished.
        let unfinished = if cancelled {
            (self.slots.len() - self.ledger.classified) as u64
        } else {
            0
        };
        let summary = WorkerSummary {
            issue_lag: std::mem::replace(&mut self.issue_lag, histogram::new_latency()),
            first_issue_ns: self.first_issue_ns,
            last_issue_ns: self.last_issue_ns,
            last_completion_ns: self.ledger.last_completion_ns,
            unfinished,
            skipped_overdue: self.lateness.skipped,
            issued_late: self.lateness.issued_late,
        };
        let tally = std::mem::take(&mut self.ledger.tally);
        Report::Done(self.seq, tally, Box::new(summary))
    }

    fn deadline(&self, idx: usize) -> u64 {
        self.slots[idx].offset_ns + self.cx.settings.timeout_ns
    }

    fn attempt(&mut self, idx: usize) -> Attempt<'_> {
        Attempt {
            idx,
            slot: &mut self.slots[idx],
            cx: &self.cx,
            ledger: &mut self.ledger,
        }
    }

    /// Waits up to `timeout_ms` for events into the buffer; how many came.
    fn epoll_wait(&mut self, timeout_ms: i32) -> usize {
        // SAFETY: `events` is a writable buffer of its length that outlives the call, and
        // epoll is an open epoll descriptor.
        let got = unsafe {
            libc::epoll_wait(
                self.cx.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                timeout_ms,
            )
        };
        got.max(0) as usize
    }
}

fn interval_ns() -> u64 {
    INTERVAL.as_nanos() as u64
}
