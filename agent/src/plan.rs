//! What to fire: a [`FireConfig`] as the user (or the coordinator) states it, validated into a
//! [`Plan`] whose [`Schedule`] gives every attempt its intended send time.
//!
//! Validation here is pure (no sockets, no sysctls): connection count and cap, allow-list,
//! source-address families, pattern arithmetic. Checks against the host (fd limit, ephemeral
//! ports) happen when arming ([`crate::arm`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use stampede_proto::pattern::Pattern;

use crate::cidr::Cidr;

/// Connects per second of a ramp that one worker thread paces on its own: on a 2-vCPU VM one
/// thread keeps 20,000/s on time, and a one-thread C loop falls behind at 25-30,000/s
/// (BENCHMARKS.md "Ramp precision", `cargo bench -p stampede-agent --bench ramp`).
pub const RAMP_RATE_PER_WORKER: f64 = 20_000.0;

/// Default per-run connection cap (`--max-connections`).
pub const DEFAULT_MAX_CONNECTIONS: u64 = 100_000;
pub use stampede_proto::plan::{CloseMode, DEFAULT_TIMEOUT, Load, LoadError};

/// A run as requested, before validation: the load, and the limits this agent puts on it.
#[derive(Debug, Clone, PartialEq)]
pub struct FireConfig {
    /// What to fire (target, connections, pattern, deadline, hold, close, admission check).
    /// With `probe_admission`, an attempt sends one byte after connecting and watches
    /// `tcpi_unacked`; still unacknowledged at the deadline = ghost (docs/kernel.md §3). Sending may
    /// itself rescue a phantom if it reaches the server while its accept queue has room.
    pub load: Load,
    /// Source addresses to spread connections over (empty: the kernel chooses).
    pub source_ips: Vec<IpAddr>,
    /// Targets this agent may connect to.
    pub allow_targets: Vec<Cidr>,
    /// Cap on `connections`.
    pub max_connections: u64,
    /// Worker threads (None: one per core, fewer for small runs).
    pub workers: Option<usize>,
}

impl FireConfig {
    /// A burst of `connections` to `target` with every other setting at its default.
    pub fn new(target: SocketAddr, connections: u64) -> FireConfig {
        FireConfig::of_load(Load::burst(target, connections))
    }

    /// `load` under this agent's default limits.
    pub fn of_load(load: Load) -> FireConfig {
        FireConfig {
            load,
            source_ips: Vec::new(),
            allow_targets: Cidr::loopback(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            workers: None,
        }
    }
}

/// Why a configuration is not a valid plan.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The load itself breaks a rule every plan follows.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Above `--max-connections`.
    #[error(
        "{connections} connections exceed this agent's cap of {max} per run (--max-connections)"
    )]
    OverCap {
        /// Requested.
        connections: u64,
        /// The cap.
        max: u64,
    },
    /// The target is outside the allow-list.
    #[error("target {target} is not allowed: outside --allow-target {allowed}")]
    TargetNotAllowed {
        /// The target.
        target: SocketAddr,
        /// The allow-list, comma-separated.
        allowed: String,
    },
    /// A source address of the other family than the target.
    #[error("source IP {source_ip} cannot reach target {target}: address families differ")]
    SourceFamily {
        /// The source address.
        source_ip: IpAddr,
        /// The target.
        target: SocketAddr,
    },
    /// Zero workers.
    #[error("invalid workers 0: at least 1 is needed")]
    NoWorkers,
}

/// When each attempt is meant to be issued, as an offset from the start instant; one value
/// drives the single executor for every pattern.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pattern: Pattern,
    connections: u64,
}

impl Schedule {
    /// The schedule of `connections` attempts under `pattern`.
    pub fn new(pattern: Pattern, connections: u64) -> Schedule {
        Schedule {
            pattern,
            connections,
        }
    }

    /// Intended send time of attempt `i` (0-based), from the start; non-decreasing in `i`.
    pub fn offset(&self, i: u64) -> Duration {
        match self.pattern {
            Pattern::Burst => Duration::ZERO,
            Pattern::Ramp { rate, .. } => Duration::from_secs_f64(i as f64 / rate),
            Pattern::Waves { waves, period } => {
                // Attempt i belongs to wave floor(i * K / N): K nearly equal waves.
                let wave = (u128::from(i) * u128::from(waves)) / u128::from(self.connections);
                period * wave as u32
            }
        }
    }

    /// Intended time of the last attempt.
    pub fn span(&self) -> Duration {
        self.offset(self.connections.saturating_sub(1))
    }

    /// Number of attempts.
    pub fn len(&self) -> u64 {
        self.connections
    }

    /// True if there are no attempts (never, for a validated plan).
    pub fn is_empty(&self) -> bool {
        self.connections == 0
    }
}

/// A validated plan: every field checked, ready to arm.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    config: FireConfig,
    schedule: Schedule,
}

impl Plan {
    /// Validates a configuration.
    pub fn new(config: FireConfig) -> Result<Plan, PlanError> {
        config.load.check()?;
        let load = &config.load;
        if load.connections > config.max_connections {
            return Err(PlanError::OverCap {
                connections: load.connections,
                max: config.max_connections,
            });
        }
        if !config
            .allow_targets
            .iter()
            .any(|c| c.contains(load.target.ip()))
        {
            let allowed: Vec<String> = config.allow_targets.iter().map(|c| c.to_string()).collect();
            return Err(PlanError::TargetNotAllowed {
                target: load.target,
                allowed: if allowed.is_empty() {
                    "(none)".into()
                } else {
                    allowed.join(",")
                },
            });
        }
        if let Some(ip) = config
            .source_ips
            .iter()
            .find(|ip| ip.is_ipv4() != load.target.is_ipv4())
        {
            return Err(PlanError::SourceFamily {
                source_ip: *ip,
                target: load.target,
            });
        }
        if config.workers == Some(0) {
            return Err(PlanError::NoWorkers);
        }
        let schedule = Schedule::new(config.load.pattern, config.load.connections);
        Ok(Plan { config, schedule })
    }

    /// The configuration it was made from.
    pub fn config(&self) -> &FireConfig {
        &self.config
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Worker threads to use: as configured, else by what the pattern needs, never more
    /// than one per core or than attempts. A burst or waves: one per core but at least ~500
    /// attempts each (threads cost more than they give for small runs). A ramp: one per
    /// [`RAMP_RATE_PER_WORKER`] connects per second: one thread paces a ramp more precisely
    /// than several that share the cores with the listener and the kernel's own work, and
    /// only a rate beyond one thread's reach needs another (docs/design.md "Pacing").
    pub fn workers(&self) -> usize {
        let n = self.config.load.connections as usize;
        let workers = self.config.workers.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
            let wanted = match self.config.load.pattern {
                Pattern::Ramp { rate, .. } => (rate / RAMP_RATE_PER_WORKER).ceil() as usize,
                Pattern::Burst | Pattern::Waves { .. } => n.div_ceil(500),
            };
            cores.min(wanted)
        });
        workers.clamp(1, n.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(connections: u64) -> FireConfig {
        FireConfig::new("127.0.0.1:9000".parse().unwrap(), connections)
    }

    #[test]
    fn schedules_are_monotonic_and_shaped() {
        let burst = Schedule::new(Pattern::Burst, 10);
        assert!((0..10).all(|i| burst.offset(i).is_zero()));
        let ramp = Schedule::new("ramp:100:1s".parse().unwrap(), 100);
        assert_eq!(ramp.offset(0), Duration::ZERO);
        assert_eq!(ramp.offset(50), Duration::from_millis(500));
        assert_eq!(ramp.span(), Duration::from_millis(990));
        let waves = Schedule::new("waves:3:1s".parse().unwrap(), 10);
        let offs: Vec<u64> = (0..10).map(|i| waves.offset(i).as_secs()).collect();
        assert_eq!(offs, [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]);
        for s in [ramp, waves] {
            assert!((1..s.len()).all(|i| s.offset(i) >= s.offset(i - 1)));
        }
    }

    #[test]
    fn validation_names_the_problem() {
        assert_eq!(
            Plan::new(cfg(0)),
            Err(PlanError::Load(LoadError::NoConnections))
        );
        let mut c = cfg(10);
        c.max_connections = 5;
        assert!(matches!(Plan::new(c), Err(PlanError::OverCap { .. })));
        let mut c = cfg(10);
        c.load.target = "10.1.2.3:80".parse().unwrap();
        let e = Plan::new(c).unwrap_err();
        assert!(e.to_string().contains("10.1.2.3:80"), "{e}");
        assert!(e.to_string().contains("127.0.0.0/8"), "{e}");
        let mut c = cfg(10);
        c.load.target = "10.1.2.3:80".parse().unwrap();
        c.allow_targets = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(Plan::new(c).is_ok());
        let mut c = cfg(10);
        c.source_ips = vec!["::1".parse().unwrap()];
        assert!(matches!(Plan::new(c), Err(PlanError::SourceFamily { .. })));
        let mut c = cfg(500);
        c.load.pattern = "ramp:100:2s".parse().unwrap();
        let e = Plan::new(c).unwrap_err();
        assert!(e.to_string().contains("at most 200"), "{e}");
        let mut c = cfg(200);
        c.load.pattern = "ramp:100:2s".parse().unwrap();
        assert!(Plan::new(c).is_ok());
        let mut c = cfg(1);
        c.load.timeout = Duration::ZERO;
        assert_eq!(Plan::new(c), Err(PlanError::Load(LoadError::ZeroTimeout)));
        let mut c = cfg(1);
        c.load.timeout = Duration::from_secs(3_601);
        let e = Plan::new(c).unwrap_err();
        assert!(e.to_string().contains("at most 1h"), "{e}");
        let mut c = cfg(1);
        c.load.timeout = Duration::from_secs(3_600);
        assert!(Plan::new(c).is_ok());
        let mut c = cfg(1);
        c.load.expect_greeting = true;
        c.load.probe_admission = true;
        assert_eq!(
            Plan::new(c),
            Err(PlanError::Load(LoadError::GreetingAndProbe))
        );
    }

    #[test]
    fn workers_scale_with_the_run() {
        assert_eq!(Plan::new(cfg(20)).unwrap().workers(), 1);
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let ramp = |rate: f64| {
            let mut c = cfg(100_000);
            c.load.pattern = Pattern::Ramp {
                rate,
                duration: Duration::from_secs_f64(100_000.0 / rate),
            };
            Plan::new(c).unwrap().workers()
        };
        // A ramp gets threads by its rate, not its size: one paces 20,000/s.
        assert_eq!(ramp(5_000.0), 1);
        assert_eq!(ramp(20_000.0), 1);
        assert_eq!(ramp(40_000.0), cores.min(2));
        assert_eq!(ramp(1e6), cores.min(50));
        let mut c = cfg(3);
        c.workers = Some(8);
        assert_eq!(Plan::new(c).unwrap().workers(), 3);
    }
}
