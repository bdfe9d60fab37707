//! What a target run is asked to do, validated: where to listen, the backlog passed to
//! listen(), when and how fast to accept, what to do with each accepted connection.
//!
//! The binary's flags and the gRPC `Configure` request both end up here, so every value is
//! checked in one place and every refusal names the value.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use stampede_proto::duration::{format_duration, parse_duration};

/// A value that cannot be used; the message names the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} \"{value}\": {reason}")]
pub struct ConfigError {
    /// The flag or field.
    pub field: &'static str,
    /// The offending value as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, value: impl ToString, reason: impl ToString) -> Self {
        ConfigError {
            field,
            // Echoed in one error line: a huge value is cut to its first hundred characters.
            value: stampede_proto::usage::cut(&value.to_string()).into_owned(),
            reason: reason.to_string(),
        }
    }
}

/// When and how fast the target calls accept().
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AcceptPolicy {
    /// Accept nothing until this long after the policy takes effect.
    pub delay: Duration,
    /// Accepts per second (token bucket); `None` = as fast as possible; `Some(0.0)` = never.
    pub rate_per_sec: Option<f64>,
    /// Token-bucket size: how many accepts may happen back to back (at least 1).
    pub batch: u32,
    /// Accept nothing until resumed.
    pub paused: bool,
}

impl AcceptPolicy {
    /// Checks the values a person or a remote caller could get wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(rate) = self.rate_per_sec
            && (!rate.is_finite() || rate < 0.0)
        {
            return Err(ConfigError::new(
                "accept rate",
                rate,
                "must be a number of accepts per second, 0 or more",
            ));
        }
        Ok(())
    }

    /// The bucket size actually used (0 is taken as 1).
    pub fn burst(&self) -> u32 {
        self.batch.max(1)
    }

    /// The policy as reports and the wire carry it.
    pub fn report(&self) -> stampede_proto::target::AcceptPolicy {
        stampede_proto::target::AcceptPolicy {
            delay_ms: self.delay.as_millis() as u64,
            rate_per_sec: self.rate_per_sec,
            batch: self.batch,
            paused: self.paused,
        }
    }

    /// True when this policy never accepts (paused, or rate 0).
    pub fn never_accepts(&self) -> bool {
        self.paused || self.rate_per_sec == Some(0.0)
    }
}

/// What the target does with each accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnAccept {
    /// Write an 8-byte big-endian timestamp (ns since the Unix epoch) at once, then hold the
    /// connection until the peer closes or the run ends.
    #[default]
    Greet,
    /// Echo what the peer sends until it closes.
    Echo,
    /// Close at once with FIN.
    Close,
    /// Close at once with RST (zero linger).
    Reset,
    /// Hold this long, then close with FIN.
    Hold(Duration),
}

impl std::str::FromStr for OnAccept {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| ConfigError::new("on-accept action", s, reason);
        match s {
            "greet" => Ok(OnAccept::Greet),
            "echo" => Ok(OnAccept::Echo),
            "close" => Ok(OnAccept::Close),
            "reset" => Ok(OnAccept::Reset),
            _ => match s.strip_prefix("hold:") {
                Some(d) => parse_duration(d)
                    .map(OnAccept::Hold)
                    .map_err(|e| bad(&e.to_string())),
                None => Err(bad("expected greet, echo, close, reset or hold:DURATION")),
            },
        }
    }
}

impl std::fmt::Display for OnAccept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OnAccept::Greet => f.write_str("greet"),
            OnAccept::Echo => f.write_str("echo"),
            OnAccept::Close => f.write_str("close"),
            OnAccept::Reset => f.write_str("reset"),
            OnAccept::Hold(d) => write!(f, "hold:{}", format_duration(*d)),
        }
    }
}

/// Everything a target run needs, already validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind the listener to.
    pub listen: SocketAddr,
    /// Backlog passed to listen() as given (the kernel clamps it to somaxconn; 0 admits one).
    pub backlog: i32,
    /// Accept policy at start.
    pub accept: AcceptPolicy,
    /// On-accept action at start.
    pub on_accept: OnAccept,
    /// How often to sample the accept queue (TCP_INFO on the listener).
    pub sample_every: Duration,
    /// Stop by itself after this long.
    pub duration: Option<Duration>,
    /// Where to write the stats JSON at exit.
    pub stats_json: Option<PathBuf>,
    /// Address of the gRPC control service.
    pub control: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            backlog: 128,
            accept: AcceptPolicy::default(),
            on_accept: OnAccept::default(),
            sample_every: Duration::from_millis(1),
            duration: None,
            stats_json: None,
            control: None,
        }
    }
}

impl From<stampede_proto::backlog::BacklogError> for ConfigError {
    fn from(e: stampede_proto::backlog::BacklogError) -> Self {
        ConfigError::new("backlog", e.value, stampede_proto::backlog::EXPECTED)
    }
}

/// A backlog for listen(): 0 or more, by the rule every binary applies
/// ([`stampede_proto::backlog`]); a negative one would run at the kernel's maximum.
pub fn check_backlog(backlog: i32) -> Result<i32, ConfigError> {
    Ok(stampede_proto::backlog::check(backlog)?)
}

impl Config {
    /// Cross-checks the fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_backlog(self.backlog)?;
        self.accept.validate()?;
        if self.sample_every.is_zero() || self.sample_every > Duration::from_secs(10) {
            return Err(ConfigError::new(
                "sample interval",
                format_duration(self.sample_every),
                "must be between 1us and 10s",
            ));
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                "duration",
                "0",
                "must be longer than zero (leave it out to run until stopped)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_accept_parses_and_prints() {
        for s in ["greet", "echo", "close", "reset", "hold:2s", "hold:250ms"] {
            let a: OnAccept = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
        let err = "hold:forever".parse::<OnAccept>().unwrap_err();
        assert!(err.to_string().contains("\"hold:forever\""), "{err}");
        let err = "wave".parse::<OnAccept>().unwrap_err();
        assert!(err.to_string().contains("expected greet"), "{err}");
    }

    #[test]
    fn negative_backlog_is_refused_zero_taken() {
        let with = |backlog| Config {
            backlog,
            ..Config::default()
        };
        assert!(with(0).validate().is_ok());
        assert!(with(i32::MAX).validate().is_ok());
        for b in [-1, -5, i32::MIN] {
            let e = with(b).validate().unwrap_err().to_string();
            assert_eq!(
                e,
                format!("invalid backlog \"{b}\": expected a whole number, 0 or more")
            );
        }
        let long = ConfigError::new("on-accept action", "z".repeat(1 << 20), "no");
        assert!(long.to_string().len() < 200, "{long}");
    }

    #[test]
    fn negative_or_nan_rate_is_refused() {
        for rate in [-1.0, f64::NAN, f64::INFINITY] {
            let p = AcceptPolicy {
                rate_per_sec: Some(rate),
                ..Default::default()
            };
            assert!(p.validate().is_err(), "{rate}");
        }
        let never = AcceptPolicy {
            rate_per_sec: Some(0.0),
            ..Default::default()
        };
        assert!(never.validate().is_ok() && never.never_accepts());
        assert_eq!(AcceptPolicy::default().burst(), 1);
    }
}
