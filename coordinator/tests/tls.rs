//! TLS and mutual TLS between agents and the coordinator (rustls), with a throwaway CA made
//! by the test: an agent with the right certificates attaches; one without a client
//! certificate, or speaking plain text, never does, and each is refused for its own reason:
//! the TLS alert the coordinator sends (certificate_required; decode_error to plain text),
//! not just any error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use stampede::auth::Token;
use stampede_agent::session::{self, SessionConfig, SessionError};
use stampede_proto::pb::{ClockProbe, coordinator_client::CoordinatorClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A CA, a server certificate for "localhost" and a client certificate, as PEM files.
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("stampede-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        for (name, san) in [("server", "localhost"), ("client", "agent-1")] {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![san.to_owned()])
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn tls_coordinator(pki: &Pki, stop: &CancellationToken) -> stampede::Coordinator {
    let tls = stampede_proto::tls::server_config(
        &pki.path("server.pem"),
        &pki.path("server.key"),
        Some(&pki.path("ca.pem")),
    )
    .unwrap();
    stampede::serve(
        stampede::ServeConfig {
            tls: Some(tls),
            ..stampede::ServeConfig::new("127.0.0.1:0".parse().unwrap(), Token::new("tls-token"))
        },
        stop.clone(),
    )
    .await
    .unwrap()
}

fn agent(url: String, ca: &Path, identity: Option<(&Path, &Path)>) -> SessionConfig {
    SessionConfig {
        coordinator: url,
        token: Token::new("tls-token"),
        id: "agent-1".into(),
        tls: Some(stampede_proto::tls::client_config(ca, "localhost", identity).unwrap()),
        max_retries: Some(1),
        ..SessionConfig::loopback()
    }
}

#[tokio::test]
async fn mutual_tls_agent_attaches() {
    let pki = Pki::new("ok");
    let stop = CancellationToken::new();
    let c = tls_coordinator(&pki, &stop).await;
    let config = agent(
        format!("https://{}", c.addr),
        &pki.path("ca.pem"),
        Some((&pki.path("client.pem"), &pki.path("client.key"))),
    );
    let agent_stop = stop.child_token();
    let task = tokio::spawn(session::run(config, agent_stop.clone()));
    let attached = c
        .registry
        .wait_for(1, Duration::from_secs(10), |_| {})
        .await
        .expect("the agent attaches over mutual TLS");
    assert_eq!(attached, vec!["agent-1".to_owned()]);
    agent_stop.cancel();
    assert!(task.await.unwrap().is_ok());
    stop.cancel();
}

#[tokio::test]
async fn agent_without_client_certificate_is_turned_away() {
    let pki = Pki::new("nocert");
    let stop = CancellationToken::new();
    let c = tls_coordinator(&pki, &stop).await;
    let config = agent(format!("https://{}", c.addr), &pki.path("ca.pem"), None);
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        session::run(config, stop.child_token()),
    )
    .await
    .expect("gives up after its retries");
    assert!(
        matches!(result, Err(SessionError::Unreachable { .. })),
        "{result:?}"
    );
    assert!(c.registry.agents().is_empty());
    // The refusal is the one mutual TLS makes: the coordinator's fatal alert, seen by a gRPC
    // client with the agent's TLS settings on its first call (TLS 1.3 checks the client's
    // certificate after the client considers the handshake done).
    let tls = stampede_proto::tls::client_config(&pki.path("ca.pem"), "localhost", None).unwrap();
    let why = first_call_error(
        tonic::transport::Endpoint::from_shared(format!("https://{}", c.addr))
            .unwrap()
            .tls_config(tls)
            .unwrap(),
    )
    .await;
    assert!(
        why.contains("received fatal alert: CertificateRequired"),
        "{why}"
    );
    stop.cancel();
}

#[tokio::test]
async fn plain_text_agent_cannot_talk_to_a_tls_coordinator() {
    let pki = Pki::new("plain");
    let stop = CancellationToken::new();
    let c = tls_coordinator(&pki, &stop).await;
    let config = SessionConfig {
        coordinator: format!("http://{}", c.addr),
        token: Token::new("tls-token"),
        id: "agent-1".into(),
        max_retries: Some(1),
        ..SessionConfig::loopback()
    };
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        session::run(config, stop.child_token()),
    )
    .await
    .expect("gives up after its retries");
    assert!(
        matches!(result, Err(SessionError::Unreachable { .. })),
        "{result:?}"
    );
    assert!(c.registry.agents().is_empty());
    // What plain text gets: the HTTP/2 preface is answered with a fatal TLS alert record
    // (content type 21, TLS 1.2 record version, length 2, level fatal, decode_error = 50),
    // then the connection closes: the coordinator speaks TLS only.
    let mut conn = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut reply))
        .await
        .expect("the coordinator closes the plain-text connection")
        .unwrap();
    assert_eq!(reply, [21, 3, 3, 0, 2, 2, 50], "{reply:?}");
    stop.cancel();
}

/// The full error chain of the first Clock call through `endpoint` (the call must fail).
async fn first_call_error(endpoint: tonic::transport::Endpoint) -> String {
    let status = match endpoint.connect().await {
        Err(e) => return chain(&e),
        Ok(channel) => CoordinatorClient::new(channel)
            .clock(ClockProbe::default())
            .await
            .expect_err("the call must be refused"),
    };
    chain(&status)
}

/// An error and its sources, outermost first.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(" <- ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[tokio::test]
async fn client_certificate_from_another_ca_fails_its_signature_check() {
    let pki = Pki::new("ca");
    let rogue = Pki::new("rogue");
    let stop = CancellationToken::new();
    let c = tls_coordinator(&pki, &stop).await;
    let config = agent(
        format!("https://{}", c.addr),
        &pki.path("ca.pem"),
        Some((&rogue.path("client.pem"), &rogue.path("client.key"))),
    );
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        session::run(config, stop.child_token()),
    )
    .await
    .expect("gives up after its retries");
    assert!(
        matches!(result, Err(SessionError::Unreachable { .. })),
        "{result:?}"
    );
    assert!(c.registry.agents().is_empty());
    let tls = stampede_proto::tls::client_config(
        &pki.path("ca.pem"),
        "localhost",
        Some((&rogue.path("client.pem"), &rogue.path("client.key"))),
    )
    .unwrap();
    let why = first_call_error(
        tonic::transport::Endpoint::from_shared(format!("https://{}", c.addr))
            .unwrap()
            .tls_config(tls)
            .unwrap(),
    )
    .await;
    // Both test CAs have the same (empty) subject, so the coordinator finds "the" issuer by
    // name and the signature check fails: rustls answers with decrypt_error (a CA of another
    // name would get unknown_ca).
    assert!(why.contains("received fatal alert: DecryptError"), "{why}");
    stop.cancel();
}
