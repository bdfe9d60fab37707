//! `stampede health` against the real servers: the coordinator's agents endpoint and a
//! target's control port both answer the standard gRPC health service without the token
//! (Kubernetes probes send none), while every control call on the same ports still needs it.
//! Exit 0 only for SERVING; an unknown service, a closed port or a silent one is exit 1; a
//! bad URL exit 64.

use std::net::SocketAddr;
use std::process::{Command, Output};

use stampede::auth::Token;
use stampede::target::{TargetAuth, TargetControl};
use stampede_proto::pb::coordinator_client::CoordinatorClient;
use stampede_target::Target;
use stampede_target::config::{Config as TargetConfig, OnAccept};
use stampede_target::control::ControlAuth;
use tokio_util::sync::CancellationToken;

mod support;

const SECRET: &str = "health-s3cret";

/// `stampede health ARGS` (with `env` set), run off the runtime's threads so the servers
/// in this process keep answering.
async fn health_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(support::sibling_bin("stampede"));
    cmd.arg("health").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

async fn health(args: &[&str]) -> Output {
    health_with(args, &[]).await
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A target on loopback whose control needs the token; its control address.
fn protected_target(dir: &std::path::Path, stop: &CancellationToken) -> SocketAddr {
    let token = dir.join("token");
    std::fs::write(&token, format!("{SECRET}\n")).unwrap();
    let auth = ControlAuth::from_files(Some(&token), None).unwrap();
    let target = Target::bind(&TargetConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        backlog: 16,
        on_accept: OnAccept::Greet,
        control: Some("127.0.0.1:0".parse().unwrap()),
        ..TargetConfig::default()
    })
    .unwrap()
    .with_control_auth(auth);
    let control = target.control_addr().unwrap();
    tokio::spawn(target.run(stop.child_token()));
    control
}

#[tokio::test]
async fn coordinator_answers_health_without_the_token_and_nothing_else() {
    let stop = CancellationToken::new();
    let coordinator = stampede::serve(
        stampede::ServeConfig::new("127.0.0.1:0".parse().unwrap(), Token::new(SECRET)),
        stop.clone(),
    )
    .await
    .unwrap();
    let url = format!("http://{}", coordinator.addr);

    for service in ["", "stampede.v1.Coordinator"] {
        let out = health(&[&url, "--service", service]).await;
        assert_eq!(out.status.code(), Some(0), "{service:?}: {out:?}");
        assert!(stdout(&out).contains("SERVING"), "{}", stdout(&out));
    }
    // The URL may come from the environment (the image's HEALTHCHECK does that).
    let out = health_with(&[], &[("STAMPEDE_HEALTH_URL", &url)]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // A service this server does not have is not healthy.
    let out = health(&[&url, "--service", "stampede.v1.TargetControl"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains("NotFound"), "{}", stdout(&out));

    // The control surface on the same port still refuses a call without the token.
    let mut client = CoordinatorClient::connect(url.clone()).await.unwrap();
    let refused = client
        .clock(stampede_proto::pb::ClockProbe::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    // Gone: exit 1, with the reason.
    stop.cancel();
    coordinator.task.await.unwrap();
    let out = health(&[&url, "--timeout", "2s"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains("unreachable"), "{}", stdout(&out));
}

#[tokio::test]
async fn target_control_answers_health_without_the_token_and_nothing_else() {
    let dir = std::env::temp_dir().join(format!("stampede-health-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stop = CancellationToken::new();
    let control = protected_target(&dir, &stop);
    let url = format!("http://{control}");

    for service in ["", "stampede.v1.TargetControl"] {
        let out = health(&[&url, "--service", service]).await;
        assert_eq!(out.status.code(), Some(0), "{service:?}: {out:?}");
        assert!(stdout(&out).contains("SERVING"), "{}", stdout(&out));
    }
    // Control calls without the token are refused on the very port health answers on.
    let mut unauthenticated = TargetControl::connect(&url, &TargetAuth::default())
        .await
        .unwrap();
    let err = unauthenticated.stats().await.unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    // With it, they work: the health service did not displace the control service.
    let auth = TargetAuth {
        token: Token::new(SECRET),
        tls: None,
    };
    let mut authenticated = TargetControl::connect(&url, &auth).await.unwrap();
    authenticated.stats().await.unwrap();
    stop.cancel();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_silent_server_is_not_healthy_within_the_timeout() {
    // Accepts (the kernel completes the handshake) but never speaks HTTP/2.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let started = std::time::Instant::now();
    let out = health(&[&url, "--timeout", "500ms"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stdout(&out).contains("no answer within"),
        "{}",
        stdout(&out)
    );
    // Bounded by --timeout, with room for process start-up on a loaded machine.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    drop(silent);
}

#[tokio::test]
async fn bad_flags_are_usage_errors() {
    for args in [
        &["localhost:7700"][..],
        &["ftp://host:1"][..],
        &["http://127.0.0.1:1", "--timeout", "0"][..],
        &["http://127.0.0.1:1", "--tls-ca", "/nonexistent"][..],
        &["http://127.0.0.1:1", "--token-file", "/nonexistent/token"][..],
    ] {
        let out = health(args).await;
        assert_eq!(out.status.code(), Some(64), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
    }
}
