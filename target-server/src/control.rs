//! `stampede.v1.TargetControl`: the gRPC face of a [`TargetHandle`]. Requests are checked
//! here (their `TryFrom`s) and refused with `InvalidArgument` naming the field.

use std::pin::Pin;
use std::time::Duration;

use stampede_proto::pb::{self, target_control_server::TargetControlServer};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::config::{AcceptPolicy, ConfigError, OnAccept};
use crate::{Change, Error, TargetHandle};

/// The service, ready for `tonic::transport::Server::add_service`.
pub fn service(handle: TargetHandle) -> TargetControlServer<Control> {
    TargetControlServer::new(Control { handle })
}

/// Implements `TargetControl` over a handle.
#[derive(Debug, Clone)]
pub struct Control {
    handle: TargetHandle,
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        match e {
            Error::Config(e) => Status::invalid_argument(e.to_string()),
            Error::Bind { .. } | Error::Io { .. } => Status::failed_precondition(e.to_string()),
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

fn reply(r: Result<crate::stats::TargetStats, Error>) -> Reply {
    Ok(Response::new((&r?).into()))
}

#[tonic::async_trait]
impl pb::target_control_server::TargetControl for Control {
    async fn configure(&self, req: Request<pb::ConfigureRequest>) -> Reply {
        let change = Change::try_from(req.into_inner()).map_err(Error::from)?;
        reply(self.handle.configure(change))
    }

    async fn pause(&self, _: Request<pb::PauseRequest>) -> Reply {
        reply(self.handle.pause())
    }

    async fn resume(&self, _: Request<pb::ResumeRequest>) -> Reply {
        reply(self.handle.resume())
    }

    async fn reset_counters(&self, _: Request<pb::ResetCountersRequest>) -> Reply {
        reply(self.handle.reset_counters())
    }

    async fn stats(&self, _: Request<pb::StatsRequest>) -> Reply {
        reply(self.handle.stats())
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
