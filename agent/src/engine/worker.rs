//! One worker thread's loop over its share of the attempts.
//!
//! A [`Worker`] owns its slots (in schedule order: their offsets are non-decreasing) and one
//! epoll instance. Each pass of [`Worker::run`] issues every connect whose intended time has
//! come, waits on epoll no longer than until the next thing due, hands each event to its
//! attempt, expires deadlines, checks due probes, ends holds and, at each interval boundary,
//! ships the interval's tally to the firing thread. Nothing else happens between two connect()
//! calls of a burst: completions seen meanwhile are only time-stamped, and handled once the
//! due connects are all out.
//!
//! Pacing a ramp: the worker sleeps on epoll to the microsecond ([`waiting`]) until its spin
//! margin ahead of its next connect (50 µs, up to 2 ms before a connect that follows a long
//! gap: [`waiting::spin_margin_ns`]) and spins the rest, so it neither leaves late nor
//! keeps a core busy between connects. Events it collects are queued with the time they were
//! seen and handled in order; handling stops once a connect falls due (the event in hand may
//! run past it; at least one is handled per pass) and resumes after the connect is out, so a
//! pile of completions cannot hold the schedule back.
//!
//! [`waiting`]: super::waiting

use std::collections::VecDeque;
use std::sync::mpsc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::context::{Cx, Ledger};
use super::lateness::{LATE_BOUND, Lateness};
use super::merge::{Report, WorkerSummary};
use super::slot::{Attempt, Slot};
use super::waiting;
use crate::arm::ArmedSocket;

/// Length of an interval.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Longest epoll sleep, so cancellation is noticed quickly.
const MAX_SLEEP_NS: u64 = 50_000_000;
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
    /// Slots with an event collected and not yet handled, in the order seen. At most once
    /// each (a level-triggered event is reported again by every epoll_wait until handled), so
    /// it never outgrows its first allocation.
    ready: VecDeque<usize>,
    /// Each slot's event waiting in `ready`: (event bits, when seen).
    pending: Vec<Option<(u32, u64)>>,
}

impl<'a> Worker<'a> {
    /// A worker for `sockets` (in schedule order); everything sized by the attempts is
    /// allocated here, before the start. What is allocated later is per interval, not per
    /// attempt: the next interval's tally at a boundary, and a completion-time histogram at
    /// the first completion of its class in an interval.
    pub(super) fn new(sockets: Vec<ArmedSocket>, cx: Cx<'a>) -> Worker<'a> {
        let attempts = sockets.len();
        Worker {
            slots: sockets.into_iter().map(Slot::from).collect(),
            ledger: Ledger::for_attempts(attempts, &cx.settings),
            cx,
            lateness: Lateness::new(LATE_BOUND),
            first_issue_ns: None,
            last_issue_ns: 0,
            next: 0,
            cursor: 0,
            seq: 0,
            boundary_ns: interval_ns(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS],
            // Each completion of the burst is stamped here while connects go on.
            ready: VecDeque::with_capacity(attempts),
            pending: vec![None; attempts],
        }
    }

    /// Runs every attempt to its end (or until `cancel`), shipping each interval on `tx`,
    /// then the worker's [`Report::Done`]. Returns early if the firing thread is gone.
    pub(super) fn run(mut self, cancel: &CancellationToken, tx: &mpsc::Sender<Report>) {
        waiting::precise_timers();
        let cancelled = loop {
            self.issue_due();
            let now = self.wait();
            self.handle_ready();
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
        self.handle_ready();
    }

    /// Hands queued events to their attempts, in the order seen, until none is left or the
    /// next connect falls due (the rest wait until it is out). At least one is handled per
    /// call, so a worker whose connects are always due still gets through its events.
    fn handle_ready(&mut self) {
        let due = self.slots.get(self.next).map(|s| s.offset_ns);
        while let Some(idx) = self.ready.pop_front() {
            self.handle_pending(idx);
            if due.is_some_and(|due| self.cx.now() >= due) {
                break;
            }
        }
    }

    /// Hands slot `idx` its waiting event, if it has one, with the time it was seen.
    fn handle_pending(&mut self, idx: usize) {
        if let Some((bits, seen)) = self.pending[idx].take() {
            self.attempt(idx).on_event(bits, seen);
        }
    }

    /// Issues attempt `idx`; `t` is now (read just before, ns after start).
    fn issue(&mut self, idx: usize, t: u64) {
        // Recorded once, in the interval's tally: it travels in the IntervalResult (the
        // coordinator's hlog) and adds up to the run's (`RunResult::tally`).
        let lag_us = t.saturating_sub(self.slots[idx].offset_ns) / 1_000;
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
        self.poll(0);
    }

    /// Sleeps on epoll until the next thing is due (not at all while events wait to be
    /// handled) and queues what came; returns now.
    fn wait(&mut self) -> u64 {
        let now = self.cx.now();
        let timeout_ns = if self.ready.is_empty() {
            // epoll's own slack is a thousandth of the timeout, a two-hundredth for a niced
            // thread (a 50 ms sleep may end 50-250 µs late): wake that much earlier (then
            // sleep again, shorter), or a slow ramp's spin margin would be used up.
            let sleep = self.wake_at().saturating_sub(now).min(MAX_SLEEP_NS);
            sleep - sleep / 200
        } else {
            0
        };
        self.poll(timeout_ns)
    }

    /// Waits up to `timeout_ns` for events and queues each with the time it was seen; returns
    /// that time.
    fn poll(&mut self, timeout_ns: u64) -> u64 {
        let got = waiting::wait(self.cx.epoll, &mut self.events, timeout_ns);
        let now = self.cx.now();
        for ev in &self.events[..got] {
            let idx = ev.u64 as usize;
            if self.pending[idx].is_none() {
                self.pending[idx] = Some((ev.events, now));
                self.ready.push_back(idx);
            }
        }
        now
    }

    /// When to stop sleeping (ns after start): the spin margin ([`waiting::spin_margin_ns`]) ahead of the next connect (the
    /// rest is spun, so it leaves on time), or the interval boundary, the oldest open attempt's
    /// deadline, a hold's end or a probe check.
    fn wake_at(&self) -> u64 {
        let mut due = self.boundary_ns;
        if let Some(slot) = self.slots.get(self.next) {
            let previous = self
                .next
                .checked_sub(1)
                .map_or(0, |i| self.slots[i].offset_ns);
            let margin = waiting::spin_margin_ns(slot.offset_ns.saturating_sub(previous));
            due = due.min(slot.offset_ns.saturating_sub(margin));
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
                // An event still queued is what happened first (a completion, a greeting):
                // handled with the time it was seen, not decided as of the deadline.
                self.handle_pending(idx);
                if self.slots[idx].phase().is_open() {
                    self.attempt(idx).expire(now);
                }
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
}

fn interval_ns() -> u64 {
    INTERVAL.as_nanos() as u64
}
