//! Start spread across 4 agents on 4 "hosts" (network namespaces on a bridge, stampede-lab):
//! how far apart, in coordinator time, the agents' first connects land after one Start.
//! Each run is a 4,000-connection burst at a target on a fifth host. Prints per-run and
//! summary figures; asserts nothing. Needs root.
//!
//! Run: `cargo bench -p stampede --bench spread`

use std::time::Duration;

use stampede::auth::Token;
use stampede::run::RunPlan;
use stampede_agent::session::{self, SessionConfig};
use stampede_lab::Lab;
use stampede_proto::plan::Load;
use stampede_target::Target;
use stampede_target::config::{Config as TargetConfig, OnAccept};
use tokio_util::sync::CancellationToken;

const AGENTS: usize = 4;
const RUNS: usize = 5;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn main() {
    if !stampede_lab::is_root() {
        eprintln!("spread bench: needs root (network namespaces); skipped");
        return;
    }
    let lab = Lab::new("spread", AGENTS + 2).expect("creating the lab");
    let (coord_host, target_host) = (0, AGENTS + 1);
    let coord_addr = std::net::SocketAddr::from((lab.addr(coord_host), 7700));
    let target_addr = std::net::SocketAddr::from((lab.addr(target_host), 8000));
    let control_addr = std::net::SocketAddr::from((lab.addr(target_host), 8001));
    let stop = CancellationToken::new();
    std::thread::scope(|s| {
        // The target.
        {
            let (ns, stop) = (lab.host(target_host), stop.clone());
            s.spawn(move || {
                ns.enter_current_thread().unwrap();
                runtime().block_on(async {
                    let target = Target::bind(&TargetConfig {
                        listen: target_addr,
                        backlog: 8192,
                        on_accept: OnAccept::Reset,
                        control: Some(control_addr),
                        ..TargetConfig::default()
                    })
                    .expect("target");
                    target.run(stop).await.expect("target run");
                });
            });
        }
        // The agents, each on its own host.
        for i in 1..=AGENTS {
            let (ns, stop) = (lab.host(i), stop.clone());
            s.spawn(move || {
                ns.enter_current_thread().unwrap();
                runtime().block_on(async {
                    let config = SessionConfig {
                        coordinator: format!("http://{coord_addr}"),
                        token: Token::new("bench"),
                        id: format!("agent-{i}"),
                        allow: vec!["198.18.0.0/24".parse().unwrap()],
                        ..SessionConfig::loopback()
                    };
                    let _ = session::run(config, stop).await;
                });
            });
        }
        // The coordinator, on host 0.
        let ns = lab.host(coord_host);
        let stop2 = stop.clone();
        s.spawn(move || {
            ns.enter_current_thread().unwrap();
            runtime().block_on(async move {
                let c = stampede::serve(
                    stampede::ServeConfig::new(coord_addr, Token::new("bench")),
                    stop2.clone(),
                )
                .await
                .expect("coordinator");
                let plan = RunPlan {
                    agents: AGENTS,
                    agent_wait: Duration::from_secs(20),
                    load: Load {
                        timeout: Duration::from_secs(5),
                        ..Load::burst(target_addr, 4_000)
                    },
                    lead: Duration::from_millis(500),
                    target_control: Some(format!("http://{control_addr}")),
                    target_auth: Default::default(),
                    backlog: None,
                    accept_rate: None,
                    scenario: serde_json::Value::Null,
                };
                let mut spreads = Vec::new();
                for run in 0..RUNS {
                    let done = match stampede::run::execute(&c.registry, &plan, &stop2, &|_| {})
                        .await
                    {
                        Ok(done) => done,
                        Err(e) => {
                            eprintln!("run {run} failed: {e}");
                            break;
                        }
                    };
                    let r = done.report;
                    let errors: Vec<String> = r
                        .agents
                        .iter()
                        .map(|a| {
                            format!(
                                "{}: start error {}us (clock ±{}us)",
                                a.id,
                                a.start_error_us.unwrap_or_default(),
                                a.clock_uncertainty_us
                            )
                        })
                        .collect();
                    let spread = r.start_spread_us.unwrap_or_default();
                    spreads.push(spread);
                    println!(
                        "run {run}: start spread {spread}us, {} attempts, issue {}us | {}",
                        r.outcomes.total(),
                        r.issue_duration_us.unwrap_or_default(),
                        errors.join("; ")
                    );
                }
                stop2.cancel();
                if spreads.is_empty() {
                    return;
                }
                spreads.sort_unstable();
                let n = spreads.len();
                println!(
                    "start spread across {AGENTS} agents in separate namespaces: median {}us, max {}us over {n} runs",
                    spreads[n / 2],
                    spreads[n - 1]
                );
            });
        });
    });
}
