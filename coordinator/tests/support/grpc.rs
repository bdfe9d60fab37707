//! A raw gRPC client of the `Coordinator` service, for tests that speak the protocol by hand
//! (a Hello of any id and version, any token, no agent library in between).

use std::net::SocketAddr;
use std::time::Duration;

use stampede_proto::pb::{self, agent_message, coordinator_client::CoordinatorClient};
use tonic::Request;

/// A Hello from agent `id` speaking protocol `version`.
pub fn hello(id: &str, version: u32) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(agent_message::Msg::Hello(pb::Hello {
            agent_id: id.into(),
            protocol_version: version,
            host: "test".into(),
            ..Default::default()
        })),
    }
}

/// `msg` with `authorization: Bearer token`.
pub fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

/// An attached stream: what the coordinator sends, and a sender for what the agent sends.
pub type Attached = (
    tonic::Streaming<pb::CoordinatorMessage>,
    tokio::sync::mpsc::Sender<pb::AgentMessage>,
);

/// Opens an Attach stream that sends `first`; the coordinator answers or refuses within 10 s.
pub async fn attach(
    addr: SocketAddr,
    token: &str,
    first: pb::AgentMessage,
) -> Result<Attached, tonic::Status> {
    let mut client = CoordinatorClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_decoding_message_size(16 * 1024 * 1024);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(first).await.unwrap();
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    tokio::time::timeout(
        Duration::from_secs(10),
        client.attach(with_token(stream, token)),
    )
    .await
    .expect("an answer, not a hang")
    .map(|r| (r.into_inner(), tx))
}
