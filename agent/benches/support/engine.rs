//! The engine side of the agent's benches: `Plan` → `arm` → `Armed::fire`, timed by what the
//! engine itself records, which is the method of `raw`: the first connect() call
//! (`first_connect_offset`) to the last completion (`last_completion`, stamped when the
//! epoll_wait that returned it came back).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stampede_agent::{FireConfig, Plan, arm};
use stampede_proto::pattern::Pattern;
use stampede_proto::plan::Load;
use tokio_util::sync::CancellationToken;

/// What one engine run did, in the figures the benches compare.
pub(crate) struct EngineRun {
    /// Worker threads the plan used.
    pub(crate) workers: usize,
    /// Creating and configuring the sockets, before the start instant.
    pub(crate) arm: Duration,
    /// First to last connect() call.
    pub(crate) issue: Duration,
    /// First connect() call to the last completion seen.
    pub(crate) all: Duration,
    /// Attempts classified established (or connected after SYN retransmits).
    pub(crate) established: u64,
    /// Attempts with a completion (every one, when nothing was skipped or left pending).
    pub(crate) completed: u64,
    /// Attempts cancelled because the engine fell behind its schedule.
    pub(crate) skipped: u64,
    /// Mean connect() call → completion seen: the mean connect latency (measured from the
    /// intended time) minus the mean issue lag (intended time → connect() call).
    pub(crate) mean_latency: Duration,
    /// Connect latency from the intended time: p50 and p99, µs.
    pub(crate) latency_p50_us: u64,
    /// See `latency_p50_us`.
    pub(crate) latency_p99_us: u64,
    /// Issue lag (intended time → connect() call), p99 and max, µs.
    pub(crate) lag_p99_us: u64,
    /// See `lag_p99_us`.
    pub(crate) lag_max_us: u64,
    /// The agent's own one-paragraph summary, for failed assertions.
    pub(crate) summary: String,
}

impl EngineRun {
    /// Completions per second, first call to last completion.
    pub(crate) fn rate(&self) -> f64 {
        self.completed as f64 / self.all.as_secs_f64().max(1e-9)
    }

    /// Mean attempts in flight, by Little's law (rate × mean time in flight), as for `raw`.
    pub(crate) fn in_flight(&self) -> f64 {
        self.rate() * self.mean_latency.as_secs_f64()
    }
}

/// A ramp of `n` attempts to `addr` at `rate` per second (RST close, no greeting).
pub(crate) fn ramp(addr: SocketAddr, n: u64, rate: f64) -> Load {
    let mut load = Load::burst(addr, n);
    // One millisecond of slack: attempt n-1 is due at (n-1)/rate, inside the duration.
    let duration = Duration::from_secs_f64(n as f64 / rate) + Duration::from_millis(1);
    load.pattern = Pattern::Ramp { rate, duration };
    load
}

/// Arms and fires `load` with `workers` (None: the plan's choice) and returns its figures.
pub(crate) fn run(load: Load, workers: Option<usize>) -> EngineRun {
    let target = load.target;
    let n = load.connections;
    let mut c = FireConfig::of_load(load);
    c.workers = workers;
    c.max_connections = n;
    let plan = Plan::new(c).expect("a valid bench plan");
    let t = Instant::now();
    let armed = arm(&plan).expect("arming the bench's sockets");
    let arm_time = t.elapsed();
    let r = armed
        .fire(
            Instant::now() + Duration::from_millis(5),
            &CancellationToken::new(),
            None,
        )
        .expect("firing");
    let first = r.first_connect_offset.unwrap_or_default();
    let lat = &r.tally.connect_latency;
    let mean_us = (lat.mean() - r.tally.issue_lag.mean()).max(0.0);
    EngineRun {
        workers: plan.workers(),
        arm: arm_time,
        issue: r.issue_duration,
        all: r.last_completion.unwrap_or_default().saturating_sub(first),
        established: r.tally.outcomes.admitted(),
        completed: lat.len(),
        skipped: r.skipped_overdue,
        mean_latency: Duration::from_secs_f64(mean_us / 1e6),
        latency_p50_us: lat.value_at_quantile(0.5),
        latency_p99_us: lat.value_at_quantile(0.99),
        lag_p99_us: r.tally.issue_lag.value_at_quantile(0.99),
        lag_max_us: r.tally.issue_lag.max(),
        summary: r.summary(&target.to_string(), "bench"),
    }
}
