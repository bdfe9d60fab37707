//! stampede, the coordinator. Agents dial in through an accept loop that bounds connections
//! which never authenticate ([`admission`]) and authenticate ([`service`], [`auth`]); a run
//! ([`run`]) waits for them, has them arm, starts them at one instant in coordinator time,
//! collects their results and merges them exactly (`stampede_proto::tally`) into a report
//! ([`report`]), judged against `--fail-if` thresholds ([`threshold`]). [`scenario`] holds every
//! setting of a run, as flags and scenario keys alike, and the rules between them; [`cli`] is
//! the command line and what each command does; [`sweep`] repeats a run over backlogs and
//! accept rates to size `listen()` backlog and somaxconn; [`target`] drives the target's
//! control service; [`demo`] runs target, agents and coordinator in one process on loopback;
//! [`health`] is `stampede health`, the probe of the gRPC health service both servers carry.
//! [`token_file`] makes the bearer token file (`stampede token new`).

pub mod admission;
pub mod auth;
pub(crate) mod chart;
pub mod cli;
pub mod demo;
pub mod health;
pub mod history;
pub mod metrics;
pub mod progress;
pub mod report;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod service;
pub mod sweep;
pub mod target;
pub mod threshold;
pub mod token_file;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admission::Limits;
use crate::auth::Token;
use crate::service::{CoordinatorService, Registry};

/// Largest gRPC message accepted from agents (interval histograms are a few KiB; this
/// leaves room for final results of very wide histograms without inviting abuse).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// A running coordinator endpoint.
#[derive(Debug)]
pub struct Coordinator {
    /// Where agents dial.
    pub addr: SocketAddr,
    /// The attached agents and their events.
    pub registry: Arc<Registry>,
    /// The gRPC server task; ends when the shutdown token fires (or [`Coordinator::close`]).
    pub task: JoinHandle<()>,
    /// Stops this endpoint alone (a child of the shutdown token).
    stop: CancellationToken,
}

impl Coordinator {
    /// Ends every agent's stream cleanly, then stops the endpoint, waiting up to `grace` for
    /// the streams' last frames to go out: a one-shot `stampede run` that simply exited left
    /// each agent reading a broken connection ("error reading a body from connection")
    /// where it should read that the coordinator is done.
    pub async fn close(self, grace: Duration) {
        self.registry.close();
        // Every stream ends as its reader sees the registry close; the server's graceful
        // shutdown then waits for them to finish (each agent closes its side on reading
        // the end).
        self.stop.cancel();
        let _ = tokio::time::timeout(grace, self.task).await;
    }
}

/// How the coordinator's endpoint is set up.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address agents dial.
    pub addr: SocketAddr,
    /// Token agents must present (`None`: anyone; loopback demos and tests only).
    pub token: Option<Token>,
    /// Heartbeat interval asked of agents.
    pub heartbeat: Duration,
    /// TLS (and mutual TLS when it names a client CA).
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// How many agents the endpoint expects (0: not said): the agents' liveness bound in
    /// their Welcome grows with the fleet (`Registry::liveness`).
    pub expected_agents: usize,
}

impl ServeConfig {
    /// Plain-text endpoint with a token and a 1 s heartbeat.
    pub fn new(addr: SocketAddr, token: Option<Token>) -> ServeConfig {
        ServeConfig {
            addr,
            token,
            heartbeat: Duration::from_secs(1),
            tls: None,
            expected_agents: 0,
        }
    }
}

/// Binds and serves `stampede.v1.Coordinator` until `shutdown`, with the default
/// [`Limits`].
pub async fn serve(
    config: ServeConfig,
    shutdown: CancellationToken,
) -> std::io::Result<Coordinator> {
    serve_with_limits(config, Limits::default(), shutdown).await
}

/// [`serve`] with these limits: connections that do not authenticate within
/// `limits.handshake_timeout` are closed, at most `limits.max_pending` are held, and each
/// agent's queued messages are bounded.
pub async fn serve_with_limits(
    config: ServeConfig,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<Coordinator> {
    let ServeConfig {
        addr,
        token,
        heartbeat,
        tls,
        expected_agents,
    } = config;
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| std::io::Error::other(format!("TLS configuration: {e}")))?;
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let addr = listener.local_addr()?;
    let registry = Arc::new(Registry::with_limits(token, heartbeat, limits));
    registry.expect_agents(expected_agents);
    let service =
        CoordinatorService::new(registry.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let gate = registry.gate().clone();
    // Beside the agents' service, without the token: see service/health.rs.
    let (_health_reporter, health) = service::health::server().await;
    let stop = shutdown.child_token();
    let shutdown = stop.clone();
    let task = tokio::spawn(async move {
        let accepted = admission::accept_loop(listener, gate, shutdown.clone());
        let incoming = tokio_stream::wrappers::ReceiverStream::new(accepted);
        if let Err(e) = builder
            .http2_keepalive_interval(Some(Duration::from_secs(5)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(service)
            .add_service(health)
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
            .await
        {
            tracing::error!(cause = %e, "coordinator service failed");
        }
    });
    Ok(Coordinator {
        addr,
        registry,
        task,
        stop,
    })
}
