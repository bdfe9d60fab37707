//! What a worker gives its attempts: the context they act in and the ledger they record
//! into.
//!
//! [`Cx`] is shared and read-only: the worker's epoll instance, the target, the run's
//! [`Settings`] and the start instant all times count from. [`Ledger`] is written by every
//! transition: the current interval's tally, the latest completion, the counters that tell
//! the worker when it is done, and the two timer queues (holds to end, probes to check),
//! each in time order because every entry is now + a constant.

use std::collections::VecDeque;
use std::os::fd::BorrowedFd;
use std::sync::OnceLock;
use std::time::Instant;

use socket2::SockAddr;

use crate::plan::FireConfig;
use crate::result::Tally;

/// Per-run settings the attempts need.
#[derive(Debug, Clone, Copy)]
pub(super) struct Settings {
    /// From the intended connect time to the verdict.
    pub(super) timeout_ns: u64,
    /// How long an admitted connection is kept open (0: closed at once).
    pub(super) hold_ns: u64,
    /// Admission is the server's first byte.
    pub(super) expect_greeting: bool,
    /// Admission is the acknowledgement of a probe byte (or the server's FIN).
    pub(super) probe_admission: bool,
}

impl Settings {
    /// The settings of `config`.
    pub(super) fn of(config: &FireConfig) -> Settings {
        Settings {
            timeout_ns: config.load.timeout.as_nanos() as u64,
            hold_ns: config.load.hold.as_nanos() as u64,
            expect_greeting: config.load.expect_greeting,
            probe_admission: config.load.probe_admission,
        }
    }
}

/// What one worker's attempts share and only read.
#[derive(Clone, Copy)]
pub(super) struct Cx<'a> {
    /// The worker's epoll instance; event data is the slot's index.
    pub(super) epoll: BorrowedFd<'a>,
    /// Where to connect.
    pub(super) target: &'a SockAddr,
    /// The run's settings.
    pub(super) settings: Settings,
    /// The start instant, set once the worker (built before it is known) learns it; times
    /// are ns after it.
    pub(super) start: &'a OnceLock<Instant>,
}

impl Cx<'_> {
    /// Now, in ns after the start instant (0 before the instant is known).
    pub(super) fn now(&self) -> u64 {
        self.start.get().map_or(0, |start| {
            Instant::now().saturating_duration_since(*start).as_nanos() as u64
        })
    }
}

/// What one worker's attempts record into, and the timers they wait on.
#[derive(Default)]
pub(super) struct Ledger {
    /// The current interval's outcomes and latencies.
    pub(super) tally: Tally,
    /// Latest connect completion, ns after start.
    pub(super) last_completion_ns: Option<u64>,
    /// Held connections: (end of hold, slot), in the order their holds began (completion
    /// time + the same hold), so in the order they end.
    holds: VecDeque<(u64, usize)>,
    /// Admission probes to check: (when, slot), in time order (now + a constant interval).
    probes: VecDeque<(u64, usize)>,
    /// Attempts closed (classified, or ended by a hold).
    pub(super) done: usize,
    /// Attempts classified: an attempt being held is classified but not yet done.
    pub(super) classified: usize,
}

impl Ledger {
    /// A ledger for `attempts` attempts under `settings`: the timer queues that will be used
    /// are allocated now, before the start, at their largest (one entry per attempt).
    pub(super) fn for_attempts(attempts: usize, settings: &Settings) -> Ledger {
        let queue = |used: bool| VecDeque::with_capacity(if used { attempts } else { 0 });
        Ledger {
            holds: queue(settings.hold_ns > 0),
            probes: queue(settings.probe_admission),
            ..Ledger::default()
        }
    }

    /// When the next hold ends or probe check is due, if any.
    pub(super) fn next_timer(&self) -> Option<u64> {
        let hold = self.holds.front().map(|&(t, _)| t);
        let probe = self.probes.front().map(|&(t, _)| t);
        match (hold, probe) {
            (Some(h), Some(p)) => Some(h.min(p)),
            (h, p) => h.or(p),
        }
    }

    /// Keeps `slot` open until `end`; ends must come in time order.
    pub(super) fn hold(&mut self, slot: usize, end: u64) {
        self.holds.push_back((end, slot));
    }

    /// Checks `slot`'s probe at `when`; checks must come in time order.
    pub(super) fn probe_at(&mut self, slot: usize, when: u64) {
        self.probes.push_back((when, slot));
    }

    /// The next slot whose probe check is due at `now`.
    pub(super) fn due_probe(&mut self, now: u64) -> Option<usize> {
        pop_due(&mut self.probes, now)
    }

    /// The next slot whose hold is over at `now`.
    pub(super) fn due_hold(&mut self, now: u64) -> Option<usize> {
        pop_due(&mut self.holds, now)
    }
}

fn pop_due(queue: &mut VecDeque<(u64, usize)>, now: u64) -> Option<usize> {
    match queue.front() {
        Some(&(t, idx)) if t <= now => {
            queue.pop_front();
            Some(idx)
        }
        _ => None,
    }
}
