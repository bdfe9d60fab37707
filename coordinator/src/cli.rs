//! The `stampede` command line: the subcommands, their flags, and what each one does with
//! them. `main` parses ([`parse`]), sets up logging and calls [`execute`]; everything a
//! command decides (which settings win, what is refused, what is written) happens here or in
//! the modules it calls, so tests can drive it in-process.
//!
//! Nothing a run measured is lost to its output directory: `--out` is created and proven
//! writable before the coordinator even listens (a bad one is a usage error), and if writing
//! still fails at the end the results go to a fallback directory that the error names, while
//! `main` prints the summary all the same ([`Failure::Unsaved`]).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use stampede_proto::backlog;
use tokio_util::sync::CancellationToken;

use crate::history::command::{CommandError, HistoryArgs};
use crate::history::{self, Kind, Ran};
use crate::report::{OutDir, Report};
use crate::scenario::{ConfigError, Scenario, SweepSettings};
use crate::schedule::record::{Recorder, Recording};
use crate::schedule::{Prepared, ScheduleArgs, ScheduleError};
use crate::sweep::SweepReport;
use crate::threshold::{self, Threshold};

/// Distributed TCP connection load tester: synchronized connect() bursts from many agents,
/// every attempt classified, histograms merged exactly.
#[derive(Debug, Parser)]
#[command(name = "stampede", version = stampede_proto::install::VERSION, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Logging: `--quiet`, `--log-format` (the same in every binary).
    #[command(flatten)]
    pub log: stampede_proto::logging::LogArgs,
}

/// The subcommands.
// Parsed once per process: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Wait for agents, run a scenario across them, write report.json.
    Run(RunArgs),
    /// Size listen() backlog and somaxconn: the same run over a list of backlogs (and
    /// accept rates), then the smallest backlog that absorbs the burst.
    Sweep(SweepArgs),
    /// Target, agents and coordinator in this one process on loopback: a real burst that
    /// overflows a small backlog, to see what stampede reports.
    Demo(DemoArgs),
    /// Ask a coordinator or target control for its gRPC health: exit 0 serving, 1 not
    /// (for container HEALTHCHECKs).
    Health(crate::health::HealthArgs),
    /// Run the entries of a capacity file at their cron times (UTC) on agents that stay
    /// attached, record every run in the history and flag regressions.
    Schedule(ScheduleArgs),
    /// The run history: list, show, compare, pin a baseline, write capacity.html.
    History(HistoryArgs),
    // Setting up: a token for --token-file, shell completions, man pages (README "Install
    // extras").
    /// Make bearer tokens for --token-file.
    #[command(subcommand)]
    Token(crate::token_file::TokenCommand),
    /// `completions SHELL` and `man [DIR]`.
    #[command(flatten)]
    Install(stampede_proto::install::InstallCommand),
}

/// The whole command line as clap sees it: completions, man pages and the test that checks
/// the README's command lines all read this one.
pub fn command() -> clap::Command {
    Cli::command()
}

/// `stampede run`: a scenario file and flags over it.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenario file (TOML, keys named like the flags); flags override its values.
    pub scenario: Option<PathBuf>,
    /// The run's settings.
    #[command(flatten)]
    pub settings: Scenario,
    /// History and metrics.
    #[command(flatten)]
    pub record: Recording,
}

/// `stampede sweep`: a run's settings and the sweep's.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The run repeated at each step.
    #[command(flatten)]
    pub run: RunArgs,
    /// The sweep's own settings.
    #[command(flatten)]
    pub sweep: SweepSettings,
}

/// `stampede demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Agents (each with its own gRPC stream, in this process).
    #[arg(long, default_value_t = 3)]
    pub agents: usize,
    /// Connections in total.
    #[arg(long, default_value_t = 60)]
    pub connections: u64,
    /// The target's listen() backlog, 0 or more: small, so the burst overflows it.
    #[arg(long, default_value_t = 8, allow_negative_numbers = true, value_parser = backlog::parse)]
    pub backlog: i32,
    /// Directory for report.json, report.csv, report.html and report.hlog.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Fail the run (exit 2) when EXPR holds, e.g. connect.p99>50ms, ghost>0,
    /// established<99.5% (repeatable; METRIC OP VALUE: see README "Thresholds").
    #[arg(long = "fail-if", value_name = "EXPR")]
    pub fail_if: Vec<Threshold>,
}

/// A parsed command line and the names of the flags the user gave (on the command line or
/// in the environment): only those override a scenario file.
#[derive(Debug)]
pub struct Invocation {
    /// The command.
    pub cli: Cli,
    /// Flags given, by field name (`agent_wait`).
    pub explicit: BTreeSet<String>,
}

/// Parses a command line (the first item is the program name).
pub fn parse<I, T>(args: I) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let explicit = match matches.subcommand() {
        Some((_, sub)) => sub
            .ids()
            .filter(|id| {
                matches!(
                    sub.value_source(id.as_str()),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                )
            })
            .map(|id| id.as_str().to_owned())
            .collect(),
        None => BTreeSet::new(),
    };
    Ok(Invocation { cli, explicit })
}

/// Why a command failed: bad usage or configuration (exit 64), or anything else (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Bad usage or configuration.
    #[error(transparent)]
    Usage(#[from] ConfigError),
    /// The run itself failed.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
    /// The command ran, but its results could not be written to `--out`: they were written
    /// to a fallback directory instead (or that failed too). `main` still prints the summary;
    /// the exit code is 1.
    #[error("{unsaved}")]
    Unsaved {
        /// What the command produced.
        output: Box<Output>,
        /// Where it went instead of `--out`.
        unsaved: Unsaved,
    },
}

/// Results that `--out` did not take, and where they went instead.
#[derive(Debug, thiserror::Error)]
#[error("{}", match fallback {
    Ok(dir) => format!("writing the results to {}: {error}; written to {} instead", out.display(), dir.display()),
    Err(e) => format!("writing the results to {}: {error}; the fallback failed too ({e}): only the summary is left", out.display()),
})]
pub struct Unsaved {
    /// The `--out` directory.
    pub out: PathBuf,
    /// Why writing there failed.
    pub error: std::io::Error,
    /// The fallback directory written instead, or why that failed.
    pub fallback: Result<PathBuf, std::io::Error>,
}

/// What a command produced (one per process: the size difference costs nothing).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Output {
    /// A run's (or the demo's) report.
    Run(Report),
    /// A sweep's report.
    Sweep(SweepReport),
    /// A health check's answer.
    Health(crate::health::Health),
    /// Text for stdout and the exit code it goes with (`schedule`, `history`, and the
    /// setting-up commands: a token, a script, a man page, a note, with code 0).
    Text {
        /// What to print.
        text: String,
        /// The exit code.
        code: u8,
    },
}

impl Output {
    /// The terminal summary.
    pub fn summary(&self) -> String {
        match self {
            Output::Run(r) => r.summary(),
            Output::Sweep(s) => s.summary(),
            Output::Health(h) => h.summary(),
            Output::Text { text, .. } => text.clone(),
        }
    }

    /// A partial run (or sweep step) is not a success.
    pub fn complete(&self) -> bool {
        match self {
            Output::Run(r) => !(r.aborted || r.partial),
            Output::Sweep(s) => s.stopped.is_none() && s.steps.iter().all(|st| !st.partial),
            Output::Health(h) => h.serving,
            Output::Text { code, .. } => *code != 1,
        }
    }

    /// The exit code of a command that produced this: 0 done, 1 not complete (partial,
    /// aborted, a sweep stopped early: it wins over 2), 2 a `--fail-if` threshold failed.
    pub fn exit_code(&self) -> u8 {
        if !self.complete() {
            1
        } else if !self.thresholds_passed() {
            2
        } else {
            0
        }
    }

    /// False when a `--fail-if` threshold failed (in any step of a sweep): exit 2, unless
    /// the run was not [`complete`](Output::complete), which is exit 1.
    pub fn thresholds_passed(&self) -> bool {
        match self {
            Output::Run(r) => r.thresholds_passed(),
            // A sweep looks for a setting that meets the thresholds: the small backlogs
            // failing them is what it is for. It fails when no step passes.
            Output::Sweep(s) => {
                s.reports.is_empty() || s.reports.iter().any(Report::thresholds_passed)
            }
            Output::Health(_) => true,
            Output::Text { code, .. } => *code != 2,
        }
    }
}

/// Runs a parsed command until it is done or `shutdown` fires; `progress` receives one-line
/// status updates.
pub async fn execute(
    invocation: Invocation,
    shutdown: CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Output, Failure> {
    let explicit = &invocation.explicit;
    match invocation.cli.command {
        Command::Run(args) => run(args, explicit, &shutdown, progress).await,
        Command::Sweep(args) => sweep(args, explicit, &shutdown, progress).await,
        Command::Demo(args) => demo(args, &shutdown, progress).await,
        // Not serving is exit 1 (an incomplete output); bad flags exit 64.
        Command::Health(args) => Ok(Output::Health(crate::health::execute(&args).await?)),
        Command::Schedule(args) => schedule(args, explicit, &shutdown, progress).await,
        Command::History(args) => history(&args),
        // An existing FILE without --force is bad usage (exit 64); the rest a failure (1).
        Command::Token(cmd) => match crate::token_file::run(&cmd) {
            Ok(text) => Ok(Output::Text { text, code: 0 }),
            Err(crate::token_file::TokenFileError::Exists(e)) => Err(Failure::Usage(e)),
            Err(e) => Err(Failure::Other(e.into())),
        },
        Command::Install(cmd) => install(&cmd),
    }
}

/// `completions` or `man`: the script or page as text, or where the pages went.
fn install(cmd: &stampede_proto::install::InstallCommand) -> Result<Output, Failure> {
    let mut out = Vec::new();
    let note = cmd.run(command(), &mut out).map_err(anyhow::Error::from)?;
    let mut text = String::from_utf8_lossy(&out).into_owned();
    if let Some(note) = note {
        text.push_str(&note);
        text.push('\n');
    }
    Ok(Output::Text { text, code: 0 })
}

/// The scenario file (if any) with the given flags over it.
fn settings(args: &RunArgs, explicit: &BTreeSet<String>) -> Result<Scenario, ConfigError> {
    let file = args.scenario.as_deref().map(Scenario::load).transpose()?;
    Ok(Scenario::layered(file, &args.settings, explicit))
}

/// The output directory, created and proven writable before anything runs.
fn out_dir(dir: Option<&Path>) -> Result<Option<OutDir>, ConfigError> {
    dir.map(OutDir::prepare)
        .transpose()
        .map_err(ConfigError::Out)
}

/// Writes a command's results with `write` into `out` (if one was given); if that fails,
/// into a new fallback directory named after `name`. `what` names the files for the log.
fn save(
    out: Option<&OutDir>,
    name: &str,
    what: &str,
    write: impl Fn(&Path) -> std::io::Result<()>,
) -> Result<(), Unsaved> {
    let Some(out) = out else { return Ok(()) };
    let Err(error) = write(out.path()) else {
        tracing::info!(dir = %out.path().display(), "{what} written");
        return Ok(());
    };
    let fallback = OutDir::fallback(name).and_then(|dir| {
        write(dir.path())?;
        Ok(dir.path().to_owned())
    });
    Err(Unsaved {
        out: out.path().to_owned(),
        error,
        fallback,
    })
}

/// `output` as the command's result, or as a failure that still carries it.
fn deliver(output: Output, saved: Result<(), Unsaved>) -> Result<Output, Failure> {
    match saved {
        Ok(()) => Ok(output),
        Err(unsaved) => Err(Failure::Unsaved {
            output: Box::new(output),
            unsaved,
        }),
    }
}

/// Raises the descriptor limit to the hard one (each agent session holds a descriptor) and
/// refuses a fleet of `agents` that cannot fit under it, before anything is served; the
/// limit, for the log once serving (`None`: it could not be read, said here).
fn fit_fleet(agents: usize) -> Result<Option<stampede_proto::rlimit::FdLimit>, ConfigError> {
    match stampede_proto::rlimit::raise_fd_limit() {
        Ok(fd) => {
            crate::admission::Limits::default().check_fleet(agents, fd)?;
            Ok(Some(fd))
        }
        Err(e) => {
            tracing::warn!(cause = %e, "cannot read the file descriptor limit");
            Ok(None)
        }
    }
}

/// Serves the coordinator endpoint these settings ask for.
async fn serve(
    settings: &Scenario,
    shutdown: &CancellationToken,
) -> Result<crate::Coordinator, Failure> {
    let config = settings.serve_config()?;
    let fd = fit_fleet(settings.agents)?;
    let coordinator = crate::serve(config, shutdown.clone())
        .await
        .map_err(anyhow::Error::from)?;
    if let Some(fd) = fd {
        tracing::info!(
            soft = fd.soft,
            hard = fd.hard,
            max_agents = crate::admission::Limits::default().max_agents(fd),
            "file descriptor limit"
        );
    }
    tracing::info!(addr = %coordinator.addr, "waiting for agents");
    Ok(coordinator)
}

async fn run(
    args: RunArgs,
    explicit: &BTreeSet<String>,
    shutdown: &CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Output, Failure> {
    let settings = settings(&args, explicit)?;
    let plan = settings.plan()?;
    let out = out_dir(settings.out.as_deref())?;
    let coordinator = serve(&settings, shutdown).await?;
    let recorder = Recorder::start(
        &args.record,
        args.scenario.as_deref(),
        &settings,
        Kind::Run,
        &coordinator,
        shutdown,
    )
    .await
    .map_err(Failure::from)?;
    // Written second by second into --out as the run goes (or not at all).
    let hlog = out.as_ref().map_or(crate::run::HlogTo::Off, |o| {
        crate::run::HlogTo::File(o.path().join("report.hlog"))
    });
    let result =
        crate::run::execute_logged(&coordinator.registry, &plan, hlog, shutdown, progress).await;
    let mut done = match result {
        Ok(done) => done,
        Err(e) => {
            recorder.failed(&e);
            return Err(anyhow::Error::from(e).into());
        }
    };
    done.report.thresholds = threshold::evaluate(&settings.fail_if, &done.report);
    recorder.finish(Ran::Run(&done.report), Some(done.merged()));
    let saved = save(out.as_ref(), &done.report.run_id, REPORT_FILES, |dir| {
        done.write(dir)
    });
    deliver(Output::Run(done.report), saved)
}

/// What a run writes, for the log.
const REPORT_FILES: &str = "report (json, csv, html, hlog)";

async fn sweep(
    args: SweepArgs,
    explicit: &BTreeSet<String>,
    shutdown: &CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Output, Failure> {
    let settings = settings(&args.run, explicit)?;
    let sweep = SweepSettings::layered(settings.sweep.clone(), &args.sweep, explicit);
    let plan = settings.sweep_plan(&sweep)?;
    let out = out_dir(settings.out.as_deref())?;
    let coordinator = serve(&settings, shutdown).await?;
    let recorder = Recorder::start(
        &args.run.record,
        args.run.scenario.as_deref(),
        &settings,
        Kind::Sweep,
        &coordinator,
        shutdown,
    )
    .await
    .map_err(Failure::from)?;
    let result = crate::sweep::execute(&coordinator.registry, &plan, shutdown, progress).await;
    let mut report = match result {
        Ok(report) => report,
        Err(e) => {
            recorder.failed(&e);
            return Err(anyhow::Error::from(e).into());
        }
    };
    report.judge(&settings.fail_if);
    recorder.finish(Ran::Sweep(&report), None);
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = format!("sweep-{started}");
    let saved = save(out.as_ref(), &name, "sweep (json, html)", |dir| {
        report.write(dir)
    });
    deliver(Output::Sweep(report), saved)
}

async fn demo(
    args: DemoArgs,
    shutdown: &CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Output, Failure> {
    let config = crate::demo::DemoConfig {
        agents: args.agents,
        connections: args.connections,
        backlog: args.backlog,
    };
    config.validate()?;
    crate::scenario::check_thresholds(&args.fail_if)?;
    let out = out_dir(args.out.as_deref())?;
    let mut done = crate::demo::run(&config, shutdown, progress)
        .await
        .map_err(anyhow::Error::from)?;
    done.report.thresholds = threshold::evaluate(&args.fail_if, &done.report);
    let saved = save(out.as_ref(), &done.report.run_id, REPORT_FILES, |dir| {
        done.write(dir)
    });
    deliver(Output::Run(done.report), saved)
}

// `stampede schedule`, `stampede history`, and the history and metrics of `run` and `sweep`
// (docs/design.md "History"); the work is in `crate::schedule` and `crate::history`.

async fn schedule(
    args: ScheduleArgs,
    explicit: &BTreeSet<String>,
    shutdown: &CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Output, Failure> {
    let mut prepared = Prepared::new(&args, explicit).map_err(Failure::from)?;
    let coordinator = serve(&prepared.endpoint, shutdown).await?;
    let outcome = prepared
        .run(&args, &coordinator, explicit, shutdown, progress)
        .await
        .map_err(Failure::from)?;
    Ok(Output::Text {
        text: outcome.summary,
        code: outcome.code,
    })
}

impl From<ScheduleError> for Failure {
    fn from(e: ScheduleError) -> Failure {
        match e {
            ScheduleError::Config(e) => Failure::Usage(e),
            ScheduleError::Other(e) => Failure::Other(e),
        }
    }
}

fn history(args: &HistoryArgs) -> Result<Output, Failure> {
    match history::command::execute(args) {
        Ok((text, code)) => Ok(Output::Text { text, code }),
        Err(CommandError::Usage {
            name,
            value,
            expected,
        }) => Err(Failure::Usage(ConfigError::Invalid {
            name,
            value,
            expected,
        })),
        Err(e) => Err(anyhow::Error::from(e).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_refused_by_out_go_to_a_named_fallback() {
        let dir = std::env::temp_dir().join(format!("stampede-cli-out-{}", std::process::id()));
        let out = OutDir::prepare(&dir).unwrap();
        let name = format!("cli-save-{}", std::process::id());
        // Refused in --out, taken in the fallback.
        let write = |d: &Path| {
            if d == dir.as_path() {
                Err(std::io::Error::other("disk full"))
            } else {
                std::fs::write(d.join("report.json"), "{}")
            }
        };
        let unsaved = save(Some(&out), &name, "report", write).unwrap_err();
        let fallback = unsaved.fallback.as_ref().unwrap().clone();
        assert!(fallback.join("report.json").is_file());
        let msg = unsaved.to_string();
        assert!(msg.contains("disk full"), "{msg}");
        assert!(msg.contains(&format!("written to {} instead", fallback.display())));
        std::fs::remove_dir_all(&fallback).unwrap();
        // Refused everywhere: the message says only the summary is left.
        let fail = |_: &Path| Err(std::io::Error::other("read-only"));
        let unsaved = save(Some(&out), &name, "report", fail).unwrap_err();
        assert!(unsaved.to_string().contains("only the summary is left"));
        if let Ok(d) = &unsaved.fallback {
            let _ = std::fs::remove_dir_all(d);
        }
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("stampede-{name}")));
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("stampede-{name}-1")));
        // No --out: nothing written, nothing failed.
        assert!(save(None, &name, "report", fail).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod exit_tests {
    use super::*;
    use crate::report::ThresholdResult;

    /// A failed threshold is exit 2; a partial run is exit 1 whatever its thresholds say.
    #[test]
    fn a_failed_threshold_is_2_and_partial_wins() {
        let failed = ThresholdResult {
            expr: "ghost>0".into(),
            value: Some(1.0),
            unit: Some("count".into()),
            passed: false,
            detail: "1".into(),
        };
        let mut report = Report::default();
        assert_eq!(Output::Run(report.clone()).exit_code(), 0);
        report.thresholds.push(failed);
        assert_eq!(Output::Run(report.clone()).exit_code(), 2);
        report.partial = true;
        assert_eq!(Output::Run(report).exit_code(), 1);
    }
}
