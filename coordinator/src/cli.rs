//! The `stampede` command line: the subcommands, their flags, and what each one does with
//! them. `main` parses ([`parse`]), sets up logging and calls [`execute`]; everything a
//! command decides (which settings win, what is refused, what is written) happens here or in
//! the modules it calls, so tests can drive it in-process.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::report::Report;
use crate::run::Finished;
use crate::scenario::{ConfigError, Scenario, SweepSettings};
use crate::sweep::SweepReport;

/// Distributed TCP connection load tester: synchronized connect() bursts from many agents,
/// every attempt classified, histograms merged exactly.
#[derive(Debug, Parser)]
#[command(name = "stampede", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
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
}

/// `stampede run`: a scenario file and flags over it.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenario file (TOML, keys named like the flags); flags override its values.
    pub scenario: Option<PathBuf>,
    /// The run's settings.
    #[command(flatten)]
    pub settings: Scenario,
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
    /// The target's listen() backlog: small, so the burst overflows it.
    #[arg(long, default_value_t = 8)]
    pub backlog: i32,
    /// Directory for report.json, report.csv, report.html and report.hlog.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
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
}

/// What a command produced (one per process: the size difference costs nothing).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Output {
    /// A run's (or the demo's) report.
    Run(Report),
    /// A sweep's report.
    Sweep(SweepReport),
}

impl Output {
    /// The terminal summary.
    pub fn summary(&self) -> String {
        match self {
            Output::Run(r) => r.summary(),
            Output::Sweep(s) => s.summary(),
        }
    }

    /// A partial run (or sweep step) is not a success.
    pub fn complete(&self) -> bool {
        match self {
            Output::Run(r) => !(r.aborted || r.partial),
            Output::Sweep(s) => s.stopped.is_none() && s.steps.iter().all(|st| !st.partial),
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
    }
}

/// The scenario file (if any) with the given flags over it.
fn settings(args: &RunArgs, explicit: &BTreeSet<String>) -> Result<Scenario, ConfigError> {
    let file = args.scenario.as_deref().map(Scenario::load).transpose()?;
    Ok(Scenario::layered(file, &args.settings, explicit))
}

/// Serves the coordinator endpoint these settings ask for.
async fn serve(
    settings: &Scenario,
    shutdown: &CancellationToken,
) -> Result<crate::Coordinator, Failure> {
    let coordinator = crate::serve(settings.serve_config()?, shutdown.clone())
        .await
        .map_err(anyhow::Error::from)?;
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
    let coordinator = serve(&settings, shutdown).await?;
    let done = crate::run::execute(&coordinator.registry, &plan, shutdown, progress)
        .await
        .map_err(anyhow::Error::from)?;
    write_run(settings.out.as_deref(), &done)?;
    Ok(Output::Run(done.report))
}

async fn sweep(
    args: SweepArgs,
    explicit: &BTreeSet<String>,
    shutdown: &CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Output, Failure> {
    let settings = settings(&args.run, explicit)?;
    let sweep = SweepSettings::layered(settings.sweep.clone(), &args.sweep, explicit);
    let plan = settings.sweep_plan(&sweep)?;
    let coordinator = serve(&settings, shutdown).await?;
    let report = crate::sweep::execute(&coordinator.registry, &plan, shutdown, progress)
        .await
        .map_err(anyhow::Error::from)?;
    if let Some(dir) = settings.out.as_deref() {
        report.write(dir).map_err(anyhow::Error::from)?;
        tracing::info!(dir = %dir.display(), "sweep written (json, html)");
    }
    Ok(Output::Sweep(report))
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
    let done = crate::demo::run(&config, shutdown, progress)
        .await
        .map_err(anyhow::Error::from)?;
    write_run(args.out.as_deref(), &done)?;
    Ok(Output::Run(done.report))
}

/// report.json, report.csv, report.html and report.hlog into the output directory, if one
/// was given.
fn write_run(out: Option<&Path>, done: &Finished) -> anyhow::Result<()> {
    if let Some(dir) = out {
        done.write(dir)?;
        tracing::info!(dir = %dir.display(), "report written (json, csv, html, hlog)");
    }
    Ok(())
}
