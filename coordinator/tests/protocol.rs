//! The `stampede.v1.Coordinator` service seen by a raw gRPC client: authentication,
//! version check, duplicate ids, clock probes. Every refusal is a clear status, never a hang.

use std::time::Duration;

use stampede::auth::Token;
use stampede_proto::PROTOCOL_VERSION;
use stampede_proto::pb::{self, coordinator_client::CoordinatorClient, coordinator_message};
use tokio_util::sync::CancellationToken;

use support::grpc::{attach, hello, with_token};

mod support;

async fn coordinator(stop: &CancellationToken) -> stampede::Coordinator {
    stampede::serve(
        stampede::ServeConfig::new("127.0.0.1:0".parse().unwrap(), Token::new("right")),
        stop.clone(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn wrong_token_is_unauthenticated() {
    let stop = CancellationToken::new();
    let c = coordinator(&stop).await;
    let err = attach(c.addr, "wrong", hello("a1", PROTOCOL_VERSION))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(c.registry.agents().is_empty());
    stop.cancel();
}

#[tokio::test]
async fn version_mismatch_names_both_versions() {
    let stop = CancellationToken::new();
    let c = coordinator(&stop).await;
    let err = attach(c.addr, "right", hello("a1", PROTOCOL_VERSION + 98))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let msg = err.message();
    assert!(msg.contains(&(PROTOCOL_VERSION + 98).to_string()), "{msg}");
    assert!(msg.contains(&format!("speaks {PROTOCOL_VERSION}")), "{msg}");
    stop.cancel();
}

#[tokio::test]
async fn welcome_then_duplicate_id_is_refused() {
    let stop = CancellationToken::new();
    let c = coordinator(&stop).await;
    let (mut stream, tx) = attach(c.addr, "right", hello("a1", PROTOCOL_VERSION))
        .await
        .unwrap();
    let first = stream.message().await.unwrap().unwrap();
    match first.msg {
        Some(coordinator_message::Msg::Welcome(w)) => {
            assert_eq!(w.protocol_version, PROTOCOL_VERSION);
            assert_eq!(w.heartbeat_interval_ms, 1000);
        }
        other => panic!("expected Welcome, got {other:?}"),
    }
    assert_eq!(c.registry.agents().len(), 1);
    let err = attach(c.addr, "right", hello("a1", PROTOCOL_VERSION))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    let err = attach(c.addr, "right", pb::AgentMessage { msg: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // Ending the agent's side of the stream detaches it.
    drop(tx);
    drop(stream);
    let mut ok = false;
    for _ in 0..100 {
        if c.registry.agents().is_empty() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "agent still registered after its stream closed");
    stop.cancel();
}

#[tokio::test]
async fn clock_probe_needs_the_token_and_stamps_in_order() {
    let stop = CancellationToken::new();
    let c = coordinator(&stop).await;
    let mut client = CoordinatorClient::connect(format!("http://{}", c.addr))
        .await
        .unwrap();
    let t0 = stampede_proto::clock::unix_nanos_now();
    let r = client
        .clock(with_token(pb::ClockProbe { t0_unix_nanos: t0 }, "right"))
        .await
        .unwrap()
        .into_inner();
    let t3 = stampede_proto::clock::unix_nanos_now();
    assert_eq!(r.t0_unix_nanos, t0);
    assert!(r.t1_unix_nanos <= r.t2_unix_nanos);
    // Same host, same clock: the offset is within the round trip.
    let s = stampede_proto::clock::ClockSample {
        t0,
        t1: r.t1_unix_nanos,
        t2: r.t2_unix_nanos,
        t3,
    };
    assert!(s.offset_ns().unsigned_abs() <= (t3 - t0) as u64, "{s:?}");
    let err = client
        .clock(with_token(pb::ClockProbe { t0_unix_nanos: t0 }, "nope"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    stop.cancel();
}

#[tokio::test]
async fn welcome_states_liveness_and_a_ping_follows_every_heartbeat() {
    let stop = CancellationToken::new();
    let heartbeat = Duration::from_millis(100);
    let c = stampede::serve(
        stampede::ServeConfig {
            heartbeat,
            ..stampede::ServeConfig::new("127.0.0.1:0".parse().unwrap(), Token::new("right"))
        },
        stop.clone(),
    )
    .await
    .unwrap();
    let (mut stream, _tx) = attach(c.addr, "right", hello("p1", PROTOCOL_VERSION))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    match stream.message().await.unwrap().and_then(|m| m.msg) {
        Some(coordinator_message::Msg::Welcome(w)) => {
            assert_eq!(w.heartbeat_interval_ms, 100);
            assert_eq!(w.liveness_ms, 200, "liveness is two heartbeats");
        }
        other => panic!("expected Welcome, got {other:?}"),
    }
    // Five Pings in about five heartbeats, each stamped with the coordinator's clock.
    let mut last = 0;
    for _ in 0..5 {
        let msg = tokio::time::timeout(heartbeat * 10, stream.message())
            .await
            .expect("a Ping within ten heartbeats")
            .unwrap()
            .and_then(|m| m.msg);
        match msg {
            Some(coordinator_message::Msg::Ping(p)) => {
                assert!(p.sent_unix_nanos > last, "{p:?}");
                last = p.sent_unix_nanos;
            }
            other => panic!("expected Ping, got {other:?}"),
        }
    }
    let took = started.elapsed();
    assert!(
        took >= heartbeat * 4 && took < heartbeat * 30,
        "five Pings took {took:?} at a {heartbeat:?} heartbeat"
    );
    stop.cancel();
}

/// A fleet's first agents must not give up on a coordinator busy attaching the rest: the
/// Welcome's bound grows by 2 ms per other agent of the fleet the endpoint expects, or of
/// those attached when more have come.
#[tokio::test]
async fn welcome_liveness_grows_with_the_fleet() {
    let stop = CancellationToken::new();
    let heartbeat = Duration::from_millis(100);
    let serve = |expected_agents| {
        stampede::serve(
            stampede::ServeConfig {
                heartbeat,
                expected_agents,
                ..stampede::ServeConfig::new("127.0.0.1:0".parse().unwrap(), Token::new("right"))
            },
            stop.clone(),
        )
    };
    // Expecting 500: the first agent already hears of the 499 others.
    let c = serve(500).await.unwrap();
    let (mut s, _tx) = attach(c.addr, "right", hello("f1", PROTOCOL_VERSION))
        .await
        .unwrap();
    assert_eq!(welcome_liveness(&mut s).await, 200 + 2 * 499);
    // Expecting nothing: a lone agent gets two heartbeats, the second one attached 2 ms more.
    let c = serve(0).await.unwrap();
    let (mut a, _ta) = attach(c.addr, "right", hello("g1", PROTOCOL_VERSION))
        .await
        .unwrap();
    assert_eq!(welcome_liveness(&mut a).await, 200);
    let (mut b, _tb) = attach(c.addr, "right", hello("g2", PROTOCOL_VERSION))
        .await
        .unwrap();
    assert_eq!(welcome_liveness(&mut b).await, 202);
    // A run judges its agents' silence by the largest fleet a Welcome allowed for: the
    // second agent's bound counted one other.
    assert_eq!(c.registry.welcomed_fleet(), 2);
    stop.cancel();
}

/// The liveness bound stated in the Welcome that opens `stream`.
async fn welcome_liveness(stream: &mut tonic::Streaming<pb::CoordinatorMessage>) -> u64 {
    match stream.message().await.unwrap().and_then(|m| m.msg) {
        Some(coordinator_message::Msg::Welcome(w)) => w.liveness_ms,
        other => panic!("expected Welcome, got {other:?}"),
    }
}

/// A coordinator that is done (`Coordinator::close`, as `stampede run` calls it before it
/// exits) ends each agent's stream with an OK status: the agent reads a clean end, not a
/// broken connection.
#[tokio::test]
async fn a_closing_coordinator_ends_each_stream_cleanly() {
    let stop = CancellationToken::new();
    let c = stampede::serve(
        stampede::ServeConfig::new("127.0.0.1:0".parse().unwrap(), Token::new("right")),
        stop.clone(),
    )
    .await
    .unwrap();
    let (mut stream, _tx) = attach(c.addr, "right", hello("bye1", PROTOCOL_VERSION))
        .await
        .unwrap();
    welcome_liveness(&mut stream).await;
    c.close(Duration::from_secs(5)).await;
    // Pings may come first; then the end, clean.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => break other,
            }
        }
    })
    .await
    .expect("the stream ends within 5 s");
    assert!(matches!(end, Ok(None)), "{end:?}");
    stop.cancel();
}
