//! The `stampede-target` command line: its flags (serving a listener of its own, `observe`
//! for another process's listener, or `supervise` to run a real server at each backlog) and
//! what each command does with them. `main`
//! parses ([`Cli`], through `stampede_proto::logging::parse_args`), sets up logging, installs
//! the signal handlers and calls [`execute`]; the flags become a [`Config`] or an
//! [`ObserveConfig`] here, and those types' own `validate` decides what is refused.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use stampede_proto::duration::parse_duration;
use stampede_proto::live_line::LiveLine;
use stampede_proto::target::TargetStats;
use tokio_util::sync::CancellationToken;

use crate::config::{AcceptPolicy, Config, OnAccept};
use crate::control::ControlAuth;
use crate::observe::{Observe, ObserveConfig};
use crate::{Error, Target};

mod supervise;

pub use self::supervise::SuperviseArgs;

/// The listener under test: a tunable listen() backlog and accept throttling, watching its
/// own accept queue and the kernel's listener counters.
#[derive(Debug, Parser)]
#[command(
    name = "stampede-target",
    version = stampede_proto::install::VERSION,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// A subcommand; without one, the target serves a listener of its own.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The settings of the target's own listener.
    #[command(flatten)]
    pub serve: ServeArgs,
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

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch the accept queue and counters of another process's listener on this host.
    Observe(ObserveArgs),
    /// Run a real server (nginx, ...) as a child and restart it at each backlog a sweep asks
    /// for: `{backlog}` in its arguments and templates becomes the backlog.
    Supervise(SuperviseArgs),
}

/// The flags of the target's own listener (the default command).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "STAMPEDE_LISTEN",
        default_value = "127.0.0.1:8000",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,
    /// Backlog passed to listen() as given (0 admits one; the kernel caps it at somaxconn).
    #[arg(
        long,
        env = "STAMPEDE_BACKLOG",
        default_value_t = 511,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub backlog: i32,
    /// Accept nothing for this long after start, or after a new policy arrives over --control
    /// (connections wait in the accept queue meanwhile) [default: 0: accept at once].
    #[arg(long, env = "STAMPEDE_ACCEPT_DELAY", value_parser = parse_duration, value_name = "DUR")]
    pub accept_delay: Option<Duration>,
    /// Accepts per second (token bucket); 0 = never; default: as fast as possible.
    #[arg(
        long,
        env = "STAMPEDE_ACCEPT_RATE",
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub accept_rate: Option<f64>,
    /// With --accept-rate: how many accepts may happen back to back.
    #[arg(
        long,
        env = "STAMPEDE_ACCEPT_BATCH",
        default_value_t = 1,
        value_name = "N"
    )]
    pub accept_batch: u32,
    /// Start paused (resume over --control).
    #[arg(long, env = "STAMPEDE_PAUSED")]
    pub paused: bool,
    /// What to do with each accepted connection: greet|echo|close|reset|hold:DUR.
    #[arg(
        long,
        env = "STAMPEDE_ON_ACCEPT",
        default_value = "greet",
        value_name = "ACTION"
    )]
    pub on_accept: OnAccept,
    /// Serve the stampede.v1.TargetControl gRPC service on this address (off loopback only
    /// with --token-file).
    #[arg(long, env = "STAMPEDE_CONTROL", value_name = "ADDR")]
    pub control: Option<SocketAddr>,
    /// Who may use --control, and over what.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Stop after this long (default: until SIGINT or SIGTERM).
    #[arg(long, env = "STAMPEDE_DURATION", value_parser = parse_duration, value_name = "DUR")]
    pub duration: Option<Duration>,
    /// Write the stats (report.json's target{} object plus the timeline) here at exit.
    #[arg(long, env = "STAMPEDE_STATS_JSON", value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// How often to sample the accept queue.
    #[arg(long, env = "STAMPEDE_SAMPLE_INTERVAL", value_parser = parse_duration, default_value = "1ms", value_name = "DUR")]
    pub sample_interval: Duration,
}

/// The flags of `stampede-target observe`.
#[derive(Debug, Args)]
pub struct ObserveArgs {
    /// The listener's port.
    #[arg(long)]
    pub port: u16,
    /// Only the listener bound to this address (default: any address on the port).
    #[arg(long)]
    pub addr: Option<IpAddr>,
    /// Time between two looks at the queue.
    #[arg(long, value_parser = parse_duration, default_value = "5ms", value_name = "DUR")]
    pub interval: Duration,
    /// Stop after this long (default: until SIGINT or SIGTERM).
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub duration: Option<Duration>,
    /// Write the stats JSON here at exit.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// Serve stampede.v1.TargetControl here (Stats, ResetCounters, WatchQueue), so that
    /// `stampede run --target-control` reports this listener's queue and counters (off
    /// loopback only with --token-file).
    #[arg(long, value_name = "ADDR")]
    pub control: Option<SocketAddr>,
    /// Who may use --control, and over what.
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// The control service's token and TLS, the same flags as the coordinator's.
#[derive(Debug, Args)]
pub struct AuthArgs {
    /// File holding the bearer token every control call must carry (required when --control
    /// is off loopback); give `stampede run` the same file.
    #[arg(long, env = "STAMPEDE_TOKEN_FILE", value_name = "F")]
    pub token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM) the control service presents (with --tls-key).
    #[arg(
        long,
        env = "STAMPEDE_TLS_CERT",
        value_name = "F",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) of the control service (with --tls-cert).
    #[arg(
        long,
        env = "STAMPEDE_TLS_KEY",
        value_name = "F",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

impl AuthArgs {
    /// Reads the files, then refuses a control address off loopback without a token.
    pub(crate) fn load(&self, control: Option<SocketAddr>) -> Result<ControlAuth, Error> {
        let tls = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        let auth = ControlAuth::from_files(self.token_file.as_deref(), tls)?;
        auth.check_addr(control)?;
        Ok(auth)
    }
}

impl From<ServeArgs> for Config {
    /// The flags as settings, not yet validated ([`Target::bind`] does that); the control
    /// service's token and TLS are read apart, by `AuthArgs::load`.
    fn from(args: ServeArgs) -> Config {
        Config {
            listen: args.listen,
            backlog: args.backlog,
            accept: AcceptPolicy {
                delay: args.accept_delay.unwrap_or_default(),
                rate_per_sec: args.accept_rate,
                batch: args.accept_batch,
                paused: args.paused,
            },
            on_accept: args.on_accept,
            sample_every: args.sample_interval,
            duration: args.duration,
            stats_json: args.stats_json,
            control: args.control,
        }
    }
}

impl From<ObserveArgs> for ObserveConfig {
    /// The flags as settings, not yet validated ([`Observe::bind`] does that).
    fn from(args: ObserveArgs) -> ObserveConfig {
        ObserveConfig {
            port: args.port,
            addr: args.addr,
            interval: args.interval,
            duration: args.duration,
            stats_json: args.stats_json,
            control: args.control,
        }
    }
}

/// Runs the parsed command until it is done or `shutdown` fires, and returns the final stats
/// (with the timeline) for `main` to print. When stderr is a terminal, a status line there is
/// rewritten in place while it runs. [`Error::Config`] means bad usage (exit 64).
pub async fn execute(cli: Cli, shutdown: CancellationToken) -> Result<TargetStats, Error> {
    match cli.command {
        Some(Command::Observe(args)) => {
            let auth = args.auth.load(args.control)?;
            observe(args.into(), auth, shutdown).await
        }
        Some(Command::Supervise(args)) => {
            let auth = args.auth.load(args.control)?;
            supervise::run(args.into(), auth, shutdown).await
        }
        None => {
            let auth = cli.serve.auth.load(cli.serve.control)?;
            serve(cli.serve.into(), auth, shutdown).await
        }
    }
}

/// Binds the target's own listener, logs it once, and serves until done.
async fn serve(
    config: Config,
    auth: ControlAuth,
    shutdown: CancellationToken,
) -> Result<TargetStats, Error> {
    let control_auth = describe(&auth);
    let target = Target::bind(&config)?.with_control_auth(auth);
    let handle = target.handle();
    let stats = handle.stats()?;
    tracing::info!(
        addr = %target.local_addr(),
        backlog = config.backlog,
        backlog_effective = stats.backlog_effective,
        somaxconn = stats.somaxconn,
        control = ?target.control_addr(),
        control_auth,
        on_accept = %config.on_accept,
        "listening"
    );
    // Log lines while it is drawn go through its suspend, never into the middle of it.
    let line = LiveLine::stderr();
    // Ended (its last text kept) before this returns, however the run ends: the caller
    // prints the summary or the error next, on a line of its own.
    let stop_line = shutdown.child_token();
    let drawing = line.is_on().then(|| {
        let stop = stop_line.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            while tokio::select! { _ = stop.cancelled() => false, _ = tick.tick() => true } {
                if let Ok(s) = handle.stats() {
                    line.set(&s.summary());
                }
            }
            line.keep();
        })
    });
    let result = target.run(shutdown).await;
    stop_line.cancel();
    if let Some(drawing) = drawing {
        let _ = drawing.await;
    }
    result
}

/// Finds another process's listener, logs it once, and watches it until done.
async fn observe(
    config: ObserveConfig,
    auth: ControlAuth,
    shutdown: CancellationToken,
) -> Result<TargetStats, Error> {
    let control_auth = describe(&auth);
    let observe = Observe::bind(&config)?.with_control_auth(auth);
    tracing::info!(
        port = config.port,
        control = ?observe.control_addr(),
        control_auth,
        "observing"
    );
    let live = LiveLine::stderr();
    let stats = observe
        .run(shutdown, &mut |s: &TargetStats| live.set(&s.summary()))
        .await;
    live.keep();
    stats
}

/// How control is protected, for the one log line (never the token itself).
pub(crate) fn describe(auth: &ControlAuth) -> &'static str {
    match (&auth.token, &auth.tls) {
        (Some(_), Some(_)) => "token+tls",
        (Some(_), None) => "token",
        (None, Some(_)) => "tls",
        (None, None) => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_the_config_they_name() {
        let cli = Cli::try_parse_from([
            "stampede-target",
            "--backlog",
            "-1",
            "--accept-delay",
            "2s",
            "--accept-rate",
            "10",
            "--on-accept",
            "hold:250ms",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        let config = Config::from(cli.serve);
        assert_eq!(config.backlog, -1);
        assert_eq!(config.accept.delay, Duration::from_secs(2));
        assert_eq!(config.accept.rate_per_sec, Some(10.0));
        assert_eq!(config.on_accept.to_string(), "hold:250ms");
        assert_eq!(config.sample_every, Duration::from_millis(1));
    }

    #[test]
    fn observe_takes_its_own_flags() {
        let cli = Cli::try_parse_from(["stampede-target", "observe", "--port", "9000"]).unwrap();
        let Some(Command::Observe(args)) = cli.command else {
            panic!("expected observe: {cli:?}");
        };
        let config = ObserveConfig::from(args);
        assert_eq!(config.port, 9000);
        assert_eq!(config.interval, Duration::from_millis(5));
        assert!(Cli::try_parse_from(["stampede-target", "observe", "--backlog", "3"]).is_err());
    }
}
