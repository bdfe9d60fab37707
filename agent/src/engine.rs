//! The connect engine: one executor for every pattern, fed by the [`Schedule`] offsets the
//! sockets were armed with (issue 3, items 3-6).
//!
//! Each worker thread owns a share of the armed sockets (attempt `i` goes to worker
//! `i % workers`, so every worker's offsets are non-decreasing) and one epoll instance. Its
//! loop issues every connect() whose intended time has come, waits on epoll for completions,
//! and expires deadlines and holds; nothing else happens between two connect() calls of a
//! burst. Per attempt it reads `SO_ERROR` and `TCP_INFO` at completion, waits for the greeting
//! when asked, and classifies ([`Outcome`]). Latencies are measured from the *intended* time,
//! so a stalled agent shows in the numbers. Each worker records into its own [`Tally`] and
//! ships it at every 1 s boundary; the firing thread merges them exactly into [`Interval`]s
//! and the [`RunResult`].
//!
//! [`Schedule`]: crate::plan::Schedule

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use socket2::{SockAddr, Socket};
use stampede_proto::histogram::{self, HistogramError};
use stampede_proto::outcome::Outcome;
use stampede_proto::report::Admission;
use stampede_proto::tcp_info::{TCP_CLOSE_WAIT, TCP_ESTABLISHED, TCP_SYN_SENT, tcp_info};
use tokio_util::sync::CancellationToken;

use crate::arm::{Armed, WorkerArms};
use crate::result::{Interval, RunResult, Tally};

/// Length of an interval.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Longest epoll sleep, so cancellation is noticed quickly.
const MAX_SLEEP_MS: u64 = 50;
/// Events taken per epoll_wait.
const EVENTS: usize = 1024;
/// How often an unacknowledged admission probe is checked again.
const PROBE_INTERVAL_NS: u64 = 20_000_000;
/// A start this far in the past is refused rather than fired late.
pub const LATE_START_TOLERANCE: Duration = Duration::from_millis(5);

/// Why a run could not fire.
#[derive(Debug, thiserror::Error)]
pub enum FireError {
    /// The start instant had already passed.
    #[error("start instant passed {late:?} ago: refusing to fire late")]
    StartPassed {
        /// How late.
        late: Duration,
    },
    /// Histograms would not merge (a bug: they all share one layout).
    #[error(transparent)]
    Histogram(#[from] HistogramError),
    /// A worker thread panicked.
    #[error("worker thread panicked: {0}")]
    WorkerPanicked(String),
}

/// Where a socket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Armed,
    Connecting,
    Greeting,
    Probing,
    Holding,
    Done,
}

struct Slot {
    socket: Option<Socket>,
    offset_ns: u64,
    phase: Phase,
    /// SYN retransmits at connect completion.
    k: u32,
}

/// During a burst, completions are collected (time-stamped, not yet processed) every this
/// many connects, so a connect's latency is not inflated by the rest of the burst.
const POLL_EVERY: usize = 32;

/// Per-run settings a worker needs.
#[derive(Clone, Copy)]
struct Settings {
    timeout_ns: u64,
    hold_ns: u64,
    expect_greeting: bool,
    probe_admission: bool,
}

/// What a worker sends to the firing thread.
enum Report {
    Interval(u32, Tally),
    Done(u32, Tally, Box<WorkerSummary>),
}

struct WorkerSummary {
    issue_lag: Histogram<u64>,
    first_issue_ns: Option<u64>,
    last_issue_ns: u64,
    last_completion_ns: Option<u64>,
    unfinished: u64,
}

struct Worker<'a> {
    slots: Vec<Slot>,
    epoll: BorrowedFd<'a>,
    target: &'a SockAddr,
    settings: Settings,
    start: Instant,
    tally: Tally,
    issue_lag: Histogram<u64>,
    first_issue_ns: Option<u64>,
    last_issue_ns: u64,
    last_completion_ns: Option<u64>,
    holds: VecDeque<(u64, usize)>,
    /// Admission probes to check, in time order (now + a constant interval).
    probes: VecDeque<(u64, usize)>,
    /// Attempts closed (classified, or ended by a hold).
    done: usize,
    /// Attempts classified: an attempt being held is classified but not yet done.
    classified: usize,
}

fn now_ns(start: Instant) -> u64 {
    Instant::now().saturating_duration_since(start).as_nanos() as u64
}

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl<'a> Worker<'a> {
    /// Registers, changes or removes `fd`; the errno if the kernel refused. Callers that
    /// must see events check it (an unwatched attempt would only end at its deadline); a
    /// failed DEL is harmless (the socket is about to be closed or was never registered).
    fn epoll_ctl(&self, op: libc::c_int, fd: i32, events: u32, idx: usize) -> Result<(), i32> {
        let mut ev = libc::epoll_event {
            events,
            u64: idx as u64,
        };
        // SAFETY: `ev` is a valid epoll_event for the call; epoll and fd are open descriptors
        // (the slot still owns its socket).
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO))
        }
    }

    /// Calls connect() for attempt `idx`; `t` is now (read just before, ns after start).
    fn issue(&mut self, idx: usize, t: u64) {
        let slot = &mut self.slots[idx];
        self.issue_lag
            .saturating_record(t.saturating_sub(slot.offset_ns) / 1_000);
        self.first_issue_ns.get_or_insert(t);
        self.last_issue_ns = t;
        let Some(socket) = slot.socket.as_ref() else {
            return;
        };
        match socket.connect(self.target) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => {
                // Refused on the spot (EADDRNOTAVAIL when ports ran out, ENETUNREACH ...).
                let outcome = Outcome::from_completion(errno_of(&e), 0);
                let now = now_ns(self.start);
                self.record_completion(idx, now);
                self.finish(idx, outcome);
                return;
            }
        }
        slot.phase = Phase::Connecting;
        let fd = socket.as_raw_fd();
        // One-shot: a completion reported during the issue loop is queued, not re-reported.
        if let Err(errno) = self.epoll_ctl(
            libc::EPOLL_CTL_ADD,
            fd,
            (libc::EPOLLOUT | libc::EPOLLONESHOT) as u32,
            idx,
        ) {
            // Unwatchable (e.g. fs.epoll.max_user_watches): an error of ours, said as such.
            let now = now_ns(self.start);
            self.record_completion(idx, now);
            self.finish(idx, Outcome::from_completion(errno, 0));
        }
    }

    fn record_completion(&mut self, idx: usize, now: u64) {
        let latency = now.saturating_sub(self.slots[idx].offset_ns) / 1_000;
        self.tally.connect_latency.saturating_record(latency);
        self.last_completion_ns = Some(self.last_completion_ns.map_or(now, |l| l.max(now)));
    }

    /// Classifies and closes.
    fn finish(&mut self, idx: usize, outcome: Outcome) {
        self.tally.record(outcome);
        self.classified += 1;
        self.close(idx);
    }

    /// Drops the socket (RST with zero linger, FIN otherwise; closing removes it from epoll).
    fn close(&mut self, idx: usize) {
        let slot = &mut self.slots[idx];
        slot.socket = None;
        slot.phase = Phase::Done;
        self.done += 1;
    }

    /// An admitted connection: classify, then hold or close.
    fn admitted(&mut self, idx: usize, now: u64) {
        let k = self.slots[idx].k;
        self.tally.record(Outcome::from_completion(0, k));
        self.classified += 1;
        if self.settings.hold_ns == 0 {
            self.close(idx);
            return;
        }
        if let Some(s) = self.slots[idx].socket.as_ref() {
            let fd = s.as_raw_fd();
            let _ = self.epoll_ctl(libc::EPOLL_CTL_DEL, fd, 0, idx);
        }
        self.slots[idx].phase = Phase::Holding;
        self.holds.push_back((now + self.settings.hold_ns, idx));
    }

    fn on_connect_event(&mut self, idx: usize, events: u32, now: u64) {
        let Some(socket) = self.slots[idx].socket.as_ref() else {
            return;
        };
        let mut err = match socket.take_error() {
            Ok(None) => 0,
            Ok(Some(e)) => errno_of(&e),
            Err(e) => errno_of(&e),
        };
        if err == 0 && events & libc::EPOLLOUT as u32 == 0 {
            // Hang-up without an error and without writability: the peer reset it.
            err = libc::ECONNRESET;
        }
        let k = tcp_info(socket.as_fd()).map_or(0, |i| i.total_retrans);
        let fd = socket.as_raw_fd();
        self.record_completion(idx, now);
        if err != 0 {
            self.finish(idx, Outcome::from_completion(err, k));
            return;
        }
        self.slots[idx].k = k;
        if self.settings.expect_greeting {
            self.slots[idx].phase = Phase::Greeting;
            if let Err(errno) = self.epoll_ctl(
                libc::EPOLL_CTL_MOD,
                fd,
                (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
                idx,
            ) {
                // The greeting could not be watched: admission unknown, an error of ours.
                self.finish(idx, Outcome::from_completion(errno, k));
            }
        } else if self.settings.probe_admission {
            let Some(mut writer) = self.slots[idx].socket.as_ref() else {
                return;
            };
            match writer.write_all(&[0u8]) {
                Ok(()) => {
                    self.slots[idx].phase = Phase::Probing;
                    // Only errors and the server's FIN matter while probing; the probe is
                    // polled anyway, so a failed MOD only delays noticing them.
                    let _ = self.epoll_ctl(libc::EPOLL_CTL_MOD, fd, libc::EPOLLRDHUP as u32, idx);
                    self.probes.push_back((now + PROBE_INTERVAL_NS, idx));
                }
                Err(e) => {
                    let outcome = match errno_of(&e) {
                        libc::ECONNRESET | libc::EPIPE => Outcome::Reset,
                        errno => Outcome::from_completion(errno, k),
                    };
                    self.finish(idx, outcome);
                }
            }
        } else {
            self.admitted(idx, now);
        }
    }

    /// An event while probing: a reset, or the server closed (it had accepted).
    fn on_probe_event(&mut self, idx: usize, bits: u32, now: u64) {
        let Some(socket) = self.slots[idx].socket.as_ref() else {
            return;
        };
        match socket.take_error() {
            Ok(Some(e)) => {
                let outcome = match errno_of(&e) {
                    libc::ECONNRESET | libc::EPIPE => Outcome::Reset,
                    errno => Outcome::from_completion(errno, self.slots[idx].k),
                };
                self.finish(idx, outcome);
            }
            _ if bits & libc::EPOLLRDHUP as u32 != 0 => self.admitted(idx, now),
            _ => {}
        }
    }

    /// True if the probe byte was acknowledged: the kernel holds a real connection. A reset
    /// empties the send queue too, so the connection must still be open (ESTABLISHED, or
    /// CLOSE_WAIT when the server accepted and closed).
    fn probe_acked(&self, idx: usize) -> bool {
        self.slots[idx]
            .socket
            .as_ref()
            .and_then(|s| tcp_info(s.as_fd()).ok())
            .is_some_and(|i| i.unacked == 0 && matches!(i.state, TCP_ESTABLISHED | TCP_CLOSE_WAIT))
    }

    /// A due probe check: a pending error (a reset) first, then the acknowledgement.
    /// Returns true if the attempt was decided.
    fn check_probe(&mut self, idx: usize, now: u64) -> bool {
        self.on_probe_event(idx, 0, now);
        if self.slots[idx].phase != Phase::Probing {
            return true;
        }
        if self.probe_acked(idx) {
            self.admitted(idx, now);
            return true;
        }
        false
    }

    fn on_greeting_event(&mut self, idx: usize, now: u64) {
        let Some(socket) = self.slots[idx].socket.as_ref() else {
            return;
        };
        let mut buf = [0u8; 64];
        let mut reader: &Socket = socket;
        match reader.read(&mut buf) {
            Ok(0) => {
                // The server accepted and closed before greeting: admitted, no first byte.
                self.admitted(idx, now);
            }
            Ok(_) => {
                let ttfb = now.saturating_sub(self.slots[idx].offset_ns) / 1_000;
                self.tally.ttfb.saturating_record(ttfb);
                self.admitted(idx, now);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                let k = self.slots[idx].k;
                let outcome = match errno_of(&e) {
                    libc::ECONNRESET => Outcome::Reset,
                    errno => Outcome::from_completion(errno, k),
                };
                self.finish(idx, outcome);
            }
        }
    }

    /// The attempt's deadline passed.
    fn expire(&mut self, idx: usize, now: u64) {
        let phase = self.slots[idx].phase;
        match phase {
            Phase::Connecting => {
                let Some(socket) = self.slots[idx].socket.as_ref() else {
                    return;
                };
                match tcp_info(socket.as_fd()) {
                    Ok(info) if info.state == TCP_SYN_SENT => {
                        let k = info.total_retrans;
                        self.finish(idx, Outcome::Pending { k });
                    }
                    // Completed but not yet seen: handle it as the completion it is.
                    _ => self.on_connect_event(idx, libc::EPOLLOUT as u32, now),
                }
                // Admission cannot be awaited past the deadline: decide it now.
                if matches!(self.slots[idx].phase, Phase::Greeting | Phase::Probing) {
                    self.expire(idx, now);
                }
            }
            // A last check (a reset, a late acknowledgement); undecided means a ghost.
            Phase::Probing if !self.check_probe(idx, now) => {
                let k = self.slots[idx].k;
                self.finish(idx, Outcome::ghost(k));
            }
            Phase::Greeting => {
                // Let a greeting that already arrived count before calling it a ghost.
                self.on_greeting_event(idx, now);
                if self.slots[idx].phase == Phase::Greeting {
                    let k = self.slots[idx].k;
                    self.finish(idx, Outcome::ghost(k));
                }
            }
            _ => {}
        }
    }

    /// Collects completions without processing them: time stamps only, no syscalls per
    /// attempt. They are handled once the due connects are all issued.
    fn collect_ready(
        &mut self,
        events: &mut [libc::epoll_event],
        ready: &mut Vec<(usize, u32, u64)>,
    ) {
        // SAFETY: `events` is a writable buffer of its length that outlives the call.
        let got = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                0,
            )
        };
        let now = now_ns(self.start);
        for ev in events.iter().take(got.max(0) as usize) {
            let (idx, bits) = (ev.u64 as usize, ev.events);
            // The time seen goes along, so a completion or greeting that arrived while the
            // issue loop went on is measured then, not when the loop ends.
            ready.push((idx, bits, now));
        }
    }

    fn run(mut self, cancel: &CancellationToken, tx: &mpsc::Sender<Report>) {
        let n = self.slots.len();
        let mut next = 0usize;
        let mut cursor = 0usize;
        let mut seq = 0u32;
        let interval_ns = INTERVAL.as_nanos() as u64;
        let mut boundary = interval_ns;
        let mut events: Vec<libc::epoll_event> =
            vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        let mut cancelled = false;
        let mut ready: Vec<(usize, u32, u64)> = Vec::new();
        loop {
            // Issue everything that is due: for a burst, the whole share back to back.
            let mut issued = 0usize;
            while next < n {
                let t = now_ns(self.start);
                if self.slots[next].offset_ns > t {
                    break;
                }
                self.issue(next, t);
                next += 1;
                issued += 1;
                if issued.is_multiple_of(POLL_EVERY) {
                    self.collect_ready(&mut events, &mut ready);
                }
            }
            if issued > 0 {
                // Stamp the last completions before processing (closing) the earlier ones.
                self.collect_ready(&mut events, &mut ready);
            }
            for (idx, bits, seen) in std::mem::take(&mut ready) {
                match self.slots[idx].phase {
                    Phase::Connecting => self.on_connect_event(idx, bits, seen),
                    Phase::Greeting => self.on_greeting_event(idx, seen),
                    Phase::Probing => self.on_probe_event(idx, bits, seen),
                    _ => {}
                }
            }
            let now = now_ns(self.start);
            let mut wake = boundary;
            if next < n {
                wake = wake.min(self.slots[next].offset_ns);
            }
            if cursor < next {
                wake = wake.min(self.slots[cursor].offset_ns + self.settings.timeout_ns);
            }
            if let Some((t, _)) = self.holds.front() {
                wake = wake.min(*t);
            }
            if let Some((t, _)) = self.probes.front() {
                wake = wake.min(*t);
            }
            // Whole milliseconds only: under 1 ms to go, poll without sleeping (spin), so a
            // ramp's connects leave on time.
            let timeout_ms = (wake.saturating_sub(now) / 1_000_000).min(MAX_SLEEP_MS) as i32;
            // SAFETY: `events` is a writable buffer of EVENTS entries that outlives the call.
            let got = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS as i32,
                    timeout_ms,
                )
            };
            let now = now_ns(self.start);
            for ev in events.iter().take(got.max(0) as usize) {
                let (idx, bits) = (ev.u64 as usize, ev.events);
                match self.slots[idx].phase {
                    Phase::Connecting => self.on_connect_event(idx, bits, now),
                    Phase::Greeting => self.on_greeting_event(idx, now),
                    Phase::Probing => self.on_probe_event(idx, bits, now),
                    _ => {}
                }
            }
            // Deadlines come in issue order (offset + the same timeout).
            while cursor < next {
                match self.slots[cursor].phase {
                    Phase::Connecting | Phase::Greeting | Phase::Probing => {
                        if self.slots[cursor].offset_ns + self.settings.timeout_ns > now {
                            break;
                        }
                        self.expire(cursor, now);
                        if matches!(
                            self.slots[cursor].phase,
                            Phase::Connecting | Phase::Greeting | Phase::Probing
                        ) {
                            // Unreachable by construction; never let the loop spin on it.
                            self.finish(cursor, Outcome::Pending { k: 0 });
                        }
                    }
                    _ => {}
                }
                if matches!(self.slots[cursor].phase, Phase::Done | Phase::Holding) {
                    cursor += 1;
                }
            }
            // Probes: admitted once the byte is acknowledged; re-checked until the deadline,
            // which the cursor above enforces.
            while let Some(&(t, idx)) = self.probes.front() {
                if t > now {
                    break;
                }
                self.probes.pop_front();
                if self.slots[idx].phase != Phase::Probing {
                    continue;
                }
                if !self.check_probe(idx, now) {
                    self.probes.push_back((now + PROBE_INTERVAL_NS, idx));
                }
            }
            // Holds end in the order they began (completion time + the same hold).
            while let Some(&(t, idx)) = self.holds.front() {
                if t > now {
                    break;
                }
                self.holds.pop_front();
                self.close(idx);
            }
            if next == n && self.done == n {
                break;
            }
            if cancel.is_cancelled() {
                cancelled = true;
                break;
            }
            if now >= boundary {
                let tally = std::mem::take(&mut self.tally);
                if tx.send(Report::Interval(seq, tally)).is_err() {
                    return;
                }
                seq += 1;
                boundary += interval_ns;
            }
        }
        // Held connections were classified already: only the unclassified are unfinished.
        let unfinished = if cancelled {
            (n - self.classified) as u64
        } else {
            0
        };
        // Close whatever is left (cancelled runs): dropping the slots closes the sockets.
        let summary = WorkerSummary {
            issue_lag: std::mem::replace(&mut self.issue_lag, histogram::new_latency()),
            first_issue_ns: self.first_issue_ns,
            last_issue_ns: self.last_issue_ns,
            last_completion_ns: self.last_completion_ns,
            unfinished,
        };
        let tally = std::mem::take(&mut self.tally);
        let _ = tx.send(Report::Done(seq, tally, Box::new(summary)));
    }
}

/// Waits until `start` (sleeping, then spinning the last ~200 µs), or cancellation.
fn wait_for_start(start: Instant, cancel: &CancellationToken) -> bool {
    loop {
        let now = Instant::now();
        if now >= start {
            return true;
        }
        if cancel.is_cancelled() {
            return false;
        }
        let left = start - now;
        if left > Duration::from_micros(300) {
            std::thread::sleep((left - Duration::from_micros(200)).min(Duration::from_millis(20)));
        } else {
            std::hint::spin_loop();
        }
    }
}

impl Armed {
    /// Fires the armed plan at `start` and blocks until every attempt is classified (or
    /// `cancel` fires). Each completed interval is sent to `intervals` (merged over workers)
    /// as soon as every worker has reported it. Call it from a blocking context
    /// (`spawn_blocking` under tokio); it runs one thread per worker.
    pub fn fire(
        self,
        start: Instant,
        cancel: &CancellationToken,
        intervals: Option<tokio::sync::mpsc::UnboundedSender<Interval>>,
    ) -> Result<RunResult, FireError> {
        let late = Instant::now().saturating_duration_since(start);
        if late > LATE_START_TOLERANCE {
            return Err(FireError::StartPassed { late });
        }
        let Armed {
            plan,
            workers,
            target,
            mut netstat,
            mut kernel,
        } = self;
        let config = plan.config();
        let settings = Settings {
            timeout_ns: config.timeout.as_nanos() as u64,
            hold_ns: config.hold.as_nanos() as u64,
            expect_greeting: config.expect_greeting,
            probe_admission: config.probe_admission,
        };
        let counters_before = netstat.as_mut().and_then(|n| n.read().ok());
        let n_workers = workers.len();
        // Wall-clock time of `start`, for the first-SYN timestamp.
        let start_wall = SystemTime::now() + start.saturating_duration_since(Instant::now())
            - Instant::now().saturating_duration_since(start);

        let (tx, rx) = mpsc::channel::<Report>();
        let mut total = Tally::default();
        let mut issue_lag = histogram::new_latency();
        let mut first_issue: Option<u64> = None;
        let mut last_issue = 0u64;
        let mut last_completion: Option<u64> = None;
        let mut unfinished = 0u64;
        let panicked = std::thread::scope(|scope| -> Result<Option<String>, FireError> {
            let mut handles = Vec::with_capacity(n_workers);
            for (w, arms) in workers.into_iter().enumerate() {
                let tx = tx.clone();
                let target = &target;
                let handle = std::thread::Builder::new()
                    .name(format!("stampede-w{w}"))
                    .spawn_scoped(scope, move || {
                        let WorkerArms { sockets, epoll } = arms;
                        let slots = sockets
                            .into_iter()
                            .map(|a| Slot {
                                socket: Some(a.socket),
                                offset_ns: a.offset_ns,
                                phase: Phase::Armed,
                                k: 0,
                            })
                            .collect();
                        let worker = Worker {
                            slots,
                            epoll: epoll.as_fd(),
                            target,
                            settings,
                            start,
                            tally: Tally::default(),
                            issue_lag: histogram::new_latency(),
                            first_issue_ns: None,
                            last_issue_ns: 0,
                            last_completion_ns: None,
                            holds: VecDeque::new(),
                            probes: VecDeque::new(),
                            done: 0,
                            classified: 0,
                        };
                        if wait_for_start(start, cancel) {
                            worker.run(cancel, &tx);
                        } else {
                            let unfinished = worker.slots.len() as u64;
                            let _ = tx.send(Report::Done(
                                0,
                                Tally::default(),
                                Box::new(WorkerSummary {
                                    issue_lag: histogram::new_latency(),
                                    first_issue_ns: None,
                                    last_issue_ns: 0,
                                    last_completion_ns: None,
                                    unfinished,
                                }),
                            ));
                        }
                    })
                    .map_err(|e| FireError::WorkerPanicked(format!("spawning worker {w}: {e}")))?;
                handles.push(handle);
            }
            drop(tx);

            // Merge per interval; emit interval s once every worker reported it or finished
            // before it.
            let mut pending: BTreeMap<u32, (Tally, usize)> = BTreeMap::new();
            let mut finished_at: Vec<u32> = Vec::new();
            let mut next_emit = 0u32;
            let emit = |seq: u32, tally: Tally| {
                if let Some(tx) = &intervals {
                    let _ = tx.send(Interval { seq, tally });
                }
            };
            for report in rx.iter() {
                let (seq, tally) = match report {
                    Report::Interval(seq, tally) => (seq, tally),
                    Report::Done(seq, tally, summary) => {
                        histogram::merge(&mut issue_lag, &summary.issue_lag)?;
                        if let Some(f) = summary.first_issue_ns {
                            first_issue = Some(first_issue.map_or(f, |x| x.min(f)));
                        }
                        last_issue = last_issue.max(summary.last_issue_ns);
                        if let Some(c) = summary.last_completion_ns {
                            last_completion = Some(last_completion.map_or(c, |x| x.max(c)));
                        }
                        unfinished += summary.unfinished;
                        finished_at.push(seq);
                        (seq, tally)
                    }
                };
                total.merge(&tally)?;
                let entry = pending.entry(seq).or_insert_with(|| (Tally::default(), 0));
                entry.0.merge(&tally)?;
                entry.1 += 1;
                loop {
                    let ended_before = finished_at.iter().filter(|f| **f < next_emit).count();
                    let ready = pending
                        .get(&next_emit)
                        .is_some_and(|(_, got)| got + ended_before >= n_workers);
                    if !ready {
                        break;
                    }
                    let (tally, _) = pending.remove(&next_emit).expect("checked just above");
                    emit(next_emit, tally);
                    next_emit += 1;
                }
            }
            // Every worker is done; anything still pending (cannot happen unless a worker
            // died) goes out in order.
            for (seq, (tally, _)) in std::mem::take(&mut pending) {
                emit(seq, tally);
            }
            let mut panicked = None;
            for h in handles {
                if let Err(p) = h.join() {
                    panicked = Some(
                        p.downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "unknown panic".into()),
                    );
                }
            }
            Ok(panicked)
        })?;
        if let Some(p) = panicked {
            return Err(FireError::WorkerPanicked(p));
        }
        let elapsed = Instant::now().saturating_duration_since(start);
        if let (Some(before), Some(after)) = (
            counters_before,
            netstat.as_mut().and_then(|n| n.read().ok()),
        ) {
            let d = after.since(&before);
            kernel.retrans_fail = d.get(stampede_proto::netstat::RETRANS_FAIL);
            kernel.syn_retrans = d.get(stampede_proto::netstat::SYN_RETRANS);
        }
        let ns = Duration::from_nanos;
        Ok(RunResult {
            connections: config.connections,
            tally: total,
            issue_lag,
            issue_duration: first_issue.map_or(Duration::ZERO, |f| ns(last_issue - f)),
            first_connect: first_issue.map(|f| start_wall + ns(f)),
            first_connect_offset: first_issue.map(ns),
            last_completion: last_completion.map(ns),
            unfinished,
            cancelled: cancel.is_cancelled(),
            elapsed,
            kernel,
            admission: Admission::of(config.expect_greeting, config.probe_admission),
        })
    }
}
