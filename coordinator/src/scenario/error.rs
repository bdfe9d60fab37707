//! [`ConfigError`]: why a scenario or a flag value cannot run; every message names the value
//! or the file, and every one exits 64.

use std::net::SocketAddr;

use stampede_proto::backlog::BacklogError;
use stampede_proto::input::ReadError;
use stampede_proto::plan::LoadError;
use stampede_proto::token::TokenError;

/// A bad scenario or flag value: exit 64. Each message names the value or the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The scenario file could not be read: missing, not a regular file, too large.
    #[error("reading scenario {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: ReadError,
    },
    /// The scenario file is not valid TOML for a scenario.
    #[error("{location}: {message}")]
    File {
        /// `FILE:LINE` (or the file alone).
        location: String,
        /// The parser's complaint, naming the key.
        message: String,
    },
    /// No target given.
    #[error("no target: give --target HOST:PORT (or target = \"HOST:PORT\" in the scenario)")]
    NoTarget,
    /// Zero agents.
    #[error("invalid agents \"0\": need at least one agent")]
    NoAgents,
    /// The load breaks a rule every plan follows.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A target-control URL that is not `http(s)://HOST:PORT`.
    #[error("invalid target_control \"{url}\": expected http://HOST:PORT ({reason})")]
    ControlUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A backlog with nobody to configure it.
    #[error("--backlog needs --target-control to configure the target")]
    BacklogWithoutControl,
    /// A sweep without a target to configure.
    #[error("a sweep sets the target's backlog at each step: give --target-control URL")]
    SweepWithoutControl,
    /// A sweep without backlogs.
    #[error(
        "a sweep needs backlogs: give --backlogs LIST (or backlogs = [...] under [sweep] in the scenario)"
    )]
    NoBacklogs,
    /// A negative backlog (`--backlog`, `--backlogs`, `backlog =`, `backlogs = [...]`).
    #[error(transparent)]
    Backlog(#[from] BacklogError),
    /// `--out` cannot be created or written: found before the run, not after it.
    #[error("--out is not writable: {0}")]
    Out(std::io::Error),
    /// Listening off loopback without a token.
    #[error(
        "listening on {0} without --token-file would let anyone on the network drive the agents; give a token file (or listen on loopback)"
    )]
    TokenRequired(SocketAddr),
    /// The token file is unusable.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A value outside what a setting takes.
    #[error("invalid {name} \"{value}\": expected {expected}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// The value given.
        value: String,
        /// What it takes.
        expected: &'static str,
    },
    /// More agents than this coordinator's file descriptors can hold.
    #[error(transparent)]
    Fleet(#[from] crate::admission::FleetTooLarge),
    /// TLS files given in an unusable combination, or unreadable.
    #[error("{0}")]
    Tls(String),
    /// A file named on the command line cannot be written (`stampede token new FILE` in a
    /// missing directory): the whole message, naming the file and why.
    #[error("{0}")]
    Unwritable(String),
    /// The target cannot do what the flags ask (found once it answered, e.g. `--accept-rates`
    /// against a real server run by `stampede-target supervise`).
    #[error(transparent)]
    TargetUnfit(crate::target::TargetError),
}
