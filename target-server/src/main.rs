//! `stampede-target`: parse flags (through [`stampede_proto::logging::parse_args`]), set up
//! logging ([`stampede_proto::logging::init`]), build a [`Config`], run the library, map the
//! outcome to an exit code (0 done, 1 failed, 64 bad usage).

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use stampede_proto::duration::parse_duration;
use stampede_target::config::{AcceptPolicy, Config, OnAccept};
use stampede_target::observe::{self, ObserveConfig};
use stampede_target::stats::TargetStats;
use stampede_target::{Error, Target};
use tokio_util::sync::CancellationToken;

use stampede_proto::usage::EX_USAGE;

/// The listener under test: a tunable listen() backlog and accept throttling, watching its
/// own accept queue and the kernel's listener counters.
#[derive(Debug, Parser)]
#[command(
    name = "stampede-target",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch the accept queue and counters of another process's listener on this host.
    Observe(ObserveArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "STAMPEDE_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Backlog passed to listen() as given (0 admits one; the kernel caps it at somaxconn).
    #[arg(
        long,
        env = "STAMPEDE_BACKLOG",
        default_value_t = 511,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    backlog: i32,
    /// Accept nothing for this long after start (connections wait in the accept queue).
    #[arg(long, env = "STAMPEDE_ACCEPT_DELAY", value_parser = parse_duration, value_name = "DUR")]
    accept_delay: Option<Duration>,
    /// Accepts per second (token bucket); 0 = never; default: as fast as possible.
    #[arg(
        long,
        env = "STAMPEDE_ACCEPT_RATE",
        allow_negative_numbers = true,
        value_name = "N"
    )]
    accept_rate: Option<f64>,
    /// With --accept-rate: how many accepts may happen back to back.
    #[arg(
        long,
        env = "STAMPEDE_ACCEPT_BATCH",
        default_value_t = 1,
        value_name = "N"
    )]
    accept_batch: u32,
    /// Start paused (resume over --control).
    #[arg(long, env = "STAMPEDE_PAUSED")]
    paused: bool,
    /// What to do with each accepted connection: greet|echo|close|reset|hold:DUR.
    #[arg(
        long,
        env = "STAMPEDE_ON_ACCEPT",
        default_value = "greet",
        value_name = "ACTION"
    )]
    on_accept: OnAccept,
    /// Serve the stampede.v1.TargetControl gRPC service on this address.
    #[arg(long, env = "STAMPEDE_CONTROL", value_name = "ADDR")]
    control: Option<SocketAddr>,
    /// Stop after this long (default: until SIGINT or SIGTERM).
    #[arg(long, env = "STAMPEDE_DURATION", value_parser = parse_duration, value_name = "DUR")]
    duration: Option<Duration>,
    /// Write the stats (report.json's target{} object plus the timeline) here at exit.
    #[arg(long, env = "STAMPEDE_STATS_JSON", value_name = "FILE")]
    stats_json: Option<PathBuf>,
    /// How often to sample the accept queue.
    #[arg(long, env = "STAMPEDE_SAMPLE_INTERVAL", value_parser = parse_duration, default_value = "1ms", value_name = "DUR")]
    sample_interval: Duration,
}

#[derive(Debug, Args)]
struct ObserveArgs {
    /// The listener's port.
    #[arg(long)]
    port: u16,
    /// Only the listener bound to this address (default: any address on the port).
    #[arg(long)]
    addr: Option<IpAddr>,
    /// Time between two looks at the queue.
    #[arg(long, value_parser = parse_duration, default_value = "5ms", value_name = "DUR")]
    interval: Duration,
    /// Stop after this long (default: until SIGINT or SIGTERM).
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    duration: Option<Duration>,
    /// Write the stats JSON here at exit.
    #[arg(long, value_name = "FILE")]
    stats_json: Option<PathBuf>,
    /// Serve stampede.v1.TargetControl here (Stats, ResetCounters, WatchQueue), so that
    /// `stampede run --target-control` reports this listener's queue and counters.
    #[arg(long, value_name = "ADDR")]
    control: Option<SocketAddr>,
}

impl ServeArgs {
    fn config(self) -> Config {
        Config {
            listen: self.listen,
            backlog: self.backlog,
            accept: AcceptPolicy {
                delay: self.accept_delay.unwrap_or_default(),
                rate_per_sec: self.accept_rate,
                batch: self.accept_batch,
                paused: self.paused,
            },
            on_accept: self.on_accept,
            sample_every: self.sample_interval,
            duration: self.duration,
            stats_json: self.stats_json,
            control: self.control,
        }
    }
}

fn main() -> ExitCode {
    let cli: Cli = match stampede_proto::logging::parse_args("stampede-target") {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    stampede_proto::logging::init("info");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stampede-target: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        if let Err(e) = stampede_proto::signal::cancel_on_signal(shutdown.clone()) {
            tracing::warn!(cause = %e, "cannot install SIGINT/SIGTERM handlers");
        }
        match cli.command {
            Some(Command::Observe(args)) => observe_main(args, shutdown).await,
            None => serve_main(cli.serve.config(), shutdown).await,
        }
    });
    match result {
        Ok(stats) => {
            println!("{}", stats.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stampede-target: error: {e}");
            ExitCode::from(match e {
                Error::Config(_) => EX_USAGE,
                _ => 1,
            })
        }
    }
}

async fn serve_main(config: Config, shutdown: CancellationToken) -> Result<TargetStats, Error> {
    let target = Target::bind(&config)?;
    let handle = target.handle();
    let stats = handle.stats()?;
    tracing::info!(
        addr = %target.local_addr(),
        backlog = config.backlog,
        backlog_effective = stats.backlog_effective,
        somaxconn = stats.somaxconn,
        control = ?target.control_addr(),
        on_accept = %config.on_accept,
        "listening"
    );
    if std::io::stderr().is_terminal() {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            while tokio::select! { _ = shutdown.cancelled() => false, _ = tick.tick() => true } {
                if let Ok(s) = handle.stats() {
                    eprint!("\r{}\x1b[K", s.summary());
                }
            }
            eprintln!();
        });
    }
    target.run(shutdown).await
}

async fn observe_main(
    args: ObserveArgs,
    shutdown: CancellationToken,
) -> Result<TargetStats, Error> {
    let config = ObserveConfig {
        port: args.port,
        addr: args.addr,
        interval: args.interval,
        duration: args.duration,
        stats_json: args.stats_json,
        control: args.control,
    };
    let observe = observe::Observe::bind(&config)?;
    tracing::info!(
        port = config.port,
        control = ?observe.control_addr(),
        "observing"
    );
    let live = std::io::stderr().is_terminal();
    let stats = observe
        .run(shutdown, &mut |s: &TargetStats| {
            if live {
                eprint!("\r{}\x1b[K", s.summary());
            }
        })
        .await;
    if live {
        eprintln!();
    }
    stats
}
