//! `stampede demo`: the whole system in one process on loopback, over real gRPC and real
//! sockets. A target with a small backlog that accepts slowly (50/s), N agents attached to
//! a coordinator with a fresh token, one synchronized burst with greetings expected: the
//! report shows connections delayed by SYN retransmits and ghosts (connected, never
//! accepted), as docs/kernel.md §2–§3 describe. Needs no root.

use std::time::Duration;

use stampede_agent::session::{self, SessionConfig};
use stampede_proto::duration::Dur;
use stampede_target::Target;
use stampede_target::config::{AcceptPolicy, Config as TargetConfig, OnAccept};
use stampede_target::control::ControlAuth;
use tokio_util::sync::CancellationToken;

use crate::auth::Token;
use crate::run::Finished;
use crate::scenario::{ConfigError, Scenario};

/// The demo's knobs.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Agents.
    pub agents: usize,
    /// Connections in total.
    pub connections: u64,
    /// The target's backlog.
    pub backlog: i32,
}

impl DemoConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, value: String, expected| ConfigError::Invalid {
            name,
            value,
            expected,
        };
        if !(1..=64).contains(&self.agents) {
            return Err(invalid("agents", self.agents.to_string(), "1 to 64"));
        }
        if !(1..=10_000).contains(&self.connections) {
            return Err(invalid(
                "connections",
                self.connections.to_string(),
                "1 to 10000 for the demo",
            ));
        }
        stampede_proto::backlog::check(self.backlog)?;
        Ok(())
    }
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The target could not start.
    #[error("starting the demo's target: {0}")]
    Target(#[from] stampede_target::Error),
    /// The coordinator endpoint could not start.
    #[error("starting the demo's coordinator: {0}")]
    Serve(#[from] std::io::Error),
    /// The demo's own plan was refused (a bug: its values are fixed or validated).
    #[error(transparent)]
    Plan(#[from] ConfigError),
    /// The run failed.
    #[error(transparent)]
    Run(#[from] crate::run::RunError),
}

/// Runs the demo and returns its report.
pub async fn run(
    config: &DemoConfig,
    shutdown: &CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Finished, DemoError> {
    let stop = shutdown.child_token();
    let _stop_all = stop.clone().drop_guard();

    // A per-demo secret: loopback only, but the agents and the target's
    // control still authenticate.
    let secret = format!(
        "demo-{:x}-{}",
        stampede_proto::clock::unix_nanos_now(),
        std::process::id()
    );
    let token = Token::new(&secret).expect("non-empty");
    let target = Target::bind(&TargetConfig {
        listen: "127.0.0.1:0".parse().expect("literal address"),
        backlog: config.backlog,
        accept: AcceptPolicy {
            rate_per_sec: Some(50.0),
            ..Default::default()
        },
        on_accept: OnAccept::Greet,
        control: Some("127.0.0.1:0".parse().expect("literal address")),
        ..TargetConfig::default()
    })?
    .with_control_auth(ControlAuth {
        token: Some(token.clone()),
        tls: None,
    });
    let target_addr = target.local_addr();
    let control = target.control_addr().expect("control was asked for");
    tokio::spawn(target.run(stop.clone()));

    let coordinator = crate::serve(
        crate::ServeConfig::new(
            "127.0.0.1:0".parse().expect("literal address"),
            Some(token.clone()),
        ),
        stop.clone(),
    )
    .await?;
    for i in 0..config.agents {
        let session = SessionConfig {
            coordinator: format!("http://{}", coordinator.addr),
            token: Some(token.clone()),
            id: format!("agent-{}", i + 1),
            ..SessionConfig::loopback()
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = session::run(session, stop).await {
                tracing::error!(cause = %e, "demo agent failed");
            }
        });
    }

    let mut plan = Scenario {
        agents: config.agents,
        agent_wait: Dur(Duration::from_secs(10)),
        target: Some(target_addr),
        connections: config.connections,
        timeout: Dur(Duration::from_secs(4)),
        expect_greeting: true,
        lead: Dur(Duration::from_millis(300)),
        target_control: Some(format!("http://{control}")),
        backlog: Some(config.backlog),
        ..Scenario::default()
    }
    .plan()?;
    plan.target_auth.token = Some(token);
    // What the demo is, rather than every default it did not choose.
    plan.scenario = serde_json::json!({
        "demo": true,
        "agents": config.agents,
        "connections": config.connections,
        "backlog": config.backlog,
        "target_accept_rate_per_sec": 50,
        "pattern": "burst",
        "expect_greeting": true,
        "timeout": "4s",
    });
    Ok(crate::run::execute(&coordinator.registry, &plan, shutdown, progress).await?)
}
