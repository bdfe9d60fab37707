//! The connect-pattern syntax shared by `stampede-agent fire --pattern` and scenario files:
//! `burst` (all at once), `ramp:RATE:DUR` (open loop, RATE connects per second for DUR),
//! `waves:K:PERIOD` (K bursts, PERIOD apart).

use std::time::Duration;

use crate::duration::{format_duration, parse_duration};
use crate::pb;

/// A pattern that could not be parsed; the message names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pattern \"{input}\": {reason} (expected burst, ramp:RATE:DUR or waves:K:PERIOD)")]
pub struct ParsePatternError {
    input: String,
    reason: String,
}

/// A connect pattern.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    /// Every connect at the start instant.
    Burst,
    /// Open loop: `rate` connects per second for `duration`.
    Ramp {
        /// Connects per second.
        rate: f64,
        /// How long.
        duration: Duration,
    },
    /// `waves` bursts, `period` apart.
    Waves {
        /// Number of bursts (≥ 1).
        waves: u32,
        /// Time between bursts.
        period: Duration,
    },
}

impl Pattern {
    /// The most connections this pattern can issue: a ramp issues one every 1/rate for its
    /// duration, so ceil(rate × duration) (at least 1); bursts and waves take any number.
    pub fn max_connections(&self) -> Option<u64> {
        match self {
            Pattern::Ramp { rate, duration } => {
                Some((rate * duration.as_secs_f64()).ceil().max(1.0) as u64)
            }
            Pattern::Burst | Pattern::Waves { .. } => None,
        }
    }

    /// How long the pattern itself lasts: a ramp's duration, the time from the first wave
    /// to the last; zero for a burst.
    pub fn duration(&self) -> Duration {
        match self {
            Pattern::Burst => Duration::ZERO,
            Pattern::Ramp { duration, .. } => *duration,
            Pattern::Waves { waves, period } => *period * waves.saturating_sub(1),
        }
    }

    /// This pattern for one agent issuing `share` (0..=1) of a run's connections: a ramp's
    /// rate is the whole run's, so each agent ramps at its share of it; bursts and waves are
    /// the same for every agent.
    pub fn share(self, share: f64) -> Pattern {
        match self {
            Pattern::Ramp { rate, duration } => Pattern::Ramp {
                rate: rate * share,
                duration,
            },
            other => other,
        }
    }
}

impl std::str::FromStr for Pattern {
    type Err = ParsePatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| ParsePatternError {
            input: s.to_owned(),
            reason,
        };
        let parts: Vec<&str> = s.trim().split(':').collect();
        match parts.as_slice() {
            ["burst"] => Ok(Pattern::Burst),
            ["ramp", rate, dur] => {
                let rate: f64 = rate
                    .parse()
                    .ok()
                    .filter(|r: &f64| r.is_finite() && *r > 0.0)
                    .ok_or_else(|| err(format!("rate {rate:?} is not a positive number")))?;
                let duration = parse_duration(dur).map_err(|e| err(e.to_string()))?;
                if duration.is_zero() {
                    return Err(err("a ramp needs a duration above zero".into()));
                }
                Ok(Pattern::Ramp { rate, duration })
            }
            ["waves", k, period] => {
                let waves: u32 =
                    k.parse().ok().filter(|k| *k >= 1).ok_or_else(|| {
                        err(format!("wave count {k:?} is not a whole number ≥ 1"))
                    })?;
                let period = parse_duration(period).map_err(|e| err(e.to_string()))?;
                Ok(Pattern::Waves { waves, period })
            }
            _ => Err(err("unknown pattern".into())),
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Burst => f.write_str("burst"),
            Pattern::Ramp { rate, duration } => {
                write!(f, "ramp:{rate}:{}", format_duration(*duration))
            }
            Pattern::Waves { waves, period } => {
                write!(f, "waves:{waves}:{}", format_duration(*period))
            }
        }
    }
}

serde_via_str!(Pattern);

impl From<Pattern> for pb::Pattern {
    fn from(p: Pattern) -> Self {
        match p {
            Pattern::Burst => pb::Pattern {
                kind: pb::PatternKind::Burst as i32,
                ..Default::default()
            },
            Pattern::Ramp { rate, duration } => pb::Pattern {
                kind: pb::PatternKind::Ramp as i32,
                rate_per_sec: rate,
                duration_ms: duration.as_millis() as u64,
                ..Default::default()
            },
            Pattern::Waves { waves, period } => pb::Pattern {
                kind: pb::PatternKind::Waves as i32,
                waves,
                period_ms: period.as_millis() as u64,
                ..Default::default()
            },
        }
    }
}

impl TryFrom<pb::Pattern> for Pattern {
    type Error = ParsePatternError;

    fn try_from(p: pb::Pattern) -> Result<Self, Self::Error> {
        let err = |reason: &str| ParsePatternError {
            input: format!("{p:?}"),
            reason: reason.to_owned(),
        };
        match pb::PatternKind::try_from(p.kind) {
            Ok(pb::PatternKind::Burst) => Ok(Pattern::Burst),
            Ok(pb::PatternKind::Ramp)
                if p.rate_per_sec.is_finite() && p.rate_per_sec > 0.0 && p.duration_ms > 0 =>
            {
                Ok(Pattern::Ramp {
                    rate: p.rate_per_sec,
                    duration: Duration::from_millis(p.duration_ms),
                })
            }
            Ok(pb::PatternKind::Waves) if p.waves >= 1 => Ok(Pattern::Waves {
                waves: p.waves,
                period: Duration::from_millis(p.period_ms),
            }),
            Ok(pb::PatternKind::Ramp) => {
                Err(err("a ramp needs rate_per_sec > 0 and duration_ms > 0"))
            }
            Ok(pb::PatternKind::Waves) => Err(err("waves needs waves >= 1")),
            _ => Err(err("pattern kind not set")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_travels() {
        for s in ["burst", "ramp:500:2s", "waves:3:1s", "ramp:0.5:1m"] {
            let p: Pattern = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
            assert_eq!(Pattern::try_from(pb::Pattern::from(p)).unwrap(), p);
        }
    }

    #[test]
    fn refusals_name_the_value() {
        for bad in [
            "",
            "bursts",
            "ramp:0:1s",
            "ramp:x:1s",
            "ramp:5",
            "ramp:5:0",
            "waves:0:1s",
            "waves:2:soon",
        ] {
            let e = bad.parse::<Pattern>().unwrap_err();
            assert!(e.to_string().contains(&format!("\"{bad}\"")), "{e}");
        }
        assert!(Pattern::try_from(pb::Pattern::default()).is_err());
    }
}
