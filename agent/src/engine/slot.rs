//! One connect attempt as a state machine.
//!
//! A [`Slot`] is an armed socket and where it is in its life ([`Phase`]):
//!
//! ```text
//! Armed ─issue─▶ Connecting ─connected─┬─▶ Greeting ─first byte, FIN─┬─▶ Holding ─hold over─▶ Done
//!                    │                 ├─▶ Probing ─acked, FIN───────┤
//!                    │                 └─ (admission not checked) ───┴─▶ Done (no hold)
//!                    └─ refused, reset, timed out; pending at the deadline ─▶ Done
//! Greeting, Probing ─ reset; ghost at the deadline ─▶ Done
//! ```
//!
//! Greeting and Probing wait for admission; at the deadline an undecided one is a ghost.
//! An [`Attempt`] is a slot together with what its transitions need from the worker that owns
//! it: the shared, read-only [`Cx`] (epoll instance, target, settings, start instant) and the
//! [`Ledger`] it records into (tally, holds, probe checks, counters). A transition starts at
//! one of five doors: [`Attempt::issue`] (its connect time came), [`Attempt::on_event`] (an
//! epoll event: the one dispatch on the phase), [`Attempt::on_probe_due`] (a probe check came
//! due), [`Attempt::expire`] (its deadline passed) and [`Attempt::end_hold`]. Every errno
//! becomes an [`Outcome`] in one function, [`outcome`].
//!
//! Measurements: latencies (connect and first byte) are taken from the *intended* time
//! (`offset_ns`), so a stalled agent shows in the numbers; k is `tcpi_total_retrans` read at
//! completion (docs/kernel.md §2). Nothing here allocates or logs per attempt.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};

use socket2::Socket;
use stampede_proto::outcome::Outcome;
use stampede_proto::tcp_info::{TCP_CLOSE_WAIT, TCP_ESTABLISHED, TCP_SYN_SENT, tcp_info};

use super::context::{Cx, Ledger};
use crate::arm::ArmedSocket;

/// How often an unacknowledged admission probe is checked again.
const PROBE_INTERVAL_NS: u64 = 20_000_000;

/// Where a socket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Created and configured; connect() not yet called.
    Armed,
    /// connect() called, completion not yet seen.
    Connecting,
    /// Connected; waiting for the server's first byte.
    Greeting,
    /// Connected, probe byte sent; waiting for its acknowledgement or the server's FIN.
    Probing,
    /// Classified as admitted; kept open until its hold ends.
    Holding,
    /// Closed.
    Done,
}

impl Phase {
    /// Not yet classified: the attempt's deadline still applies.
    pub(super) fn is_open(self) -> bool {
        matches!(self, Phase::Connecting | Phase::Greeting | Phase::Probing)
    }
}

/// One attempt's state.
pub(super) struct Slot {
    /// `None` once closed (dropping it sends RST with zero linger, FIN otherwise).
    socket: Option<Socket>,
    /// Intended connect time, ns after the start instant.
    pub(super) offset_ns: u64,
    phase: Phase,
    /// SYN retransmits at connect completion.
    k: u32,
    /// When connect() completed, ns after the start instant (None until it does).
    completed_ns: Option<u64>,
}

impl Slot {
    /// Where the attempt is.
    pub(super) fn phase(&self) -> Phase {
        self.phase
    }
}

impl From<ArmedSocket> for Slot {
    fn from(armed: ArmedSocket) -> Slot {
        Slot {
            socket: Some(armed.socket),
            offset_ns: armed.offset_ns,
            phase: Phase::Armed,
            k: 0,
            completed_ns: None,
        }
    }
}

/// What an errno (0: none) means for an attempt after `k` SYN retransmits: the one mapping.
/// `ECONNRESET`, and `EPIPE` (how the kernel reports a reset that came after the server's
/// FIN, or a write into a reset connection), are a reset; the rest as a connect completion.
pub(super) fn outcome(errno: i32, k: u32) -> Outcome {
    match errno {
        libc::EPIPE => Outcome::Reset,
        errno => Outcome::from_completion(errno, k),
    }
}

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// A slot with what its transitions need from its worker.
pub(super) struct Attempt<'w> {
    /// The slot's index: the epoll event data and the timer queues' key.
    pub(super) idx: usize,
    pub(super) slot: &'w mut Slot,
    pub(super) cx: &'w Cx<'w>,
    pub(super) ledger: &'w mut Ledger,
}

impl Attempt<'_> {
    /// Calls connect() and watches for its completion.
    pub(super) fn issue(&mut self) {
        let Some(socket) = self.slot.socket.as_ref() else {
            return;
        };
        let fd = socket.as_raw_fd();
        if let Err(e) = socket.connect(self.cx.target)
            && e.raw_os_error() != Some(libc::EINPROGRESS)
        {
            // Refused on the spot (EADDRNOTAVAIL when ports ran out, ENETUNREACH ...).
            self.failed_at_issue(errno_of(&e));
            return;
        }
        self.slot.phase = Phase::Connecting;
        // One-shot: a completion reported during the issue loop is queued, not re-reported.
        let events = (libc::EPOLLOUT | libc::EPOLLONESHOT) as u32;
        if let Err(errno) = self.epoll_ctl(libc::EPOLL_CTL_ADD, fd, events) {
            // Unwatchable (e.g. fs.epoll.max_user_watches): an error of ours, said as such.
            self.failed_at_issue(errno);
        }
    }

    /// An epoll event (`bits`) seen at `now`: the one dispatch on the phase.
    pub(super) fn on_event(&mut self, bits: u32, now: u64) {
        match self.slot.phase {
            Phase::Connecting => self.on_connected(bits, now),
            Phase::Greeting => self.on_greeting(now),
            Phase::Probing => self.on_probe(bits, now),
            Phase::Armed | Phase::Holding | Phase::Done => {}
        }
    }

    /// A probe check came due: admitted once the byte is acknowledged, checked again later
    /// otherwise (until the deadline, which [`Attempt::expire`] enforces).
    pub(super) fn on_probe_due(&mut self, now: u64) {
        if self.slot.phase == Phase::Probing && !self.check_probe(now) {
            self.ledger.probe_at(self.idx, now + PROBE_INTERVAL_NS);
        }
    }

    /// The deadline passed: decide now. Still in SYN_SENT is pending; a completion not yet
    /// seen is handled as the completion it is; admission cannot be awaited any longer, so
    /// after a last look (a greeting that already arrived, a reset, a late acknowledgement)
    /// undecided means a ghost.
    pub(super) fn expire(&mut self, now: u64) {
        if self.slot.phase == Phase::Connecting {
            let info = self.slot.socket.as_ref().map(|s| tcp_info(s.as_fd()));
            match info {
                Some(Ok(info)) if info.state == TCP_SYN_SENT => {
                    let k = info.total_retrans;
                    self.finish(Outcome::Pending { k });
                }
                _ => self.on_connected(libc::EPOLLOUT as u32, now),
            }
        }
        let decided = match self.slot.phase {
            Phase::Greeting => {
                self.on_greeting(now);
                self.slot.phase != Phase::Greeting
            }
            Phase::Probing => self.check_probe(now),
            _ => true,
        };
        if !decided {
            self.finish(Outcome::ghost(self.slot.k));
        }
        if self.slot.phase.is_open() {
            // Unreachable by construction; never let an expired attempt stay open.
            self.finish(Outcome::Pending { k: 0 });
        }
    }

    /// Cancelled unissued: it fell due while the worker was stalled (never fired late). Its
    /// socket closes without a SYN ever leaving.
    pub(super) fn skip(&mut self) {
        self.ledger.classified += 1;
        self.close();
    }

    /// Ends a hold: closes the connection.
    pub(super) fn end_hold(&mut self) {
        self.close();
    }

    /// connect() completed (an event, or the deadline found it completed): classify a
    /// failure, or go on to admission.
    fn on_connected(&mut self, bits: u32, now: u64) {
        let Some(socket) = self.slot.socket.as_ref() else {
            return;
        };
        let mut err = match socket.take_error() {
            Ok(None) => 0,
            Ok(Some(e)) | Err(e) => errno_of(&e),
        };
        if err == 0 && bits & libc::EPOLLOUT as u32 == 0 {
            // Hang-up without an error and without writability: the peer reset it.
            err = libc::ECONNRESET;
        }
        let k = tcp_info(socket.as_fd()).map_or(0, |i| i.total_retrans);
        let fd = socket.as_raw_fd();
        self.completed(now);
        self.slot.k = k;
        if err != 0 {
            self.finish(outcome(err, k));
        } else if self.cx.settings.expect_greeting {
            self.slot.phase = Phase::Greeting;
            let events = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
            if let Err(errno) = self.epoll_ctl(libc::EPOLL_CTL_MOD, fd, events) {
                // The greeting could not be watched: admission unknown, an error of ours.
                self.finish(outcome(errno, k));
            }
        } else if self.cx.settings.probe_admission {
            self.send_probe(fd, now);
        } else {
            self.admitted(now);
        }
    }

    /// Sends the admission probe: one byte the server's kernel acknowledges only on a real
    /// connection (docs/kernel.md §3).
    fn send_probe(&mut self, fd: i32, now: u64) {
        let Some(mut writer) = self.slot.socket.as_ref() else {
            return;
        };
        match writer.write_all(&[0u8]) {
            Ok(()) => {
                self.slot.phase = Phase::Probing;
                // Only errors and the server's FIN matter while probing; the probe is polled
                // anyway, so a failed MOD only delays noticing them.
                let _ = self.epoll_ctl(libc::EPOLL_CTL_MOD, fd, libc::EPOLLRDHUP as u32);
                self.ledger.probe_at(self.idx, now + PROBE_INTERVAL_NS);
            }
            Err(e) => self.finish(outcome(errno_of(&e), self.slot.k)),
        }
    }

    /// Readable while waiting for the greeting: the first byte, the server's FIN (it
    /// accepted and closed before greeting: admitted, no first byte) or a reset.
    fn on_greeting(&mut self, now: u64) {
        let Some(socket) = self.slot.socket.as_ref() else {
            return;
        };
        let mut buf = [0u8; 64];
        let mut reader: &Socket = socket;
        match reader.read(&mut buf) {
            Ok(0) => self.admitted(now),
            Ok(_) => {
                let ttfb = now.saturating_sub(self.slot.offset_ns) / 1_000;
                self.ledger.tally.ttfb.saturating_record(ttfb);
                self.admitted(now);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => self.finish(outcome(errno_of(&e), self.slot.k)),
        }
    }

    /// An event while probing (`bits` 0: a check): a reset, or the server closed (it had
    /// accepted).
    fn on_probe(&mut self, bits: u32, now: u64) {
        let Some(socket) = self.slot.socket.as_ref() else {
            return;
        };
        match socket.take_error() {
            Ok(Some(e)) => self.finish(outcome(errno_of(&e), self.slot.k)),
            _ if bits & libc::EPOLLRDHUP as u32 != 0 => self.admitted(now),
            _ => {}
        }
    }

    /// A probe check: a pending error (a reset) first, then the acknowledgement. True if
    /// the attempt was decided.
    fn check_probe(&mut self, now: u64) -> bool {
        self.on_probe(0, now);
        if self.slot.phase != Phase::Probing {
            return true;
        }
        if self.probe_acked() {
            self.admitted(now);
            return true;
        }
        false
    }

    /// True if the probe byte was acknowledged: the kernel holds a real connection. A reset
    /// empties the send queue too, so the connection must still be open (ESTABLISHED, or
    /// CLOSE_WAIT when the server accepted and closed).
    fn probe_acked(&self) -> bool {
        self.slot
            .socket
            .as_ref()
            .and_then(|s| tcp_info(s.as_fd()).ok())
            .is_some_and(|i| i.unacked == 0 && matches!(i.state, TCP_ESTABLISHED | TCP_CLOSE_WAIT))
    }

    /// connect() could not be set going: it completed at once, with `errno`.
    fn failed_at_issue(&mut self, errno: i32) {
        self.completed(self.cx.now());
        self.finish(outcome(errno, self.slot.k));
    }

    /// Records the connect's completion at `now`.
    fn completed(&mut self, now: u64) {
        let latency = now.saturating_sub(self.slot.offset_ns) / 1_000;
        let ledger = &mut *self.ledger;
        ledger.tally.connect_latency.saturating_record(latency);
        ledger.last_completion_ns = Some(ledger.last_completion_ns.map_or(now, |l| l.max(now)));
        self.slot.completed_ns = Some(now);
    }

    /// Counts the attempt as `outcome`, at its connect's completion time (or now, for one
    /// whose connect never completed: pending).
    fn classify(&mut self, outcome: Outcome) {
        let at_ns = self.slot.completed_ns.unwrap_or_else(|| self.cx.now());
        let tally = &mut self.ledger.tally;
        tally.record(outcome);
        tally.record_completion(outcome, at_ns / 1_000);
    }

    /// Admitted: classified as connected after k SYN retransmits, then held or closed.
    fn admitted(&mut self, now: u64) {
        self.classify(outcome(0, self.slot.k));
        self.ledger.classified += 1;
        let hold_ns = self.cx.settings.hold_ns;
        if hold_ns == 0 {
            self.close();
            return;
        }
        if let Some(s) = self.slot.socket.as_ref() {
            let _ = self.epoll_ctl(libc::EPOLL_CTL_DEL, s.as_raw_fd(), 0);
        }
        self.slot.phase = Phase::Holding;
        self.ledger.hold(self.idx, now + hold_ns);
    }

    /// Classifies and closes.
    fn finish(&mut self, outcome: Outcome) {
        self.classify(outcome);
        self.ledger.classified += 1;
        self.close();
    }

    /// Drops the socket (RST with zero linger, FIN otherwise; closing removes it from epoll).
    fn close(&mut self) {
        self.slot.socket = None;
        self.slot.phase = Phase::Done;
        self.ledger.done += 1;
    }

    /// Registers, changes or removes `fd` (the slot's socket); the errno if the kernel
    /// refused. Callers that must see events check it (an unwatched attempt would only end at
    /// its deadline); a failed DEL is harmless (the socket is about to be closed).
    fn epoll_ctl(&self, op: libc::c_int, fd: i32, events: u32) -> Result<(), i32> {
        let mut ev = libc::epoll_event {
            events,
            u64: self.idx as u64,
        };
        // SAFETY: `ev` is a valid epoll_event for the call; epoll and fd are open descriptors
        // (the slot still owns its socket).
        let rc = unsafe { libc::epoll_ctl(self.cx.epoll.as_raw_fd(), op, fd, &mut ev) };
        if rc == 0 {
            Ok(())
        } else {
            Err(errno_of(&io::Error::last_os_error()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_errno_mapping_for_every_phase() {
        assert_eq!(outcome(0, 0), Outcome::Established);
        assert_eq!(outcome(0, 3), Outcome::SynRetransmitted { k: 3 });
        assert_eq!(outcome(libc::ECONNREFUSED, 0), Outcome::Refused);
        assert_eq!(outcome(libc::ETIMEDOUT, 6), Outcome::Timeout);
        // A reset, however the kernel words it.
        assert_eq!(outcome(libc::ECONNRESET, 2), Outcome::Reset);
        assert_eq!(outcome(libc::EPIPE, 2), Outcome::Reset);
        assert_eq!(
            outcome(libc::EADDRNOTAVAIL, 0),
            Outcome::Error {
                errno: libc::EADDRNOTAVAIL
            }
        );
    }
}
