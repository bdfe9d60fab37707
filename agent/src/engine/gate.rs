//! The start gate: how a run's threads, started before its Start, learn the start instant.
//!
//! A daemon agent starts its firing threads as soon as it has armed (Prepare): each worker
//! thread builds its worker and waits here, so that taking in a Start only hands an instant
//! to threads already waiting ([`StartGate::open`]), the cheapest thing a Start can cost on
//! a host that 1,000 agents share. The gate is held by whoever may start the run (the
//! session) as a [`StartGate`], and by the threads as a [`StartWait`]:
//! - `open(start)` lets them go, unless the instant passed more than
//!   [`LATE_START_TOLERANCE`] ago: then the run is refused, never fired late;
//! - `close()` (an Abort, a silent coordinator, the session ending: dropping the
//!   [`StartGate`] closes it) sends them home: nothing fires, every attempt is reported
//!   never started, the sockets close;
//! - a gate nobody opens within its bound closes itself, so no thread waits forever.
//!
//! While the gate is shut, threads sleep on a condition variable with no periodic wake-up
//! (a fleet's agents wait there from Prepare to Start); once it opens, they sleep towards
//! the instant looking at the run's cancellation token every [`CANCEL_POLL`], and spin the
//! last [`SPIN`].

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::fire::{FireError, LATE_START_TOLERANCE};

/// The last stretch before the start instant, spun rather than slept (a sleep may
/// overshoot by the timer slack).
const SPIN: Duration = Duration::from_micros(200);

/// How often a thread waiting for the instant looks at the run's cancellation token: an
/// Abort through the gate wakes it at once, a token cancelled by other callers (the local
/// `fire` command's Ctrl-C) within this.
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// Where the gate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No start instant yet.
    Waiting,
    /// Go at this instant.
    Open(Instant),
    /// Closed before the start: nothing fires.
    Closed,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// The instant the gate was opened with, kept when it closes later: threads may have
    /// gone at it before a close reached them.
    opened_at: std::sync::OnceLock<Instant>,
    changed: Condvar,
    /// When a gate nobody opened closes itself (`None`: a bound too far to matter).
    expires: Option<Instant>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a plain enum: a thread that panicked holding the lock left it whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self) {
        let mut state = self.lock();
        if *state != State::Closed {
            *state = State::Closed;
            self.changed.notify_all();
        }
    }
}

/// The side that starts the run: opens the gate, or closes it. Dropping it closes it (a run
/// nobody can start any more must not fire).
#[derive(Debug)]
pub struct StartGate {
    inner: Arc<Inner>,
}

/// The threads' side of a [`StartGate`].
#[derive(Debug, Clone)]
pub struct StartWait {
    inner: Arc<Inner>,
}

impl StartGate {
    /// A closed-to-start gate that closes itself if nobody opens it within `max_wait`.
    pub fn new(max_wait: Duration) -> StartGate {
        StartGate {
            inner: Arc::new(Inner {
                state: Mutex::new(State::Waiting),
                opened_at: std::sync::OnceLock::new(),
                changed: Condvar::new(),
                expires: Instant::now().checked_add(max_wait),
            }),
        }
    }

    /// What the run's threads wait on ([`Armed::fire_at`](crate::Armed::fire_at)).
    pub fn waiter(&self) -> StartWait {
        StartWait {
            inner: self.inner.clone(),
        }
    }

    /// Lets the threads go at `start`. Refused when the instant passed more than
    /// [`LATE_START_TOLERANCE`] ago (the gate then closes: the run never fires late), or when
    /// the gate was closed or opened before.
    pub fn open(&self, start: Instant) -> Result<(), FireError> {
        let mut state = self.inner.lock();
        if *state != State::Waiting {
            return Err(FireError::NotWaiting);
        }
        let late = Instant::now().saturating_duration_since(start);
        if late > LATE_START_TOLERANCE {
            *state = State::Closed;
            self.inner.changed.notify_all();
            return Err(FireError::StartPassed { late });
        }
        *state = State::Open(start);
        let _ = self.inner.opened_at.set(start);
        self.inner.changed.notify_all();
        Ok(())
    }

    /// Sends the threads home if they have not started: nothing fires. Once they run, it is
    /// the run's cancellation token that stops them.
    pub fn close(&self) {
        self.inner.close();
    }
}

impl Drop for StartGate {
    fn drop(&mut self) {
        self.inner.close();
    }
}

impl StartWait {
    /// Waits until the gate opens (its start instant) or closes (`None`), at most until the
    /// gate's bound, which closes it for every thread.
    pub(super) fn opened(&self) -> Option<Instant> {
        let mut state = self.inner.lock();
        loop {
            match *state {
                State::Open(start) => return Some(start),
                State::Closed => return None,
                State::Waiting => {}
            }
            let Some(expires) = self.inner.expires else {
                state = self
                    .inner
                    .changed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            };
            let left = expires.saturating_duration_since(Instant::now());
            if left.is_zero() {
                *state = State::Closed;
                self.inner.changed.notify_all();
                return None;
            }
            state = self
                .inner
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The instant the gate was opened with, if it ever was (even if it closed since).
    pub(super) fn opened_at(&self) -> Option<Instant> {
        self.inner.opened_at.get().copied()
    }

    /// After the gate opened: waits until `start` (asleep until the last [`SPIN`], then
    /// spinning). False if the gate closed or `cancel` fired first: then nothing may fire.
    pub(super) fn until(&self, start: Instant, cancel: &CancellationToken) -> bool {
        let mut state = self.inner.lock();
        loop {
            if *state == State::Closed || cancel.is_cancelled() {
                return false;
            }
            let left = start.saturating_duration_since(Instant::now());
            if left <= SPIN {
                break;
            }
            state = self
                .inner
                .changed
                .wait_timeout(state, (left - SPIN).min(CANCEL_POLL))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(state);
        while Instant::now() < start {
            if cancel.is_cancelled() {
                return false;
            }
            std::hint::spin_loop();
        }
        !cancel.is_cancelled()
    }

    /// Closes the gate from the threads' side (a thread could not be started: the others
    /// must not wait for a run that cannot fire whole).
    pub(super) fn close(&self) {
        self.inner.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opened_gate_gives_every_waiter_the_instant() {
        let gate = StartGate::new(Duration::from_secs(10));
        let start = Instant::now() + Duration::from_millis(30);
        let got = std::thread::scope(|s| {
            let waiters: Vec<_> = (0..3)
                .map(|_| {
                    let w = gate.waiter();
                    s.spawn(move || w.opened())
                })
                .collect();
            gate.open(start).unwrap();
            waiters
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        assert_eq!(got, vec![Some(start); 3]);
        let cancel = CancellationToken::new();
        assert!(gate.waiter().until(start, &cancel));
        assert!(Instant::now() >= start, "never before the instant");
        assert!(matches!(gate.open(start), Err(FireError::NotWaiting)));
    }

    #[test]
    fn a_late_instant_is_refused_and_closes_the_gate() {
        let gate = StartGate::new(Duration::from_secs(10));
        let late = gate.open(Instant::now() - Duration::from_millis(50));
        assert!(
            matches!(late, Err(FireError::StartPassed { .. })),
            "{late:?}"
        );
        assert_eq!(gate.waiter().opened(), None);
        // Within the tolerance: still taken.
        let gate = StartGate::new(Duration::from_secs(10));
        gate.open(Instant::now() - LATE_START_TOLERANCE / 2)
            .unwrap();
    }

    #[test]
    fn closing_or_dropping_the_gate_or_its_bound_sends_waiters_home() {
        let gate = StartGate::new(Duration::from_secs(10));
        let w = gate.waiter();
        let waiting = std::thread::spawn(move || w.opened());
        drop(gate);
        assert_eq!(waiting.join().unwrap(), None);

        let gate = StartGate::new(Duration::from_millis(30));
        let began = Instant::now();
        assert_eq!(gate.waiter().opened(), None, "bounded");
        assert!(began.elapsed() >= Duration::from_millis(25));
        assert!(matches!(
            gate.open(Instant::now() + Duration::from_secs(1)),
            Err(FireError::NotWaiting)
        ));

        // Closed after it opened, before the instant: the wait ends at once, nothing fires.
        let gate = StartGate::new(Duration::from_secs(10));
        let start = Instant::now() + Duration::from_secs(5);
        gate.open(start).unwrap();
        let w = gate.waiter();
        let cancel = CancellationToken::new();
        let began = Instant::now();
        let waiting = std::thread::spawn(move || w.until(start, &cancel));
        gate.close();
        assert!(!waiting.join().unwrap());
        assert!(began.elapsed() < Duration::from_secs(2));

        // A cancelled token is seen while waiting for the instant, too.
        let gate = StartGate::new(Duration::from_secs(10));
        gate.open(start).unwrap();
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert!(!gate.waiter().until(start, &cancel));
    }
}
