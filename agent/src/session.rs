//! Daemon mode (`stampede-agent --coordinator URL`): the agent dials the coordinator (so only
//! the coordinator needs an open port), authenticates with its bearer token, and obeys the
//! plans it receives: validate and arm on Prepare (after a clock sync), fire at the agreed
//! instant on Start, stream interval results and the final result, stop on Abort.
//!
//! Safety first: a plan whose targets fall outside `--allow-target` (default loopback only)
//! or above `--max-connections` is refused with the reason. If the stream breaks mid-run,
//! the run is aborted and its sockets closed; the agent then reconnects with exponential
//! backoff and jitter. A refusal by the coordinator (bad token, protocol version) is final.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use stampede_proto::PROTOCOL_VERSION;
use stampede_proto::clock::{self, ClockSample, unix_nanos_now};
use stampede_proto::pb::{self, agent_message::Msg as Out, coordinator_message::Msg as In};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::cidr::Cidr;
use crate::engine::FireError;
use crate::plan::{CloseMode, DEFAULT_MAX_CONNECTIONS, FireConfig, Plan};
use crate::{Armed, Interval, arm};

/// How an agent session is set up. Its `Debug` leaves the token out.
#[derive(Clone)]
pub struct SessionConfig {
    /// The coordinator, `http://HOST:PORT` (or `https://` with TLS).
    pub coordinator: String,
    /// Bearer token to present.
    pub token: Option<String>,
    /// Agent id, unique among the coordinator's agents.
    pub id: String,
    /// Targets this agent may connect to.
    pub allow: Vec<Cidr>,
    /// Largest plan (connections) accepted.
    pub max_connections: u64,
    /// Source IPs to spread connections over (empty: the kernel chooses).
    pub source_ips: Vec<IpAddr>,
    /// TLS settings (with an `https://` URL).
    pub tls: Option<ClientTlsConfig>,
    /// Give up after this many failed connection attempts in a row (`None`: never).
    pub max_retries: Option<u32>,
}

impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfig")
            .field("coordinator", &self.coordinator)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("id", &self.id)
            .field("allow", &self.allow)
            .field("max_connections", &self.max_connections)
            .field("source_ips", &self.source_ips)
            .field("tls", &self.tls.is_some())
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

impl SessionConfig {
    /// Defaults for an agent on this host: loopback targets only, the default cap, no TLS.
    /// `coordinator`, `token` and `id` still need setting.
    pub fn loopback() -> SessionConfig {
        SessionConfig {
            coordinator: String::new(),
            token: None,
            id: hostname(),
            allow: Cidr::loopback(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            source_ips: Vec::new(),
            tls: None,
            max_retries: None,
        }
    }
}

/// Why a session ended for good.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The coordinator refused this agent (token, version, duplicate id): retrying cannot help.
    #[error("the coordinator refused this agent ({code:?}): {message}")]
    Refused {
        /// gRPC status code.
        code: tonic::Code,
        /// The coordinator's message.
        message: String,
    },
    /// The coordinator URL is unusable.
    #[error("invalid coordinator URL {url:?}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Gave up after `max_retries` failed attempts.
    #[error("could not reach the coordinator after {attempts} attempts: {last}")]
    Unreachable {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: String,
    },
}

/// What ended one attached session.
enum Ended {
    /// Shutdown requested.
    Shutdown,
    /// The stream or connection broke: reconnect.
    Broken(String),
    /// The coordinator refused us: stop.
    Refused(tonic::Status),
}

/// How long Attach may take to be answered with Welcome.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// How many times in a row an "id already attached" refusal is retried (with the usual
/// backoff, ~23 s in all: more than the coordinator's keepalive, 5 s pings with a 10 s
/// timeout, takes to drop a dead stream).
const DUPLICATE_RETRIES: u32 = 7;

/// Runs the agent until `shutdown`, reconnecting with backoff and jitter whenever the
/// coordinator goes away.
pub async fn run(config: SessionConfig, shutdown: CancellationToken) -> Result<(), SessionError> {
    let endpoint = endpoint(&config)?;
    let mut backoff = Duration::from_millis(200);
    let mut failures = 0u32;
    let mut duplicates = 0u32;
    loop {
        let attached_at = Instant::now();
        let last = match attach_once(&config, &endpoint, &shutdown).await {
            Ended::Shutdown => return Ok(()),
            // After a network break the coordinator may still hold our old registration
            // until its keepalive notices: retry a few times before calling it a real clash
            // (another agent with this id).
            Ended::Refused(s)
                if s.code() == tonic::Code::AlreadyExists && duplicates < DUPLICATE_RETRIES =>
            {
                duplicates += 1;
                s.message().to_owned()
            }
            Ended::Refused(s) => {
                return Err(SessionError::Refused {
                    code: s.code(),
                    message: s.message().to_owned(),
                });
            }
            Ended::Broken(why) => {
                duplicates = 0;
                why
            }
        };
        // A session that lived a while resets the backoff.
        if attached_at.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(200);
            failures = 0;
        }
        failures += 1;
        if config.max_retries.is_some_and(|m| failures > m) {
            return Err(SessionError::Unreachable {
                attempts: failures,
                last,
            });
        }
        let wait = backoff + jitter(backoff / 2);
        tracing::warn!(cause = %last, retry_in_ms = wait.as_millis() as u64, "coordinator unavailable");
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Up to `max` of pseudo-random jitter (from the clock's low bits: enough to spread a
/// fleet's reconnects apart, no cryptographic need).
fn jitter(max: Duration) -> Duration {
    let nanos = unix_nanos_now() as u64;
    let mixed = nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(std::process::id());
    Duration::from_nanos(mixed % (max.as_nanos() as u64).max(1))
}

fn endpoint(config: &SessionConfig) -> Result<Endpoint, SessionError> {
    let bad = |reason: String| SessionError::BadUrl {
        url: config.coordinator.clone(),
        reason,
    };
    let https = config.coordinator.starts_with("https://");
    if !https && !config.coordinator.starts_with("http://") {
        return Err(bad("expected http://HOST:PORT or https://HOST:PORT".into()));
    }
    let mut endpoint = Endpoint::from_shared(config.coordinator.clone())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(10));
    match (&config.tls, https) {
        (Some(tls), true) => {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| bad(e.to_string()))?
        }
        (None, true) => return Err(bad("https:// needs --tls-ca".into())),
        (Some(_), false) => return Err(bad("TLS files were given, so use an https:// URL".into())),
        (None, false) => {}
    }
    Ok(endpoint)
}

type Client = pb::coordinator_client::CoordinatorClient<
    tonic::service::interceptor::InterceptedService<Channel, Auth>,
>;

/// Adds the bearer token to every call.
#[derive(Clone)]
struct Auth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

fn is_refusal(s: &tonic::Status) -> bool {
    use tonic::Code::*;
    matches!(
        s.code(),
        Unauthenticated | PermissionDenied | FailedPrecondition | AlreadyExists | InvalidArgument
    )
}

fn hello(config: &SessionConfig) -> pb::Hello {
    pb::Hello {
        agent_id: config.id.clone(),
        protocol_version: PROTOCOL_VERSION,
        host: hostname(),
        fd_limit: crate::raise_fd_limit().map_or(0, |l| l.soft),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        source_ips: config.source_ips.iter().map(|ip| ip.to_string()).collect(),
        allow_targets: config.allow.iter().map(|c| c.to_string()).collect(),
        max_connections: config.max_connections,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// ~16 NTP-style probes; the lowest-RTT one gives the offset and its uncertainty.
async fn sync_clock(client: &mut Client) -> Result<clock::ClockEstimate, tonic::Status> {
    let mut samples = Vec::with_capacity(clock::PROBES);
    for _ in 0..clock::PROBES {
        let t0 = unix_nanos_now();
        let r = client
            .clock(pb::ClockProbe { t0_unix_nanos: t0 })
            .await?
            .into_inner();
        let t3 = unix_nanos_now();
        samples.push(ClockSample {
            t0,
            t1: r.t1_unix_nanos,
            t2: r.t2_unix_nanos,
            t3,
        });
    }
    Ok(clock::best(&samples).expect("PROBES > 0"))
}

/// A plan armed for a run, waiting for its Start.
struct ArmedRun {
    run_id: String,
    armed: Armed,
    clock: clock::ClockEstimate,
}

/// A run being fired; its token is cancelled to abort it, and by the run itself when it
/// is over (so a cancelled token means "not busy").
struct Firing {
    run_id: String,
    cancel: CancellationToken,
    completed: Arc<AtomicU64>,
}

/// The engine's configuration for a coordinator's plan; the agent's own limits (allow-list,
/// cap, source IPs) are applied here and checked by [`Plan::new`].
fn fire_config(config: &SessionConfig, p: &pb::Prepare) -> Result<FireConfig, String> {
    let target: SocketAddr = match p.targets.as_slice() {
        [one] => one
            .parse()
            .map_err(|_| format!("invalid target {one:?}: expected IP:PORT"))?,
        [] => return Err("the plan names no target".into()),
        _ => {
            return Err(format!(
                "the plan names {} targets; this agent fires at one per run",
                p.targets.len()
            ));
        }
    };
    let pattern = p
        .pattern
        .ok_or_else(|| "the plan has no pattern".to_owned())?
        .try_into()
        .map_err(|e: stampede_proto::pattern::ParsePatternError| e.to_string())?;
    if p.timeout_ms == 0 {
        return Err("the plan's timeout is zero".into());
    }
    Ok(FireConfig {
        target,
        connections: p.connections,
        pattern,
        timeout: Duration::from_millis(p.timeout_ms),
        hold: Duration::from_millis(p.hold_ms),
        close: match pb::CloseMode::try_from(p.close) {
            Ok(pb::CloseMode::Fin) => CloseMode::Fin,
            _ => CloseMode::Rst,
        },
        expect_greeting: p.expect_greeting,
        probe_admission: p.probe_admission,
        source_ips: config.source_ips.clone(),
        allow_targets: config.allow.clone(),
        max_connections: config.max_connections,
        workers: None,
    })
}

/// Validates, syncs the clock and arms; the error is the Rejected reason.
async fn prepare(
    config: &SessionConfig,
    client: &mut Client,
    p: pb::Prepare,
) -> Result<ArmedRun, String> {
    let plan = Plan::new(fire_config(config, &p)?).map_err(|e| e.to_string())?;
    let clock = sync_clock(client)
        .await
        .map_err(|s| format!("clock sync with the coordinator failed: {}", s.message()))?;
    let armed = tokio::task::spawn_blocking(move || arm(&plan))
        .await
        .map_err(|e| format!("arming panicked: {e}"))?
        .map_err(|e| e.to_string())?;
    tracing::info!(run_id = %p.run_id, sockets = armed.sockets(), offset_ns = clock.offset_ns, rtt_ns = clock.rtt_ns, "armed");
    Ok(ArmedRun {
        run_id: p.run_id,
        armed,
        clock,
    })
}

/// Fires on a blocking thread at `deadline`; intervals and the final result go out on the
/// stream as they come.
fn start_firing(
    a: ArmedRun,
    deadline: std::time::Instant,
    out: mpsc::Sender<pb::AgentMessage>,
) -> Firing {
    let cancel = CancellationToken::new();
    let completed = Arc::new(AtomicU64::new(0));
    let run_id = a.run_id.clone();
    let (itx, mut irx) = mpsc::unbounded_channel::<Interval>();
    let forwarder = {
        let (out, run_id, completed) = (out.clone(), run_id.clone(), completed.clone());
        tokio::spawn(async move {
            while let Some(interval) = irx.recv().await {
                completed.fetch_add(interval.tally.outcomes.total(), Ordering::Relaxed);
                match interval.to_pb(&run_id) {
                    Ok(msg) => {
                        // A failed send means the stream is gone; the session aborts the run.
                        let _ = out
                            .send(pb::AgentMessage {
                                msg: Some(Out::Interval(msg)),
                            })
                            .await;
                    }
                    Err(e) => tracing::error!(cause = %e, "encoding an interval failed"),
                }
            }
        })
    };
    let fire_cancel = cancel.clone();
    let armed = a.armed;
    let firing = tokio::task::spawn_blocking(move || armed.fire(deadline, &fire_cancel, Some(itx)));
    {
        let run_id = run_id.clone();
        let finished = cancel.clone();
        tokio::spawn(async move {
            let result = firing.await;
            // The engine dropped its interval sender when it returned: the forwarder ends
            // after the last interval, so the final result always comes after them.
            let _ = forwarder.await;
            // The run is over: the agent is free for the next Prepare before the
            // coordinator can even see this result.
            finished.cancel();
            let msg = match result {
                Ok(Ok(r)) => match r.to_pb(&run_id) {
                    Ok(fin) => Out::Result(fin),
                    Err(e) => Out::Rejected(pb::Rejected {
                        run_id,
                        reason: format!("encoding the result failed: {e}"),
                    }),
                },
                Ok(Err(e @ FireError::StartPassed { .. })) => Out::Rejected(pb::Rejected {
                    run_id,
                    reason: e.to_string(),
                }),
                Ok(Err(e)) => Out::Rejected(pb::Rejected {
                    run_id,
                    reason: format!("firing failed: {e}"),
                }),
                Err(e) => Out::Rejected(pb::Rejected {
                    run_id,
                    reason: format!("firing panicked: {e}"),
                }),
            };
            let _ = out.send(pb::AgentMessage { msg: Some(msg) }).await;
        });
    }
    Firing {
        run_id,
        cancel,
        completed,
    }
}

async fn attach_once(
    config: &SessionConfig,
    endpoint: &Endpoint,
    shutdown: &CancellationToken,
) -> Ended {
    let channel = tokio::select! {
        _ = shutdown.cancelled() => return Ended::Shutdown,
        c = endpoint.connect() => match c {
            Ok(c) => c,
            Err(e) => return Ended::Broken(format!("cannot connect to {}: {e}", config.coordinator)),
        },
    };
    let auth = Auth(config.token.as_ref().and_then(|t| {
        let mut v: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
            format!("Bearer {t}").parse().ok()?;
        // Kept out of any debug output of the request.
        v.set_sensitive(true);
        Some(v)
    }));
    let mut client: Client =
        pb::coordinator_client::CoordinatorClient::with_interceptor(channel, auth)
            .max_decoding_message_size(16 * 1024 * 1024);
    let (out_tx, out_rx) = mpsc::channel::<pb::AgentMessage>(256);
    let send = |tx: &mpsc::Sender<pb::AgentMessage>, msg: Out| {
        tx.try_send(pb::AgentMessage { msg: Some(msg) }).is_ok()
    };
    send(&out_tx, Out::Hello(hello(config)));
    // Attach and Welcome are bounded, and give way to shutdown: a coordinator that accepts
    // the stream but never answers must not hold the agent (nor its SIGTERM) forever.
    let handshake = async {
        let mut inbound = match client
            .attach(tokio_stream::wrappers::ReceiverStream::new(out_rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if is_refusal(&s) => return Err(Ended::Refused(s)),
            Err(s) => return Err(Ended::Broken(format!("attach failed: {}", s.message()))),
        };
        match inbound.message().await {
            Ok(Some(pb::CoordinatorMessage {
                msg: Some(In::Welcome(w)),
            })) => Ok((inbound, w)),
            Ok(_) => Err(Ended::Broken("the coordinator did not send Welcome".into())),
            Err(s) if is_refusal(&s) => Err(Ended::Refused(s)),
            Err(s) => Err(Ended::Broken(s.message().to_owned())),
        }
    };
    let (mut inbound, welcome) = tokio::select! {
        _ = shutdown.cancelled() => return Ended::Shutdown,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => match r {
            Ok(Ok(attached)) => attached,
            Ok(Err(ended)) => return ended,
            Err(_) => {
                return Ended::Broken(format!(
                    "no Welcome from {} within {HANDSHAKE_TIMEOUT:?}",
                    config.coordinator
                ));
            }
        },
    };
    tracing::info!(coordinator = %config.coordinator, id = %config.id, "attached");
    let mut tick = tokio::time::interval(Duration::from_millis(
        welcome.heartbeat_interval_ms.clamp(100, 60_000),
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut armed: Option<ArmedRun> = None;
    let mut firing: Option<Firing> = None;
    let ended = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ended::Shutdown,
            _ = tick.tick() => {
                let (run_id, completed) = firing.as_ref().map_or((String::new(), 0), |f| {
                    (f.run_id.clone(), f.completed.load(Ordering::Relaxed))
                });
                if out_tx.send(pb::AgentMessage { msg: Some(Out::Heartbeat(pb::Heartbeat { run_id, completed })) }).await.is_err() {
                    break Ended::Broken("stream closed".into());
                }
            }
            m = inbound.message() => match m {
                Ok(Some(pb::CoordinatorMessage { msg: Some(msg) })) => match msg {
                    In::Prepare(p) => {
                        let run_id = p.run_id.clone();
                        let reply = if firing.as_ref().is_some_and(|f| !f.cancel.is_cancelled()) {
                            Out::Rejected(pb::Rejected { run_id, reason: "busy: a run is still in progress on this agent".into() })
                        } else {
                            match prepare(config, &mut client, p).await {
                                Ok(a) => {
                                    let ready = pb::Ready {
                                        run_id,
                                        armed: a.armed.sockets(),
                                        clock_offset_ns: a.clock.offset_ns,
                                        clock_rtt_ns: a.clock.rtt_ns,
                                    };
                                    armed = Some(a);
                                    Out::Ready(ready)
                                }
                                Err(reason) => {
                                    tracing::warn!(%run_id, %reason, "plan rejected");
                                    Out::Rejected(pb::Rejected { run_id, reason })
                                }
                            }
                        };
                        if out_tx.send(pb::AgentMessage { msg: Some(reply) }).await.is_err() {
                            break Ended::Broken("stream closed".into());
                        }
                    }
                    In::Start(s) => {
                        let Some(a) = armed.take().filter(|a| a.run_id == s.run_id) else {
                            let _ = out_tx.send(pb::AgentMessage { msg: Some(Out::Rejected(pb::Rejected {
                                run_id: s.run_id, reason: "Start for a run this agent has not armed".into() })) }).await;
                            continue;
                        };
                        let local_start = a.clock.to_agent(s.start_at_unix_nanos);
                        let ahead_ns = local_start - unix_nanos_now();
                        if ahead_ns <= 0 {
                            // Firing late would make the burst a lie: refuse instead.
                            let reason = format!("start time already past by {:.3} ms when Start arrived; not firing late", -ahead_ns as f64 / 1e6);
                            tracing::warn!(run_id = %s.run_id, %reason, "start refused");
                            let _ = out_tx.send(pb::AgentMessage { msg: Some(Out::Rejected(pb::Rejected { run_id: s.run_id, reason })) }).await;
                            continue;
                        }
                        let deadline = std::time::Instant::now() + Duration::from_nanos(ahead_ns as u64);
                        firing = Some(start_firing(a, deadline, out_tx.clone()));
                    }
                    In::Abort(ab) => {
                        if let Some(f) = firing.as_ref().filter(|f| f.run_id == ab.run_id) {
                            tracing::warn!(run_id = %ab.run_id, reason = %ab.reason, "run aborted by the coordinator");
                            f.cancel.cancel();
                        }
                        if armed.as_ref().is_some_and(|a| a.run_id == ab.run_id) {
                            armed = None;
                        }
                    }
                    In::Welcome(_) => {}
                },
                Ok(Some(_)) => {}
                Ok(None) => break Ended::Broken("the coordinator closed the stream".into()),
                Err(s) if is_refusal(&s) => break Ended::Refused(s),
                Err(s) => break Ended::Broken(s.message().to_owned()),
            },
        }
    };
    // Whatever ended the session ends the run: its sockets close now, not at some later
    // moment nobody planned.
    if let Some(f) = firing {
        f.cancel.cancel();
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_token() {
        let config = SessionConfig {
            token: Some("s3cret-t0ken".into()),
            ..SessionConfig::loopback()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
