//! The flags of `stampede-target supervise` and how the command runs with them: the real
//! server's command after `--`, its templates, how it is stopped and how long it may take to
//! listen; [`crate::supervise`] does the work.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use stampede_proto::duration::parse_duration;
use stampede_proto::live_line::LiveLine;
use stampede_proto::target::TargetStats;
use tokio_util::sync::CancellationToken;

use super::{AuthArgs, describe};
use crate::Error;
use crate::control::ControlAuth;
use crate::supervise::{SomaxconnMode, SuperviseConfig, Template};

/// The flags of `stampede-target supervise`, then `-- COMMAND ARGS...`.
#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// The port the server listens on.
    #[arg(long)]
    pub port: u16,
    /// Only its listener on this address (default: any address on the port).
    #[arg(long)]
    pub addr: Option<IpAddr>,
    /// Serve stampede.v1.TargetControl here: Configure(backlog) restarts the server with it
    /// (off loopback only with --token-file).
    #[arg(long, value_name = "ADDR")]
    pub control: Option<SocketAddr>,
    /// A file rendered before each start: every {backlog} in SRC replaced, written to DST
    /// (repeatable).
    #[arg(long = "template", value_name = "SRC:DST")]
    pub templates: Vec<Template>,
    /// When a backlog is above net.core.somaxconn: raise it (root; the old value is put back
    /// on exit) or keep it (the kernel caps the backlog; the stats show the cap).
    #[arg(long, value_enum, default_value = "raise")]
    pub somaxconn: SomaxconnMode,
    /// Signal that stops the server gracefully (sent to its process group), then SIGKILL
    /// after --stop-timeout.
    #[arg(long, default_value = "TERM", value_parser = crate::supervise::parse_signal, value_name = "SIG")]
    pub stop_signal: i32,
    /// How long a graceful stop may take.
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DUR")]
    pub stop_timeout: Duration,
    /// How long the server may take to listen on --port with the backlog after a start.
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DUR")]
    pub listen_timeout: Duration,
    /// The backlog of the first start (a sweep sets its own at each step).
    #[arg(
        long,
        default_value_t = 511,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub backlog: i32,
    /// Time between two looks at the queue.
    #[arg(long, value_parser = parse_duration, default_value = "1ms", value_name = "DUR")]
    pub interval: Duration,
    /// Stop after this long (default: until SIGINT or SIGTERM).
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub duration: Option<Duration>,
    /// Write the stats JSON here at exit.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// Who may use --control, and over what.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// The server's command and arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl From<SuperviseArgs> for SuperviseConfig {
    /// The flags as settings, not yet validated ([`crate::supervise::run`] does that).
    fn from(a: SuperviseArgs) -> SuperviseConfig {
        SuperviseConfig {
            port: a.port,
            addr: a.addr,
            control: a.control,
            templates: a.templates,
            somaxconn: a.somaxconn,
            stop_signal: a.stop_signal,
            stop_timeout: a.stop_timeout,
            listen_timeout: a.listen_timeout,
            backlog: a.backlog,
            interval: a.interval,
            duration: a.duration,
            stats_json: a.stats_json,
            command: a.command,
        }
    }
}

/// Starts and watches a real server until done.
pub(super) async fn run(
    config: SuperviseConfig,
    auth: ControlAuth,
    shutdown: CancellationToken,
) -> Result<TargetStats, Error> {
    // Bad input is one line: checked before anything is logged.
    config.validate()?;
    tracing::info!(
        control_auth = describe(&auth),
        command = ?config.command,
        "supervise: starting the server"
    );
    let live = LiveLine::stderr();
    let stats = crate::supervise::run(config, auth, shutdown, &mut |s: &TargetStats| {
        live.set(&s.summary())
    })
    .await;
    live.keep();
    stats
}

#[cfg(test)]
mod tests {
    use super::super::{Cli, Command};
    use super::*;
    use clap::Parser;

    #[test]
    fn supervise_takes_the_command_after_the_dashes() {
        let cli = Cli::try_parse_from([
            "stampede-target",
            "supervise",
            "--port",
            "8080",
            "--template",
            "a.tpl:a.conf",
            "--somaxconn",
            "keep",
            "--stop-signal",
            "QUIT",
            "--",
            "nginx",
            "-g",
            "daemon off;",
        ])
        .unwrap();
        let Some(Command::Supervise(args)) = cli.command else {
            panic!("expected supervise: {cli:?}");
        };
        let c = SuperviseConfig::from(args);
        assert_eq!(c.command, ["nginx", "-g", "daemon off;"]);
        assert_eq!(c.templates[0].dst, PathBuf::from("a.conf"));
        assert_eq!(c.somaxconn, SomaxconnMode::Keep);
        assert_eq!(c.stop_signal, libc::SIGQUIT);
        assert_eq!(c.backlog, 511);
    }
}
