//! The settings of a run and of a sweep, defined once: every field of [`Scenario`] (and of
//! [`SweepSettings`]) is both a command-line flag (clap derive; its default shown in `--help`,
//! its `STAMPEDE_<FLAG>` environment variable) and a key of a scenario file (TOML; sweep keys in
//! a `[sweep]` table). A file gives the base; flags given on the command line or in the
//! environment override it ([`Scenario::layered`]). Unknown keys are errors that name the file,
//! the line and the key, because a misspelt `conections = 10000` silently ignored would run the
//! wrong test.
//!
//! The policy a run must follow lives here too, not in `main`: [`Scenario::plan`] checks the
//! load (through [`stampede_proto::plan::Load::check`], the rules the agents apply as well),
//! the target-control URL and that a backlog has a target to configure;
//! [`Scenario::serve_config`] refuses to listen off loopback without a token and pairs the
//! TLS files.
//!
//! Checks run in one fixed order: every value first (each against its bounds: agents, waits,
//! backlog, connections, durations), then what is missing (a target, a control URL), so the
//! first error reported is the first real one: `--connections 0` without `--target` is about
//! the 0. A scenario file is read only if it is a regular file of at most
//! [`MAX_SCENARIO_BYTES`], and values echoed in errors are cut ([`stampede_proto::usage::cut`]).
//!
//! This file holds the settings and their file form; `check` the rules and the plans built
//! from them; `error` the [`ConfigError`] every refusal is.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser};
use serde::{Deserialize, Serialize};
use stampede_proto::backlog;
use stampede_proto::duration::Dur;
use stampede_proto::input::{ReadError, read_bounded};
use stampede_proto::pattern::Pattern;
use stampede_proto::plan::CloseMode;
use stampede_proto::usage::{cut, cut_values};

use crate::sweep::Tolerance;
use crate::threshold::Threshold;

mod check;
mod error;
pub mod target_addr;
#[cfg(test)]
mod tests;

pub use check::check_thresholds;
pub use error::ConfigError;

/// Largest scenario file read (a scenario is a few hundred bytes; this bounds a wrong path).
pub const MAX_SCENARIO_BYTES: u64 = 1 << 20;

/// Most agents a run waits for.
pub const MAX_AGENTS: usize = 10_000;

/// Most connections a run asks for: [`MAX_AGENTS`] agents at an agent's default cap
/// (`stampede-agent --max-connections`, 100,000) each.
pub const MAX_CONNECTIONS: u64 = 1_000_000_000;

/// Longest wait for the agents.
pub const MAX_AGENT_WAIT: Duration = Duration::from_secs(24 * 3600);

/// Longest lead between Start and the start instant: agents hold armed sockets meanwhile.
pub const MAX_LEAD: Duration = Duration::from_secs(60);

/// Largest p99 bound a sweep takes: the latency histograms' range (1 h).
pub const MAX_P99: Duration = Duration::from_secs(3600);

/// Every setting of a run: a flag each, and a key each in a scenario file.
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Address agents dial (the coordinator's gRPC listener).
    #[arg(
        long,
        env = "STAMPEDE_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:7700"
    )]
    pub listen: SocketAddr,
    /// Agents to wait for (1 to 10000).
    #[arg(long, env = "STAMPEDE_AGENTS", default_value_t = 1)]
    pub agents: usize,
    /// How long to wait for the agents (at most 24h).
    #[arg(
        long,
        env = "STAMPEDE_AGENT_WAIT",
        value_name = "DUR",
        default_value = "60s"
    )]
    pub agent_wait: Dur,
    /// Target HOST:PORT: an IP literal, or a name resolved once, when read (agents get the
    /// address).
    #[arg(long, env = "STAMPEDE_TARGET", value_name = "HOST:PORT", value_parser = target_addr::parse)]
    #[serde(deserialize_with = "target_addr::deserialize")]
    pub target: Option<SocketAddr>,
    /// The target's control service (http://HOST:PORT), to configure it and read its stats.
    #[arg(long, env = "STAMPEDE_TARGET_CONTROL", value_name = "URL")]
    pub target_control: Option<String>,
    /// CA (PEM) that signed the target control's certificate, for an https:// --target-control.
    #[arg(long, env = "STAMPEDE_TARGET_CONTROL_CA", value_name = "F")]
    pub target_control_ca: Option<PathBuf>,
    /// Backlog to configure on the target first, 0 or more (needs --target-control; without
    /// it the target keeps the backlog it has).
    #[arg(
        long,
        env = "STAMPEDE_BACKLOG",
        allow_negative_numbers = true,
        value_parser = backlog::parse
    )]
    pub backlog: Option<i32>,
    /// Connections in total, split evenly across agents (at most 1000000000).
    #[arg(long, env = "STAMPEDE_CONNECTIONS", default_value_t = 100)]
    pub connections: u64,
    /// burst | ramp:RATE:DUR (RATE for the whole run) | waves:K:PERIOD.
    #[arg(long, env = "STAMPEDE_PATTERN", default_value = "burst")]
    pub pattern: Pattern,
    /// Deadline of each attempt (connect, then greeting), from its intended send time.
    #[arg(
        long,
        env = "STAMPEDE_TIMEOUT",
        value_name = "DUR",
        default_value = "10s"
    )]
    pub timeout: Dur,
    /// Hold each admitted connection open this long before closing it (at most 24h).
    #[arg(long, env = "STAMPEDE_HOLD", value_name = "DUR", default_value = "0")]
    pub hold: Dur,
    /// How agents close connections: rst (no TIME_WAIT on agents) or fin.
    #[arg(long, env = "STAMPEDE_CLOSE", default_value = "rst")]
    pub close: CloseMode,
    /// The target greets on accept: measure time to first byte and detect ghosts.
    #[arg(long, env = "STAMPEDE_EXPECT_GREETING")]
    pub expect_greeting: bool,
    /// The client speaks first: agents send one byte and a connection whose byte is never
    /// acknowledged is a ghost (excludes --expect-greeting).
    #[arg(long, env = "STAMPEDE_PROBE_ADMISSION")]
    pub probe_admission: bool,
    /// Least time between Start and the start instant (raised to 5x the worst agent RTT; at
    /// most 1m).
    #[arg(
        long,
        env = "STAMPEDE_LEAD",
        value_name = "DUR",
        default_value = "500ms"
    )]
    pub lead: Dur,
    /// Directory for report.json, report.csv, report.html and report.hlog (sweep.json,
    /// sweep.csv and sweep.html for a sweep); created and checked writable before anything runs.
    #[arg(long, env = "STAMPEDE_OUT", value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// File holding the bearer token agents must present (required off loopback).
    #[arg(long, env = "STAMPEDE_TOKEN_FILE", value_name = "F")]
    pub token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM) presented to agents (with --tls-key).
    #[arg(long, env = "STAMPEDE_TLS_CERT", value_name = "F")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "STAMPEDE_TLS_KEY", value_name = "F")]
    pub tls_key: Option<PathBuf>,
    /// Require agents to present a client certificate signed by this CA (mutual TLS).
    #[arg(long, env = "STAMPEDE_TLS_CLIENT_CA", value_name = "F")]
    pub tls_client_ca: Option<PathBuf>,
    /// Fail the run (exit 2) when EXPR holds, e.g. connect.p99>50ms, ghost>0,
    /// established<99.5% (repeatable; METRIC OP VALUE: see README "Thresholds").
    #[arg(long = "fail-if", value_name = "EXPR")]
    pub fail_if: Vec<Threshold>,
    /// The `[sweep]` table of a scenario file (its flags belong to `stampede sweep`).
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepSettings>,
}

/// The settings a sweep adds to a run: flags of `stampede sweep`, keys of `[sweep]`.
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SweepSettings {
    /// Backlogs to try, comma-separated, each 0 or more (e.g. 8,64,512,4096).
    #[arg(long, env = "STAMPEDE_BACKLOGS", value_delimiter = ',', value_parser = backlog::parse, allow_negative_numbers = true)]
    pub backlogs: Vec<i32>,
    /// Target accept rates to try, per second, comma-separated; `max` = as fast as possible
    /// (none: leave the target's own policy).
    #[arg(long, env = "STAMPEDE_ACCEPT_RATES", value_delimiter = ',')]
    pub accept_rates: Vec<AcceptRate>,
    /// A recommended backlog must keep p99 connect latency under this (above 0, at most 1h).
    #[arg(
        long,
        env = "STAMPEDE_P99_MAX",
        value_name = "DUR",
        default_value = "100ms"
    )]
    pub p99_max: Dur,
    /// ...and, when the first byte is measured (--expect-greeting: the server speaks first),
    /// p99 accept wait under this (above 0, at most 1h).
    #[arg(
        long,
        env = "STAMPEDE_ACCEPT_WAIT_MAX",
        value_name = "DUR",
        default_value = "100ms"
    )]
    pub accept_wait_max: Dur,
    /// After the backlog list, bisect between the last unclean and the first clean backlog
    /// until they are at most TOL apart: backlog slots (16) or a share of the clean one (5%,
    /// what a bare --refine means).
    #[arg(long, env = "STAMPEDE_REFINE", value_name = "TOL", num_args = 0..=1, default_missing_value = "5%")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refine: Option<Tolerance>,
    /// Rerun the recommended backlog N times; it stands only if every rerun is clean.
    #[arg(long, env = "STAMPEDE_CONFIRM", value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub confirm: u32,
    /// Runs per step (1-100); the step's figures are its median run's.
    #[arg(long, env = "STAMPEDE_REPEAT", value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
}

/// Accepts per second for a sweep step; `max` (infinity) = as fast as possible.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AcceptRate(pub f64);

impl std::str::FromStr for AcceptRate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "max" => Ok(AcceptRate(f64::INFINITY)),
            t => t
                .parse::<f64>()
                .ok()
                .filter(|r| r.is_finite() && *r >= 0.0)
                .map(AcceptRate)
                .ok_or_else(|| {
                    format!(
                        "invalid accept rate \"{}\": expected accepts per second or max",
                        cut(s)
                    )
                }),
        }
    }
}

impl std::fmt::Display for AcceptRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_infinite() {
            f.write_str("max")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl Serialize for AcceptRate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AcceptRate {
    /// A number (`500`) or a string (`"500"`, `"max"`).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(t) => t,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The defaults of a settings type are its flags' defaults: parsed from an empty command
/// line, so they are written once, in the `#[arg]` attributes `--help` shows.
macro_rules! defaults_from_flags {
    ($t:ty) => {
        impl Default for $t {
            fn default() -> Self {
                #[derive(Parser)]
                struct Empty {
                    #[command(flatten)]
                    inner: $t,
                }
                Empty::try_parse_from(["stampede"])
                    .expect("every flag has a default or is optional")
                    .inner
            }
        }
    };
}

defaults_from_flags!(Scenario);
defaults_from_flags!(SweepSettings);

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// `over`'s fields named in `explicit` written over `base` (both as their serialized maps).
fn overlay<T: Serialize + serde::de::DeserializeOwned>(
    base: &T,
    over: &T,
    explicit: &BTreeSet<String>,
) -> T {
    let mut base_v = serde_json::to_value(base).expect("settings serialize");
    let over_v = serde_json::to_value(over).expect("settings serialize");
    if let (Some(b), Some(o)) = (base_v.as_object_mut(), over_v.as_object()) {
        for key in explicit {
            if let Some(v) = o.get(key) {
                b.insert(key.clone(), v.clone());
            }
        }
    }
    serde_json::from_value(base_v).expect("a serialized settings map reads back")
}

impl Scenario {
    /// Reads a scenario file (a regular file of at most [`MAX_SCENARIO_BYTES`]); errors name
    /// the file, line and key.
    pub fn load(path: &Path) -> Result<Scenario, ConfigError> {
        let name = path.display().to_string();
        let read = |source| ConfigError::Read {
            path: name.clone(),
            source,
        };
        let file = read_bounded(path, MAX_SCENARIO_BYTES).map_err(read)?;
        let text = String::from_utf8(file.bytes).map_err(|_| {
            read(ReadError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not UTF-8 text",
            )))
        })?;
        Scenario::parse(&text, &name)
    }

    /// Parses scenario text; `name` is used in errors.
    pub fn parse(text: &str, name: &str) -> Result<Scenario, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            let message = e.message().trim();
            // A bad value's message names the value; the key is on its line.
            let key = line
                .and_then(|l| text.lines().nth(l - 1))
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim())
                .filter(|k| !k.is_empty() && !message.contains(k));
            ConfigError::File {
                location: match line {
                    Some(l) => format!("{name}:{l}"),
                    None => name.to_owned(),
                },
                // A 10 MB value or key is echoed as its first hundred characters.
                message: match key {
                    Some(k) => format!("{}: {}", cut(k), cut_values(message)),
                    None => cut_values(message),
                },
            }
        })
    }

    /// The settings of a run: `file` (or the defaults) with the flags the user gave
    /// (`explicit`: their names, as on the command line or in the environment) over it.
    pub fn layered(
        file: Option<Scenario>,
        flags: &Scenario,
        explicit: &BTreeSet<String>,
    ) -> Scenario {
        overlay(&file.unwrap_or_default(), flags, explicit)
    }
}

impl SweepSettings {
    /// The sweep settings: the file's `[sweep]` table (or the defaults) with the flags the
    /// user gave over it.
    pub fn layered(
        file: Option<SweepSettings>,
        flags: &SweepSettings,
        explicit: &BTreeSet<String>,
    ) -> SweepSettings {
        overlay(&file.unwrap_or_default(), flags, explicit)
    }
}
