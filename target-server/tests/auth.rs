//! Target control authentication: with a token, every TargetControl call (Configure, Pause,
//! ResetCounters, Stats) without it or with a wrong one is refused with Unauthenticated and
//! changes nothing; the right token works; the same holds for `observe`; and the binary
//! refuses to serve control off loopback without a token (one line, exit 64).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use stampede_proto::pb::{self, target_control_client::TargetControlClient};
use stampede_proto::token::Token;
use stampede_target::config::Config;
use stampede_target::control::ControlAuth;
use stampede_target::observe::{Observe, ObserveConfig};
use stampede_target::{Target, TargetHandle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Status};

const SECRET: &str = "control-s3cret";

fn auth() -> ControlAuth {
    ControlAuth {
        token: Token::new(SECRET),
        tls: None,
    }
}

/// A target on loopback whose control needs [`SECRET`].
fn protected_target() -> (TargetHandle, CancellationToken, JoinHandle<()>, SocketAddr) {
    let target = Target::bind(&Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        backlog: 64,
        control: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    })
    .expect("binding the target")
    .with_control_auth(auth());
    let (handle, control) = (target.handle(), target.control_addr().unwrap());
    let stop = CancellationToken::new();
    let run = tokio::spawn(target.run(stop.clone()));
    let join = tokio::spawn(async move {
        run.await.expect("target task").expect("target run");
    });
    (handle, stop, join, control)
}

async fn client(control: SocketAddr) -> TargetControlClient<tonic::transport::Channel> {
    TargetControlClient::connect(format!("http://{control}"))
        .await
        .expect("control connects")
}

/// `msg` with `authorization: <value>` (none if `value` is `None`).
fn with<T>(msg: T, value: Option<&str>) -> Request<T> {
    let mut req = Request::new(msg);
    if let Some(v) = value {
        req.metadata_mut()
            .insert("authorization", v.parse().unwrap());
    }
    req
}

/// A refusal that says what is missing and what to do, and never echoes the token.
fn assert_refused(r: Result<tonic::Response<pb::TargetStats>, Status>, call: &str, why: &str) {
    let s = r.expect_err(call);
    assert_eq!(s.code(), Code::Unauthenticated, "{call} {why}: {s:?}");
    assert!(
        s.message().contains("--token-file") && s.message().contains(why),
        "{call}: {}",
        s.message()
    );
    assert!(!s.message().contains(SECRET), "{call}: {}", s.message());
}

const BAD: [(Option<&str>, &str); 3] = [
    (None, "missing bearer token"),
    (Some("Bearer wrong-secret"), "invalid token"),
    (Some("Basic control-s3cret"), "missing bearer token"),
];

#[tokio::test]
async fn serve_refuses_every_call_without_the_right_token() {
    let (handle, stop, join, control) = protected_target();
    let mut c = client(control).await;
    let before = handle.stats().unwrap();
    for (value, why) in BAD {
        let configure = pb::ConfigureRequest {
            backlog: Some(1),
            accept_policy: None,
            on_accept: Some(pb::OnAccept {
                kind: pb::OnAcceptKind::Reset as i32,
                hold_ms: 0,
            }),
        };
        assert_refused(c.configure(with(configure, value)).await, "configure", why);
        assert_refused(
            c.pause(with(pb::PauseRequest {}, value)).await,
            "pause",
            why,
        );
        assert_refused(
            c.resume(with(pb::ResumeRequest {}, value)).await,
            "resume",
            why,
        );
        assert_refused(
            c.reset_counters(with(pb::ResetCountersRequest {}, value))
                .await,
            "reset_counters",
            why,
        );
        assert_refused(
            c.stats(with(pb::StatsRequest::default(), value)).await,
            "stats",
            why,
        );
        let watch = c
            .watch_queue(with(pb::WatchQueueRequest { min_interval_ms: 0 }, value))
            .await
            .expect_err("watch_queue");
        assert_eq!(watch.code(), Code::Unauthenticated);
    }
    // Nothing the refused calls asked for happened: same backlog, not paused, and the
    // measurement was not restarted (its clock kept running from before).
    let after = handle.stats().unwrap();
    assert_eq!(after.backlog_requested, Some(64));
    assert!(!after.paused);
    assert!(after.elapsed_us >= before.elapsed_us, "{after:?}");

    // The right token works for each of them.
    let right = Some("Bearer control-s3cret");
    let paused = c.pause(with(pb::PauseRequest {}, right)).await.unwrap();
    assert!(paused.into_inner().paused);
    let configured = c
        .configure(with(
            pb::ConfigureRequest {
                backlog: Some(7),
                accept_policy: None,
                on_accept: None,
            },
            right,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(configured.backlog_requested, Some(7));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before_reset = handle.stats().unwrap().elapsed_us;
    let reset = c
        .reset_counters(with(pb::ResetCountersRequest {}, right))
        .await
        .unwrap()
        .into_inner();
    assert!(reset.elapsed_us < before_reset, "{reset:?}");
    stop.cancel();
    join.await.unwrap();
}

#[tokio::test]
async fn loopback_without_a_token_stays_open() {
    let target = Target::bind(&Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        control: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    })
    .unwrap();
    let control = target.control_addr().unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(target.run(stop.clone()));
    let mut c = client(control).await;
    assert!(
        c.pause(pb::PauseRequest {})
            .await
            .unwrap()
            .into_inner()
            .paused
    );
    stop.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test]
async fn observe_refuses_reset_counters_without_the_right_token() {
    // "Another process's" listener on loopback, observed through sock_diag.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let observe = Observe::bind(&ObserveConfig {
        port,
        addr: Some("127.0.0.1".parse().unwrap()),
        interval: Duration::from_millis(5),
        duration: Some(Duration::from_secs(30)),
        stats_json: None,
        control: Some("127.0.0.1:0".parse().unwrap()),
    })
    .unwrap()
    .with_control_auth(auth());
    let control = observe.control_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { observe.run(stop, &mut |_| {}).await }
    });
    let mut c = client(control).await;
    let right = Some("Bearer control-s3cret");
    tokio::time::sleep(Duration::from_millis(30)).await;
    let before = c
        .stats(with(pb::StatsRequest::default(), right))
        .await
        .unwrap()
        .into_inner();
    assert!(before.samples > 1, "{before:?}");
    for (value, why) in BAD {
        assert_refused(
            c.reset_counters(with(pb::ResetCountersRequest {}, value))
                .await,
            "reset_counters",
            why,
        );
        assert_refused(
            c.stats(with(pb::StatsRequest::default(), value)).await,
            "stats",
            why,
        );
        // Configure and Pause are refused for the token before observe says it cannot.
        let configure = pb::ConfigureRequest {
            backlog: Some(1),
            ..Default::default()
        };
        assert_refused(c.configure(with(configure, value)).await, "configure", why);
        assert_refused(
            c.pause(with(pb::PauseRequest {}, value)).await,
            "pause",
            why,
        );
    }
    // The refused resets did not restart the measurement: samples kept counting.
    let after = c
        .stats(with(pb::StatsRequest::default(), right))
        .await
        .unwrap()
        .into_inner();
    assert!(after.samples > before.samples, "{after:?} vs {before:?}");
    let reset = c
        .reset_counters(with(pb::ResetCountersRequest {}, right))
        .await
        .unwrap()
        .into_inner();
    assert!(reset.samples < after.samples, "{reset:?}");
    // With the token, Configure reaches observe and gets its own answer.
    let s = c
        .configure(with(pb::ConfigureRequest::default(), right))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    stop.cancel();
    task.await.unwrap().unwrap();
    drop(listener);
}

fn target_bin(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stampede-target"))
        .args(args)
        .env_remove("STAMPEDE_TOKEN_FILE")
        .env_remove("STAMPEDE_CONTROL")
        .output()
        .unwrap()
}

#[test]
fn control_off_loopback_needs_a_token() {
    for args in [
        &["--listen", "127.0.0.1:0", "--control", "0.0.0.0:0"][..],
        &["observe", "--port", "1", "--control", "0.0.0.0:0"][..],
    ] {
        let out = target_bin(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("0.0.0.0:0") && stderr.contains("--token-file"),
            "{stderr}"
        );
    }
    // With a token it serves (and stops after its duration).
    let dir = std::env::temp_dir().join(format!("stampede-tauth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, format!("{SECRET}\n")).unwrap();
    let out = target_bin(&[
        "--listen",
        "127.0.0.1:0",
        "--control",
        "0.0.0.0:0",
        "--token-file",
        token.to_str().unwrap(),
        "--duration",
        "200ms",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("control_auth=\"token\"") || stderr.contains("control_auth=token"),
        "{stderr}"
    );
    assert!(!stderr.contains(SECRET), "the token was logged: {stderr}");
    // An unreadable token file is bad usage too, and names the file.
    let out = target_bin(&[
        "--control",
        "127.0.0.1:0",
        "--token-file",
        dir.join("missing").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("missing"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
