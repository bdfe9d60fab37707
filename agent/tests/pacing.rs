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
        let (first, last) = (during.first().unwrap(), during.last().unwrap());
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
