//! The load a run asks for, and the one place its rules are checked.
//!
//! A [`Load`] is what to fire (target, connections, pattern, deadline, hold, close, admission
//! check). It comes from three places: `stampede-agent fire` flags, a coordinator scenario (file
//! and flags) and the wire (`pb::Prepare`). Each of them builds a `Load` and calls
//! [`Load::check`], so a rule the user can hit (zero connections, a zero or over-long timeout,
//! a hold or a pattern over a day, a ramp too short for its connections, greeting and probe
//! together) is written once and reads the same everywhere. What only one side knows (the
//! agent's allow-list, cap and fd limit; the coordinator's agent count) is checked there.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::duration::format_duration;
use crate::pattern::{ParsePatternError, Pattern};
use crate::pb;
use crate::report::Admission;

/// How connections are closed after the hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CloseMode {
    /// RST (SO_LINGER zero): no TIME_WAIT on the agent, so ports are reusable at once.
    #[default]
    Rst,
    /// FIN: an orderly close; TIME_WAIT stays on the agent for 60 s.
    Fin,
}

/// A close mode that is neither `rst` nor `fin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid close mode \"{0}\": expected rst or fin")]
pub struct ParseCloseError(pub String);

impl FromStr for CloseMode {
    type Err = ParseCloseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rst" => Ok(CloseMode::Rst),
            "fin" => Ok(CloseMode::Fin),
            _ => Err(ParseCloseError(s.to_owned())),
        }
    }
}

impl std::fmt::Display for CloseMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CloseMode::Rst => "rst",
            CloseMode::Fin => "fin",
        })
    }
}

serde_via_str!(CloseMode);

impl From<CloseMode> for pb::CloseMode {
    fn from(c: CloseMode) -> Self {
        match c {
            CloseMode::Rst => pb::CloseMode::Rst,
            CloseMode::Fin => pb::CloseMode::Fin,
        }
    }
}

/// Why a load is not valid; the message names the value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadError {
    /// `connections` is zero.
    #[error("invalid connections 0: at least 1 is needed")]
    NoConnections,
    /// A ramp that cannot issue all connections within its duration.
    #[error(
        "pattern {pattern} issues at most {fits} connections, not {connections}: raise the rate or the duration, or lower the connections"
    )]
    RampTooShort {
        /// The pattern.
        pattern: String,
        /// What fits.
        fits: u64,
        /// Requested.
        connections: u64,
    },
    /// A zero deadline.
    #[error("invalid timeout 0: an attempt needs time to connect")]
    ZeroTimeout,
    /// A deadline past what the latency histograms hold (1 h): latencies would be clamped.
    #[error("invalid timeout {timeout}: at most 1h (the latency histograms' range)")]
    TimeoutTooLong {
        /// The timeout, as given.
        timeout: String,
    },
    /// A hold or a pattern longer than [`MAX_SPAN`]: a typo (`1000h`), not a test.
    #[error("invalid {what} {value}: at most 24h")]
    TooLong {
        /// `hold` or `pattern duration`.
        what: &'static str,
        /// The value, as given.
        value: String,
    },
    /// A duration a `Prepare` cannot carry: the wire holds whole milliseconds, so `500us`
    /// would arrive as 0 (and every agent refuse it) and `1.5ms` as 1ms.
    #[error("invalid {what} {value}: a run sends it to agents in whole milliseconds")]
    NotWholeMillis {
        /// `timeout`, `hold`, `ramp duration` or `wave period`.
        what: &'static str,
        /// The value, as given.
        value: String,
    },
    /// Both admission checks at once.
    #[error(
        "expect_greeting and probe_admission exclude each other: the first is for servers that speak first, the second for clients that do"
    )]
    GreetingAndProbe,
    /// A plan on the wire with no target.
    #[error("the plan names no target")]
    NoTarget,
    /// A plan on the wire with more than one target.
    #[error("the plan names {0} targets; an agent fires at one per run")]
    TargetCount(usize),
    /// A target that is not `IP:PORT`.
    #[error("invalid target {0:?}: expected IP:PORT")]
    BadTarget(String),
    /// A plan on the wire without a pattern.
    #[error("the plan has no pattern")]
    NoPattern,
    /// A plan on the wire with an unusable pattern.
    #[error("the plan's pattern is unusable: {0}")]
    Pattern(String),
    /// A close mode on the wire this build does not know.
    #[error("the plan's close mode {0} is unknown")]
    Close(i32),
}

impl From<ParsePatternError> for LoadError {
    fn from(e: ParsePatternError) -> Self {
        LoadError::Pattern(e.to_string())
    }
}

/// What to fire: a checked load (see [`Load::check`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Where to connect.
    pub target: SocketAddr,
    /// How many attempts.
    pub connections: u64,
    /// When to issue them.
    pub pattern: Pattern,
    /// Deadline of each attempt (connect, then greeting), from its intended send time.
    pub timeout: Duration,
    /// How long to keep an admitted connection open before closing it.
    pub hold: Duration,
    /// How to close.
    pub close: CloseMode,
    /// The target greets on accept: measure time to first byte; no greeting = ghost.
    pub expect_greeting: bool,
    /// The client speaks first: send one byte after connecting; never acknowledged by the
    /// deadline = ghost.
    pub probe_admission: bool,
}

/// Default deadline of an attempt, from its intended send time.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest hold, and longest pattern (a ramp's duration, waves' first to last): a day.
pub const MAX_SPAN: Duration = Duration::from_secs(24 * 3600);

impl Load {
    /// A burst of `connections` to `target` with every other setting at its default.
    pub fn burst(target: SocketAddr, connections: u64) -> Load {
        Load {
            target,
            connections,
            pattern: Pattern::Burst,
            timeout: DEFAULT_TIMEOUT,
            hold: Duration::ZERO,
            close: CloseMode::Rst,
            expect_greeting: false,
            probe_admission: false,
        }
    }

    /// Every rule a load must follow, wherever it came from.
    pub fn check(&self) -> Result<(), LoadError> {
        if self.connections == 0 {
            return Err(LoadError::NoConnections);
        }
        if self.timeout.is_zero() {
            return Err(LoadError::ZeroTimeout);
        }
        if self.timeout.as_micros() > u128::from(crate::histogram::MAX_LATENCY_US) {
            return Err(LoadError::TimeoutTooLong {
                timeout: format_duration(self.timeout),
            });
        }
        if self.hold > MAX_SPAN {
            return Err(LoadError::TooLong {
                what: "hold",
                value: format_duration(self.hold),
            });
        }
        // Waves' span is computed checked: a huge period times many waves overflows.
        let span = match self.pattern {
            Pattern::Waves { waves, period } => period.checked_mul(waves.saturating_sub(1)),
            p => Some(p.duration()),
        };
        if span.is_none_or(|s| s > MAX_SPAN) {
            return Err(LoadError::TooLong {
                what: "pattern duration",
                value: self.pattern.to_string(),
            });
        }
        if self.expect_greeting && self.probe_admission {
            return Err(LoadError::GreetingAndProbe);
        }
        // A ramp issues attempt i at i / rate; the last one must go before it ends.
        if let Some(fits) = self.pattern.max_connections()
            && self.connections > fits
        {
            return Err(LoadError::RampTooShort {
                pattern: self.pattern.to_string(),
                fits,
                connections: self.connections,
            });
        }
        Ok(())
    }

    /// The rule of a load that travels in a `Prepare` ([`Load::to_prepare`]), on top of
    /// [`Load::check`]: its durations are whole milliseconds, the wire's unit, so what the
    /// agents receive is exactly what was asked for.
    pub fn check_wire(&self) -> Result<(), LoadError> {
        let pattern = match self.pattern {
            Pattern::Burst => None,
            Pattern::Ramp { duration, .. } => Some(("ramp duration", duration)),
            Pattern::Waves { period, .. } => Some(("wave period", period)),
        };
        let durations = [("timeout", self.timeout), ("hold", self.hold)];
        for (what, d) in durations.into_iter().chain(pattern) {
            if d.subsec_nanos() % 1_000_000 != 0 {
                return Err(LoadError::NotWholeMillis {
                    what,
                    value: format_duration(d),
                });
            }
        }
        Ok(())
    }

    /// How connected attempts are checked for admission.
    pub fn admission(&self) -> Admission {
        Admission::of(self.expect_greeting, self.probe_admission)
    }

    /// The plan message for one agent's part of a run.
    pub fn to_prepare(&self, run_id: &str) -> pb::Prepare {
        pb::Prepare {
            run_id: run_id.to_owned(),
            targets: vec![self.target.to_string()],
            connections: self.connections,
            pattern: Some(self.pattern.into()),
            timeout_ms: self.timeout.as_millis() as u64,
            hold_ms: self.hold.as_millis() as u64,
            close: pb::CloseMode::from(self.close) as i32,
            expect_greeting: self.expect_greeting,
            probe_admission: self.probe_admission,
            // Not the load's: the run sets it for its fleet (the coordinator's `pacing`).
            liveness_ms: 0,
        }
    }
}

impl TryFrom<&pb::Prepare> for Load {
    type Error = LoadError;

    /// The load a `Prepare` asks for, checked like any other.
    fn try_from(p: &pb::Prepare) -> Result<Self, Self::Error> {
        let target = match p.targets.as_slice() {
            [one] => one.parse().map_err(|_| LoadError::BadTarget(one.clone()))?,
            [] => return Err(LoadError::NoTarget),
            many => return Err(LoadError::TargetCount(many.len())),
        };
        let pattern = p.pattern.ok_or(LoadError::NoPattern)?.try_into()?;
        let close = match pb::CloseMode::try_from(p.close) {
            Ok(pb::CloseMode::Fin) => CloseMode::Fin,
            // Unspecified is the default, RST.
            Ok(_) => CloseMode::Rst,
            Err(_) => return Err(LoadError::Close(p.close)),
        };
        let load = Load {
            target,
            connections: p.connections,
            pattern,
            timeout: Duration::from_millis(p.timeout_ms),
            hold: Duration::from_millis(p.hold_ms),
            close,
            expect_greeting: p.expect_greeting,
            probe_admission: p.probe_admission,
        };
        load.check()?;
        Ok(load)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(connections: u64) -> Load {
        Load::burst("127.0.0.1:9000".parse().unwrap(), connections)
    }

    #[test]
    fn rules_name_the_problem() {
        assert_eq!(load(0).check(), Err(LoadError::NoConnections));
        let ramp = |c, p: &str| Load {
            pattern: p.parse().unwrap(),
            ..load(c)
        };
        let e = ramp(500, "ramp:100:2s").check().unwrap_err();
        assert!(e.to_string().contains("at most 200"), "{e}");
        assert!(ramp(200, "ramp:100:2s").check().is_ok());
        let timeout = |t| Load {
            timeout: t,
            ..load(1)
        };
        assert_eq!(timeout(Duration::ZERO).check(), Err(LoadError::ZeroTimeout));
        let e = timeout(Duration::from_secs(3_601)).check().unwrap_err();
        assert!(e.to_string().contains("at most 1h"), "{e}");
        assert!(timeout(Duration::from_secs(3_600)).check().is_ok());
        let hold = |h| Load { hold: h, ..load(1) };
        assert!(hold(MAX_SPAN).check().is_ok());
        let e = hold(MAX_SPAN + Duration::from_secs(1)).check().unwrap_err();
        assert_eq!(e.to_string(), "invalid hold 86401s: at most 24h");
        for (pattern, ok) in [
            ("waves:4294967295:1000000h", false),
            ("waves:25:1h", true),
            ("waves:26:1h", false),
            ("ramp:1:25h", false),
            ("ramp:1:24h", true),
        ] {
            let r = ramp(1, pattern).check();
            assert_eq!(r.is_ok(), ok, "{pattern}: {r:?}");
            if let Err(e) = r {
                assert!(e.to_string().contains("at most 24h"), "{e}");
            }
        }
        let both = Load {
            expect_greeting: true,
            probe_admission: true,
            ..load(1)
        };
        assert_eq!(both.check(), Err(LoadError::GreetingAndProbe));
        assert_eq!(
            "slam".parse::<CloseMode>().unwrap_err().to_string(),
            "invalid close mode \"slam\": expected rst or fin"
        );
    }

    /// Found by coordinator/tests/decoders.rs: a scenario with `timeout = "1us"` planned, and
    /// every agent refused its Prepare (timeout_ms 0); `1.5ms` would have arrived as 1ms.
    #[test]
    fn what_travels_is_whole_milliseconds() {
        let with = |timeout, hold, pattern: &str| Load {
            timeout,
            hold,
            pattern: pattern.parse().unwrap(),
            ..load(1)
        };
        let ms = Duration::from_millis;
        assert_eq!(with(ms(1), ms(1500), "waves:2:1s").check_wire(), Ok(()));
        assert_eq!(with(ms(1), ms(0), "ramp:1:1ms").check_wire(), Ok(()));
        for (l, what) in [
            (
                with(Duration::from_micros(1), ms(0), "burst"),
                "timeout 1us",
            ),
            (
                with(ms(1), Duration::from_micros(1500), "burst"),
                "hold 1.5ms",
            ),
            (with(ms(1), ms(0), "ramp:1:1500us"), "ramp duration 1.5ms"),
            (with(ms(1), ms(0), "waves:2:1.0001s"), "wave period 1.0001s"),
        ] {
            assert_eq!(l.check(), Ok(()));
            let e = l.check_wire().unwrap_err().to_string();
            assert_eq!(
                e,
                format!("invalid {what}: a run sends it to agents in whole milliseconds")
            );
        }
    }

    #[test]
    fn travels_and_is_checked_on_arrival() {
        let l = Load {
            pattern: "waves:3:1s".parse().unwrap(),
            close: CloseMode::Fin,
            hold: Duration::from_millis(250),
            probe_admission: true,
            ..load(30)
        };
        assert_eq!(Load::try_from(&l.to_prepare("r")), Ok(l));
        let mut p = l.to_prepare("r");
        p.timeout_ms = 0;
        assert_eq!(Load::try_from(&p), Err(LoadError::ZeroTimeout));
        p.targets.clear();
        assert_eq!(Load::try_from(&p), Err(LoadError::NoTarget));
        let mut p = l.to_prepare("r");
        p.pattern = None;
        assert_eq!(Load::try_from(&p), Err(LoadError::NoPattern));
        let mut p = l.to_prepare("r");
        p.close = 99;
        assert_eq!(Load::try_from(&p), Err(LoadError::Close(99)));
    }
}
