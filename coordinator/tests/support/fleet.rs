//! A fleet of real agent processes against one `stampede run`, all in one network namespace
//! the caller creates: the coordinator and N `stampede-agent` daemons on loopback, a target
//! that is the lab's independent `Acceptor` (it counts what the kernel handed it). Used by
//! `tests/fleet.rs` (small fleets, bounds) and `benches/fleet.rs` (1,000 agents, figures).
//!
//! The phases are timed from the coordinator's own progress lines as they arrive on its
//! stderr: attach (first agent spawned → "N/N attached"), prepare (→ "start in": Prepare,
//! clock sync, arming and the delivery round), run (→ the coordinator's exit: firing,
//! intervals, results, report written). Its RSS is sampled from `/proc/PID/status` every
//! 10 ms, with the kernel's high-water mark (`VmHWM`) as the peak.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use stampede_lab::{Acceptor, ChildGuard, Netns};

/// What to run.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// Agent processes.
    pub agents: usize,
    /// Connections each agent fires.
    pub per_agent: u64,
    /// The pattern (`burst`, `ramp:RATE:DUR`).
    pub pattern: String,
    /// The coordinator binary.
    pub stampede: PathBuf,
    /// The agent binary.
    pub agent: PathBuf,
    /// Where the results go.
    pub out: PathBuf,
    /// How long the whole run may take before the harness gives up.
    pub limit: Duration,
}

/// What one fleet run measured.
#[derive(Debug)]
pub struct Measured {
    /// First agent spawned → every agent attached.
    pub attach: Option<Duration>,
    /// Every agent attached → "start in" (prepare, clock sync, arming, delivery round).
    pub prepare: Option<Duration>,
    /// "start in" → the coordinator's exit (firing, intervals, results, report).
    pub run: Option<Duration>,
    /// First agent spawned → the coordinator's exit.
    pub total: Duration,
    /// Spawning the agent processes took this long (part of attach).
    pub spawn: Duration,
    /// The coordinator's peak RSS (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
    /// (time since the start instant was announced, VmRSS KiB), every 10 ms during the run.
    pub rss: Vec<(Duration, u64)>,
    /// The coordinator's exit code (None: killed or still running at the limit).
    pub exit: Option<i32>,
    /// report.json, if it was written.
    pub report: Option<serde_json::Value>,
    /// Connections the target accepted (its own count).
    pub accepted: usize,
    /// The "start in" progress line, as printed.
    pub start_line: String,
    /// The coordinator's last log lines (for a failure's message).
    pub log_tail: Vec<String>,
}

/// A workspace binary next to this test or bench binary (same profile), built first as
/// [`stampede_lab::sibling_bin`] says.
pub fn bin(name: &str) -> PathBuf {
    stampede_lab::sibling_bin(name)
}

/// (VmRSS, VmHWM) of `pid` in KiB, if it is still there.
fn rss_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Runs the fleet in `ns` and measures it. Every process is started here and killed (if
/// still running) when this returns.
pub fn run(ns: &Netns, fleet: &Fleet) -> Measured {
    let acceptor = ns.run(Acceptor::start).expect("starting the target");
    let _ = std::fs::remove_dir_all(&fleet.out);
    let connections = fleet.agents as u64 * fleet.per_agent;
    let agent_wait = format!("{}s", 60 + fleet.agents / 10);
    // Processes inherit the spawning thread's network namespace: spawned from inside it,
    // without an `ip netns exec` per process.
    // `STAMPEDE_FLEET_LEAD=DUR`: the plan's lead (a floor under the measured one).
    let lead: Vec<String> = std::env::var("STAMPEDE_FLEET_LEAD")
        .map(|l| vec!["--lead".into(), l])
        .unwrap_or_default();
    // `STAMPEDE_FLEET_NICE=N`: the coordinator runs under `nice -n N` (e.g. -10: a host of
    // its own, as deployments give it, rather than one slice among 1,000 agents').
    let mut command = match std::env::var("STAMPEDE_FLEET_NICE") {
        Ok(n) => {
            let mut c = Command::new("nice");
            c.args(["-n", &n]).arg(&fleet.stampede);
            c
        }
        Err(_) => Command::new(&fleet.stampede),
    };
    let mut coordinator = ns.run(|| {
        ChildGuard::spawn(
            command
                .args(["run", "--listen", "127.0.0.1:7700"])
                .args(&lead)
                .args(["--agents", &fleet.agents.to_string()])
                .args(["--agent-wait", &agent_wait])
                .args(["--target", &acceptor.addr.to_string()])
                .args(["--connections", &connections.to_string()])
                .args(["--pattern", &fleet.pattern, "--timeout", "3s", "--out"])
                .arg(&fleet.out)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        )
        .expect("starting the coordinator")
    });
    let pid = coordinator.0.id();
    let (tx, lines) = mpsc::channel::<(Instant, String)>();
    let stderr = coordinator.0.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                return;
            }
        }
    });
    let until = Instant::now() + fleet.limit;
    wait_for(&lines, until, |l| l.contains("waiting for agents"));

    // Every agent's log, appended line by line into one file for a failure's message.
    let agent_log = agents_log(&fleet.out);
    let log = std::fs::File::options()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&agent_log)
        .expect("creating the agents' log");
    let spawned_at = Instant::now();
    let agents: Vec<ChildGuard> = ns.run(|| {
        (0..fleet.agents)
            .map(|i| {
                ChildGuard::spawn(
                    Command::new(&fleet.agent)
                        .args(["--coordinator", "http://127.0.0.1:7700"])
                        .args(["--id", &format!("a{i:04}")])
                        .stdout(Stdio::null())
                        .stderr(log.try_clone().expect("sharing the agents' log")),
                )
                .expect("starting an agent")
            })
            .collect()
    });
    let spawn = spawned_at.elapsed();

    let all_attached = format!("{0} of {0} attached", fleet.agents);
    let (mut attached, mut started) = (None, None);
    let mut start_line = String::new();
    let mut rss = Vec::new();
    let mut peak_rss_kib = 0;
    let mut log_tail = Vec::new();
    let exit = loop {
        if let Ok(Some(status)) = coordinator.0.try_wait() {
            break status.code();
        }
        if Instant::now() > until {
            break None;
        }
        if let Some((_, hwm)) = rss_of(pid).inspect(|(now, _)| {
            if let Some(s) = started {
                rss.push((Instant::now() - s, *now));
            }
        }) {
            peak_rss_kib = peak_rss_kib.max(hwm);
        }
        while let Ok((at, line)) = lines.try_recv() {
            if log_tail.len() == 40 {
                log_tail.remove(0);
            }
            log_tail.push(line.clone());
            if attached.is_none() && line.contains(&all_attached) {
                attached = Some(at);
            }
            if started.is_none() && line.contains("start in") {
                started = Some(at);
                start_line = line;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let ended = Instant::now();
    drop(agents);
    let report = std::fs::read_to_string(fleet.out.join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let between = |a: Option<Instant>, b: Option<Instant>| Some(b?.saturating_duration_since(a?));
    Measured {
        attach: between(Some(spawned_at), attached),
        prepare: between(attached, started),
        run: between(started, exit.map(|_| ended)),
        total: ended - spawned_at,
        spawn,
        peak_rss_kib,
        rss,
        exit,
        report,
        accepted: acceptor.count(),
        start_line,
        log_tail,
    }
}

/// Reads progress lines until one matches (panics at `until`).
fn wait_for(
    lines: &mpsc::Receiver<(Instant, String)>,
    until: Instant,
    want: impl Fn(&str) -> bool,
) {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok((_, line)) if want(&line) => return,
            Ok(_) => {}
            Err(e) => panic!("the coordinator never said it was waiting for agents: {e}"),
        }
    }
}

/// Where `run` collects the agents' logs for a results directory `out`.
pub fn agents_log(out: &Path) -> PathBuf {
    out.with_extension("agents.log")
}

/// A directory for one run's results, unique to this process.
pub fn out_dir(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("stampede-{tag}-{}", std::process::id()))
}

/// Seconds with millisecond precision, or "-" when the phase was not reached.
pub fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.3}s", d.as_secs_f64()))
}

/// Removes a results directory and its agents' log.
pub fn clean(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_file(agents_log(dir));
}
