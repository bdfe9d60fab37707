//! `stampede.v1.TargetControl`: the gRPC face of a [`Source`] — the target's own
//! [`TargetHandle`], or an [`crate::observe::ObserveHandle`] watching another process's
//! listener (which cannot be configured). Requests are checked here (their `TryFrom`s) and
//! refused with `InvalidArgument` naming the field.
//!
//! Every call can change what a run measures (Configure, Pause, ResetCounters), so with a
//! token ([`ControlAuth`]) each one must carry `authorization: Bearer <token>`, checked in
//! constant time by an interceptor before any handler runs ([`Authenticate`]); without one
//! it must present it. The command line refuses to serve control off loopback without a
//! token; TLS is optional, as on the coordinator.

use std::pin::Pin;
use std::time::Duration;

use stampede_proto::pb::{self, target_control_server::TargetControlServer};
use stampede_proto::target::TargetStats;
use stampede_proto::token::Token;
use tokio_stream::Stream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::ServerTlsConfig;
use tonic::{Request, Response, Status};

use crate::config::{AcceptPolicy, ConfigError, OnAccept};
use crate::{Change, Error, TargetHandle};

/// What the control service drives: a listener's stats, counters and queue samples, and (for
/// the target's own listener) its backlog and accept policy.
pub trait Source: Clone + Send + Sync + 'static {
    /// Re-listen (or restart a supervised server) and/or change the accept policy or
    /// action. May block for a while (a restart): the service calls it off the runtime.
    fn configure(&self, change: Change) -> Result<TargetStats, Error>;
    /// Stop or restart accepting.
    fn set_paused(&self, paused: bool) -> Result<TargetStats, Error>;
    /// Start a new measurement (counter baseline, queue max, accepted count).
    fn reset_counters(&self) -> Result<TargetStats, Error>;
    /// A snapshot, with the bounded timeline when asked.
    fn stats(&self, with_timeline: bool) -> Result<TargetStats, Error>;
    /// Live queue samples.
    fn watch_queue(&self) -> tokio::sync::broadcast::Receiver<pb::QueueSample>;
}

impl Source for TargetHandle {
    fn configure(&self, change: Change) -> Result<TargetStats, Error> {
        TargetHandle::configure(self, change)
    }
    fn set_paused(&self, paused: bool) -> Result<TargetStats, Error> {
        if paused { self.pause() } else { self.resume() }
    }
    fn reset_counters(&self) -> Result<TargetStats, Error> {
        TargetHandle::reset_counters(self)
    }
    fn stats(&self, with_timeline: bool) -> Result<TargetStats, Error> {
        self.snapshot(with_timeline).map_err(|source| Error::Io {
            op: "reading kernel counters",
            source,
        })
    }
    fn watch_queue(&self) -> tokio::sync::broadcast::Receiver<pb::QueueSample> {
        TargetHandle::watch_queue(self)
    }
}

/// Binds the control port (non-blocking, for tokio) in the calling thread's namespace.
pub(crate) fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    let std = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| Error::Bind { addr, source })?;
    tokio::net::TcpListener::from_std(std).map_err(|source| Error::Io {
        op: "control listener",
        source,
    })
}

/// Who may use the control service and over what: the bearer token every call must carry
/// (`None`: anyone who reaches the port, for loopback only) and the TLS the service presents.
#[derive(Debug, Clone, Default)]
pub struct ControlAuth {
    /// The token callers must present.
    pub token: Option<Token>,
    /// The service's certificate and key (plain text without).
    pub tls: Option<ServerTlsConfig>,
}

impl ControlAuth {
    /// Reads the token file and the TLS pair (both optional; TLS needs both files).
    pub fn from_files(
        token_file: Option<&std::path::Path>,
        tls: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<ControlAuth, Error> {
        let token = token_file.map(Token::from_file).transpose()?;
        let tls = tls
            .map(|(cert, key)| stampede_proto::tls::server_config(cert, key, None))
            .transpose()?;
        Ok(ControlAuth { token, tls })
    }

    /// Refuses to serve control on `addr` off loopback without a token: anyone who reaches
    /// it could reconfigure the target or reset its counters mid-run and falsify results.
    pub fn check_addr(&self, addr: Option<std::net::SocketAddr>) -> Result<(), ConfigError> {
        match addr {
            Some(a) if self.token.is_none() && !a.ip().is_loopback() => Err(ConfigError::new(
                "control address",
                a,
                "serving control off loopback without --token-file would let anyone who \
                 reaches it reconfigure the target or reset its counters; give a token file \
                 (or a loopback address)",
            )),
            _ => Ok(()),
        }
    }
}

/// Checks the bearer token of every call before it reaches the service.
#[derive(Debug, Clone)]
pub struct Authenticate(Option<Token>);

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        match &self.0 {
            Some(token) => token.check(req.metadata()).map(|()| req).map_err(|s| {
                Status::unauthenticated(format!(
                    "{}: this target's control service needs the bearer token of its \
                     --token-file (stampede run/sweep: --token-file with the same file)",
                    s.message()
                ))
            }),
            None => Ok(req),
        }
    }
}

/// Serves `source` on `listener` until `stop`, authenticating every call with `auth`.
pub(crate) fn spawn<S: Source>(
    listener: tokio::net::TcpListener,
    source: S,
    auth: ControlAuth,
    stop: tokio_util::sync::CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = auth.tls {
        builder = builder.tls_config(tls).map_err(|e| Error::Io {
            op: "control TLS configuration",
            source: std::io::Error::other(e),
        })?;
    }
    Ok(tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        // The standard health service for probes, deliberately without the token: it
        // answers only "serving" and changes nothing (Kubernetes gRPC probes send no
        // metadata). Every TargetControl call still needs the token.
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_service_status(
                pb::target_control_server::SERVICE_NAME,
                tonic_health::ServingStatus::Serving,
            )
            .await;
        if let Err(e) = builder
            .add_service(service(source, auth.token))
            .add_service(health)
            .serve_with_incoming_shutdown(incoming, stop.cancelled())
            .await
        {
            tracing::error!(cause = %e, "control service failed");
        }
    }))
}

/// Waits for the server [`spawn`] started (after its `stop`): a client may keep its channel
/// open forever, so it gets a short grace and is then aborted.
pub(crate) async fn stop(mut task: tokio::task::JoinHandle<()>) {
    if tokio::time::timeout(Duration::from_millis(500), &mut task)
        .await
        .is_err()
    {
        task.abort();
    }
}

/// The service, ready for `tonic::transport::Server::add_service`; with a token, every call
/// without it is refused with `Unauthenticated`.
pub fn service<S: Source>(
    source: S,
    token: Option<Token>,
) -> InterceptedService<TargetControlServer<Control<S>>, Authenticate> {
    TargetControlServer::with_interceptor(Control { handle: source }, Authenticate(token))
}

/// Implements `TargetControl` over a [`Source`].
#[derive(Debug, Clone)]
pub struct Control<S> {
    handle: S,
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        match e {
            Error::Config(e) => Status::invalid_argument(e.to_string()),
            Error::Token(_) | Error::Tls(_) => Status::internal(e.to_string()),
            Error::Bind { .. } | Error::Io { .. } | Error::Unsupported(_) | Error::Server(_) => {
                Status::failed_precondition(e.to_string())
            }
        }
    }
}

impl TryFrom<pb::AcceptPolicy> for AcceptPolicy {
    type Error = ConfigError;

    fn try_from(p: pb::AcceptPolicy) -> Result<Self, ConfigError> {
        let policy = AcceptPolicy {
            delay: Duration::from_millis(p.delay_ms),
            rate_per_sec: p.rate_per_sec,
            batch: p.batch,
            paused: p.paused,
        };
        policy.validate().map_err(|e| ConfigError {
            field: "accept_policy.rate_per_sec",
            ..e
        })?;
        Ok(policy)
    }
}

impl TryFrom<pb::OnAccept> for OnAccept {
    type Error = ConfigError;

    fn try_from(a: pb::OnAccept) -> Result<Self, ConfigError> {
        use pb::OnAcceptKind as K;
        match K::try_from(a.kind) {
            Ok(K::Greet) => Ok(OnAccept::Greet),
            Ok(K::Echo) => Ok(OnAccept::Echo),
            Ok(K::Close) => Ok(OnAccept::Close),
            Ok(K::Reset) => Ok(OnAccept::Reset),
            Ok(K::Hold) => Ok(OnAccept::Hold(Duration::from_millis(a.hold_ms))),
            Ok(K::Unspecified) | Err(_) => Err(ConfigError::new(
                "on_accept.kind",
                a.kind,
                "expected GREET, ECHO, CLOSE, RESET or HOLD",
            )),
        }
    }
}

impl TryFrom<pb::ConfigureRequest> for Change {
    type Error = ConfigError;

    fn try_from(r: pb::ConfigureRequest) -> Result<Self, ConfigError> {
        Ok(Change {
            backlog: r.backlog,
            accept: r.accept_policy.map(TryInto::try_into).transpose()?,
            on_accept: r.on_accept.map(TryInto::try_into).transpose()?,
        })
    }
}

type Reply = Result<Response<pb::TargetStats>, Status>;

fn reply(r: Result<TargetStats, Error>) -> Reply {
    Ok(Response::new((&r?).into()))
}

#[tonic::async_trait]
impl<S: Source> pb::target_control_server::TargetControl for Control<S> {
    async fn configure(&self, req: Request<pb::ConfigureRequest>) -> Reply {
        let change = Change::try_from(req.into_inner()).map_err(Error::from)?;
        let handle = self.handle.clone();
        // A supervised server's restart blocks (stop, start, wait for its listener).
        let done = tokio::task::spawn_blocking(move || handle.configure(change))
            .await
            .map_err(|e| Status::internal(format!("configure failed: {e}")))?;
        reply(done)
    }

    async fn pause(&self, _: Request<pb::PauseRequest>) -> Reply {
        reply(self.handle.set_paused(true))
    }

    async fn resume(&self, _: Request<pb::ResumeRequest>) -> Reply {
        reply(self.handle.set_paused(false))
    }

    async fn reset_counters(&self, _: Request<pb::ResetCountersRequest>) -> Reply {
        reply(self.handle.reset_counters())
    }

    async fn stats(&self, req: Request<pb::StatsRequest>) -> Reply {
        reply(self.handle.stats(req.into_inner().with_timeline))
    }

    type WatchQueueStream = Pin<Box<dyn Stream<Item = Result<pb::QueueSample, Status>> + Send>>;

    async fn watch_queue(
        &self,
        req: Request<pb::WatchQueueRequest>,
    ) -> Result<Response<Self::WatchQueueStream>, Status> {
        let min_interval = Duration::from_millis(u64::from(req.into_inner().min_interval_ms));
        let mut rx = self.handle.watch_queue();
        let (tx, out) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let mut last_sent: Option<tokio::time::Instant> = None;
            loop {
                let sample = match rx.recv().await {
                    Ok(s) => s,
                    // A slow client misses samples rather than slowing the target.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let now = tokio::time::Instant::now();
                if last_sent.is_some_and(|t| now - t < min_interval) {
                    continue;
                }
                last_sent = Some(now);
                // A failed send means the client left: stop.
                if tx.send(Ok(sample)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }
}
