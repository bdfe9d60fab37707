//! Two agents, each pinned to a core of its own, against a target on a third "host", with a
//! packet capture on the agents' bridge ports as the independent observer of when each
//! really started: the report's first connects (report.json's `started_at` +
//! `agents[].start_error_us`, coordinator time) next to each agent's first SYN on the wire
//! (the kernel's `CLOCK_REALTIME` stamp). Used by `tests/capture.rs` (the two agree) and
//! `benches/capture.rs` (the spread, against issue 15's goal of 50 µs).
//!
//! Lab (stampede-lab): host 0 runs the coordinator and host 3 the target, in this process
//! (threads that entered their host's namespace); hosts 1 and 2 run an agent each, as a
//! `stampede-agent` process of its own under `taskset -c CPU` (all its threads, the firing
//! thread included, on that one CPU; checked in `/proc`), with `chrt -f 1` on request. On one
//! machine the coordinator's clock, the agents' and the capture's are the same
//! `CLOCK_REALTIME`: the report's first connect of an agent differs from its first SYN by
//! the time from its connect() call to the SYN reaching its port (~5 µs) plus the error of
//! its clock offset (within its `clock_uncertainty_us`: the true offset here is 0).

#![allow(dead_code, unreachable_pub)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use stampede::auth::Token;
use stampede::report::Report;
use stampede::run::RunPlan;
use stampede_lab::{Capture, Captured, ChildGuard, Lab, Syn, cpu};
use stampede_proto::plan::Load;
use stampede_target::Target;
use stampede_target::config::{Config as TargetConfig, OnAccept};
use tokio_util::sync::CancellationToken;

/// Agents (hosts 1 and 2).
pub const AGENTS: usize = 2;
const COORD: usize = 0;
const TARGET: usize = AGENTS + 1;

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Runs, one burst each.
    pub runs: usize,
    /// Connections each agent fires (at most 500 keeps it at one worker thread).
    pub per_agent: u64,
    /// Pin agent i's threads to CPU i-1 of the process's (when there are two or more).
    pub pin: bool,
    /// Also run the agents' threads in the real-time class (`SCHED_FIFO` 1), so that on a
    /// machine busy with other work each pinned agent still has its core when it fires.
    pub realtime: bool,
}

/// One agent in one run.
#[derive(Debug, Clone)]
pub struct AgentFigures {
    /// Its id (`agent-1`, `agent-2`).
    pub id: String,
    /// Its host's address (the SYNs' source).
    pub addr: Ipv4Addr,
    /// The CPUs its threads were pinned to (empty: not pinned).
    pub cpus: Vec<usize>,
    /// report.json `start_error_us`: its first connect() minus the start instant, µs.
    pub start_error_us: Option<i64>,
    /// report.json `clock_uncertainty_us`.
    pub clock_uncertainty_us: u64,
    /// Its first connect() per the report, coordinator time, ns since the epoch.
    pub report_first_ns: Option<i64>,
    /// Its first SYN on the wire (its bridge port), ns since the epoch.
    pub syn: Option<Syn>,
}

impl AgentFigures {
    /// First SYN minus the report's first connect, µs.
    pub fn wire_minus_report_us(&self) -> Option<f64> {
        Some((self.syn?.at_unix_nanos - self.report_first_ns?) as f64 / 1e3)
    }

    /// First SYN minus the start instant, µs: the agent's start error as the wire saw it.
    pub fn wire_start_error_us(&self, start_ns: i64) -> Option<f64> {
        Some((self.syn?.at_unix_nanos - start_ns) as f64 / 1e3)
    }
}

/// One run.
#[derive(Debug, Clone)]
pub struct RunFigures {
    /// The report as built (what report.json holds).
    pub report: Report,
    /// The start instant, from report.json's `started_at`, ns since the epoch.
    pub start_ns: i64,
    /// Per agent, in id order.
    pub agents: Vec<AgentFigures>,
    /// What the captures on the agents' ports saw, merged.
    pub captured: Captured,
}

impl RunFigures {
    /// Latest minus earliest of the agents' first SYNs, µs (`None` unless both were seen).
    pub fn capture_spread_us(&self) -> Option<f64> {
        let t: Vec<i64> = self
            .agents
            .iter()
            .map(|a| a.syn.map(|s| s.at_unix_nanos))
            .collect::<Option<_>>()?;
        Some((t.iter().max()? - t.iter().min()?) as f64 / 1e3)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// report.json's `started_at` (RFC 3339, µs) as ns since the epoch.
pub fn started_at_ns(report: &Report) -> i64 {
    chrono::DateTime::parse_from_rfc3339(&report.started_at)
        .unwrap_or_else(|e| panic!("started_at {:?}: {e}", report.started_at))
        .timestamp_nanos_opt()
        .expect("a start within i64 ns")
}

/// Builds the lab, runs `options.runs` bursts and hands each run's figures to `each` as it
/// ends. Panics if the lab, the pinning or a capture cannot be set up; a failed run ends
/// the series (its error is returned with the runs before it).
pub fn run(
    options: Options,
    mut each: impl FnMut(usize, &RunFigures) + Send,
) -> Result<Vec<RunFigures>, String> {
    let lab = Lab::new("cap", AGENTS + 2).expect("creating the lab");
    let coord_addr = SocketAddr::from((lab.addr(COORD), 7700));
    let target_addr = SocketAddrV4::new(lab.addr(TARGET), 8000);
    let control_addr = SocketAddr::from((lab.addr(TARGET), 8001));
    let cpus = cpu::cpus().expect("reading this process's CPUs");
    // Agent i (1-based) on the process's CPU i-1, when there is one for each.
    let pin_of = |i: usize| (options.pin && cpus.len() >= AGENTS).then(|| cpus[i - 1]);
    let stop = CancellationToken::new();
    let token = || Token::new(TOKEN);
    let dir = std::env::temp_dir().join(format!("stampede-capture-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    std::fs::write(dir.join("token"), TOKEN).expect("writing the token file");
    let out = std::thread::scope(|s| {
        let _stop_on_exit = stop.clone().drop_guard();
        {
            let (ns, stop) = (lab.host(TARGET), stop.clone());
            s.spawn(move || {
                ns.enter_current_thread().unwrap();
                runtime().block_on(async {
                    let target = Target::bind(&TargetConfig {
                        listen: target_addr.into(),
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
        // The agents: processes of their own (nothing shared with each other or with this
        // one: no allocator, no address-space lock), each under taskset (and chrt).
        let agents: Vec<ChildGuard> = (1..=AGENTS)
            .map(|i| spawn_agent(&lab, i, pin_of(i), options.realtime, coord_addr, &dir))
            .collect();
        let (ns, hub) = (lab.host(COORD), lab.hub());
        let ports: Vec<String> = (1..=AGENTS).map(|i| lab.port(i)).collect();
        let (lab, dir) = (&lab, &dir);
        ns.run(|| {
            runtime().block_on(async move {
                let c = stampede::serve(
                    stampede::ServeConfig::new(coord_addr, token()),
                    stop.clone(),
                )
                .await
                .expect("coordinator");
                let plan = RunPlan {
                    agents: AGENTS,
                    agent_wait: Duration::from_secs(30),
                    load: Load {
                        timeout: Duration::from_secs(5),
                        ..Load::burst(target_addr.into(), options.per_agent * AGENTS as u64)
                    },
                    lead: Duration::from_millis(300),
                    target_control: Some(format!("http://{control_addr}")),
                    target_auth: Default::default(),
                    backlog: None,
                    accept_rate: None,
                    scenario: serde_json::Value::Null,
                };
                let max = options.per_agent as usize * 4 + 100;
                let mut out = Vec::new();
                for n in 0..options.runs {
                    // Opened before the run; the kernel queues the SYNs until drained after.
                    let captures: Vec<Capture> = ports
                        .iter()
                        .map(|p| {
                            Capture::open(hub, p, target_addr, max)
                                .unwrap_or_else(|e| panic!("capture on {p}: {e}"))
                        })
                        .collect();
                    let done = stampede::run::execute(&c.registry, &plan, &stop, &|_| {})
                        .await
                        .map_err(|e| format!("run {n} failed: {e}{}", logs(dir)))?;
                    if n == 0 {
                        check_pinning(&agents, &pin_of)?;
                    }
                    let mut captured = Captured::default();
                    for cap in captures {
                        let got = cap.drain().expect("draining a capture");
                        captured.syns.extend(got.syns);
                        captured.dropped += got.dropped;
                        captured.truncated |= got.truncated;
                    }
                    let figures = figures(lab, done.report, captured, &|i| {
                        pin_of(i).into_iter().collect()
                    });
                    each(n, &figures);
                    out.push(figures);
                }
                Ok(out)
            })
        })
    });
    if out.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    out
}

const TOKEN: &str = "capture-token";

/// Agent `i` as a process on its host: `ip netns exec HOST [chrt -f 1] [taskset -c CPU]
/// stampede-agent ...` (each execs the next: the pid is the agent's), its log in `dir`.
fn spawn_agent(
    lab: &Lab,
    i: usize,
    pin: Option<usize>,
    realtime: bool,
    coordinator: SocketAddr,
    dir: &Path,
) -> ChildGuard {
    let mut words: Vec<std::ffi::OsString> = Vec::new();
    if realtime {
        words.extend(["chrt", "-f", "1"].map(Into::into));
    }
    if let Some(cpu) = pin {
        words.extend(["taskset".into(), "-c".into(), cpu.to_string().into()]);
    }
    words.push(agent_bin().into());
    let mut cmd = lab.host(i).command(&words[0]);
    let log = std::fs::File::create(dir.join(format!("agent-{i}.log"))).expect("an agent log");
    cmd.args(&words[1..])
        .args(["--coordinator", &format!("http://{coordinator}")])
        .arg("--token-file")
        .arg(dir.join("token"))
        .args([
            "--allow-target",
            "198.18.0.0/24",
            "--id",
            &format!("agent-{i}"),
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    ChildGuard::spawn(&mut cmd).unwrap_or_else(|e| panic!("starting agent-{i}: {e}"))
}

/// The stampede-agent binary beside this test or bench binary (same profile), built first as
/// [`stampede_lab::sibling_bin`] says.
fn agent_bin() -> PathBuf {
    stampede_lab::sibling_bin("stampede-agent")
}

/// Every thread of every pinned agent may run on its CPU only (`Cpus_allowed_list`).
fn check_pinning(
    agents: &[ChildGuard],
    pin_of: &dyn Fn(usize) -> Option<usize>,
) -> Result<(), String> {
    for (i, agent) in (1..).zip(agents) {
        let Some(cpu) = pin_of(i) else { continue };
        let pid = agent.0.id();
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map_err(|e| format!("agent-{i}: {e}"))?;
        for task in tasks.flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            let allowed = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(str::trim);
            if allowed != Some(cpu.to_string().as_str()) {
                return Err(format!(
                    "agent-{i}'s thread {:?} may run on {allowed:?}, not CPU {cpu}",
                    task.file_name()
                ));
            }
        }
    }
    Ok(())
}

/// The agents' logs' last lines, for a failure's message.
fn logs(dir: &Path) -> String {
    (1..=AGENTS)
        .map(|i| {
            let log =
                std::fs::read_to_string(dir.join(format!("agent-{i}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("\nagent-{i}: {}", tail.join(" | "))
        })
        .collect()
}

fn figures(
    lab: &Lab,
    report: Report,
    captured: Captured,
    cpus_of: &dyn Fn(usize) -> Vec<usize>,
) -> RunFigures {
    let start_ns = started_at_ns(&report);
    let first = captured.first_by_source();
    let agents = (1..=AGENTS)
        .map(|i| {
            let id = format!("agent-{i}");
            let row = report.agents.iter().find(|a| a.id == id);
            let start_error_us = row.and_then(|a| a.start_error_us);
            AgentFigures {
                addr: lab.addr(i),
                cpus: cpus_of(i),
                start_error_us,
                clock_uncertainty_us: row.map_or(0, |a| a.clock_uncertainty_us),
                report_first_ns: start_error_us.map(|e| start_ns + e * 1_000),
                syn: first.get(&lab.addr(i)).copied(),
                id,
            }
        })
        .collect();
    RunFigures {
        report,
        start_ns,
        agents,
        captured,
    }
}
