//! The agent's session against a coordinator that accepts the Attach stream and then says
//! nothing: the agent must not hang there, and SIGTERM (its shutdown token) still ends it.

use std::pin::Pin;
use std::time::{Duration, Instant};

use stampede_agent::session::{self, SessionConfig};
use stampede_proto::pb;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;

/// Answers Attach with a stream that never yields (no Welcome, ever).
struct Silent;

#[tonic::async_trait]
impl pb::coordinator_server::Coordinator for Silent {
    type AttachStream =
        Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, tonic::Status>> + Send>>;

    async fn attach(
        &self,
        _: tonic::Request<tonic::Streaming<pb::AgentMessage>>,
    ) -> Result<tonic::Response<Self::AttachStream>, tonic::Status> {
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
    tokio::spawn({
        let stop = stop_server.clone();
        async move {
            tonic::transport::Server::builder()
                .add_service(pb::coordinator_server::CoordinatorServer::new(Silent))
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
    // Long enough to be attached and waiting; then "SIGTERM".
    tokio::time::sleep(Duration::from_millis(500)).await;
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
