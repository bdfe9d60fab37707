//! What the agent's benches share: the engine run they time (`engine`), the raw one-thread
//! baselines they compare it with (`raw`), and the lines every figure is printed with (the
//! machine, the load, the time).
//!
//! Both sides of every comparison are timed the same way: from the first connect() call to
//! the return of the epoll_wait that delivered the last completion, each completion stamped
//! with the time its epoll_wait returned (docs in `raw` and in BENCHMARKS.md).

pub(crate) mod engine;
pub(crate) mod raw;

use std::process::Command;

/// `name` from the environment, parsed, or `default`.
pub(crate) fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median (the mean of the two middle values for an even count).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "median of nothing");
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    }
}

/// True (and nothing printed) when running as root; otherwise says why `bench` is skipped.
pub(crate) fn root_or_skip(bench: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    println!("{bench} bench: skipped, needs root for a network namespace");
    false
}

/// `cargo bench` lists targets with `--list` (e.g. `cargo test --benches -- --list`).
pub(crate) fn listing_only() -> bool {
    std::env::args().any(|a| a == "--list")
}

/// The load average now, as `uptime` gives it (1, 5, 15 minutes).
pub(crate) fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// One line saying when and where: UTC time, CPU model and cores, kernel, load.
pub(crate) fn machine() -> String {
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!(
        "{date}, {cpu}, {cores} cores, Linux {kernel}, load {}",
        load()
    )
}
