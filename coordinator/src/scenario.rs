//! The settings of a run and of a sweep, defined once: every field of [`Scenario`] (and of
//! [`SweepSettings`]) is both a command-line flag (clap derive; its default shown in `--help`,
//! its `STAMPEDE_<FLAG>` environment variable) and a key of a scenario file (TOML; sweep keys in
//! a `[sweep]` table). A file gives the base; flags given on the command line or in the
//! environment override it ([`Scenario::layered`]). Unknown keys are errors that name the file,
//! the line and the key, because a misspelt `conections = 10000` silently ignored would run the
//! wrong test.
//!
//! The policy a run must follow lives here too, not in `main`: [`Scenario::plan`] checks the
//! load (through [`Load::check`], the rules the agents apply as well), the target-control URL
//! and that a backlog has a target to configure; [`Scenario::serve_config`] refuses to listen
//! off loopback without a token and pairs the TLS files.
//!
//! Checks run in one fixed order: every value first (each against its bounds: agents, waits,
//! backlog, connections, durations), then what is missing (a target, a control URL), so the
//! first error reported is the first real one: `--connections 0` without `--target` is about
//! the 0. A scenario file is read only if it is a regular file of at most
//! [`MAX_SCENARIO_BYTES`], and values echoed in errors are cut ([`stampede_proto::usage::cut`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser};
use serde::{Deserialize, Serialize};
use stampede_proto::backlog::{self, BacklogError};
use stampede_proto::duration::Dur;
use stampede_proto::input::{ReadError, read_bounded};
use stampede_proto::pattern::Pattern;
use stampede_proto::plan::{CloseMode, Load, LoadError};
use stampede_proto::token::{Token, TokenError};
use stampede_proto::usage::{cut, cut_values};

use crate::ServeConfig;
use crate::run::RunPlan;
use crate::sweep::SweepPlan;
use crate::threshold::{MAX_THRESHOLDS, Threshold};

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

/// Where a target is not given yet: lets the load's values be checked before the missing
/// target is reported (never used as a target: [`Scenario::plan`] refuses first).
const NO_TARGET: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// A bad scenario or flag value: exit 64. Each message names the value or the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The scenario file could not be read: missing, not a regular file, too large.
    #[error("reading scenario {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: ReadError,
    },
    /// The scenario file is not valid TOML for a scenario.
    #[error("{location}: {message}")]
    File {
        /// `FILE:LINE` (or the file alone).
        location: String,
        /// The parser's complaint, naming the key.
        message: String,
    },
    /// No target given.
    #[error("no target: give --target HOST:PORT (or target = \"HOST:PORT\" in the scenario)")]
    NoTarget,
    /// Zero agents.
    #[error("invalid agents \"0\": need at least one agent")]
    NoAgents,
    /// The load breaks a rule every plan follows.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A target-control URL that is not `http(s)://HOST:PORT`.
    #[error("invalid target_control \"{url}\": expected http://HOST:PORT ({reason})")]
    ControlUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A backlog with nobody to configure it.
    #[error("--backlog needs --target-control to configure the target")]
    BacklogWithoutControl,
    /// A sweep without a target to configure.
    #[error("a sweep sets the target's backlog at each step: give --target-control URL")]
    SweepWithoutControl,
    /// A sweep without backlogs.
    #[error(
        "a sweep needs backlogs: give --backlogs LIST (or backlogs = [...] under [sweep] in the scenario)"
    )]
    NoBacklogs,
    /// A negative backlog (`--backlog`, `--backlogs`, `backlog =`, `backlogs = [...]`).
    #[error(transparent)]
    Backlog(#[from] BacklogError),
    /// `--out` cannot be created or written: found before the run, not after it.
    #[error("--out is not writable: {0}")]
    Out(std::io::Error),
    /// Listening off loopback without a token.
    #[error(
        "listening on {0} without --token-file would let anyone on the network drive the agents; give a token file (or listen on loopback)"
    )]
    TokenRequired(SocketAddr),
    /// The token file is unusable.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A value outside what a setting takes.
    #[error("invalid {name} \"{value}\": expected {expected}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// The value given.
        value: String,
        /// What it takes.
        expected: &'static str,
    },
    /// TLS files given in an unusable combination, or unreadable.
    #[error("{0}")]
    Tls(String),
}

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
    /// Target HOST:PORT (an IP literal).
    #[arg(long, env = "STAMPEDE_TARGET", value_name = "HOST:PORT")]
    pub target: Option<SocketAddr>,
    /// The target's control service (http://HOST:PORT), to configure it and read its stats.
    #[arg(long, env = "STAMPEDE_TARGET_CONTROL", value_name = "URL")]
    pub target_control: Option<String>,
    /// CA (PEM) that signed the target control's certificate, for an https:// --target-control.
    #[arg(long, env = "STAMPEDE_TARGET_CONTROL_CA", value_name = "F")]
    pub target_control_ca: Option<PathBuf>,
    /// Backlog to configure on the target first, 0 or more (needs --target-control).
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

    /// The load, checked (the agents check it again against their own limits).
    pub fn load_spec(&self) -> Result<Load, ConfigError> {
        let load = self.checked_load()?;
        let target = self.target.ok_or(ConfigError::NoTarget)?;
        Ok(Load { target, ..load })
    }

    /// The load's values, checked before anyone asks whether a target was given (its target
    /// is [`NO_TARGET`] until then).
    fn checked_load(&self) -> Result<Load, ConfigError> {
        if self.connections > MAX_CONNECTIONS {
            return Err(invalid(
                "connections",
                self.connections,
                "at most 1000000000 (10000 agents, 100000 each)",
            ));
        }
        let load = Load {
            target: self.target.unwrap_or(NO_TARGET),
            connections: self.connections,
            pattern: self.pattern,
            timeout: self.timeout.0,
            hold: self.hold.0,
            close: self.close,
            expect_greeting: self.expect_greeting,
            probe_admission: self.probe_admission,
        };
        load.check()?;
        // A run's load travels to agents in a Prepare (whole milliseconds).
        load.check_wire()?;
        Ok(load)
    }

    /// Every value against its bounds, in the order of the settings; the load.
    fn check_values(&self) -> Result<Load, ConfigError> {
        if self.agents == 0 {
            return Err(ConfigError::NoAgents);
        }
        if self.agents > MAX_AGENTS {
            return Err(invalid("agents", self.agents, "1 to 10000"));
        }
        if self.agent_wait.0.is_zero() || self.agent_wait.0 > MAX_AGENT_WAIT {
            return Err(invalid(
                "agent_wait",
                self.agent_wait,
                "a duration above 0, at most 24h",
            ));
        }
        if let Some(url) = &self.target_control {
            check_control_url(url)?;
        }
        if let Some(b) = self.backlog {
            backlog::check(b)?;
        }
        let load = self.checked_load()?;
        if self.lead.0 > MAX_LEAD {
            return Err(invalid("lead", self.lead, "at most 1m"));
        }
        check_thresholds(&self.fail_if)?;
        Ok(load)
    }

    /// What a run cannot do without, once every value is good: the load with its target.
    fn check_requirements(&self, load: Load) -> Result<Load, ConfigError> {
        let target = self.target.ok_or(ConfigError::NoTarget)?;
        if self.backlog.is_some() && self.target_control.is_none() {
            return Err(ConfigError::BacklogWithoutControl);
        }
        Ok(Load { target, ..load })
    }

    /// Checks every value, then the rules between them; the plan of the run.
    pub fn plan(&self) -> Result<RunPlan, ConfigError> {
        let load = self.check_values()?;
        let load = self.check_requirements(load)?;
        Ok(RunPlan {
            agents: self.agents,
            agent_wait: self.agent_wait.0,
            load,
            lead: self.lead.0,
            target_control: self.target_control.clone(),
            target_auth: self.target_auth()?,
            backlog: self.backlog,
            accept_rate: None,
            scenario: serde_json::to_value(self).unwrap_or_default(),
        })
    }

    /// What the run presents to the target's control service: the run's token (the same
    /// `--token-file` agents present) and, for an `https://` URL, TLS verified against
    /// `--target-control-ca`.
    fn target_auth(&self) -> Result<crate::target::TargetAuth, ConfigError> {
        let Some(url) = &self.target_control else {
            return Ok(Default::default());
        };
        let token = self
            .token_file
            .as_deref()
            .map(Token::from_file)
            .transpose()?;
        let uri: http::Uri = url.parse().map_err(|_| ConfigError::ControlUrl {
            url: url.clone(),
            reason: "not a URL".into(),
        })?;
        // An IPv6 literal is named without its brackets.
        let host = uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tls = match (uri.scheme_str() == Some("https"), &self.target_control_ca) {
            (true, Some(ca)) => Some(
                stampede_proto::tls::client_config(ca, host, None)
                    .map_err(|e| ConfigError::Tls(e.to_string()))?,
            ),
            (false, None) => None,
            (true, None) => {
                return Err(ConfigError::Tls(format!(
                    "{url} is https: give --target-control-ca F, the CA that signed the target's certificate"
                )));
            }
            (false, Some(_)) => {
                return Err(ConfigError::Tls(format!(
                    "--target-control-ca is for an https:// --target-control, not {url}"
                )));
            }
        };
        Ok(crate::target::TargetAuth { token, tls })
    }

    /// The sweep these settings and `sweep` ask for: the run's values and the sweep's, then
    /// what is missing.
    pub fn sweep_plan(&self, sweep: &SweepSettings) -> Result<SweepPlan, ConfigError> {
        self.check_values()?;
        for b in &sweep.backlogs {
            backlog::check(*b)?;
        }
        if sweep.p99_max.0.is_zero() || sweep.p99_max.0 > MAX_P99 {
            return Err(invalid(
                "p99_max",
                sweep.p99_max,
                "a duration above 0, at most 1h",
            ));
        }
        if sweep.backlogs.is_empty() {
            return Err(ConfigError::NoBacklogs);
        }
        let run = self.plan()?;
        if run.target_control.is_none() {
            return Err(ConfigError::SweepWithoutControl);
        }
        Ok(SweepPlan {
            run,
            backlogs: sweep.backlogs.clone(),
            accept_rates: sweep.accept_rates.iter().map(|r| r.0).collect(),
            p99_max: sweep.p99_max.0,
        })
    }

    /// How the coordinator's endpoint is set up: the token (required off loopback) and TLS.
    pub fn serve_config(&self) -> Result<ServeConfig, ConfigError> {
        let token = match &self.token_file {
            Some(path) => Some(Token::from_file(path)?),
            None => None,
        };
        if token.is_none() && !self.listen.ip().is_loopback() {
            return Err(ConfigError::TokenRequired(self.listen));
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(
                stampede_proto::tls::server_config(cert, key, self.tls_client_ca.as_deref())
                    .map_err(|e| ConfigError::Tls(e.to_string()))?,
            ),
            (None, None) if self.tls_client_ca.is_none() => None,
            _ => {
                return Err(ConfigError::Tls(
                    "TLS needs both --tls-cert and --tls-key (and --tls-client-ca only with them)"
                        .into(),
                ));
            }
        };
        Ok(ServeConfig {
            tls,
            ..ServeConfig::new(self.listen, token)
        })
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

/// At most [`MAX_THRESHOLDS`] `--fail-if` expressions (each was checked when parsed).
pub fn check_thresholds(fail_if: &[Threshold]) -> Result<(), ConfigError> {
    if fail_if.len() > MAX_THRESHOLDS {
        return Err(invalid(
            "fail_if",
            format!("{} expressions", fail_if.len()),
            "at most 100 expressions",
        ));
    }
    Ok(())
}

/// A value outside its bounds; the value is echoed cut to a hundred characters.
fn invalid(name: &'static str, value: impl ToString, expected: &'static str) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: cut(&value.to_string()).into_owned(),
        expected,
    }
}

/// A control URL must be `http://` or `https://` with a host (IPv6 in brackets) and a port.
fn check_control_url(url: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::ControlUrl {
        url: cut(url).into_owned(),
        reason: reason.to_owned(),
    };
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("the scheme must be http or https")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if uri.port_u16().is_none() {
        return Err(bad("no port"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn explicit(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = "agents = 3\nconections = 10\n";
        let err = Scenario::parse(text, "cap.toml").unwrap_err().to_string();
        assert!(err.starts_with("cap.toml:2:"), "{err}");
        assert!(err.contains("conections"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let file = Scenario::parse(
            "agents = 3\nconnections = 30\ntarget = \"127.0.0.1:9\"\npattern = \"waves:2:1s\"\n",
            "s.toml",
        )
        .unwrap();
        let flags = Scenario {
            connections: 99,
            // Not given by the user: the file's value stands.
            agents: 7,
            ..Default::default()
        };
        let plan = Scenario::layered(Some(file), &flags, &explicit(&["connections"]))
            .plan()
            .unwrap();
        assert_eq!(plan.load.connections, 99);
        assert_eq!(plan.agents, 3);
        assert_eq!(plan.load.pattern.to_string(), "waves:2:1s");
        assert_eq!(plan.load.target, "127.0.0.1:9".parse().unwrap());
    }

    #[test]
    fn defaults_are_the_flags_defaults() {
        let s = Scenario::default();
        assert_eq!(s.listen, "127.0.0.1:7700".parse().unwrap());
        assert_eq!((s.agents, s.connections), (1, 100));
        assert_eq!(s.timeout.0, Duration::from_secs(10));
        assert_eq!(s.lead.0, Duration::from_millis(500));
        assert_eq!(s.close, CloseMode::Rst);
        // Every key of the file form is a flag and back: a file written from the defaults
        // reads back as the defaults.
        let text = toml::to_string(&s).unwrap();
        assert_eq!(Scenario::parse(&text, "d.toml").unwrap(), s);
        let sweep = Scenario::parse(
            "[sweep]\nbacklogs = [8, 64]\naccept_rates = [500, \"max\"]\np99_max = \"50ms\"\n",
            "s.toml",
        )
        .unwrap()
        .sweep
        .unwrap();
        assert_eq!(sweep.backlogs, [8, 64]);
        assert_eq!(
            sweep.accept_rates,
            [AcceptRate(500.0), AcceptRate(f64::INFINITY)]
        );
        assert_eq!(sweep.p99_max.0, Duration::from_millis(50));
    }

    #[test]
    fn bad_values_are_named() {
        for (s, needle) in [
            ("target = \"127.0.0.1:9\"\ntimeout = \"5\"", "timeout"),
            ("target = \"127.0.0.1:9\"\npattern = \"spray\"", "spray"),
            ("target = \"127.0.0.1:9\"\nclose = \"slam\"", "slam"),
            ("target = \"127.0.0.1:9\"\nagents = 0", "agents"),
            (
                "target = \"127.0.0.1:9\"\nconnections = 500\npattern = \"ramp:100:4s\"",
                "at most 400",
            ),
            ("connections = 5", "no target"),
            (
                "target = \"127.0.0.1:9\"\nexpect_greeting = true\nprobe_admission = true",
                "exclude each other",
            ),
            ("target = \"localhost\"", "s.toml:1"),
            (
                "target = \"127.0.0.1:9\"\ntarget_control = \"ftp://h:1\"",
                "http or https",
            ),
            ("target = \"127.0.0.1:9\"\nbacklog = 8", "--target-control"),
        ] {
            let err = Scenario::parse(s, "s.toml").and_then(|sc| sc.plan().map(|_| sc));
            let msg = err.unwrap_err().to_string();
            assert!(msg.contains(needle), "{s}: {msg}");
        }
    }

    #[test]
    fn values_are_checked_before_missing_settings() {
        // Each scenario has a bad value and lacks a target: the value is reported.
        for (s, needle) in [
            ("connections = 0", "invalid connections 0"),
            ("agents = 0", "invalid agents \"0\""),
            ("backlog = -5", "invalid backlog \"-5\""),
            ("timeout = \"0\"\nbacklog = 8", "invalid timeout 0"),
            ("lead = \"2m\"", "invalid lead \"2m\""),
        ] {
            let e = Scenario::parse(s, "s.toml").unwrap().plan().unwrap_err();
            assert!(e.to_string().contains(needle), "{s}: {e}");
        }
        let sweep = SweepSettings {
            backlogs: vec![8, -1],
            ..Default::default()
        };
        let e = Scenario::default().sweep_plan(&sweep).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid backlog \"-1\": expected a whole number, 0 or more"
        );
        // All values good: what is missing, in the same order as before.
        let e = Scenario::default().plan().unwrap_err();
        assert!(matches!(e, ConfigError::NoTarget), "{e}");
        let e = Scenario::default()
            .sweep_plan(&SweepSettings::default())
            .unwrap_err();
        assert!(matches!(e, ConfigError::NoBacklogs), "{e}");
    }

    #[test]
    fn absurd_numbers_are_refused_with_their_bounds() {
        let base = "target = \"127.0.0.1:9\"\n";
        for (s, needle) in [
            ("agents = 10001", "expected 1 to 10000"),
            ("connections = 1000000001", "at most 1000000000"),
            ("agent_wait = \"0\"", "above 0, at most 24h"),
            ("agent_wait = \"25h\"", "above 0, at most 24h"),
            ("lead = \"61s\"", "at most 1m"),
            ("hold = \"25h\"", "at most 24h"),
            ("pattern = \"ramp:1:25h\"", "at most 24h"),
        ] {
            let text = format!("{base}{s}\n");
            let e = Scenario::parse(&text, "s.toml")
                .unwrap()
                .plan()
                .unwrap_err();
            assert!(e.to_string().contains(needle), "{s}: {e}");
        }
        for s in [
            "agents = 10000",
            "connections = 1000000000\nagents = 10000",
            "agent_wait = \"24h\"",
            "lead = \"1m\"\nhold = \"24h\"",
            "backlog = 0\ntarget_control = \"http://127.0.0.1:1\"",
        ] {
            let text = format!("{base}{s}\n");
            let plan = Scenario::parse(&text, "s.toml").unwrap().plan();
            assert!(plan.is_ok(), "{s}: {plan:?}");
        }
        let sc = Scenario::parse(
            &format!("{base}target_control = \"http://127.0.0.1:1\"\n"),
            "s.toml",
        )
        .unwrap();
        for p99 in ["0", "61m"] {
            let sweep = SweepSettings {
                backlogs: vec![8],
                p99_max: p99.parse().unwrap(),
                ..Default::default()
            };
            let e = sc.sweep_plan(&sweep).unwrap_err().to_string();
            assert!(e.contains("invalid p99_max"), "{e}");
        }
    }

    #[test]
    fn long_values_in_errors_are_cut() {
        let huge = "q".repeat(1 << 20);
        for text in [
            format!("target = \"127.0.0.1:9\"\npattern = \"{huge}\"\n"),
            format!("{huge} = 1\n"),
            format!("target = \"127.0.0.1:9\"\ntarget_control = \"http://{huge}\"\n"),
        ] {
            let e = Scenario::parse(&text, "s.toml")
                .and_then(|s| s.plan())
                .unwrap_err()
                .to_string();
            assert!(e.len() < 1000, "{}", &e[..300]);
            assert!(e.contains('…'), "{e}");
        }
    }

    /// Found by coordinator/tests/decoders.rs: `timeout = "1us"` planned, then every agent
    /// refused the Prepare it arrived in (0 ms); sub-millisecond parts are refused up front.
    #[test]
    fn what_agents_cannot_receive_is_refused_before_the_run() {
        let text = "target = \"127.0.0.1:9\"\ntimeout = \"500us\"\n";
        let e = Scenario::parse(text, "s.toml")
            .unwrap()
            .plan()
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid timeout 500us: a run sends it to agents in whole milliseconds"
        );
        let text = "target = \"127.0.0.1:9\"\ntimeout = \"2ms\"\nhold = \"1.5s\"\n";
        assert!(Scenario::parse(text, "s.toml").unwrap().plan().is_ok());
    }

    #[test]
    fn control_urls_are_parsed_not_split() {
        assert!(check_control_url("http://[::1]:8001").is_ok());
        assert!(check_control_url("https://198.18.0.5:8001").is_ok());
        let e = check_control_url("http://198.18.0.5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no port"), "{e}");
    }

    #[test]
    fn off_loopback_needs_a_token() {
        let s = Scenario {
            listen: "0.0.0.0:0".parse().unwrap(),
            ..Default::default()
        };
        let e = s.serve_config().unwrap_err().to_string();
        assert!(e.contains("token"), "{e}");
        let s = Scenario {
            tls_cert: Some("c.pem".into()),
            ..Default::default()
        };
        let e = s.serve_config().unwrap_err().to_string();
        assert!(e.contains("--tls-key"), "{e}");
    }
}

#[cfg(test)]
mod fail_if_tests {
    use super::*;

    /// `fail_if = [...]` in a file takes the flag's grammar; a bad expression names the file,
    /// the line and the expression; `--fail-if` given on the command line replaces the list.
    #[test]
    fn fail_if_is_a_key_and_a_flag() {
        let text = "target = \"127.0.0.1:9\"\nfail_if = [\"ghost>0\", \"connect.p99 > 50ms\"]\n";
        let file = Scenario::parse(text, "t.toml").unwrap();
        let exprs: Vec<String> = file.fail_if.iter().map(ToString::to_string).collect();
        assert_eq!(exprs, ["ghost>0", "connect.p99 > 50ms"]);
        let plan = file.plan().unwrap();
        assert_eq!(plan.scenario["fail_if"][1], "connect.p99 > 50ms");

        let err = Scenario::parse("agents = 1\nfail_if = [\"ghost >> 0\"]\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.toml:2:"), "{err}");
        assert!(err.contains("invalid threshold \"ghost >> 0\""), "{err}");

        let flags = Scenario {
            fail_if: vec!["refused>0".parse().unwrap()],
            ..Default::default()
        };
        let explicit: BTreeSet<String> = ["fail_if".to_owned()].into();
        let layered = Scenario::layered(Some(file.clone()), &flags, &explicit);
        assert_eq!(layered.fail_if, flags.fail_if);
        let kept = Scenario::layered(Some(file.clone()), &flags, &BTreeSet::new());
        assert_eq!(kept.fail_if, file.fail_if);
    }

    #[test]
    fn too_many_thresholds_are_refused() {
        let mut s = Scenario {
            target: Some("127.0.0.1:9".parse().unwrap()),
            ..Default::default()
        };
        s.fail_if = vec!["ghost>0".parse().unwrap(); MAX_THRESHOLDS];
        assert!(s.plan().is_ok());
        s.fail_if.push("ghost>0".parse().unwrap());
        let err = s.plan().unwrap_err().to_string();
        assert!(err.contains("invalid fail_if \"101 expressions\""), "{err}");
    }
}
