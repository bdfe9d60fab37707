//! The agent's link to the coordinator: dial, present the bearer token, open the Attach
//! stream with a Hello and wait for Welcome (bounded, and giving way to shutdown), and the
//! clock probes a Prepare needs. What comes out is a [`Link`] the session runs on, or how
//! the attempt [`Ended`].

use std::time::Duration;

use stampede_proto::PROTOCOL_VERSION;
use stampede_proto::clock::{self, ClockSample, unix_nanos_now};
use stampede_proto::pb::{self, agent_message::Msg as Out, coordinator_message::Msg as In};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use super::{Ended, SessionConfig, hostname};

/// How long Attach may take to be answered with Welcome.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// The coordinator's client, every call carrying the bearer token.
pub(super) type Client = pb::coordinator_client::CoordinatorClient<
    tonic::service::interceptor::InterceptedService<Channel, Auth>,
>;

/// An attached session's channels: calls, the stream in, the stream out.
pub(super) struct Link {
    /// For unary calls (the clock probes).
    pub(super) client: Client,
    /// What the coordinator sends.
    pub(super) inbound: tonic::Streaming<pb::CoordinatorMessage>,
    /// What this agent sends; a failed send means the stream is gone.
    pub(super) out: mpsc::Sender<pb::AgentMessage>,
    /// The coordinator's greeting (its heartbeat interval).
    pub(super) welcome: pb::Welcome,
}

/// Adds the bearer token to every call.
#[derive(Clone)]
pub(super) struct Auth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A status the coordinator answers on purpose (token, version, duplicate id, bad request)
/// ends the session as a refusal; any other is a broken link.
impl From<tonic::Status> for Ended {
    fn from(s: tonic::Status) -> Ended {
        use tonic::Code::*;
        match s.code() {
            Unauthenticated | PermissionDenied | FailedPrecondition | AlreadyExists
            | InvalidArgument => Ended::Refused(s),
            _ => Ended::Broken(s.message().to_owned()),
        }
    }
}

/// Dials the coordinator and attaches: Hello out, Welcome back. Attach and Welcome are
/// bounded, and give way to shutdown: a coordinator that accepts the stream but never
/// answers must not hold the agent (nor its SIGTERM) forever.
pub(super) async fn attach(
    config: &SessionConfig,
    endpoint: &Endpoint,
    shutdown: &CancellationToken,
) -> Result<Link, Ended> {
    let channel = tokio::select! {
        _ = shutdown.cancelled() => return Err(Ended::Shutdown),
        c = endpoint.connect() => c.map_err(|e| Ended::Broken(format!("cannot connect to {}: {e}", config.coordinator)))?,
    };
    let mut client: Client =
        pb::coordinator_client::CoordinatorClient::with_interceptor(channel, auth(config))
            .max_decoding_message_size(16 * 1024 * 1024);
    let (out, out_rx) = mpsc::channel::<pb::AgentMessage>(256);
    let _ = out.try_send(pb::AgentMessage {
        msg: Some(Out::Hello(hello(config))),
    });
    let handshake = async {
        let mut inbound = client
            .attach(tokio_stream::wrappers::ReceiverStream::new(out_rx))
            .await
            .map_err(|s| match Ended::from(s) {
                Ended::Broken(why) => Ended::Broken(format!("attach failed: {why}")),
                refused => refused,
            })?
            .into_inner();
        match inbound.message().await? {
            Some(pb::CoordinatorMessage {
                msg: Some(In::Welcome(welcome)),
            }) => Ok((inbound, welcome)),
            _ => Err(Ended::Broken("the coordinator did not send Welcome".into())),
        }
    };
    let (inbound, welcome) = tokio::select! {
        _ = shutdown.cancelled() => return Err(Ended::Shutdown),
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => r.map_err(|_| {
            Ended::Broken(format!("no Welcome from {} within {HANDSHAKE_TIMEOUT:?}", config.coordinator))
        })??,
    };
    tracing::info!(coordinator = %config.coordinator, id = %config.id, "attached");
    Ok(Link {
        client,
        inbound,
        out,
        welcome,
    })
}

/// The token as an `authorization` header value (none if it cannot be one).
fn auth(config: &SessionConfig) -> Auth {
    Auth(config.token.as_ref().and_then(|t| {
        let mut v: MetadataValue<Ascii> = t.header_value().parse().ok()?;
        // Kept out of any debug output of the request.
        v.set_sensitive(true);
        Some(v)
    }))
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

/// Most clock probes one sync sends: under load most of the first 16 may have waited in a
/// queue somewhere, so up to twice as many again are sent to find quick ones.
const MAX_PROBES: usize = 3 * clock::PROBES;

/// A probe whose round trip is within this of twice the best one's is "quick": it saw the
/// path about as idle as the best did.
const QUICK_SLACK_NS: u64 = 100_000;

/// A new best round trip counts as progress when it is below this share of the best before
/// it (in percent): probing on pays while the path is getting idler, not for the small
/// gains that chance gives under a load that persists.
const GAIN_PERCENT: u64 = 80;

/// Probes in a row without progress after which a sync stops probing for quick ones.
const PATIENCE: usize = clock::PROBES / 2;

/// ~16 NTP-style probes; the lowest-RTT one gives the offset and its uncertainty (half its
/// RTT). Under load (a fleet syncing at once, a busy host) round trips swing: while fewer than
/// half of the probes are quick (RTT at most twice the best plus 100 µs), more are sent, up
/// to [`MAX_PROBES`], so the estimate rests on a probe that met an idle path; but only while
/// the best keeps dropping markedly ([`keep_probing`]): when the load is the fleet's own
/// syncing, more probes only add to it.
pub(super) async fn sync_clock(client: &mut Client) -> Result<clock::ClockEstimate, tonic::Status> {
    let began = std::time::Instant::now();
    let mut samples = Vec::with_capacity(MAX_PROBES);
    while samples.len() < MAX_PROBES {
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
        if !keep_probing(&samples) {
            break;
        }
    }
    let best = clock::best(&samples).expect("PROBES > 0");
    tracing::info!(
        probes = samples.len(),
        took_ms = began.elapsed().as_millis() as u64,
        rtt_ns = best.rtt_ns,
        "clock synced"
    );
    Ok(best)
}

/// Whether a sync with these samples sends another probe: always below [`clock::PROBES`];
/// then while fewer than half are quick and the best round trip dropped below
/// [`GAIN_PERCENT`] of the best before it within the last [`PATIENCE`] probes.
fn keep_probing(samples: &[ClockSample]) -> bool {
    if samples.len() < clock::PROBES {
        return true;
    }
    if quick(samples) * 2 >= samples.len() {
        return false;
    }
    // Where the best last dropped markedly (the first probe sets the first best).
    let mut best = u64::MAX;
    let mut gained_at = 0;
    for (i, s) in samples.iter().enumerate() {
        let rtt = s.rtt_ns();
        if rtt.saturating_mul(100) < best.saturating_mul(GAIN_PERCENT) {
            gained_at = i;
        }
        best = best.min(rtt);
    }
    samples.len() - gained_at <= PATIENCE
}

/// How many samples are quick: RTT at most twice the best plus [`QUICK_SLACK_NS`].
fn quick(samples: &[ClockSample]) -> usize {
    let best = samples.iter().map(ClockSample::rtt_ns).min().unwrap_or(0);
    let bound = best.saturating_mul(2).saturating_add(QUICK_SLACK_NS);
    samples.iter().filter(|s| s.rtt_ns() <= bound).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rtt_us: i64) -> ClockSample {
        ClockSample {
            t0: 0,
            t1: 10,
            t2: 10,
            t3: rtt_us * 1_000,
        }
    }

    /// Probes that waited in a queue (far above the best RTT) do not count as quick, so a
    /// sync under load keeps probing; an idle path's probes all count.
    #[test]
    fn slow_probes_are_not_quick() {
        let idle: Vec<_> = (0..16).map(|i| sample(50 + i)).collect();
        assert_eq!(quick(&idle), 16);
        let mut loaded: Vec<_> = (0..12).map(|i| sample(20_000 + i * 1_000)).collect();
        loaded.extend((0..4).map(|_| sample(300)));
        assert_eq!(quick(&loaded), 4, "4 of 16 met an idle path: probe again");
    }

    /// Round trips of a loaded path, ms, in no order: the best (20 ms) first, one quick.
    fn loaded() -> Vec<ClockSample> {
        let ms = [
            20, 60, 90, 45, 120, 70, 150, 55, 80, 100, 65, 130, 75, 95, 110, 85,
        ];
        ms.iter().map(|ms| sample(ms * 1_000)).collect()
    }

    /// A fleet syncing at once is a load that persists while it probes: round trips swing,
    /// few are quick. Probing on past 16 would only add to it, so a sync stops once its best
    /// has not dropped markedly for 8 probes (the fleet bench: 45 probes per agent and 5 s
    /// of the prepare at 1,000 agents before this rule).
    #[test]
    fn a_persistent_load_is_not_probed_through() {
        let mut samples = loaded();
        assert_eq!(quick(&samples), 1, "only the best is quick");
        // The best (the first probe) is 16 probes old: stop.
        assert!(!keep_probing(&samples));
        // A small gain (to 19 ms, not below 80 %) is chance, not progress.
        samples.push(sample(19_000));
        assert!(!keep_probing(&samples));
        // Fewer than 16 always go on.
        assert!(keep_probing(&samples[..15]));
    }

    /// A load that goes away (the rest of the fleet done syncing) shows as a best that
    /// drops: probing goes on while it keeps dropping, until half the probes are quick, or
    /// 48 were sent.
    #[test]
    fn a_load_that_clears_is_probed_while_the_best_drops() {
        let mut samples = loaded();
        samples.push(sample(10_000));
        assert!(keep_probing(&samples), "a marked drop: go on");
        samples.extend((0..7).map(|_| sample(50_000)));
        assert!(keep_probing(&samples), "7 probes since the drop: go on");
        samples.push(sample(50_000));
        assert!(
            !keep_probing(&samples),
            "8 probes without another drop: stop"
        );
        // Drop after drop (each to 3/4 of the last): on up to the most probes.
        let mut falling = loaded();
        let mut rtt_us = 15_000;
        falling.push(sample(rtt_us));
        while falling.len() < MAX_PROBES && keep_probing(&falling) {
            rtt_us = rtt_us * 3 / 4;
            falling.push(sample(rtt_us));
        }
        assert_eq!(falling.len(), MAX_PROBES);
        // An idle path's 16 are all quick: done at once.
        let quiet: Vec<_> = (0..16).map(|i| sample(50 + i)).collect();
        assert!(!keep_probing(&quiet));
    }
}
