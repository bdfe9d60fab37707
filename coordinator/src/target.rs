//! The coordinator's side of `stampede.v1.TargetControl`: set the target's backlog and accept
//! rate before a run, reset its counters, read its stats after (with the accept-queue
//! timeline, for report.json's `target.timeline`), and drain its accept queue between the
//! steps of a sweep, putting its accept policy back as it was. Every call carries the run's bearer token ([`TargetAuth`]),
//! since a protected target refuses calls without it; `https://` URLs use TLS.

use std::time::Duration;

use stampede_proto::clock::unix_nanos_now;
use stampede_proto::pb::{self, target_control_client::TargetControlClient};
use stampede_proto::target::AcceptPolicy;
use stampede_proto::token::Token;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig};

/// A target control endpoint that failed; the message names the URL.
#[derive(Debug, thiserror::Error)]
#[error("target control {url}: {reason}")]
pub struct TargetError {
    /// The control URL.
    pub url: String,
    /// What went wrong.
    pub reason: String,
}

/// What the coordinator presents to the target's control service: the run's bearer token
/// (the coordinator's `--token-file`) and, for `https://` URLs, the CA to verify it with.
#[derive(Debug, Clone, Default)]
pub struct TargetAuth {
    /// Sent as `authorization: Bearer ...` on every call.
    pub token: Option<Token>,
    /// TLS settings for an `https://` control URL.
    pub tls: Option<ClientTlsConfig>,
}

/// Adds the bearer token to every call; the value is marked sensitive, so it stays out of
/// any debug output of the request.
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

impl Bearer {
    fn new(token: Option<&Token>) -> Bearer {
        Bearer(token.and_then(|t| {
            // A token file holds printable ASCII only (`Token::from_file`), so this parses.
            let mut v: MetadataValue<Ascii> = t.header_value().parse().ok()?;
            v.set_sensitive(true);
            Some(v)
        }))
    }
}

/// True when `uri` names this host (a loopback address or `localhost`).
fn is_loopback(uri: &http::Uri) -> bool {
    let host = uri.host().unwrap_or_default();
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// How long a control call may take.
const CALL_WITHIN: Duration = Duration::from_secs(10);
/// How long Configure may take: `stampede-target supervise` restarts the real server (its
/// graceful stop, the port freed, the new listener up: 10 s each by default).
const CONFIGURE_WITHIN: Duration = Duration::from_secs(60);

/// `call`, given up after `limit` (as DEADLINE_EXCEEDED).
async fn within<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<tonic::Response<T>, tonic::Status> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(tonic::Status::deadline_exceeded(format!(
            "no answer within {}",
            stampede_proto::duration::human_us(limit.as_micros() as u64)
        )))
    })
}

/// A connected target control client.
#[derive(Debug, Clone)]
pub struct TargetControl {
    url: String,
    client: TargetControlClient<InterceptedService<Channel, Bearer>>,
    /// When the last ResetCounters took effect, coordinator time (ns since the epoch): the
    /// midpoint of the call, within half its round trip. The target's timeline counts from it.
    reset_at: Option<i64>,
}

impl TargetControl {
    /// Connects (5 s timeout) with `auth`; every request then has 10 s.
    pub async fn connect(url: &str, auth: &TargetAuth) -> Result<TargetControl, TargetError> {
        let err = |reason: String| TargetError {
            url: url.to_owned(),
            reason,
        };
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
            .map_err(|e| err(e.to_string()))?;
        if auth.token.is_some() && auth.tls.is_none() && !is_loopback(endpoint.uri()) {
            tracing::warn!(
                url,
                "the token travels to the target in clear text: use an https:// target control \
                 with --target-control-ca off a trusted network"
            );
        }
        if let Some(tls) = &auth.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| err(format!("TLS configuration: {e}")))?;
        }
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            // A target under test can stall or die: no request may hang a run. Each call
            // carries its own bound (`bounded`): Configure may restart a supervised server.
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| err(format!("cannot connect: {e}")))?;
        Ok(TargetControl {
            url: url.to_owned(),
            client: TargetControlClient::with_interceptor(
                channel,
                Bearer::new(auth.token.as_ref()),
            ),
            reset_at: None,
        })
    }

    fn err(&self, s: tonic::Status) -> TargetError {
        let reason = match s.code() {
            tonic::Code::Unauthenticated => format!("refused: {}", s.message()),
            _ => s.message().to_owned(),
        };
        TargetError {
            url: self.url.clone(),
            reason,
        }
    }

    /// Sets the backlog (re-listen) and/or the accept rate (`f64::INFINITY`: as fast as
    /// possible; 0: never); `None` leaves a setting as it is.
    pub async fn configure(
        &mut self,
        backlog: Option<i32>,
        accept_rate: Option<f64>,
    ) -> Result<pb::TargetStats, TargetError> {
        let accept_policy = accept_rate.map(|r| pb::AcceptPolicy {
            rate_per_sec: r.is_finite().then_some(r),
            ..Default::default()
        });
        let req = pb::ConfigureRequest {
            backlog,
            accept_policy,
            on_accept: None,
        };
        match within(CONFIGURE_WITHIN, self.client.configure(req)).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.err(s)),
        }
    }

    /// Sets the backlog (re-listen, or a supervised server's restart) and/or the whole accept
    /// policy (its delay counting from now); `None` leaves a setting as it is.
    pub async fn configure_policy(
        &mut self,
        backlog: Option<i32>,
        policy: Option<&AcceptPolicy>,
    ) -> Result<pb::TargetStats, TargetError> {
        let req = pb::ConfigureRequest {
            backlog,
            accept_policy: policy.map(Into::into),
            on_accept: None,
        };
        match within(CONFIGURE_WITHIN, self.client.configure(req)).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.err(s)),
        }
    }

    /// Starts a new measurement on the target, and notes when ([`TargetControl::reset_at`]).
    pub async fn reset(&mut self) -> Result<pb::TargetStats, TargetError> {
        let sent = unix_nanos_now();
        let call = self.client.reset_counters(pb::ResetCountersRequest {});
        match within(CALL_WITHIN, call).await {
            Ok(r) => {
                let back = unix_nanos_now();
                self.reset_at = Some(sent + (back - sent) / 2);
                Ok(r.into_inner())
            }
            Err(s) => Err(self.err(s)),
        }
    }

    /// When the last [`TargetControl::reset`] took effect, coordinator time (ns since the
    /// epoch, within half the call's round trip): the zero of the target's timeline.
    pub fn reset_at(&self) -> Option<i64> {
        self.reset_at
    }

    /// A snapshot, without the timeline.
    pub async fn stats(&mut self) -> Result<pb::TargetStats, TargetError> {
        self.stats_request(false).await
    }

    /// A snapshot with the accept-queue timeline since the last reset: a run's final stats.
    pub async fn final_stats(&mut self) -> Result<pb::TargetStats, TargetError> {
        self.stats_request(true).await
    }

    async fn stats_request(&mut self, with_timeline: bool) -> Result<pb::TargetStats, TargetError> {
        let req = pb::StatsRequest { with_timeline };
        match within(CALL_WITHIN, self.client.stats(req)).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.err(s)),
        }
    }

    /// Empties the accept queue so the next step starts from an empty queue, and leaves the
    /// accept policy exactly as `restore` has it. stampede-target's own listener (`restore`
    /// given) accepts as fast as possible until the queue is empty, then gets `restore` back;
    /// a real server (`None`: its policy is its own) is waited for. Gives up after `within`
    /// and returns the queue length left.
    pub async fn drain(
        &mut self,
        within: Duration,
        restore: Option<&AcceptPolicy>,
    ) -> Result<u32, TargetError> {
        if restore.is_some() {
            self.configure(None, Some(f64::INFINITY)).await?;
        }
        let deadline = tokio::time::Instant::now() + within;
        let left = loop {
            let left = match self.stats().await {
                Ok(stats) => stats.accept_queue_len,
                Err(e) => {
                    // The policy goes back even when the queue cannot be watched.
                    if restore.is_some() {
                        let _ = self.configure_policy(None, restore).await;
                    }
                    return Err(e);
                }
            };
            if left == 0 || tokio::time::Instant::now() >= deadline {
                break left;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if restore.is_some() {
            self.configure_policy(None, restore).await?;
        }
        Ok(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_recognised() {
        for (url, local) in [
            ("http://127.0.0.1:8001", true),
            ("http://[::1]:8001", true),
            ("http://localhost:8001", true),
            ("http://198.18.0.5:8001", false),
            ("https://target.example:8001", false),
        ] {
            assert_eq!(is_loopback(&url.parse().unwrap()), local, "{url}");
        }
    }

    #[test]
    fn the_bearer_value_is_sensitive() {
        let b = Bearer::new(Token::new("s3cret").as_ref());
        let v = b.0.expect("a printable token is a header value");
        assert!(v.is_sensitive());
        assert_eq!(v.to_str().unwrap(), "Bearer s3cret");
        assert!(
            !format!(
                "{:?}",
                TargetAuth {
                    token: Token::new("s3cret"),
                    tls: None
                }
            )
            .contains("s3cret")
        );
    }
}
