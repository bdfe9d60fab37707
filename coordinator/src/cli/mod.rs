//! The `stampede` command line: the subcommands, their flags, and what each one does with
//! them. `main` parses ([`parse`]), sets up logging and calls [`execute`]; everything a
//! command decides (which settings win, what is refused, what is written) happens here or in
//! the modules it calls, so tests can drive it in-process.
//!
//! Here: the command line ([`Cli`], [`parse`]) and [`execute`], which hands each subcommand
//! to the module that does it; `measure` runs `run`, `sweep` and `demo`, `output` holds what
//! a command produced ([`Output`]), how it failed ([`Failure`]) and how results are saved.
//!
//! Nothing a run measured is lost to its output directory: `--out` is created and proven
//! writable before the coordinator even listens (a bad one is a usage error), and if writing
//! still fails at the end the results go to a fallback directory that the error names, while
//! `main` prints the summary all the same ([`Failure::Unsaved`]).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use stampede_proto::backlog;
use tokio_util::sync::CancellationToken;

use crate::history::command::{CommandError, HistoryArgs};
use crate::scenario::{ConfigError, Scenario, SweepSettings};
use crate::schedule::record::Recording;
use crate::schedule::{Prepared, ScheduleArgs, ScheduleError};
use crate::threshold::Threshold;

mod measure;
mod output;

pub use self::output::{Failure, Output, Unsaved};

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

/// Runs a parsed command until it is done or `shutdown` fires; `progress` receives one-line
/// status updates.
pub async fn execute(
    invocation: Invocation,
    shutdown: CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Output, Failure> {
    let explicit = &invocation.explicit;
    match invocation.cli.command {
        Command::Run(args) => measure::run(args, explicit, &shutdown, progress).await,
        Command::Sweep(args) => measure::sweep(args, explicit, &shutdown, progress).await,
        Command::Demo(args) => measure::demo(args, &shutdown, progress).await,
        // Not serving is exit 1 (an incomplete output); bad flags exit 64.
        Command::Health(args) => Ok(Output::Health(crate::health::execute(&args).await?)),
        Command::Schedule(args) => schedule(args, explicit, &shutdown, progress).await,
        Command::History(args) => history(&args),
        // An existing FILE without --force is bad usage (exit 64); the rest a failure (1).
        Command::Token(cmd) => match crate::token_file::run(&cmd) {
            Ok(text) => Ok(Output::Text { text, code: 0 }),
            Err(crate::token_file::TokenFileError::Exists(e)) => Err(Failure::Usage(e)),
            // The FILE the user named cannot be written: usage, as an unwritable --out.
            Err(e @ crate::token_file::TokenFileError::Write { .. }) => {
                Err(Failure::Usage(ConfigError::Unwritable(e.to_string())))
            }
            Err(e) => Err(Failure::Other(e.into())),
        },
        Command::Install(cmd) => install(&cmd),
    }
}

/// `completions` or `man`: the script or page as text, or where the pages went.
fn install(cmd: &stampede_proto::install::InstallCommand) -> Result<Output, Failure> {
    let mut out = Vec::new();
    // Pages go into DIR as named, so a DIR that cannot be written is usage (exit 64), as an
    // unwritable --out or token FILE is; the script and the top page go to a buffer here.
    let note = cmd
        .run(command(), &mut out)
        .map_err(|e| Failure::Usage(ConfigError::Unwritable(e.to_string())))?;
    let mut text = String::from_utf8_lossy(&out).into_owned();
    if let Some(note) = note {
        text.push_str(&note);
        text.push('\n');
    }
    Ok(Output::Text { text, code: 0 })
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
    // The endpoint holds every entry's fleet in turn: the largest must fit, and a refusal
    // names its entry (the endpoint's own --agents is only the default under them).
    let largest = prepared.capacity.largest_fleet(&args.settings, explicit);
    let fleet = largest
        .as_ref()
        .map_or(prepared.endpoint.agents, |(_, n)| *n);
    let coordinator = measure::serve_fleet(&prepared.endpoint, fleet, shutdown, |limits, fd| {
        let Some((entry, agents)) = largest else {
            return Ok(());
        };
        limits
            .check_fleet(agents, fd)
            .map_err(|e| ConfigError::File {
                location: entry.location.clone(),
                message: format!("scenario: entry \"{}\": {e}", entry.name),
            })
    })
    .await?;
    let outcome = prepared
        .run(&args, &coordinator, explicit, shutdown, progress)
        .await;
    // Stopped (SIGTERM) or done (--once): each agent reads that the coordinator is done.
    coordinator.close(measure::CLOSE_GRACE).await;
    let outcome = outcome.map_err(Failure::from)?;
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
    match crate::history::command::execute(args) {
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
