//! Pacing a ramp: the worker sleeps between connects instead of spinning, and still leaves on
//! time (docs/design.md "Pacing"). Alone in its test binary, so the only worker thread named
//! `stampede-w0` in this process is the one under test.

use std::time::{Duration, Instant};

use stampede_agent::{FireConfig, Plan, arm};
use stampede_lab::{Acceptor, Netns, kernel_tests_enabled};
use tokio_util::sync::CancellationToken;

/// CPU time (user + system, in clock ticks) of this process's thread named `name`, if alive.
fn thread_cpu_ticks(name: &str) -> Option<u64> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
        // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        return Some(utime + stime);
    }
    None
}

/// A ramp of 1,000 connects per second leaves each worker ~1 ms between connects: it must
/// sleep through them (epoll to the microsecond, then a short spin), not poll the whole time
/// (what whole-millisecond epoll timeouts forced: a busy core for any ramp above 1,000/s).
#[test]
fn a_ramp_sleeps_between_connects_and_keeps_time() {
    if !kernel_tests_enabled("a_ramp_sleeps_between_connects_and_keeps_time") {
        return;
    }
    // Without epoll_pwait2 (Linux < 5.11, or refused by a seccomp filter) a worker can only
    // sleep whole milliseconds and spins the rest: the behaviour under test does not exist.
    let mut ev = [libc::epoll_event { events: 0, u64: 0 }];
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a fresh epoll descriptor, a one-entry buffer and a timespec that outlive the
    // call, no signal mask; the descriptor is closed right after.
    let pwait2 = unsafe {
        let ep = libc::epoll_create1(0);
        let rc = libc::syscall(
            libc::SYS_epoll_pwait2,
            libc::c_long::from(ep),
            ev.as_mut_ptr(),
            1 as libc::c_long,
            &raw const ts,
            std::ptr::null::<libc::sigset_t>(),
            0usize,
        );
        libc::close(ep);
        rc
    };
    assert!(
        pwait2 >= 0,
        "epoll_pwait2 unavailable here ({}): the agent's workers fall back to millisecond sleeps",
        std::io::Error::last_os_error()
    );
    let ns = Netns::new("agentpace").unwrap();
    ns.run(|| {
        let acceptor = Acceptor::start().unwrap();
        let mut c = FireConfig::new(acceptor.addr, 2_000);
        c.load.pattern = "ramp:1000:2s".parse().unwrap();
        let plan = Plan::new(c).unwrap();
        assert_eq!(plan.workers(), 1, "a 1,000/s ramp needs one worker");
        let armed = arm(&plan).unwrap();
        let start = Instant::now() + Duration::from_millis(50);
        let done = std::sync::atomic::AtomicBool::new(false);
        let (result, samples) = std::thread::scope(|s| {
            let sampler = s.spawn(|| {
                // (time, CPU ticks) of the worker while it lives: bounded by the run's length.
                let mut samples = Vec::new();
                let until = Instant::now() + Duration::from_secs(30);
                while !done.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
                    if let Some(t) = thread_cpu_ticks("stampede-w0") {
                        samples.push((Instant::now(), t));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                samples
            });
            let r = armed.fire(start, &CancellationToken::new(), None).unwrap();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            (r, sampler.join().unwrap())
        });
        assert_eq!(
            result.tally.outcomes.established, 2_000,
            "{:?}",
            result.tally.outcomes
        );
        // Open loop: on a loaded machine a connect may leave late, never by much for long.
        let lag = &result.tally.issue_lag;
        assert!(
            lag.value_at_quantile(0.5) < 1_000,
            "issue lag p50 {} µs",
            lag.value_at_quantile(0.5)
        );
        // CPU over the samples taken while the ramp ran (from the start instant on).
        let during: Vec<_> = samples.iter().filter(|(t, _)| *t >= start).collect();
        let (Some(first), Some(last)) = (during.first(), during.last()) else {
            panic!(
                "the worker thread was never seen running: {} samples",
                samples.len()
            );
        };
        let wall = last.0 - first.0;
        assert!(
            wall > Duration::from_secs(1),
            "sampled only {wall:?} of the ramp"
        );
        // SAFETY: sysconf has no memory arguments.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let busy = (last.1 - first.1) as f64 / hz / wall.as_secs_f64();
        assert!(
            busy < 0.5,
            "the worker was on a CPU {:.0} % of the ramp: it spins",
            busy * 100.0
        );
    });
}
