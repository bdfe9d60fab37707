//! `stampede-agent --coordinator URL`: the daemon's flags and its main loop around
//! [`crate::session`]. Exit codes: 0 stopped by a signal, 1 refused by the coordinator or
//! unreachable, 64 bad flags or a coordinator URL that cannot be dialled.

use stampede_proto::token::Token;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use stampede_proto::usage::EX_USAGE;
use tokio_util::sync::CancellationToken;

use crate::cidr::Cidr;
use crate::plan::DEFAULT_MAX_CONNECTIONS;
use crate::session::{self, SessionConfig};

/// Daemon-mode flags (docs/design.md "Command line").
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The coordinator to attach to: http://HOST:PORT, or https://HOST:PORT with --tls-ca.
    #[arg(long, env = "STAMPEDE_COORDINATOR", value_name = "URL")]
    pub coordinator: Option<String>,
    /// File holding the bearer token the coordinator expects.
    #[arg(long, env = "STAMPEDE_TOKEN_FILE", value_name = "F")]
    pub token_file: Option<PathBuf>,
    /// Targets the coordinator may send this agent against, as CIDRs [default: loopback only].
    #[arg(
        long = "allow-target",
        env = "STAMPEDE_ALLOW_TARGET",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub allow_targets: Vec<Cidr>,
    /// Refuse plans with more connections than this.
    #[arg(long = "max-connections", env = "STAMPEDE_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS, value_name = "N")]
    pub max_connections: u64,
    /// Source IPs to spread connections over.
    #[arg(
        long = "source-ip",
        env = "STAMPEDE_SOURCE_IP",
        value_delimiter = ',',
        value_name = "IP"
    )]
    pub source_ips: Vec<IpAddr>,
    /// This agent's name, unique among the coordinator's agents [default: HOSTNAME-PID, so
    /// agents on one host never clash].
    #[arg(long, env = "STAMPEDE_ID", value_name = "NAME")]
    pub id: Option<String>,
    /// CA that signed the coordinator's certificate (enables TLS).
    #[arg(long, env = "STAMPEDE_TLS_CA", value_name = "F")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    #[arg(
        long,
        env = "STAMPEDE_TLS_CERT",
        value_name = "F",
        requires = "tls_key",
        requires = "tls_ca"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Client key for mutual TLS.
    #[arg(
        long,
        env = "STAMPEDE_TLS_KEY",
        value_name = "F",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

impl DaemonArgs {
    /// The session these flags ask for; the error is a usage message.
    pub fn config(&self) -> Result<SessionConfig, String> {
        let coordinator = self.coordinator.clone().ok_or_else(|| {
            "nothing to do: give --coordinator URL (daemon mode) or use `stampede-agent fire`"
                .to_owned()
        })?;
        let token = match &self.token_file {
            Some(path) => Some(Token::from_file(path).map_err(|e| e.to_string())?),
            None => None,
        };
        let tls = match &self.tls_ca {
            Some(ca) => {
                let host = url_host(&coordinator)
                    .ok_or_else(|| format!("invalid coordinator URL {coordinator:?}"))?;
                let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
                Some(
                    stampede_proto::tls::client_config(ca, &host, identity)
                        .map_err(|e| e.to_string())?,
                )
            }
            None => None,
        };
        let defaults = SessionConfig::loopback();
        Ok(SessionConfig {
            coordinator,
            token,
            id: self.id.clone().unwrap_or(defaults.id),
            allow: if self.allow_targets.is_empty() {
                defaults.allow
            } else {
                self.allow_targets.clone()
            },
            max_connections: self.max_connections,
            source_ips: self.source_ips.clone(),
            tls,
            max_retries: None,
        })
    }
}

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run(args: &DaemonArgs) -> ExitCode {
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stampede-agent: error: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if config.token.is_some() && config.tls.is_none() && !is_loopback_url(&config.coordinator) {
        tracing::warn!(
            coordinator = %config.coordinator,
            "the token travels in clear text and the coordinator is not verified: use \
             https:// with --tls-ca off a trusted network"
        );
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stampede-agent: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        if let Err(e) = stampede_proto::signal::cancel_on_signal(shutdown.clone()) {
            tracing::warn!(cause = %e, "cannot install SIGINT/SIGTERM handlers");
        }
        session::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The URL as given cannot be dialled: a usage error, found before any connection.
        Err(e @ session::SessionError::BadUrl { .. }) => {
            eprintln!("stampede-agent: error: {e}");
            ExitCode::from(EX_USAGE)
        }
        Err(e) => {
            eprintln!("stampede-agent: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The host of a URL, parsed (not split on `:`): `https://[::1]:7700` has host `::1`.
fn url_host(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    uri.scheme()?;
    let host = uri.host()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then(|| host.to_owned())
}

/// True for `http://127.x.x.x…`, `http://[::1]…` and `http://localhost…`.
fn is_loopback_url(url: &str) -> bool {
    url_host(url).is_some_and(|host| {
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

#[cfg(test)]
mod tests {
    use super::{is_loopback_url, url_host};

    #[test]
    fn loopback_urls_are_recognised() {
        for url in [
            "http://127.0.0.1:7700",
            "http://[::1]:7700/",
            "http://localhost:1",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "http://198.18.0.1:7700",
            "http://coordinator:7700",
            "http://[2001:db8::1]:1",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
        assert_eq!(url_host("https://[::1]:7700").as_deref(), Some("::1"));
        assert_eq!(
            url_host("https://coord.example:7700/").as_deref(),
            Some("coord.example")
        );
        assert_eq!(url_host("coordinator"), None);
    }
}
