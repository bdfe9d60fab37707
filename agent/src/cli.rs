//! The `stampede-agent` command line (docs/design.md "Command line"): raw clap [`Cli`] arguments
//! (parsed by `main` through [`stampede_proto::logging::parse_args`]), their conversion to a
//! [`FireConfig`], and [`run`], which fires and reports; daemon mode is [`crate::daemon`].
//!
//! Exit codes: 0 done, 1 failed, 64 bad usage or a refused plan. Every flag also reads
//! `STAMPEDE_<FLAG>` from the environment.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use stampede_proto::duration::parse_duration;
use stampede_proto::live_line::LiveLine;
use stampede_proto::pattern::Pattern;
use stampede_proto::usage::EX_USAGE;
use tokio_util::sync::CancellationToken;

use crate::arm::{ArmError, arm};
use crate::cidr::Cidr;
use crate::plan::{CloseMode, DEFAULT_MAX_CONNECTIONS, FireConfig, Load, Plan};
use crate::{Interval, RunResult};

/// stampede-agent: the load host of stampede. With `--coordinator URL` it runs as a daemon
/// obeying an authenticated coordinator; `fire` works alone on this host.
#[derive(Debug, Parser)]
#[command(
    name = "stampede-agent",
    version = stampede_proto::install::VERSION,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do (none: daemon mode, attached to --coordinator).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Daemon-mode flags.
    #[command(flatten)]
    pub daemon: crate::daemon::DaemonArgs,
    /// Logging: `--quiet`, `--log-format` (the same in every binary).
    #[command(flatten)]
    pub log: stampede_proto::logging::LogArgs,
}

/// The whole command line as clap sees it when parsing the process's arguments
/// (`stampede_proto::logging::parse_args`): [`Cli`] plus `completions` and `man`. Completions,
/// man pages and the test that checks the README's command lines all read this one.
pub fn command() -> clap::Command {
    stampede_proto::install::with_install(<Cli as clap::CommandFactory>::command())
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fire connects at a target from this host alone and report what happened to each.
    Fire(FireArgs),
}

fn parse_target(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = || format!("invalid target \"{s}\": expected HOST:PORT, e.g. 127.0.0.1:9000");
    if !s.contains(':') {
        return Err(bad());
    }
    let addrs: Vec<SocketAddr> = s.to_socket_addrs().map_err(|_| bad())?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(bad)
}

/// A whole number; whether it is a usable count is the plan's rule ([`Load::check`]).
fn parse_connections(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|_| format!("invalid connections \"{s}\": expected a whole number"))
}

/// Most worker threads `fire` starts: more threads than this cost more than they give on any
/// host (and each holds a stack).
pub const MAX_WORKERS: usize = 1024;

/// A worker count: 1 to [`MAX_WORKERS`].
fn parse_workers(s: &str) -> Result<usize, String> {
    s.trim()
        .parse::<usize>()
        .ok()
        .filter(|w| (1..=MAX_WORKERS).contains(w))
        .ok_or_else(|| {
            format!(
                "invalid workers \"{}\": expected 1 to {MAX_WORKERS}",
                stampede_proto::usage::cut(s)
            )
        })
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// `stampede-agent fire` flags.
#[derive(Debug, Args)]
pub struct FireArgs {
    /// Where to connect: HOST:PORT.
    #[arg(long, env = "STAMPEDE_TARGET", value_parser = parse_target)]
    pub target: SocketAddr,
    /// How many connect attempts.
    #[arg(long, env = "STAMPEDE_CONNECTIONS", value_parser = parse_connections)]
    pub connections: u64,
    /// When to issue them: burst | ramp:RATE:DUR | waves:K:PERIOD.
    #[arg(long, env = "STAMPEDE_PATTERN", default_value = "burst")]
    pub pattern: Pattern,
    /// Deadline of each attempt (connect, then greeting), from its intended send time.
    #[arg(long, env = "STAMPEDE_TIMEOUT", default_value = "10s", value_parser = parse_dur)]
    pub timeout: Duration,
    /// Keep each admitted connection open this long before closing it.
    #[arg(long, env = "STAMPEDE_HOLD", default_value = "0", value_parser = parse_dur)]
    pub hold: Duration,
    /// Close with rst (zero linger: no TIME_WAIT on the agent) or fin.
    #[arg(long, env = "STAMPEDE_CLOSE", default_value = "rst")]
    pub close: CloseMode,
    /// The target greets on accept: measure time to first byte; no greeting by the deadline
    /// means the connection was never admitted (ghost).
    #[arg(long, env = "STAMPEDE_EXPECT_GREETING")]
    pub expect_greeting: bool,
    /// The client speaks first: send one byte after connecting; if the kernel never
    /// acknowledges it by the deadline the connection was never admitted (ghost).
    #[arg(
        long,
        env = "STAMPEDE_PROBE_ADMISSION",
        conflicts_with = "expect_greeting"
    )]
    pub probe_admission: bool,
    /// Write the report as JSON to this file.
    #[arg(long, env = "STAMPEDE_JSON")]
    pub json: Option<PathBuf>,
    /// Write the HdrHistogram interval log (second by second from the start, µs: untagged =
    /// connect latency, `Tag=ttfb` = first byte) to this file.
    #[arg(long, env = "STAMPEDE_HLOG")]
    pub hlog: Option<PathBuf>,
    /// Source IPs to spread connections over (bound with IP_BIND_ADDRESS_NO_PORT).
    #[arg(long = "source-ip", env = "STAMPEDE_SOURCE_IP", value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,
    /// Targets this agent may connect to, as CIDRs [default: loopback only].
    #[arg(
        long = "allow-target",
        env = "STAMPEDE_ALLOW_TARGET",
        value_delimiter = ','
    )]
    pub allow_targets: Vec<Cidr>,
    /// Refuse runs with more connections than this.
    #[arg(long, env = "STAMPEDE_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: u64,
    /// Worker threads, 1 to 1024 [default: one per core, fewer for small runs; a ramp one per
    /// 20,000 connects/s].
    #[arg(long, env = "STAMPEDE_WORKERS", value_parser = parse_workers)]
    pub workers: Option<usize>,
}

impl FireArgs {
    /// The run these flags ask for.
    pub fn config(&self) -> FireConfig {
        FireConfig {
            load: Load {
                target: self.target,
                connections: self.connections,
                pattern: self.pattern,
                timeout: self.timeout,
                hold: self.hold,
                close: self.close,
                expect_greeting: self.expect_greeting,
                probe_admission: self.probe_admission,
            },
            source_ips: self.source_ips.clone(),
            allow_targets: if self.allow_targets.is_empty() {
                Cidr::loopback()
            } else {
                self.allow_targets.clone()
            },
            max_connections: self.max_connections,
            workers: self.workers,
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Some(Command::Fire(args)) => fire(&args),
        None => crate::daemon::run(&cli.daemon),
    }
}

fn fire(args: &FireArgs) -> ExitCode {
    let plan = match Plan::new(args.config()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("stampede-agent: error: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    // The files asked for are checked before anything fires, not found unwritable after.
    for (flag, path) in [("--json", &args.json), ("--hlog", &args.hlog)] {
        if let Some(path) = path
            && let Err(e) = check_writable(path)
        {
            eprintln!(
                "stampede-agent: error: {flag} {} is not writable: {e}",
                path.display()
            );
            return ExitCode::from(EX_USAGE);
        }
    }
    let armed = match arm(&plan) {
        Ok(a) => a,
        Err(e @ (ArmError::FdLimit { .. } | ArmError::PortBudget { .. })) => {
            eprintln!("stampede-agent: error: plan refused: {e}");
            return ExitCode::from(EX_USAGE);
        }
        Err(e) => {
            eprintln!("stampede-agent: error: arming: {e}");
            return ExitCode::FAILURE;
        }
    };
    match fire_and_report(args, armed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stampede-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Proves `path` writable without changing it: opened for appending (created if missing,
/// and then removed again).
fn check_writable(path: &Path) -> std::io::Result<()> {
    let existed = std::fs::symlink_metadata(path).is_ok();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Fires, prints the summary and writes the files asked for; an interrupted run still
/// writes them (marked partial) and then fails.
fn fire_and_report(args: &FireArgs, armed: crate::Armed) -> anyhow::Result<()> {
    let (mut result, intervals) = fire_watched(args, armed)?;
    if result.cancelled {
        result.cut_short("interrupted by SIGINT or SIGTERM");
    }
    let target = args.target.to_string();
    let pattern = args.pattern.to_string();
    print!("{}", result.summary(&target, &pattern));
    if let Some(path) = &args.json {
        let report = result.report(&target, &pattern);
        let text = serde_json::to_string_pretty(&report).context("serializing the report")?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    if let Some(path) = &args.hlog {
        write_hlog(path, args, &result, intervals)?;
    }
    if result.cancelled {
        anyhow::bail!(
            "run interrupted: {} attempts unfinished (report marked partial)",
            result.unfinished
        );
    }
    if result.partial() {
        anyhow::bail!(
            "run partial: {} attempts skipped overdue, {} issued late (report marked partial)",
            result.skipped_overdue,
            result.issued_late
        );
    }
    Ok(())
}

/// Fires now, showing progress, until the run ends or the first SIGINT/SIGTERM cancels it.
/// Returns the result and, with --hlog, every interval (otherwise none).
fn fire_watched(
    args: &FireArgs,
    armed: crate::Armed,
) -> anyhow::Result<(RunResult, Vec<Interval>)> {
    let cancel = CancellationToken::new();
    // Intervals (every second) drive the progress line and, with --hlog, the interval log.
    let (intervals_tx, mut intervals_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut intervals = Vec::new();
    let mut keep = |i: Interval| {
        if args.hlog.is_some() {
            intervals.push(i);
        }
    };
    let total = armed.plan().config().load.connections;
    // Log lines during the run go through its suspend, never into the middle of it.
    let live = LiveLine::stderr();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    let result = runtime.block_on(async {
        // Handlers go in before firing, so a signal during the run never kills the process
        // with its report unwritten: the first SIGINT or SIGTERM cancels the run, which then
        // ends with what it has (the report marked partial).
        stampede_proto::signal::cancel_on_signal(cancel.clone())
            .context("installing the SIGINT/SIGTERM handlers")?;
        let firing = {
            let cancel = cancel.clone();
            tokio::task::spawn_blocking(move || {
                // A few ms of lead so every worker thread is waiting when the instant comes.
                armed.fire(
                    Instant::now() + Duration::from_millis(3),
                    &cancel,
                    Some(intervals_tx),
                )
            })
        };
        tokio::pin!(firing);
        let started = Instant::now();
        let mut done = 0u64;
        let result = loop {
            tokio::select! {
                r = &mut firing => break r.context("firing task"),
                Some(i) = intervals_rx.recv() => {
                    done += i.tally.outcomes.total();
                    progress(&live, started.elapsed(), done, total);
                    keep(i);
                }
            }
        };
        // Erased before the summary.
        drop(live);
        result
    })??;
    // What came with the end of the run.
    while let Ok(i) = intervals_rx.try_recv() {
        keep(i);
    }
    Ok((result, intervals))
}

/// The HdrHistogram interval log: connect latency untagged, time to first byte tagged
/// `ttfb` (with --expect-greeting), second by second from the run's start.
fn write_hlog(
    path: &Path,
    args: &FireArgs,
    result: &RunResult,
    mut intervals: Vec<Interval>,
) -> anyhow::Result<()> {
    intervals.sort_by_key(|i| i.seq);
    let start = result
        .first_connect
        .zip(result.first_connect_offset)
        .map_or(0, |(first, offset)| {
            (first - offset)
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64)
        });
    let comments = [
        format!(
            "stampede-agent fire: {} connections to {}, {}",
            result.connections, args.target, args.pattern
        ),
        "values: microseconds; untagged: connect latency; ttfb: time to first byte".to_owned(),
    ];
    let text = stampede_proto::hlog::render(&comments, start, |lines| {
        for i in &intervals {
            lines.line(i.seq, None, &i.tally.connect_latency)?;
            if args.expect_greeting {
                lines.line(i.seq, Some("ttfb"), &i.tally.ttfb)?;
            }
        }
        Ok(())
    })
    .context("writing the interval log")?;
    std::fs::write(path, text)
        .with_context(|| format!("writing the interval log to {}", path.display()))
}

/// A long run's progress: a live line on a terminal, a log line a second otherwise.
fn progress(live: &LiveLine, elapsed: Duration, done: u64, total: u64) {
    let secs = format!("{:.1}s", elapsed.as_secs_f64());
    if live.is_on() {
        live.set(&format!("{secs}: {done}/{total} attempts classified"));
    } else {
        tracing::info!(elapsed = %secs, done, total, "attempts classified");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_bounded() {
        assert_eq!(parse_workers("4"), Ok(4));
        assert_eq!(parse_workers("1024"), Ok(MAX_WORKERS));
        for bad in ["0", "1025", "18446744073709551615", "-1", "many"] {
            let e = parse_workers(bad).unwrap_err();
            assert_eq!(e, format!("invalid workers \"{bad}\": expected 1 to 1024"));
        }
    }

    #[test]
    fn output_files_are_checked_without_being_changed() {
        let dir = std::env::temp_dir().join(format!("stampede-agent-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fresh = dir.join("report.json");
        check_writable(&fresh).unwrap();
        assert!(!fresh.exists(), "the probe left a file");
        let old = dir.join("old.json");
        std::fs::write(&old, "kept").unwrap();
        check_writable(&old).unwrap();
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "kept");
        assert!(check_writable(&dir).is_err(), "a directory is no file");
        assert!(check_writable(&dir.join("no/such/dir/r.json")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
