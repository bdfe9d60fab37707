//! Scenario files (`stampede run SCENARIO.toml`) and how flags override them.
//!
//! A scenario carries everything the `run` flags do. Unknown keys are errors that name the
//! file, the line and the key, because a misspelt `conections = 10000` silently ignored
//! would run the wrong test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stampede_proto::duration::parse_duration;
use stampede_proto::pattern::Pattern;
use stampede_proto::pb;

use crate::run::RunPlan;

/// A bad scenario or flag value: exit 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScenarioError(pub String);

/// Every setting of a run; `None` = not given (a default applies).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Address agents dial (the coordinator's gRPC listener).
    pub listen: Option<SocketAddr>,
    /// Agents to wait for.
    pub agents: Option<usize>,
    /// How long to wait for them ("60s").
    pub agent_wait: Option<String>,
    /// One target, HOST:PORT.
    pub target: Option<SocketAddr>,
    /// The target's control service, `http://HOST:PORT`.
    pub target_control: Option<String>,
    /// Backlog to configure on the target before the run.
    pub backlog: Option<i32>,
    /// Connections in total across agents.
    pub connections: Option<u64>,
    /// burst | ramp:RATE:DUR | waves:K:PERIOD.
    pub pattern: Option<String>,
    /// Per-attempt deadline ("10s").
    pub timeout: Option<String>,
    /// Hold established connections ("0").
    pub hold: Option<String>,
    /// rst | fin.
    pub close: Option<String>,
    /// The target greets on accept.
    pub expect_greeting: Option<bool>,
    /// Client speaks first: probe admission with one byte.
    pub probe_admission: Option<bool>,
    /// Minimum time between Start and the start instant ("500ms").
    pub lead: Option<String>,
    /// Output directory for report.json.
    pub out: Option<PathBuf>,
    /// File holding the agents' bearer token.
    pub token_file: Option<PathBuf>,
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Scenario {
    /// Reads a scenario file; errors name the file, line and key.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError(format!("reading scenario {}: {e}", path.display())))?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// Parses scenario text; `name` is used in errors.
    pub fn parse(text: &str, name: &str) -> Result<Scenario, ScenarioError> {
        toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            let msg = e.message().trim().to_owned();
            ScenarioError(match line {
                Some(l) => format!("{name}:{l}: {msg}"),
                None => format!("{name}: {msg}"),
            })
        })
    }

    /// Fills every field `self` leaves unset from `base` (flags over file).
    pub fn over(self, base: Scenario) -> Scenario {
        macro_rules! pick {
            ($($f:ident),*) => { Scenario { $($f: self.$f.or(base.$f)),* } };
        }
        pick!(
            listen,
            agents,
            agent_wait,
            target,
            target_control,
            backlog,
            connections,
            pattern,
            timeout,
            hold,
            close,
            expect_greeting,
            probe_admission,
            lead,
            out,
            token_file
        )
    }

    /// Resolves defaults and checks every value.
    pub fn plan(&self) -> Result<RunPlan, ScenarioError> {
        let dur = |field: &str,
                   v: &Option<String>,
                   default: Duration|
         -> Result<Duration, ScenarioError> {
            match v {
                Some(s) => parse_duration(s).map_err(|e| ScenarioError(format!("{field}: {e}"))),
                None => Ok(default),
            }
        };
        let Some(target) = self.target else {
            return Err(ScenarioError(
                "no target: give --target HOST:PORT (or target = \"HOST:PORT\" in the scenario)"
                    .into(),
            ));
        };
        let agents = self.agents.unwrap_or(1);
        if agents == 0 {
            return Err(ScenarioError(
                "invalid agents \"0\": need at least one agent".into(),
            ));
        }
        let connections = self.connections.unwrap_or(100);
        if connections == 0 {
            return Err(ScenarioError(
                "invalid connections \"0\": need at least one".into(),
            ));
        }
        let pattern: Pattern = self.pattern.as_deref().unwrap_or("burst").parse().map_err(
            |e: stampede_proto::pattern::ParsePatternError| ScenarioError(e.to_string()),
        )?;
        if let Some(most) = pattern.max_connections()
            && connections > most
        {
            return Err(ScenarioError(format!(
                "pattern {pattern} issues at most {most} connections, not {connections}: \
                 raise the rate or the duration, or lower the connections"
            )));
        }
        let close = match self.close.as_deref().unwrap_or("rst") {
            "rst" => pb::CloseMode::Rst,
            "fin" => pb::CloseMode::Fin,
            other => {
                return Err(ScenarioError(format!(
                    "invalid close \"{other}\": expected rst or fin"
                )));
            }
        };
        if self.expect_greeting == Some(true) && self.probe_admission == Some(true) {
            return Err(ScenarioError(
                "expect_greeting and probe_admission exclude each other: the first is for \
                 servers that speak first, the second for clients that do"
                    .into(),
            ));
        }
        let timeout = dur("timeout", &self.timeout, Duration::from_secs(10))?;
        if timeout.is_zero() {
            return Err(ScenarioError(
                "invalid timeout \"0\": attempts need a deadline".into(),
            ));
        }
        if let Some(url) = &self.target_control
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ScenarioError(format!(
                "invalid target_control \"{url}\": expected http://HOST:PORT"
            )));
        }
        Ok(RunPlan {
            agents,
            agent_wait: dur("agent_wait", &self.agent_wait, Duration::from_secs(60))?,
            connections,
            target,
            pattern: pattern.into(),
            timeout,
            hold: dur("hold", &self.hold, Duration::ZERO)?,
            close,
            expect_greeting: self.expect_greeting.unwrap_or(false),
            probe_admission: self.probe_admission.unwrap_or(false),
            lead: dur("lead", &self.lead, Duration::from_millis(500))?,
            target_control: self.target_control.clone(),
            backlog: self.backlog,
            accept_rate: None,
            scenario: serde_json::to_value(self).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            connections: Some(99),
            ..Default::default()
        };
        let plan = flags.over(file).plan().unwrap();
        assert_eq!(plan.connections, 99);
        assert_eq!(plan.agents, 3);
        assert_eq!(plan.pattern.waves, 2);
        assert_eq!(plan.target, "127.0.0.1:9".parse().unwrap());
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
        ] {
            let err = Scenario::parse(s, "s.toml").and_then(|sc| sc.plan().map(|_| sc));
            let msg = err.unwrap_err().to_string();
            assert!(msg.contains(needle), "{s}: {msg}");
        }
    }
}
