//! The coordinator's limits (issue 9 items 4 and 6): connections that never authenticate are
//! closed after the handshake bound and capped, so they cannot lock out a real agent;
//! messages for no run in progress are dropped and counted, never queued; an agent over its
//! queue bound is disconnected as overloaded; every refusal is logged with its reason and
//! "agent attached" only on registration; a run short of agents names refused duplicates.
//!
//! The idle-flood tests open thousands of real TCP connections, so they run in a network
//! namespace of their own (root; they skip loudly without it). The rest use loopback gRPC.

use std::io::{ErrorKind, Read};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stampede::admission::Limits;
use stampede::auth::Token;
use stampede::run::{RunError, RunPlan};
use stampede_agent::session::{self, SessionConfig};
use stampede_lab::{Netns, kernel_tests_enabled};
use stampede_proto::PROTOCOL_VERSION;
use stampede_proto::pb::{self, agent_message, coordinator_message};
use stampede_proto::plan::Load;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use support::grpc::{Attached, attach, hello};

mod support;

const TOKEN: &str = "right";

/// Attaches as `id` and reads the Welcome.
async fn attach_welcomed(addr: SocketAddr, id: &str) -> (Attached, pb::Welcome) {
    let (mut stream, tx) = attach(addr, TOKEN, hello(id, PROTOCOL_VERSION))
        .await
        .unwrap();
    match stream.message().await.unwrap().and_then(|m| m.msg) {
        Some(coordinator_message::Msg::Welcome(w)) => ((stream, tx), w),
        other => panic!("expected Welcome, got {other:?}"),
    }
}

async fn coordinator(stop: &CancellationToken, limits: Limits) -> stampede::Coordinator {
    stampede::serve_with_limits(
        stampede::ServeConfig::new("127.0.0.1:0".parse().unwrap(), Token::new(TOKEN)),
        limits,
        stop.clone(),
    )
    .await
    .unwrap()
}

/// An interval result of run `run_id` carrying `bytes` of histogram.
fn interval(run_id: &str, bytes: usize) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(agent_message::Msg::Interval(pb::IntervalResult {
            run_id: run_id.into(),
            connect_latency_hist: vec![7; bytes],
            ..Default::default()
        })),
    }
}

/// Polls `cond` every 10 ms until it holds or `within` passes.
async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

// ---------------------------------------------------------------------------------------
// Idle connections (kernel: real sockets, in a namespace of their own)
// ---------------------------------------------------------------------------------------

/// How many idle connections the flood opens (ulimit -n is 20,000; each costs two fds).
const FLOOD: usize = 2_000;

/// Opens `n` TCP connections to `addr` that never send a byte.
async fn idle_flood(addr: SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
    let mut idle = Vec::with_capacity(n);
    for _ in 0..n {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        idle.push(s.into_std().unwrap());
    }
    idle
}

/// Whether the coordinator has closed this idle connection (EOF or reset).
fn closed(s: &mut std::net::TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// Indices of the connections still open.
fn still_open(idle: &mut [std::net::TcpStream]) -> Vec<usize> {
    idle.iter_mut()
        .enumerate()
        .filter_map(|(i, s)| (!closed(s)).then_some(i))
        .collect()
}

/// A real agent session (the agent library's reconnecting daemon loop) for `addr`.
fn spawn_agent(addr: SocketAddr, id: &str, stop: &CancellationToken) {
    let config = SessionConfig {
        coordinator: format!("http://{addr}"),
        token: Token::new(TOKEN),
        id: id.into(),
        ..SessionConfig::loopback()
    };
    let stop = stop.clone();
    tokio::spawn(async move {
        let _ = session::run(config, stop).await;
    });
}

#[test]
fn idle_connections_are_closed_after_the_bound_and_an_agent_still_attaches() {
    if !kernel_tests_enabled(
        "idle_connections_are_closed_after_the_bound_and_an_agent_still_attaches",
    ) {
        return;
    }
    let ns = Netns::new("idle").unwrap();
    ns.block_on(async {
        let bound = Duration::from_secs(3);
        let limits = Limits {
            handshake_timeout: bound,
            max_pending: 4 * FLOOD,
            ..Limits::default()
        };
        let stop = CancellationToken::new();
        let c = coordinator(&stop, limits).await;
        let opened = Instant::now();
        let mut idle = idle_flood(c.addr, FLOOD).await;
        // Every idle connection is accepted and held, pending.
        assert!(
            eventually(Duration::from_secs(2), || c.registry.stats().gate.pending
                >= FLOOD as u64)
            .await,
            "{:?}",
            c.registry.stats()
        );

        // A real agent attaches while the flood is held, well within the bound.
        let asked = Instant::now();
        spawn_agent(c.addr, "real", &stop);
        assert!(
            eventually(Duration::from_secs(2), || c
                .registry
                .agents()
                .contains_key("real"))
            .await,
            "the agent did not attach past {FLOOD} idle connections: {:?}",
            c.registry.stats()
        );
        let attached_after = asked.elapsed();
        // Not one idle connection was closed before the bound.
        if opened.elapsed() < bound - Duration::from_millis(500) {
            assert_eq!(
                still_open(&mut idle).len(),
                FLOOD,
                "closed before the bound"
            );
        }

        // After the bound every idle connection is closed, and counted as timed out.
        let closed_all = eventually(bound + Duration::from_secs(5), || {
            still_open(&mut idle).is_empty()
        })
        .await;
        let open = still_open(&mut idle).len();
        assert!(closed_all, "{open} of {FLOOD} idle connections still open");
        assert!(
            opened.elapsed() >= bound,
            "closed after {:?}, before the bound {bound:?}",
            opened.elapsed()
        );
        let stats = c.registry.stats();
        assert_eq!(stats.gate.timed_out, FLOOD as u64, "{stats:?}");
        assert_eq!(stats.gate.pending, 0, "{stats:?}");
        assert_eq!(stats.gate.evicted, 0, "{stats:?}");
        // The agent, which authenticated, is not subject to the bound.
        assert!(
            c.registry.agents().contains_key("real"),
            "the agent lost its connection with the idle ones"
        );
        eprintln!("agent attached after {attached_after:?} past {FLOOD} idle connections");
        stop.cancel();
    });
}

#[test]
fn pending_connections_are_capped_by_closing_the_oldest() {
    if !kernel_tests_enabled("pending_connections_are_capped_by_closing_the_oldest") {
        return;
    }
    let ns = Netns::new("cap").unwrap();
    ns.block_on(async {
        let cap = 100;
        let limits = Limits {
            handshake_timeout: Duration::from_secs(30),
            max_pending: cap,
            ..Limits::default()
        };
        let stop = CancellationToken::new();
        let c = coordinator(&stop, limits).await;
        let mut idle = idle_flood(c.addr, FLOOD).await;
        assert!(
            eventually(Duration::from_secs(5), || c.registry.stats().gate.accepted
                >= FLOOD as u64)
            .await
        );
        // Long before the 30 s bound, all but the newest `cap` are closed.
        assert!(
            eventually(Duration::from_secs(5), || still_open(&mut idle).len()
                <= cap)
            .await,
            "{} open, cap {cap}: {:?}",
            still_open(&mut idle).len(),
            c.registry.stats()
        );
        let open = still_open(&mut idle);
        assert!(
            open.iter().all(|&i| i >= FLOOD - cap),
            "an old connection survived a newer one: {open:?}"
        );
        let stats = c.registry.stats();
        assert!(stats.gate.pending <= cap as u64, "{stats:?}");
        assert_eq!(stats.gate.evicted, (FLOOD - cap) as u64, "{stats:?}");
        // A real agent still gets in: it authenticates long before `cap` newer connections.
        spawn_agent(c.addr, "real", &stop);
        assert!(
            eventually(Duration::from_secs(2), || c
                .registry
                .agents()
                .contains_key("real"))
            .await,
            "{:?}",
            c.registry.stats()
        );
        stop.cancel();
    });
}

// ---------------------------------------------------------------------------------------
// Messages: no run, unknown run, overload
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn messages_for_no_run_or_an_unknown_run_are_dropped_and_counted() {
    let stop = CancellationToken::new();
    let c = coordinator(&stop, Limits::default()).await;
    let ((mut stream, tx), _) = attach_welcomed(c.addr, "a1").await;
    // No run in progress: 20 large results with a bogus run id.
    for _ in 0..20 {
        tx.send(interval("bogus", 1 << 20)).await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(10), || c
            .registry
            .stats()
            .dropped_messages
            == 20)
        .await,
        "{:?}",
        c.registry.stats()
    );
    // A run in progress: another run's messages are dropped too, its own are queued.
    let run = c.registry.begin_run("r1");
    for _ in 0..5 {
        tx.send(interval("r0", 1 << 20)).await.unwrap();
    }
    tx.send(interval("r1", 100)).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || c
            .registry
            .stats()
            .dropped_messages
            == 25)
        .await,
        "{:?}",
        c.registry.stats()
    );
    let mut events = c.registry.events().await;
    let got = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    match got {
        stampede::service::AgentEvent::Message { agent, msg, .. } => {
            assert_eq!(agent, "a1");
            assert!(
                matches!(*msg, agent_message::Msg::Interval(ref r) if r.run_id == "r1"),
                "{msg:?}"
            );
        }
        other => panic!("expected r1's interval, got {other:?}"),
    }
    // Nothing else was queued: neither the bogus nor the other run's results.
    assert!(events.try_recv().is_err(), "a dropped message was queued");
    drop(events);
    drop(run);
    // The agent is still attached: dropping is not a punishment.
    assert!(c.registry.agents().contains_key("a1"));
    drop(tx);
    while let Ok(Some(_)) = stream.message().await {}
    stop.cancel();
}

#[tokio::test]
async fn an_agent_over_its_queue_bound_is_disconnected_as_overloaded() {
    let stop = CancellationToken::new();
    let limits = Limits {
        agent_queue_bytes: 1 << 20,
        ..Limits::default()
    };
    let c = coordinator(&stop, limits).await;
    let ((mut stream, tx), _) = attach_welcomed(c.addr, "flood").await;
    // A run in progress that does not read: 400 KB messages fit twice in 1 MiB, not thrice.
    let _run = c.registry.begin_run("r1");
    for _ in 0..3 {
        tx.send(interval("r1", 400_000)).await.unwrap();
    }
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the stream ends, not hangs")
        {
            Ok(Some(_)) => {} // Pings
            Ok(None) => panic!("stream ended without the overload error"),
            Err(s) => break s,
        }
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let msg = status.message();
    assert!(msg.contains("overloaded") && msg.contains("flood"), "{msg}");
    assert!(
        msg.contains("1048576"),
        "the message names the bound: {msg}"
    );
    assert_eq!(c.registry.stats().overloaded, 1);
    assert!(
        eventually(Duration::from_secs(5), || c.registry.agents().is_empty()).await,
        "the overloaded agent is still registered"
    );
    // Two messages were queued, then the departure with the named reason.
    let mut events = c.registry.events().await;
    let mut queued = 0;
    let mut gone = None;
    while let Ok(e) = events.try_recv() {
        match e {
            stampede::service::AgentEvent::Message { .. } => queued += 1,
            stampede::service::AgentEvent::Gone { reason, .. } => gone = Some(reason),
        }
    }
    assert_eq!(queued, 2);
    assert!(gone.is_some_and(|r| r.contains("overloaded")));
    stop.cancel();
}

// ---------------------------------------------------------------------------------------
// Honest logs and errors
// ---------------------------------------------------------------------------------------

/// A tracing subscriber that keeps every event of the coordinator's crate as one line.
/// It is the global default (a thread-local one misses callsites that other tests' threads
/// registered first), so lines from every test of this binary land here: the log test
/// picks its own by agent id.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    /// The binary's one log, installed on first use.
    fn global() -> Lines {
        static LINES: std::sync::OnceLock<Lines> = std::sync::OnceLock::new();
        LINES
            .get_or_init(|| {
                let lines = Lines::default();
                tracing::subscriber::set_global_default(lines.clone())
                    .expect("no other global subscriber in this test binary");
                lines
            })
            .clone()
    }

    fn matching(&self, needles: &[&str]) -> Vec<String> {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .cloned()
            .collect()
    }
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl tracing::Subscriber for Lines {
    fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
        meta.target().starts_with("stampede")
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut f = Fields(format!(
            "{} {}:",
            event.metadata().level(),
            event.metadata().target()
        ));
        event.record(&mut f);
        self.0.lock().unwrap().push(f.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn every_refusal_is_logged_with_its_reason_and_attached_only_on_registration() {
    let lines = Lines::global();
    let stop = CancellationToken::new();
    let c = coordinator(&stop, Limits::default()).await;

    // Only this test presents a wrong token.
    let err = attach(c.addr, "wrong", hello("log-w1", PROTOCOL_VERSION))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = attach(c.addr, TOKEN, hello("log-v1", PROTOCOL_VERSION + 7))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let (_first, _) = attach_welcomed(c.addr, "log-dup").await;
    let err = attach(c.addr, TOKEN, hello("log-dup", PROTOCOL_VERSION))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert!(
        err.message().contains("duplicate agent id \"log-dup\""),
        "{err:?}"
    );

    let all = lines.matching(&[]).join("\n");
    assert_eq!(
        lines.matching(&["agent refused", "invalid token"]).len(),
        1,
        "{all}"
    );
    assert_eq!(
        lines
            .matching(&["agent refused", "log-v1", "protocol version mismatch"])
            .len(),
        1,
        "{all}"
    );
    assert_eq!(
        lines
            .matching(&["agent refused", "log-dup", "duplicate agent id"])
            .len(),
        1,
        "{all}"
    );
    // One agent registered, one "attached" line: the refused duplicate did not log one.
    assert_eq!(
        lines.matching(&["agent attached", "log-dup"]).len(),
        1,
        "{all}"
    );
    assert!(lines.matching(&["agent attached", "log-v1"]).is_empty());
    assert!(
        lines.matching(&["Bearer"]).is_empty(),
        "a token was logged: {all}"
    );
    stop.cancel();
}

#[tokio::test]
async fn a_run_short_of_agents_names_the_refused_duplicates() {
    let stop = CancellationToken::new();
    let c = coordinator(&stop, Limits::default()).await;
    let (_first, _) = attach_welcomed(c.addr, "host-a").await;
    let plan = RunPlan {
        agents: 2,
        agent_wait: Duration::from_secs(2),
        load: Load::burst("127.0.0.1:9".parse().unwrap(), 10),
        lead: Duration::ZERO,
        target_control: None,
        backlog: None,
        accept_rate: None,
        target_auth: Default::default(),
        scenario: serde_json::Value::Null,
    };
    let registry = c.registry.clone();
    let run_stop = stop.clone();
    let run =
        tokio::spawn(
            async move { stampede::run::execute(&registry, &plan, &run_stop, &|_| {}).await },
        );
    // A second agent with the same id (two agents on one host, no --id) is refused.
    let err = attach(c.addr, TOKEN, hello("host-a", PROTOCOL_VERSION))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    let err = match run.await.unwrap() {
        Err(e @ RunError::NotEnoughAgents { .. }) => e,
        other => panic!("expected NotEnoughAgents, got {:?}", other.map(|_| ())),
    };
    let msg = err.to_string();
    assert!(msg.contains("1 attached (host-a)"), "{msg}");
    assert!(
        msg.contains("duplicate ids (host-a)") && msg.contains("unique --id"),
        "{msg}"
    );
    // The next run starts with a clean slate.
    assert!(c.registry.refused_duplicates().is_empty());
    stop.cancel();
}

#[tokio::test]
async fn a_run_that_ends_late_does_not_end_the_next_one() {
    let stop = CancellationToken::new();
    let c = coordinator(&stop, Limits::default()).await;
    let ((_stream, tx), _) = attach_welcomed(c.addr, "a1").await;
    let first = c.registry.begin_run("first");
    let second = c.registry.begin_run("second");
    drop(first);
    tx.send(interval("second", 10)).await.unwrap();
    let mut events = c.registry.events().await;
    let got = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("the second run's message is queued")
        .unwrap();
    assert!(
        matches!(got, stampede::service::AgentEvent::Message { .. }),
        "{got:?}"
    );
    drop(second);
    assert_eq!(c.registry.stats().dropped_messages, 0);
    stop.cancel();
}
