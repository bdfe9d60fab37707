//! `stampede health URL`: one call of the standard gRPC health service
//! (`grpc.health.v1.Health/Check`) that the coordinator and the target's control port serve
//! (`service/health.rs`, `stampede-target`'s `control.rs`), for a container HEALTHCHECK and
//! anything else that can run a command. Kubernetes probes the same service natively
//! (`grpc:` probes), without this command.
//!
//! Exit 0 when the service answers SERVING, 1 otherwise (another status, unreachable, slow,
//! refused): [`Probe::check`] returns what was seen, and `cli` maps it. The servers answer
//! health without the bearer token; `--token-file` sends one anyway, for a proxy in front
//! that demands it. The whole check (connect, TLS, call) is bounded by `--timeout`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use stampede_proto::token::Token;
use tonic::transport::{ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::scenario::ConfigError;

/// `stampede health`'s flags.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// http://HOST:PORT or https://HOST:PORT of a coordinator or a target's control port.
    #[arg(env = "STAMPEDE_HEALTH_URL", value_name = "URL")]
    pub url: String,
    /// The service asked about: "" (the server), stampede.v1.Coordinator or
    /// stampede.v1.TargetControl.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Bearer token to send (the servers answer health without one; for a proxy that asks).
    #[arg(long, value_name = "F")]
    pub token_file: Option<PathBuf>,
    /// CA (PEM) that signed the server's certificate, for an https:// URL.
    #[arg(long, value_name = "F")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a server that requires mutual TLS (with --tls-key).
    #[arg(long, value_name = "F", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long, value_name = "F", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Bound on the whole check: connect, TLS and the call.
    #[arg(long, value_name = "DUR", default_value = "3s",
          value_parser = stampede_proto::duration::parse_duration)]
    pub timeout: Duration,
}

/// Checks as the flags say: bad flags are a [`ConfigError`] (exit 64).
pub async fn execute(args: &HealthArgs) -> Result<Health, ConfigError> {
    let identity = args.tls_cert.as_ref().zip(args.tls_key.as_ref());
    let mut probe = Probe::new(&args.url, &args.service, args.timeout)?
        .with_tls(args.tls_ca.as_ref(), identity)?;
    if let Some(path) = &args.token_file {
        probe.token = Some(Token::from_file(path)?);
    }
    Ok(probe.check().await)
}

/// One health check to make.
#[derive(Debug, Clone)]
pub struct Probe {
    /// `http://HOST:PORT` or `https://HOST:PORT`.
    pub url: String,
    /// The service asked about; "" is the whole server.
    pub service: String,
    /// Sent as `authorization: Bearer ...` when given.
    pub token: Option<Token>,
    /// TLS for an `https://` URL.
    pub tls: Option<ClientTlsConfig>,
    /// Bound on the whole check.
    pub timeout: Duration,
}

/// What a check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The URL asked.
    pub url: String,
    /// The service asked about ("" = the server).
    pub service: String,
    /// The status's name (`SERVING`, `NOT_SERVING`, `SERVICE_UNKNOWN`, `UNKNOWN`), or why
    /// there was none (`unreachable: ...`).
    pub status: String,
    /// True only for SERVING.
    pub serving: bool,
}

impl Health {
    /// One line for the terminal.
    pub fn summary(&self) -> String {
        let service = if self.service.is_empty() {
            "server"
        } else {
            self.service.as_str()
        };
        format!("{} {service}: {}\n", self.url, self.status)
    }
}

impl Probe {
    /// A probe of `url`, checked for form: an `http://` or `https://` URL with a host.
    pub fn new(url: &str, service: &str, timeout: Duration) -> Result<Probe, ConfigError> {
        let bad_url = || ConfigError::Invalid {
            name: "URL",
            value: url.to_owned(),
            expected: "http://HOST:PORT or https://HOST:PORT",
        };
        let uri: http::Uri = url.parse().map_err(|_| bad_url())?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(bad_url());
        }
        if timeout.is_zero() {
            return Err(ConfigError::Invalid {
                name: "--timeout",
                value: "0".into(),
                expected: "a duration more than 0",
            });
        }
        Ok(Probe {
            url: url.to_owned(),
            service: service.to_owned(),
            token: None,
            tls: None,
            timeout,
        })
    }

    /// The TLS files for an `https://` URL: the CA and, for mutual TLS, a client pair.
    pub fn with_tls(
        mut self,
        ca: Option<&PathBuf>,
        identity: Option<(&PathBuf, &PathBuf)>,
    ) -> Result<Probe, ConfigError> {
        let https = self.url.starts_with("https://");
        match ca {
            Some(ca) if https => {
                let uri: http::Uri = self.url.parse().expect("checked in Probe::new");
                let host = uri.host().expect("checked in Probe::new");
                let domain = host.trim_start_matches('[').trim_end_matches(']');
                let config = stampede_proto::tls::client_config(
                    ca,
                    domain,
                    identity.map(|(c, k)| (c.as_path(), k.as_path())),
                )
                .map_err(|e| ConfigError::Tls(e.to_string()))?;
                self.tls = Some(config);
                Ok(self)
            }
            Some(_) => Err(ConfigError::Tls("--tls-ca needs an https:// URL".into())),
            None if identity.is_some() => Err(ConfigError::Tls(
                "--tls-cert and --tls-key need --tls-ca and an https:// URL".into(),
            )),
            None => Ok(self),
        }
    }

    /// Asks once. Never fails: an unreachable, slow or refusing server is a [`Health`] that
    /// is not serving, with the reason as its status.
    pub async fn check(&self) -> Health {
        let status = match tokio::time::timeout(self.timeout, self.call()).await {
            Ok(Ok(status)) => status.as_str_name().to_owned(),
            Ok(Err(reason)) => reason,
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        Health {
            url: self.url.clone(),
            service: self.service.clone(),
            serving: status == ServingStatus::Serving.as_str_name(),
            status,
        }
    }

    async fn call(&self) -> Result<ServingStatus, String> {
        let mut endpoint = Endpoint::from_shared(self.url.clone()).map_err(|e| e.to_string())?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| e.to_string())?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("unreachable: {}", chain(&e)))?;
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: self.service.clone(),
        });
        if let Some(token) = &self.token {
            // A token file holds printable ASCII only (`Token::from_file`), so this parses.
            if let Ok(mut value) = token
                .header_value()
                .parse::<tonic::metadata::AsciiMetadataValue>()
            {
                value.set_sensitive(true);
                request.metadata_mut().insert("authorization", value);
            }
        }
        let response = HealthClient::new(channel)
            .check(request)
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
        Ok(response.into_inner().status())
    }
}

/// An error and its causes, one line (tonic's own message is only "transport error").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
