//! How many agents one coordinator can hold: each attached session is one file descriptor,
//! beside a full pool of connections not yet authenticated ([`Limits::max_pending`]) and a
//! reserve. The coordinator raises its soft RLIMIT_NOFILE to the hard limit at start and
//! refuses a fleet that cannot fit with one line, before anything is served
//! (docs/design.md "Fleet size").

use stampede_proto::rlimit::FdLimit;

use super::Limits;

/// Descriptors a coordinator keeps beside its agents' sessions and a full pending pool: the
/// listeners, the target's control connection, report and history files, the runtime's own.
pub const FD_RESERVE: u64 = 64;

/// A fleet larger than this coordinator's descriptors can hold (docs/design.md "Fleet
/// size"): refused before anything is served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{agents} agents cannot attach to this coordinator: each session holds a file descriptor, \
     and RLIMIT_NOFILE {soft} (hard limit {hard}) less {pending} for connections not yet \
     authenticated and {FD_RESERVE} in reserve leaves room for {max}; raise the hard limit \
     (ulimit -Hn, LimitNOFILE=) or split the fleet across coordinators"
)]
pub struct FleetTooLarge {
    /// Agents asked for.
    pub agents: usize,
    /// Most agents that fit.
    pub max: u64,
    /// The soft limit (raised to the hard one).
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
    /// The pending pool's bound ([`Limits::max_pending`]).
    pub pending: usize,
}

impl Limits {
    /// Most agents one coordinator with these limits holds under `fd`: one descriptor per
    /// session, beside a full pending pool and [`FD_RESERVE`].
    pub fn max_agents(&self, fd: FdLimit) -> u64 {
        fd.soft
            .saturating_sub(self.max_pending as u64)
            .saturating_sub(FD_RESERVE)
    }

    /// Refuses a fleet of `agents` that cannot fit under `fd`.
    pub fn check_fleet(&self, agents: usize, fd: FdLimit) -> Result<(), FleetTooLarge> {
        let max = self.max_agents(fd);
        if agents as u64 <= max {
            return Ok(());
        }
        Err(FleetTooLarge {
            agents,
            max,
            soft: fd.soft,
            hard: fd.hard,
            pending: self.max_pending,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With this machine's 20,000 descriptors: 18,912 agents fit, one more is refused with a
    /// line naming the limit, what it holds and what to do.
    #[test]
    fn a_fleet_fits_under_the_descriptors_or_is_refused_saying_why() {
        let limits = Limits::default();
        let fd = FdLimit {
            soft: 20_000,
            hard: 20_000,
        };
        assert_eq!(limits.max_agents(fd), 20_000 - 1_024 - 64);
        assert_eq!(limits.check_fleet(18_912, fd), Ok(()));
        let e = limits.check_fleet(18_913, fd).unwrap_err().to_string();
        for part in [
            "18913 agents",
            "RLIMIT_NOFILE 20000",
            "room for 18912",
            "ulimit -Hn",
        ] {
            assert!(e.contains(part), "{part}: {e}");
        }
        assert!(!e.contains('\n'), "one line: {e}");
        // A limit smaller than the pool and the reserve holds no fleet at all.
        let tiny = FdLimit {
            soft: 100,
            hard: 100,
        };
        assert_eq!(limits.max_agents(tiny), 0);
        assert!(limits.check_fleet(1, tiny).is_err());
    }
}
