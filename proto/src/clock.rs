//! Clock-offset math for synchronized starts (docs/design.md "A run, step by step", step 4).
//!
//! An agent sends a probe at t0 (its clock); the coordinator stamps arrival t1 and departure
//! t2 (its clock); the agent notes t3 on receipt. Then
//! `offset = ((t1 - t0) + (t2 - t3)) / 2` (coordinator minus agent) and
//! `rtt = (t3 - t0) - (t2 - t1)`. Asymmetric paths bias the offset by at most rtt/2, so
//! the lowest-RTT of ~16 probes is kept and rtt/2 is its stated uncertainty.

use std::time::{SystemTime, UNIX_EPOCH};

/// How many probes an agent sends per synchronization.
pub const PROBES: usize = 16;

/// Now, in ns since the Unix epoch (the clock every `*_unix_nanos` field uses).
pub fn unix_nanos_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

/// RFC 3339 UTC for ns since the Unix epoch (civil-from-days, no time zone database).
pub fn rfc3339(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let micros = unix_nanos.rem_euclid(1_000_000_000) / 1_000;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// One probe's four timestamps, ns since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    /// Agent clock, probe sent.
    pub t0: i64,
    /// Coordinator clock, probe received.
    pub t1: i64,
    /// Coordinator clock, reply sent.
    pub t2: i64,
    /// Agent clock, reply received.
    pub t3: i64,
}

/// The timestamps widened, so that absurd ones (t1 and t2 come from the peer) cannot
/// overflow the differences: results are clamped to their type instead.
fn wide(t: i64) -> i128 {
    i128::from(t)
}

impl ClockSample {
    /// Coordinator clock minus agent clock, ns (clamped for absurd timestamps).
    pub fn offset_ns(&self) -> i64 {
        let offset = ((wide(self.t1) - wide(self.t0)) + (wide(self.t2) - wide(self.t3))) / 2;
        offset.clamp(i64::MIN.into(), i64::MAX.into()) as i64
    }

    /// Network round trip, ns (the coordinator's processing time excluded; clamped).
    pub fn rtt_ns(&self) -> u64 {
        let rtt = (wide(self.t3) - wide(self.t0)) - (wide(self.t2) - wide(self.t1));
        rtt.clamp(0, u64::MAX.into()) as u64
    }
}

/// The kept estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockEstimate {
    /// Coordinator clock minus agent clock, ns.
    pub offset_ns: i64,
    /// RTT of the sample it came from, ns.
    pub rtt_ns: u64,
}

impl ClockEstimate {
    /// The offset's error bound: half the RTT.
    pub fn uncertainty_ns(&self) -> u64 {
        self.rtt_ns / 2
    }

    /// Converts a coordinator-clock instant into this agent's clock.
    pub fn to_agent(&self, coordinator_unix_nanos: i64) -> i64 {
        coordinator_unix_nanos.saturating_sub(self.offset_ns)
    }

    /// Converts an agent-clock instant into the coordinator's clock.
    pub fn to_coordinator(&self, agent_unix_nanos: i64) -> i64 {
        agent_unix_nanos.saturating_add(self.offset_ns)
    }
}

/// The lowest-RTT sample's estimate; `None` without samples.
pub fn best(samples: &[ClockSample]) -> Option<ClockEstimate> {
    samples
        .iter()
        .min_by_key(|s| s.rtt_ns())
        .map(|s| ClockEstimate {
            offset_ns: s.offset_ns(),
            rtt_ns: s.rtt_ns(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe over a path with one-way delays `up` and `down`, against a coordinator clock
    /// `offset` ahead of the agent's, processing for `proc_ns`.
    fn probe(t0: i64, offset: i64, up: i64, down: i64, proc_ns: i64) -> ClockSample {
        let t1 = t0 + up + offset;
        let t2 = t1 + proc_ns;
        ClockSample {
            t0,
            t1,
            t2,
            t3: t2 - offset + down,
        }
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        // 2026-11-25T01:22:54.5Z
        assert_eq!(
            rfc3339(1_795_569_774_500_000_000),
            "2026-11-25T01:22:54.500000Z"
        );
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn symmetric_path_gives_the_exact_offset() {
        let s = probe(1_000, 5_000_000, 40_000, 40_000, 3_000);
        assert_eq!(s.offset_ns(), 5_000_000);
        assert_eq!(s.rtt_ns(), 80_000);
    }

    #[test]
    fn lowest_rtt_wins_and_bounds_the_error() {
        let offset = -123_456_789;
        let samples = [
            probe(0, offset, 900_000, 100_000, 1_000),
            probe(10, offset, 30_000, 50_000, 1_000),
            probe(20, offset, 400_000, 400_000, 1_000),
        ];
        let e = best(&samples).unwrap();
        assert_eq!(e.rtt_ns, 80_000);
        // Asymmetry (30 vs 50 us) biases the offset, within the stated uncertainty.
        assert!((e.offset_ns - offset).unsigned_abs() <= e.uncertainty_ns());
        assert_eq!(e.to_coordinator(e.to_agent(42)), 42);
        assert_eq!(best(&[]), None);
    }

    /// Found by proto/tests/decoders.rs: a coordinator's reply stamped i64::MAX (or an
    /// agent clock near i64::MIN) overflowed the differences, a panic in debug builds and a
    /// wrapped offset in release ones; they are clamped now.
    #[test]
    fn absurd_timestamps_clamp() {
        let s = ClockSample {
            t0: i64::MIN,
            t1: i64::MAX,
            t2: i64::MAX,
            t3: i64::MIN,
        };
        assert_eq!(s.offset_ns(), i64::MAX);
        assert_eq!(s.rtt_ns(), 0);
        let s = ClockSample {
            t0: i64::MIN,
            t1: 0,
            t2: 0,
            t3: i64::MAX,
        };
        assert_eq!(s.rtt_ns(), u64::MAX);
        let e = best(&[s]).unwrap();
        assert_eq!(e.to_agent(i64::MIN), i64::MIN);
        assert_eq!(e.to_coordinator(i64::MAX), i64::MAX);
    }
}
