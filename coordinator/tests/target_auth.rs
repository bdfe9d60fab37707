//! `stampede run` and `sweep` against a target whose control needs a token: the run sends
//! its own token (`--token-file`, the one agents present) and works end to end; without it,
//! or with a wrong one, the run stops before anything fires with an error that says the
//! target refused and what to give; `https://` control is verified against
//! `--target-control-ca`.

use std::path::PathBuf;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use stampede::auth::Token;
use stampede::run::RunError;
use stampede::scenario::Scenario;
use stampede::target::TargetControl;
use stampede_agent::session::{self, SessionConfig};
use stampede_proto::duration::Dur;
use stampede_target::config::{Config as TargetConfig, OnAccept};
use stampede_target::control::ControlAuth;
use stampede_target::{Target, TargetHandle};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "target-auth-s3cret";

/// Files of one test: the token, a wrong token, and a CA with a server certificate for
/// "localhost".
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(tag: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("stampede-tauth-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), format!("{SECRET}\n")).unwrap();
        std::fs::write(dir.join("wrong"), "not-the-secret\n").unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        Files { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A target on loopback whose control needs the token (and presents TLS if asked).
fn protected_target(
    files: &Files,
    tls: bool,
    stop: &CancellationToken,
) -> (TargetHandle, std::net::SocketAddr, std::net::SocketAddr) {
    let auth = ControlAuth::from_files(
        Some(&files.path("token")),
        tls.then(|| (files.path("server.pem"), files.path("server.key")))
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path())),
    )
    .unwrap();
    let target = Target::bind(&TargetConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        backlog: 1024,
        on_accept: OnAccept::Greet,
        control: Some("127.0.0.1:0".parse().unwrap()),
        ..TargetConfig::default()
    })
    .unwrap()
    .with_control_auth(auth);
    let (handle, addr, control) = (
        target.handle(),
        target.local_addr(),
        target.control_addr().unwrap(),
    );
    tokio::spawn(target.run(stop.child_token()));
    (handle, addr, control)
}

/// A coordinator and one agent, both with the token.
async fn coordinator_with_agent(stop: &CancellationToken) -> stampede::Coordinator {
    let coordinator = stampede::serve(
        stampede::ServeConfig::new("127.0.0.1:0".parse().unwrap(), Token::new(SECRET)),
        stop.clone(),
    )
    .await
    .unwrap();
    let config = SessionConfig {
        coordinator: format!("http://{}", coordinator.addr),
        token: Token::new(SECRET),
        id: "agent-1".into(),
        ..SessionConfig::loopback()
    };
    tokio::spawn(session::run(config, stop.child_token()));
    coordinator
}

fn scenario(
    target: std::net::SocketAddr,
    control: std::net::SocketAddr,
    token: Option<PathBuf>,
) -> Scenario {
    Scenario {
        agents: 1,
        agent_wait: Dur(Duration::from_secs(10)),
        target: Some(target),
        connections: 20,
        timeout: Dur(Duration::from_secs(3)),
        lead: Dur(Duration::from_millis(200)),
        target_control: Some(format!("http://{control}")),
        backlog: Some(32),
        token_file: token,
        ..Scenario::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_and_sweep_send_the_runs_token_to_the_target() {
    let files = Files::new("run");
    let stop = CancellationToken::new();
    let (handle, target, control) = protected_target(&files, false, &stop);
    let coordinator = coordinator_with_agent(&stop).await;
    let cancel = CancellationToken::new();

    let plan = scenario(target, control, Some(files.path("token")))
        .plan()
        .unwrap();
    assert!(
        !format!("{plan:?}").contains(SECRET),
        "the plan leaks the token"
    );
    let done = stampede::run::execute(&coordinator.registry, &plan, &cancel, &|_| {})
        .await
        .expect("a run with the token");
    let r = &done.report;
    assert!(r.target_error.is_none(), "{:?}", r.target_error);
    let t = r.target.as_ref().expect("the target's stats");
    // Configure (backlog 32), ResetCounters and Stats all went through.
    assert_eq!(t.backlog_requested, Some(32));
    assert_eq!(r.outcomes.total(), 20);
    assert_eq!(t.accepted, Some(20), "{t:?}");

    // A sweep sets the backlog at each step over the same authenticated channel.
    let mut settings = scenario(target, control, Some(files.path("token")));
    settings.connections = 10;
    let sweep = settings
        .sweep_plan(&stampede::scenario::SweepSettings {
            backlogs: vec![16],
            ..Default::default()
        })
        .unwrap();
    let report = stampede::sweep::execute(&coordinator.registry, &sweep, &cancel, &|_| {})
        .await
        .expect("a sweep with the token");
    assert_eq!(report.steps.len(), 1, "{report:?}");
    assert_eq!(handle.stats().unwrap().backlog_requested, Some(16));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_token_the_run_stops_before_firing_and_says_why() {
    let files = Files::new("refused");
    let stop = CancellationToken::new();
    let (handle, target, control) = protected_target(&files, false, &stop);
    let coordinator = coordinator_with_agent(&stop).await;
    for (token, why) in [
        (None, "missing bearer token"),
        (Some(files.path("wrong")), "invalid token"),
    ] {
        let plan = scenario(target, control, token).plan().unwrap();
        let err = stampede::run::execute(
            &coordinator.registry,
            &plan,
            &CancellationToken::new(),
            &|_| {},
        )
        .await
        .expect_err("the target refuses the run's calls");
        assert!(matches!(err, RunError::TargetControl(_)), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&control.to_string())
                && msg.contains("refused")
                && msg.contains(why)
                && msg.contains("--token-file"),
            "{msg}"
        );
        assert!(!msg.contains(SECRET), "{msg}");
    }
    // Nothing reached the target: its backlog is as started and nothing connected.
    let stats = handle.stats().unwrap();
    assert_eq!(stats.backlog_requested, Some(1024));
    assert_eq!(stats.accepted, Some(0), "{stats:?}");
    stop.cancel();
}

#[tokio::test]
async fn https_control_is_verified_against_the_given_ca() {
    let files = Files::new("tls");
    let stop = CancellationToken::new();
    let (handle, target, control) = protected_target(&files, true, &stop);
    let url = format!("https://localhost:{}", control.port());
    let mut s = scenario(target, control, Some(files.path("token")));
    s.target_control = Some(url.clone());
    s.backlog = None;

    // https without a CA to verify the target with is refused at plan time.
    let e = s.plan().unwrap_err().to_string();
    assert!(e.contains("--target-control-ca") && e.contains(&url), "{e}");

    s.target_control_ca = Some(files.path("ca.pem"));
    // A CA for a plain-text URL is a mistake worth saying.
    let plain_url = Scenario {
        target_control: Some(format!("http://{control}")),
        ..s.clone()
    };
    let e = plain_url.plan().unwrap_err().to_string();
    assert!(e.contains("--target-control-ca is for an https://"), "{e}");
    let plan = s.plan().unwrap();
    let mut c = TargetControl::connect(&url, &plan.target_auth)
        .await
        .expect("TLS control connects");
    let configured = c.configure(Some(48), None).await.expect("configure");
    assert_eq!(configured.backlog_requested, Some(48));
    assert_eq!(handle.stats().unwrap().backlog_requested, Some(48));

    // Plain text to the TLS port never gets an answer.
    let plain = stampede::target::TargetAuth {
        tls: None,
        ..plan.target_auth.clone()
    };
    let refused = match TargetControl::connect(&format!("http://{control}"), &plain).await {
        Ok(mut c) => c.stats().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(refused.is_err(), "plain text reached a TLS control port");
    stop.cancel();
}
