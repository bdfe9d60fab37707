//! The rules a run's settings must follow, checked in one fixed order: every value against its
//! bounds first, then what is missing (a target, a control URL), so the first error reported is
//! the first real one. Then the plan of the run or sweep, the endpoint's token and TLS, and the
//! target control's authentication.

use std::net::SocketAddr;

use stampede_proto::backlog;
use stampede_proto::plan::Load;
use stampede_proto::token::Token;
use stampede_proto::usage::cut;

use super::*;
use crate::ServeConfig;
use crate::run::RunPlan;
use crate::sweep::SweepPlan;
use crate::threshold::MAX_THRESHOLDS;

/// Where a target is not given yet: lets the load's values be checked before the missing
/// target is reported (never used as a target: [`Scenario::plan`] refuses first).
const NO_TARGET: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

impl Scenario {
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
        if sweep.accept_wait_max.0.is_zero() || sweep.accept_wait_max.0 > MAX_P99 {
            return Err(invalid(
                "accept_wait_max",
                sweep.accept_wait_max,
                "a duration above 0, at most 1h",
            ));
        }
        // A scenario file's values skip the flags' range checks.
        if !(1..=100).contains(&sweep.repeat) {
            return Err(invalid("repeat", sweep.repeat, "a number of runs, 1-100"));
        }
        if sweep.confirm > 100 {
            return Err(invalid(
                "confirm",
                sweep.confirm,
                "a number of reruns, 0-100",
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
            accept_wait_max: sweep.accept_wait_max.0,
            refine: sweep.refine,
            confirm: sweep.confirm,
            repeat: sweep.repeat,
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
            expected_agents: self.agents,
            ..ServeConfig::new(self.listen, token)
        })
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
pub(super) fn check_control_url(url: &str) -> Result<(), ConfigError> {
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
