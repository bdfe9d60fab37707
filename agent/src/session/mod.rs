//! Daemon mode (`stampede-agent --coordinator URL`): the agent dials the coordinator (so only
//! the coordinator needs an open port), authenticates with its bearer token, and obeys the
//! plans it receives: validate and arm on Prepare (after a clock sync), fire at the agreed
//! instant on Start, stream interval results and the final result, stop on Abort.
//!
//! Safety first: a plan whose targets fall outside `--allow-target` (default loopback only)
//! or above `--max-connections` is refused with the reason. If the stream breaks mid-run,
//! the run is aborted and its sockets closed; the agent then reconnects with exponential
//! backoff and jitter. A refusal by the coordinator (bad token, protocol version) is final.
//!
//! - this file: [`SessionConfig`], [`SessionError`] and [`run`], the reconnect loop;
//! - `link.rs`: dialing, the bearer token, the Attach/Welcome handshake, the clock probes;
//! - `attached.rs`: one attached session as a state machine, one method per event (Prepare,
//!   Start, Abort, heartbeat tick, end of stream);
//! - `prepare.rs`: a coordinator's plan checked against this agent's limits, then armed;
//! - `firing.rs`: an armed run fired, its intervals and result streamed back;
//! - `rejection.rs`: [`Rejection`], every reason sent back in a `Rejected` message.

use stampede_proto::token::Token;
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::time::Duration;

use stampede_proto::clock::unix_nanos_now;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::{ClientTlsConfig, Endpoint};

use crate::cidr::Cidr;
use crate::plan::DEFAULT_MAX_CONNECTIONS;

mod attached;
mod firing;
mod link;
mod prepare;
mod rejection;

pub use rejection::Rejection;

/// How an agent session is set up. Its `Debug` leaves the token out.
#[derive(Clone)]
pub struct SessionConfig {
    /// The coordinator, `http://HOST:PORT` (or `https://` with TLS).
    pub coordinator: String,
    /// Bearer token to present.
    pub token: Option<Token>,
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
            id: default_id(),
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
    /// The coordinator went away after its runs, with nothing in flight (`stampede run`
    /// exited): attach again at once, quietly.
    Idle(String),
    /// The coordinator refused us: stop.
    Refused(tonic::Status),
}

/// How many times in a row an "id already attached" refusal is retried (with the usual
/// backoff, ~23 s in all: more than the coordinator's keepalive, 5 s pings with a 10 s
/// timeout, takes to drop a dead stream).
const DUPLICATE_RETRIES: u32 = 7;

/// Runs the agent until `shutdown`, reconnecting with backoff and jitter whenever the
/// coordinator goes away.
pub async fn run(config: SessionConfig, shutdown: CancellationToken) -> Result<(), SessionError> {
    let endpoint = endpoint(&config)?;
    let mut retry = Retry::new(config.max_retries);
    loop {
        let attached_at = Instant::now();
        let ended = match link::attach(&config, &endpoint, &shutdown).await {
            Ok(link) => attached::Session::new(&config, link).run(&shutdown).await,
            Err(ended) => ended,
        };
        let wait = match retry.after(ended, attached_at.elapsed()) {
            ControlFlow::Continue(wait) => wait,
            ControlFlow::Break(done) => return done,
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The reconnect policy: exponential backoff with jitter, reset by a session that lived a
/// while; a refusal is final, except a few "id already attached".
struct Retry {
    /// The next wait, before jitter.
    backoff: Duration,
    /// Failed attempts in a row.
    failures: u32,
    /// "id already attached" refusals in a row.
    duplicates: u32,
    /// Give up after this many failures in a row (`None`: never).
    max_retries: Option<u32>,
    /// Since when failures are expected (the coordinator ended its run and left): logged
    /// at debug, retried at a short, steady pace so the next run finds this agent at once.
    quiet_since: Option<Instant>,
}

impl Retry {
    const FIRST_BACKOFF: Duration = Duration::from_millis(200);
    const MAX_BACKOFF: Duration = Duration::from_secs(10);
    /// A session that lived longer than this resets the backoff.
    const HEALTHY: Duration = Duration::from_secs(10);
    /// The steady retry pace after a run ended and its coordinator left.
    const QUIET_BACKOFF: Duration = Duration::from_millis(500);
    /// How long that quiet lasts before an absent coordinator is worth a warning again.
    const QUIET_FOR: Duration = Duration::from_secs(120);

    fn new(max_retries: Option<u32>) -> Retry {
        Retry {
            backoff: Retry::FIRST_BACKOFF,
            failures: 0,
            duplicates: 0,
            max_retries,
            quiet_since: None,
        }
    }

    /// After a session that lived `lived` and then ended: how long to wait before the next
    /// attempt, or how [`run`] returns.
    fn after(
        &mut self,
        ended: Ended,
        lived: Duration,
    ) -> ControlFlow<Result<(), SessionError>, Duration> {
        let last = match ended {
            Ended::Shutdown => return ControlFlow::Break(Ok(())),
            // After a network break the coordinator may still hold our old registration
            // until its keepalive notices: retry a few times before calling it a real clash
            // (another agent with this id).
            Ended::Refused(s)
                if s.code() == tonic::Code::AlreadyExists
                    && self.duplicates < DUPLICATE_RETRIES =>
            {
                self.duplicates += 1;
                s.message().to_owned()
            }
            Ended::Refused(s) => {
                return ControlFlow::Break(Err(SessionError::Refused {
                    code: s.code(),
                    message: s.message().to_owned(),
                }));
            }
            Ended::Idle(why) => {
                // The normal end of a one-shot `stampede run`: it ends each stream cleanly
                // before its process exits (a coordinator before that just exited, and the
                // stream broke: an h2 "error reading a body"). Nothing failed: the cause is
                // detail for debugging, not an error to show.
                tracing::info!("run over and the coordinator gone; waiting for the next one");
                tracing::debug!(cause = %why, "how the coordinator's stream ended");
                self.duplicates = 0;
                self.failures = 0;
                self.backoff = Retry::FIRST_BACKOFF;
                self.quiet_since = Some(Instant::now());
                return ControlFlow::Continue(Duration::ZERO);
            }
            Ended::Broken(why) => {
                self.duplicates = 0;
                why
            }
        };
        let quiet = self
            .quiet_since
            .is_some_and(|since| lived < Retry::HEALTHY && since.elapsed() < Retry::QUIET_FOR);
        if !quiet {
            self.quiet_since = None;
        }
        if lived > Retry::HEALTHY {
            self.backoff = Retry::FIRST_BACKOFF;
            self.failures = 0;
        }
        self.failures += 1;
        if self.max_retries.is_some_and(|m| self.failures > m) {
            return ControlFlow::Break(Err(SessionError::Unreachable {
                attempts: self.failures,
                last,
            }));
        }
        if quiet {
            tracing::debug!(cause = %last, "no coordinator yet");
            return ControlFlow::Continue(Retry::QUIET_BACKOFF);
        }
        let wait = self.backoff + jitter(self.backoff / 2);
        tracing::warn!(cause = %last, retry_in_ms = wait.as_millis() as u64, "coordinator unavailable");
        self.backoff = (self.backoff * 2).min(Retry::MAX_BACKOFF);
        ControlFlow::Continue(wait)
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

/// An agent id unique per process: the host name and the pid, so N agents started on one
/// host attach without `--id`.
pub fn default_id() -> String {
    format!("{}-{}", hostname(), std::process::id())
}

/// This host's name, as the kernel knows it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_token() {
        let config = SessionConfig {
            token: Token::new("s3cret-t0ken"),
            ..SessionConfig::loopback()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    /// After a run, the coordinator leaving is no failure: attach again at once, then keep
    /// trying at a short, steady pace (no warning, no growing backoff) for a while.
    #[test]
    fn after_a_run_the_agent_attaches_again_at_once_and_quietly() {
        let mut retry = Retry::new(None);
        let idle = Ended::Idle("the coordinator closed the stream".into());
        assert!(matches!(
            retry.after(idle, Duration::from_secs(1)),
            ControlFlow::Continue(Duration::ZERO)
        ));
        for _ in 0..20 {
            let refused = Ended::Broken("cannot connect".into());
            assert!(matches!(
                retry.after(refused, Duration::ZERO),
                ControlFlow::Continue(w) if w == Retry::QUIET_BACKOFF
            ));
        }
        // A real outage after a healthy session is back to the usual backoff.
        let broken = Ended::Broken("reset".into());
        assert!(matches!(
            retry.after(broken, Duration::from_secs(60)),
            ControlFlow::Continue(w) if w >= Retry::FIRST_BACKOFF && w < Retry::QUIET_BACKOFF
        ));
    }

    #[test]
    fn the_default_id_is_unique_per_process() {
        let id = SessionConfig::loopback().id;
        assert!(id.starts_with(&hostname()), "{id}");
        assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
    }

    #[test]
    fn retry_backs_off_gives_up_and_takes_refusals_as_final() {
        let broken = || Ended::Broken("gone".into());
        let mut retry = Retry::new(Some(2));
        let first = retry.after(broken(), Duration::ZERO);
        assert!(matches!(first, ControlFlow::Continue(w) if w >= Retry::FIRST_BACKOFF));
        assert!(matches!(
            retry.after(broken(), Duration::ZERO),
            ControlFlow::Continue(_)
        ));
        assert!(matches!(
            retry.after(broken(), Duration::ZERO),
            ControlFlow::Break(Err(SessionError::Unreachable { attempts: 3, .. }))
        ));
        // A session that lived a while starts the count again.
        assert!(matches!(
            retry.after(broken(), Duration::from_secs(60)),
            ControlFlow::Continue(_)
        ));

        let mut retry = Retry::new(None);
        let duplicate = || Ended::Refused(tonic::Status::already_exists("id taken"));
        for _ in 0..DUPLICATE_RETRIES {
            assert!(matches!(
                retry.after(duplicate(), Duration::ZERO),
                ControlFlow::Continue(_)
            ));
        }
        assert!(matches!(
            retry.after(duplicate(), Duration::ZERO),
            ControlFlow::Break(Err(SessionError::Refused {
                code: tonic::Code::AlreadyExists,
                ..
            }))
        ));
        let denied = Ended::Refused(tonic::Status::unauthenticated("bad token"));
        assert!(matches!(
            Retry::new(None).after(denied, Duration::ZERO),
            ControlFlow::Break(Err(SessionError::Refused { .. }))
        ));
        assert!(matches!(
            Retry::new(None).after(Ended::Shutdown, Duration::ZERO),
            ControlFlow::Break(Ok(()))
        ));
    }
}
