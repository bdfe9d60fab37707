//! A coordinator a test scripts message by message (tonic): it answers Attach with a Welcome
//! (heartbeat every [`HEARTBEAT_MS`], liveness as configured) and clock probes with its clock,
//! and hands each attached stream to the test. Shared by the daemon tests `liveness.rs`,
//! `prestart.rs` and `decoders.rs` (included with `#[path]`: the other tests do not use it).

use std::time::Duration;

use stampede_proto::clock::unix_nanos_now;
use stampede_proto::pb::{self, agent_message::Msg as Out, coordinator_message::Msg as In};

/// A coordinator the test scripts: it answers Attach with a Welcome (stating `liveness_ms`)
/// and clock probes with its clock, and hands each attached stream to the test.
pub(crate) struct Fake {
    pub(crate) attached: tokio::sync::mpsc::UnboundedSender<Attached>,
    pub(crate) liveness_ms: u64,
}

/// One agent's stream, as the fake coordinator holds it.
pub(crate) struct Attached {
    pub(crate) inbound: tonic::Streaming<pb::AgentMessage>,
    pub(crate) out: tokio::sync::mpsc::Sender<Result<pb::CoordinatorMessage, tonic::Status>>,
}

/// The heartbeat interval the Welcome states, ms.
pub(crate) const HEARTBEAT_MS: u64 = 100;

#[tonic::async_trait]
impl pb::coordinator_server::Coordinator for Fake {
    type AttachStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::CoordinatorMessage, tonic::Status>>;

    async fn attach(
        &self,
        req: tonic::Request<tonic::Streaming<pb::AgentMessage>>,
    ) -> Result<tonic::Response<Self::AttachStream>, tonic::Status> {
        let mut inbound = req.into_inner();
        match inbound.message().await? {
            Some(pb::AgentMessage {
                msg: Some(Out::Hello(_)),
            }) => {}
            other => return Err(tonic::Status::invalid_argument(format!("{other:?}"))),
        }
        let (out, rx) = tokio::sync::mpsc::channel(64);
        let welcome = In::Welcome(pb::Welcome {
            protocol_version: stampede_proto::PROTOCOL_VERSION,
            heartbeat_interval_ms: HEARTBEAT_MS,
            liveness_ms: self.liveness_ms,
        });
        let _ = out.send(Ok(msg(welcome))).await;
        let _ = self.attached.send(Attached {
            inbound,
            out: out.clone(),
        });
        Ok(tonic::Response::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
    }

    async fn clock(
        &self,
        req: tonic::Request<pb::ClockProbe>,
    ) -> Result<tonic::Response<pb::ClockReply>, tonic::Status> {
        let now = unix_nanos_now();
        Ok(tonic::Response::new(pb::ClockReply {
            t0_unix_nanos: req.into_inner().t0_unix_nanos,
            t1_unix_nanos: now,
            t2_unix_nanos: now,
        }))
    }
}

/// A message to the agent.
pub(crate) fn msg(m: In) -> pb::CoordinatorMessage {
    pb::CoordinatorMessage { msg: Some(m) }
}

/// Reads the agent's messages until `pick` takes one (10 s at most).
pub(crate) async fn until<T>(a: &mut Attached, mut pick: impl FnMut(Out) -> Option<T>) -> T {
    let read = async {
        loop {
            match a.inbound.message().await {
                Ok(Some(pb::AgentMessage { msg: Some(m) })) => {
                    if let Some(t) = pick(m) {
                        return t;
                    }
                }
                Ok(Some(_)) => {}
                other => panic!("the agent's stream ended: {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the agent said what was expected within 10 s")
}
