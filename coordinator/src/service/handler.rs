//! The gRPC side of the `Coordinator` service: the `Attach` and `Clock` handlers. `Attach`
//! authenticates the stream, checks the Hello, registers the agent in the [`Registry`], answers
//! Welcome, Pings it every heartbeat and reads its messages into the registry until the stream
//! ends; the bookkeeping itself (queues, routing, the run in progress) is the registry's.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use stampede_proto::PROTOCOL_VERSION;
use stampede_proto::clock::unix_nanos_now;
use stampede_proto::pb::{self, coordinator_message};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::*;

/// The gRPC service over a shared registry.
#[derive(Debug, Clone)]
pub struct CoordinatorService {
    registry: std::sync::Arc<Registry>,
}

impl CoordinatorService {
    /// The service, ready for `Server::add_service`.
    pub fn new(
        registry: std::sync::Arc<Registry>,
    ) -> pb::coordinator_server::CoordinatorServer<CoordinatorService> {
        pb::coordinator_server::CoordinatorServer::new(CoordinatorService { registry })
    }
}

/// Checks a Hello; the error is the status the agent gets.
fn check_hello(hello: &pb::Hello) -> Result<(), Status> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(Status::failed_precondition(format!(
            "protocol version mismatch: agent {:?} speaks stampede.v1 protocol {}, this \
             coordinator speaks {}; run the same stampede release on both",
            cut(&hello.agent_id),
            hello.protocol_version,
            PROTOCOL_VERSION
        )));
    }
    if hello.agent_id.is_empty() || hello.agent_id.len() > 128 {
        return Err(Status::invalid_argument(
            "agent_id must be 1 to 128 characters",
        ));
    }
    Ok(())
}

type OutStream = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, Status>> + Send>>;

type OutTx = mpsc::Sender<Result<pb::CoordinatorMessage, Status>>;

impl CoordinatorService {
    /// The Attach handshake: token, Hello, registration, Welcome. Any error is a refusal.
    async fn admit(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
        peer: Option<std::net::SocketAddr>,
        id: &mut Option<String>,
    ) -> Result<Response<OutStream>, Status> {
        let registry = &self.registry;
        registry.authenticate(&req)?;
        if registry.closing().is_cancelled() {
            return Err(Status::unavailable(
                "the coordinator is done; attach to the next one",
            ));
        }
        // The token is proof enough: from here an idle flood cannot evict this connection
        // while its Hello is on the way.
        registry.gate.admit(peer);
        let mut inbound = req.into_inner();
        let timeout = registry.gate.limits().handshake_timeout;
        let first = tokio::time::timeout(timeout, inbound.next())
            .await
            .map_err(|_| Status::deadline_exceeded(format!("no Hello within {timeout:?}")))?;
        let hello = match first {
            Some(Ok(pb::AgentMessage {
                msg: Some(agent_message::Msg::Hello(h)),
            })) => h,
            Some(Err(e)) => return Err(e),
            _ => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        *id = Some(cut(&hello.agent_id).into_owned());
        check_hello(&hello)?;
        let agent = hello.agent_id.clone();
        let (tx, rx) = mpsc::channel(64);
        let conn = registry.next_conn.fetch_add(1, Ordering::Relaxed);
        // A fresh channel has room: Welcome is the first message the agent reads.
        tx.try_send(Ok(pb::CoordinatorMessage {
            msg: Some(coordinator_message::Msg::Welcome(pb::Welcome {
                protocol_version: PROTOCOL_VERSION,
                heartbeat_interval_ms: registry.heartbeat.as_millis() as u64,
                liveness_ms: registry.welcome_liveness().as_millis() as u64,
            })),
        }))
        .map_err(|_| Status::internal("stream closed"))?;
        let (host, fd_limit) = (cut(&hello.host).into_owned(), hello.fd_limit);
        registry.register(
            &agent,
            Attached {
                info: AgentInfo { hello, peer },
                conn,
                tx: tx.clone(),
            },
        )?;
        tracing::info!(agent = %agent, %host, ?peer, fd_limit, "agent attached");
        tokio::spawn(ping(tx.downgrade(), registry.heartbeat));
        tokio::spawn(read(registry.clone(), agent, conn, inbound, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Pings the agent every heartbeat until its stream is gone (`tx` only upgrades while the
/// registry or the reader still holds the stream's sender). A full queue skips a Ping: the
/// agent is then not reading, and its liveness bound is the honest outcome.
async fn ping(tx: mpsc::WeakSender<Result<pb::CoordinatorMessage, Status>>, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(tx) = tx.upgrade() else { return };
        let ping = pb::Ping {
            sent_unix_nanos: unix_nanos_now(),
            // A periodic Ping: no answer wanted.
            run_id: String::new(),
        };
        let msg = Ok(pb::CoordinatorMessage {
            msg: Some(coordinator_message::Msg::Ping(ping)),
        });
        if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(msg) {
            return;
        }
    }
}

/// Reads an attached agent's messages until its stream ends, forwarding those of the run in
/// progress; an agent over its queue bound is told why and disconnected.
async fn read(
    registry: Arc<Registry>,
    agent: String,
    conn: u64,
    mut inbound: Streaming<pb::AgentMessage>,
    tx: OutTx,
) {
    let limit = registry.gate.limits().agent_queue_bytes;
    let queue = Arc::new(Semaphore::new(limit / QUEUE_UNIT));
    let mut dropped = 0u64;
    let reason = loop {
        let next = tokio::select! {
            biased;
            // First: the runs are over when it closes, and an agent that keeps sending
            // must not hold its stream past the close's grace. Its stream ends with an OK
            // status once no sender is left (ours, the registry's: both go below).
            _ = registry.closing().cancelled() => break "the coordinator is done".to_owned(),
            m = inbound.next() => m,
        };
        match next {
            Some(Ok(pb::AgentMessage { msg: Some(msg) })) => {
                if let Err(e) = registry.forward(&agent, msg, &queue, &mut dropped) {
                    registry.overloaded.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(agent = %agent, cause = %e, "agent disconnected");
                    let _ = tx.try_send(Err(Status::resource_exhausted(e.to_string())));
                    break e.to_string();
                }
            }
            Some(Ok(_)) => {}
            // An agent that ends cleanly (SIGTERM) sends its cut-short result and closes its
            // stream; a broken one (killed, crashed, its host gone) shows as a transport error.
            Some(Err(e)) => {
                break format!(
                    "its stream broke (agent killed, crashed or cut off): {}",
                    e.message()
                );
            }
            None => break "it closed its stream".to_owned(),
        }
    };
    drop(tx);
    if registry.unregister(&agent, conn) {
        tracing::info!(agent = %agent, %reason, dropped, "agent detached");
        registry.gone(agent, reason);
    }
}

#[tonic::async_trait]
impl pb::coordinator_server::Coordinator for CoordinatorService {
    type AttachStream = OutStream;

    async fn attach(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<OutStream>, Status> {
        let peer = req.remote_addr();
        let mut id = None;
        let answer = self.admit(req, peer, &mut id).await;
        if let Err(refusal) = &answer {
            tracing::warn!(
                agent = id.as_deref().unwrap_or("-"),
                ?peer,
                code = ?refusal.code(),
                reason = %refusal.message(),
                "agent refused"
            );
        }
        answer
    }

    async fn clock(
        &self,
        req: Request<pb::ClockProbe>,
    ) -> Result<Response<pb::ClockReply>, Status> {
        let t1 = unix_nanos_now();
        let peer = req.remote_addr();
        if let Err(refusal) = self.registry.authenticate(&req) {
            tracing::warn!(?peer, code = ?refusal.code(), reason = %refusal.message(), "clock probe refused");
            return Err(refusal);
        }
        self.registry.gate.admit(peer);
        Ok(Response::new(pb::ClockReply {
            t0_unix_nanos: req.into_inner().t0_unix_nanos,
            t1_unix_nanos: t1,
            t2_unix_nanos: unix_nanos_now(),
        }))
    }
}
