//! `stampede`: parse flags, build a plan, run it, write the report, map the outcome to an
//! exit code (0 done, 1 failed, 64 bad usage or config).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use stampede::auth::Token;
use stampede::report::Report;
use stampede::run::{Finished, RunPlan};
use stampede::scenario::{Scenario, ScenarioError};
use stampede::sweep::{SweepPlan, SweepReport};
use tokio_util::sync::CancellationToken;

use stampede_proto::usage::EX_USAGE;

/// Distributed TCP connection load tester: synchronized connect() bursts from many agents,
/// every attempt classified, histograms merged exactly.
#[derive(Debug, Parser)]
#[command(name = "stampede", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Wait for agents, run a scenario across them, write report.json.
    Run(RunArgs),
    /// Size listen() backlog and somaxconn: the same run over a list of backlogs (and
    /// accept rates), then the smallest backlog that absorbs the burst.
    Sweep(SweepArgs),
    /// Target, agents and coordinator in this one process on loopback: a real burst that
    /// overflows a small backlog, to see what stampede reports.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Scenario file (TOML); flags override its values.
    scenario: Option<PathBuf>,
    /// Address agents dial.
    #[arg(long, env = "STAMPEDE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Agents to wait for.
    #[arg(long, env = "STAMPEDE_AGENTS")]
    agents: Option<usize>,
    /// How long to wait for the agents.
    #[arg(long, env = "STAMPEDE_AGENT_WAIT", value_name = "DUR")]
    agent_wait: Option<String>,
    /// Target HOST:PORT.
    #[arg(long, env = "STAMPEDE_TARGET")]
    target: Option<SocketAddr>,
    /// The target's control service (http://HOST:PORT).
    #[arg(long, env = "STAMPEDE_TARGET_CONTROL", value_name = "URL")]
    target_control: Option<String>,
    /// Connections in total, split across agents.
    #[arg(long, env = "STAMPEDE_CONNECTIONS")]
    connections: Option<u64>,
    /// Backlog to configure on the target first (needs --target-control).
    #[arg(long, env = "STAMPEDE_BACKLOG", allow_negative_numbers = true)]
    backlog: Option<i32>,
    /// burst | ramp:RATE:DUR | waves:K:PERIOD.
    #[arg(long, env = "STAMPEDE_PATTERN")]
    pattern: Option<String>,
    /// Per-attempt deadline.
    #[arg(long, env = "STAMPEDE_TIMEOUT", value_name = "DUR")]
    timeout: Option<String>,
    /// The target greets on accept: measure time to first byte and detect ghosts.
    #[arg(long, env = "STAMPEDE_EXPECT_GREETING")]
    expect_greeting: bool,
    /// The client speaks first: agents send one byte and a connection whose byte is never
    /// acknowledged is a ghost (excludes --expect-greeting).
    #[arg(
        long,
        env = "STAMPEDE_PROBE_ADMISSION",
        conflicts_with = "expect_greeting"
    )]
    probe_admission: bool,
    /// Directory for report.json, report.csv, report.html and report.hlog.
    #[arg(long, env = "STAMPEDE_OUT")]
    out: Option<PathBuf>,
    /// File holding the bearer token agents must present.
    #[arg(long, env = "STAMPEDE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM) presented to agents.
    #[arg(long, env = "STAMPEDE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "STAMPEDE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require agents to present a client certificate signed by this CA (mutual TLS).
    #[arg(long, env = "STAMPEDE_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct SweepArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Backlogs to try, comma-separated (e.g. 8,64,512,4096).
    #[arg(long, env = "STAMPEDE_BACKLOGS", value_delimiter = ',', required = true, value_parser = parse_backlog)]
    backlogs: Vec<i32>,
    /// Target accept rates to try, per second, comma-separated; `max` = as fast as possible.
    #[arg(long, env = "STAMPEDE_ACCEPT_RATES", value_delimiter = ',', value_parser = parse_rate)]
    accept_rates: Option<Vec<f64>>,
    /// A recommended backlog must keep p99 connect latency under this.
    #[arg(long, env = "STAMPEDE_P99_MAX", default_value = "100ms", value_parser = parse_dur)]
    p99_max: std::time::Duration,
}

fn parse_backlog(s: &str) -> Result<i32, String> {
    match s.trim().parse::<i32>() {
        Ok(b) if b >= 0 => Ok(b),
        _ => Err(format!(
            "invalid backlog \"{s}\": expected a whole number, 0 or more"
        )),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim() {
        "max" => Ok(f64::INFINITY),
        t => t
            .parse::<f64>()
            .ok()
            .filter(|r| r.is_finite() && *r >= 0.0)
            .ok_or_else(|| {
                format!("invalid accept rate \"{s}\": expected accepts per second or max")
            }),
    }
}

fn parse_dur(s: &str) -> Result<std::time::Duration, String> {
    stampede_proto::duration::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Agents (each with its own gRPC stream, in this process).
    #[arg(long, default_value_t = 3)]
    agents: usize,
    /// Connections in total.
    #[arg(long, default_value_t = 60)]
    connections: u64,
    /// The target's listen() backlog: small, so the burst overflows it.
    #[arg(long, default_value_t = 8)]
    backlog: i32,
    /// Directory for report.json, report.csv, report.html and report.hlog.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Usage(#[from] ScenarioError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let line = stampede_proto::usage::one_line(&e.render().to_string());
            eprintln!("stampede: {line} (see --help)");
            return ExitCode::from(EX_USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,stampede=info".into()),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stampede: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let result = runtime.block_on(async {
        if let Err(e) = stampede_proto::signal::cancel_on_signal(shutdown.clone()) {
            tracing::warn!(cause = %e, "cannot install SIGINT/SIGTERM handlers");
        }
        match cli.command {
            Command::Run(args) => run_main(args, shutdown.clone()).await,
            Command::Sweep(args) => sweep_main(args, shutdown.clone()).await,
            Command::Demo(args) => demo_main(args, shutdown.clone()).await,
        }
    });
    match result {
        Ok(output) => {
            print!("{}", output.summary());
            if output.complete() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(Failure::Usage(e)) => {
            eprintln!("stampede: error: {e}");
            ExitCode::from(EX_USAGE)
        }
        Err(Failure::Other(e)) => {
            eprintln!("stampede: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A progress line: rewritten in place on a terminal, one log line otherwise.
fn progress(line: &str) {
    if std::io::stderr().is_terminal() {
        eprint!("\r{line}\x1b[K");
    } else {
        tracing::info!("{line}");
    }
}

/// Everything `run` and `sweep` share: the scenario (file, then flags over it), its plan,
/// and the coordinator endpoint agents dial.
async fn start(
    args: RunArgs,
    shutdown: &CancellationToken,
) -> Result<(Scenario, RunPlan, stampede::Coordinator), Failure> {
    let file = match &args.scenario {
        Some(path) => Scenario::load(path)?,
        None => Scenario::default(),
    };
    let flags = Scenario {
        listen: args.listen,
        agents: args.agents,
        agent_wait: args.agent_wait,
        target: args.target,
        target_control: args.target_control,
        connections: args.connections,
        backlog: args.backlog,
        pattern: args.pattern,
        timeout: args.timeout,
        expect_greeting: args.expect_greeting.then_some(true),
        probe_admission: args.probe_admission.then_some(true),
        out: args.out,
        token_file: args.token_file,
        ..Default::default()
    };
    let scenario = flags.over(file);
    let plan = scenario.plan()?;
    if plan.backlog.is_some() && plan.target_control.is_none() {
        return Err(ScenarioError(
            "--backlog needs --target-control to configure the target".into(),
        )
        .into());
    }
    let token = match &scenario.token_file {
        Some(path) => Some(Token::from_file(path).map_err(|e| ScenarioError(format!("{e:#}")))?),
        None => None,
    };
    let listen = scenario
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7700)));
    if token.is_none() && !listen.ip().is_loopback() {
        return Err(ScenarioError(format!(
            "listening on {listen} without --token-file would let anyone on the network drive \
             the agents; give a token file (or listen on loopback)"
        ))
        .into());
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            stampede_proto::tls::server_config(cert, key, args.tls_client_ca.as_deref())
                .map_err(|e| ScenarioError(e.to_string()))?,
        ),
        (None, None) if args.tls_client_ca.is_none() => None,
        _ => {
            return Err(ScenarioError(
                "TLS needs both --tls-cert and --tls-key (and --tls-client-ca only with them)"
                    .into(),
            )
            .into());
        }
    };
    let coordinator = stampede::serve(
        stampede::ServeConfig {
            tls,
            ..stampede::ServeConfig::new(listen, token)
        },
        shutdown.clone(),
    )
    .await
    .map_err(anyhow::Error::from)?;
    tracing::info!(addr = %coordinator.addr, "waiting for agents");
    Ok((scenario, plan, coordinator))
}

async fn run_main(args: RunArgs, shutdown: CancellationToken) -> Result<Output, Failure> {
    let (scenario, plan, coordinator) = start(args, &shutdown).await?;
    let done = stampede::run::execute(&coordinator.registry, &plan, &shutdown, &progress)
        .await
        .map_err(anyhow::Error::from);
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let done = done?;
    write_run(scenario.out.as_deref(), &done)?;
    Ok(Output::Run(done.report))
}

/// report.json, report.csv, report.html and report.hlog into the output directory, if one was given.
fn write_run(out: Option<&Path>, done: &Finished) -> anyhow::Result<()> {
    if let Some(dir) = out {
        done.write(dir)?;
        tracing::info!(dir = %dir.display(), "report written (json, csv, html, hlog)");
    }
    Ok(())
}

async fn sweep_main(args: SweepArgs, shutdown: CancellationToken) -> Result<Output, Failure> {
    let (scenario, run, coordinator) = start(args.run, &shutdown).await?;
    if run.target_control.is_none() {
        return Err(ScenarioError(
            "a sweep sets the target's backlog at each step: give --target-control URL".into(),
        )
        .into());
    }
    let plan = SweepPlan {
        run,
        backlogs: args.backlogs,
        accept_rates: args.accept_rates.unwrap_or_default(),
        p99_max: args.p99_max,
    };
    let report = stampede::sweep::execute(&coordinator.registry, &plan, &shutdown, &progress)
        .await
        .map_err(anyhow::Error::from);
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let report = report?;
    if let Some(dir) = scenario.out.as_deref() {
        report.write(dir).map_err(anyhow::Error::from)?;
        tracing::info!(dir = %dir.display(), "sweep written (json, html)");
    }
    Ok(Output::Sweep(report))
}

async fn demo_main(args: DemoArgs, shutdown: CancellationToken) -> Result<Output, Failure> {
    let config = stampede::demo::DemoConfig {
        agents: args.agents,
        connections: args.connections,
        backlog: args.backlog,
    };
    config.validate().map_err(ScenarioError)?;
    let done = stampede::demo::run(&config, &shutdown, &progress).await?;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    write_run(args.out.as_deref(), &done)?;
    Ok(Output::Run(done.report))
}

/// What a command produced (one per process: the size difference costs nothing).
#[allow(clippy::large_enum_variant)]
enum Output {
    Run(Report),
    Sweep(SweepReport),
}

impl Output {
    fn summary(&self) -> String {
        match self {
            Output::Run(r) => r.summary(),
            Output::Sweep(s) => s.summary(),
        }
    }

    /// A partial run (or sweep step) is not a success.
    fn complete(&self) -> bool {
        match self {
            Output::Run(r) => !(r.aborted || r.partial),
            Output::Sweep(s) => s.stopped.is_none() && s.steps.iter().all(|st| !st.partial),
        }
    }
}
