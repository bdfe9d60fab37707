//! The `stampede.v1.TargetControl` service end to end over real gRPC: pause and resume,
//! accept policy and action changes, counter reset, the queue watch stream, and refusals
//! that name the field.

mod support;

use std::time::Duration;

use stampede_proto::pb::{self, target_control_client::TargetControlClient};
use stampede_target::config::Config;
use support::start_target;
use tokio::io::AsyncReadExt;

fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        backlog: 64,
        control: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    }
}

async fn connect_control(
    addr: std::net::SocketAddr,
) -> TargetControlClient<tonic::transport::Channel> {
    TargetControlClient::connect(format!("http://{addr}"))
        .await
        .expect("control connects")
}

#[tokio::test]
async fn pause_holds_connections_in_the_queue_and_resume_accepts_them() {
    let (handle, stop, join, control) = start_target(config());
    let mut c = connect_control(control.unwrap()).await;
    let paused = c.pause(pb::PauseRequest {}).await.unwrap().into_inner();
    assert!(paused.paused);
    let addr = handle.local_addr();
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let s = c
        .stats(pb::StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((s.accepted, s.accept_queue_len), (Some(0), 3), "{s:?}");

    let resumed = c.resume(pb::ResumeRequest {}).await.unwrap().into_inner();
    assert!(!resumed.paused);
    // Each client gets its greeting: 8 bytes, a timestamp close to now.
    for client in &mut clients {
        let mut buf = [0u8; 8];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut buf))
            .await
            .expect("greeting within 5s")
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let sent = u64::from_be_bytes(buf);
        assert!(sent <= now && now - sent < 5_000_000_000, "{sent} vs {now}");
    }
    let s = c
        .stats(pb::StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.accepted, Some(3));
    assert_eq!(s.accept_queue_max, 3);

    let reset = c
        .reset_counters(pb::ResetCountersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reset.accepted, Some(0));
    assert_eq!(reset.accept_queue_max, 0);
    stop.cancel();
    join.await.unwrap();
}

#[tokio::test]
async fn configure_changes_rate_and_action() {
    let (handle, stop, join, control) = start_target(config());
    let mut c = connect_control(control.unwrap()).await;
    // Accept 20/s with a burst of 2, and reset every accepted connection.
    c.configure(pb::ConfigureRequest {
        accept_policy: Some(pb::AcceptPolicy {
            rate_per_sec: Some(20.0),
            batch: 2,
            ..Default::default()
        }),
        on_accept: Some(pb::OnAccept {
            kind: pb::OnAcceptKind::Reset as i32,
            hold_ms: 0,
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let addr = handle.local_addr();
    let t0 = tokio::time::Instant::now();
    // Each connection is reset by the target: seen by connect() itself when the RST comes
    // before tokio polls the connect, otherwise by the first read.
    let clients: Vec<_> = (0..6)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(addr).await?;
                let mut buf = [0u8; 1];
                stream.read(&mut buf).await
            })
        })
        .collect();
    // The sixth accept needs 2 burst tokens + 4 refills at 50 ms: at least 200 ms.
    for client in clients {
        let r = tokio::time::timeout(Duration::from_secs(5), client)
            .await
            .expect("reset within 5s")
            .unwrap();
        assert_eq!(
            r.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::ConnectionReset)
        );
    }
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(190), "{took:?}");
    assert_eq!(handle.stats().unwrap().accepted, Some(6));
    stop.cancel();
    join.await.unwrap();
}

#[tokio::test]
async fn invalid_values_are_refused_naming_the_field() {
    let (_handle, stop, join, control) = start_target(config());
    let mut c = connect_control(control.unwrap()).await;
    let err = c
        .configure(pb::ConfigureRequest {
            accept_policy: Some(pb::AcceptPolicy {
                rate_per_sec: Some(-1.0),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("rate_per_sec"), "{}", err.message());
    let err = c
        .configure(pb::ConfigureRequest {
            on_accept: Some(pb::OnAccept {
                kind: 99,
                hold_ms: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("on_accept.kind"),
        "{}",
        err.message()
    );
    stop.cancel();
    join.await.unwrap();
}

#[tokio::test]
async fn watch_queue_streams_samples_as_the_queue_fills() {
    let mut cfg = config();
    cfg.accept.paused = true;
    let (handle, stop, join, control) = start_target(cfg);
    let mut c = connect_control(control.unwrap()).await;
    let mut stream = c
        .watch_queue(pb::WatchQueueRequest { min_interval_ms: 0 })
        .await
        .unwrap()
        .into_inner();
    let _a = tokio::net::TcpStream::connect(handle.local_addr())
        .await
        .unwrap();
    let _b = tokio::net::TcpStream::connect(handle.local_addr())
        .await
        .unwrap();
    // Samples arrive about every millisecond; within 2 s one must show both queued.
    let seen = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(s) = stream.message().await.unwrap() {
            if s.queue_len == 2 {
                return s;
            }
        }
        panic!("stream ended");
    })
    .await
    .expect("a sample with queue_len 2");
    assert_eq!(
        seen.backlog_effective,
        handle.stats().unwrap().backlog_effective
    );
    assert_eq!(seen.accepted, 0);
    stop.cancel();
    join.await.unwrap();
}
