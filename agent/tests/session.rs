//! The agent's session against a coordinator that accepts the Attach stream and then says
//! nothing: the agent must not hang there, and SIGTERM (its shutdown token) still ends it.

use std::pin::Pin;
use std::time::{Duration, Instant};

use stampede_agent::session::{self, SessionConfig};
use stampede_proto::pb;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;

/// Answers Attach with a stream that never yields (no Welcome, ever), and reports each
/// agent's first message (its Hello) on `first`: the event the test acts on.
struct Silent {
    first: tokio::sync::mpsc::UnboundedSender<pb::AgentMessage>,
}

#[tonic::async_trait]
impl pb::coordinator_server::Coordinator for Silent {
    type AttachStream =
        Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, tonic::Status>> + Send>>;

    async fn attach(
        &self,
        request: tonic::Request<tonic::Streaming<pb::AgentMessage>>,
    ) -> Result<tonic::Response<Self::AttachStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let first = self.first.clone();
        // Read on a task of its own (the agent may wait for the response before its Hello)
        // and keep reading, so the agent's side of the stream stays open.
        tokio::spawn(async move {
            if let Ok(Some(msg)) = inbound.message().await {
                let _ = first.send(msg);
            }
            while let Ok(Some(_)) = inbound.message().await {}
        });
        Ok(tonic::Response::new(Box::pin(tokio_stream::pending())))
    }

    async fn clock(
        &self,
        _: tonic::Request<pb::ClockProbe>,
    ) -> Result<tonic::Response<pb::ClockReply>, tonic::Status> {
        Err(tonic::Status::unimplemented("silent"))
    }
}

#[tokio::test]
async fn shutdown_ends_a_session_stuck_waiting_for_welcome() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop_server = CancellationToken::new();
    let (first, mut hello) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn({
        let stop = stop_server.clone();
        async move {
            tonic::transport::Server::builder()
                .add_service(pb::coordinator_server::CoordinatorServer::new(Silent {
                    first,
                }))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop.cancelled(),
                )
                .await
        }
    });
    let shutdown = CancellationToken::new();
    let config = SessionConfig {
        coordinator: format!("http://{addr}"),
        ..SessionConfig::loopback()
    };
    let session = tokio::spawn(session::run(config, shutdown.clone()));
    // Once the agent has said Hello it waits for a Welcome that never comes; then "SIGTERM".
    let msg = tokio::time::timeout(Duration::from_secs(10), hello.recv())
        .await
        .expect("the agent attaches and says Hello within 10 s")
        .expect("the server is still running");
    assert!(
        matches!(msg.msg, Some(pb::agent_message::Msg::Hello(_))),
        "{msg:?}"
    );
    assert!(!session.is_finished(), "still waiting for Welcome");
    let t = Instant::now();
    shutdown.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(3), session)
        .await
        .expect("the session ends promptly on shutdown")
        .unwrap();
    assert!(ended.is_ok(), "{ended:?}");
    assert!(t.elapsed() < Duration::from_secs(2));
    stop_server.cancel();
}
