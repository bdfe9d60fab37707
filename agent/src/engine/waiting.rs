//! How a worker waits: on its epoll instance, to the microsecond.
//!
//! A ramp's connects are due every few tens of µs to a few ms; a worker must sleep between
//! them (a spinning worker starves the threads that handle completions, and on a small host the
//! listener's own softirq work) yet leave on time. `epoll_wait` counts whole milliseconds, so a
//! worker waiting for a connect due in 0.9 ms could only spin. [`wait`] takes a timeout in
//! nanoseconds (`epoll_pwait2`, Linux 5.11; on an older kernel it falls back to whole
//! milliseconds, rounded down, and spins the rest; so does a host whose seccomp filter refuses
//! the call), and [`precise_timers`] asks the kernel to wake the calling thread within 1 µs of
//! the timeout instead of the default 50 µs slack (epoll adds its own: a thousandth of the
//! timeout, a two-hundredth when niced, which the worker allows for). The worker then sleeps to [`SPIN_BEFORE`] ahead of a
//! connect and spins (polling epoll without sleeping) the last stretch: the wake-up's own
//! latency is absorbed there.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long before a connect's intended time a worker stops sleeping and spins, at least.
pub(super) const SPIN_BEFORE: Duration = Duration::from_micros(50);

/// The most a worker spins before a connect: a long sleep (a slow ramp, the gap between
/// waves) lets a virtual CPU halt, and waking a halted one takes its host up to milliseconds;
/// spinning the last stretch keeps it running. One part in [`SPIN_SHARE`] of the gap to the
/// previous connect is spun, between [`SPIN_BEFORE`] and this, so a worker spins at most
/// ~5 % of a slow schedule's time.
pub(super) const SPIN_MAX: Duration = Duration::from_millis(2);

/// The share of the gap between two connects spun before the second: one part in this.
pub(super) const SPIN_SHARE: u64 = 20;

/// How long before a connect due `gap_ns` after the previous one (or the start) a worker
/// stops sleeping and spins.
pub(super) fn spin_margin_ns(gap_ns: u64) -> u64 {
    (gap_ns / SPIN_SHARE).clamp(SPIN_BEFORE.as_nanos() as u64, SPIN_MAX.as_nanos() as u64)
}

/// Set once `epoll_pwait2` failed other than by a signal (ENOSYS on kernels before 5.11,
/// EPERM under a seccomp filter that does not know it): whole milliseconds from then on.
static NO_PWAIT2: AtomicBool = AtomicBool::new(false);

/// Asks for this thread's timers to fire within 1 µs of their time (`PR_SET_TIMERSLACK`);
/// without it a sleep may end up to 50 µs late. Best effort: a refusal keeps the default.
pub(super) fn precise_timers() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer (the slack in ns, for the calling thread
    // only) and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong, 0, 0, 0) };
}

/// Waits on `epoll` up to `timeout_ns` (0: poll without sleeping) for events into `events`;
/// how many came.
pub(super) fn wait(
    epoll: BorrowedFd<'_>,
    events: &mut [libc::epoll_event],
    timeout_ns: u64,
) -> usize {
    let max = events.len() as i32;
    if timeout_ns > 0 && !NO_PWAIT2.load(Ordering::Relaxed) {
        let ts = libc::timespec {
            tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `events` is a writable buffer of `max` entries and `ts` a valid timespec,
        // both outliving the call; a null sigmask leaves the signal mask alone (its size
        // argument is then unused).
        let got = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                libc::c_long::from(epoll.as_raw_fd()),
                events.as_mut_ptr(),
                libc::c_long::from(max),
                &raw const ts,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if got >= 0 {
            return got as usize;
        }
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            return 0;
        }
        NO_PWAIT2.store(true, Ordering::Relaxed);
    }
    let timeout_ms = (timeout_ns / 1_000_000).min(i32::MAX as u64) as i32;
    // SAFETY: as above, with a timeout in milliseconds.
    let got = unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
    got.max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fast schedule spins its 50 µs; a slow one a twentieth of its gap, at most 2 ms.
    #[test]
    fn the_spin_margin_grows_with_the_gap_within_bounds() {
        let us = |n: u64| n * 1_000;
        assert_eq!(spin_margin_ns(0), us(50), "a burst: the floor");
        assert_eq!(spin_margin_ns(us(100)), us(50), "10,000/s");
        assert_eq!(spin_margin_ns(us(1_000)), us(50), "1,000/s: 5 % of the gap");
        assert_eq!(spin_margin_ns(us(10_000)), us(500), "100/s");
        assert_eq!(
            spin_margin_ns(us(50_000)),
            us(2_000),
            "waves 50 ms apart: the cap"
        );
        assert_eq!(spin_margin_ns(u64::MAX), us(2_000));
    }
}
