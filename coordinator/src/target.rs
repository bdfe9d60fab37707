//! The coordinator's side of `stampede.v1.TargetControl`: set the target's backlog and accept
//! rate before a run, reset its counters, read its stats after, and drain its accept queue
//! between the steps of a sweep.

use std::time::Duration;

use stampede_proto::pb::{self, target_control_client::TargetControlClient};
use tonic::transport::Channel;

/// A target control endpoint that failed; the message names the URL.
#[derive(Debug, thiserror::Error)]
#[error("target control {url}: {reason}")]
pub struct TargetError {
    /// The control URL.
    pub url: String,
    /// What went wrong.
    pub reason: String,
}

/// A connected target control client.
#[derive(Debug, Clone)]
pub struct TargetControl {
    url: String,
    client: TargetControlClient<Channel>,
}

impl TargetControl {
    /// Connects (5 s timeout); every request then has 10 s.
    pub async fn connect(url: &str) -> Result<TargetControl, TargetError> {
        let err = |reason: String| TargetError {
            url: url.to_owned(),
            reason,
        };
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
            .map_err(|e| err(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            // A target under test can stall or die: no request may hang a run.
            .timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| err(format!("cannot connect: {e}")))?;
        Ok(TargetControl {
            url: url.to_owned(),
            client: TargetControlClient::new(channel),
        })
    }

    fn err(&self, s: tonic::Status) -> TargetError {
        TargetError {
            url: self.url.clone(),
            reason: s.message().to_owned(),
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
        match self.client.configure(req).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.err(s)),
        }
    }

    /// Starts a new measurement on the target.
    pub async fn reset(&mut self) -> Result<pb::TargetStats, TargetError> {
        match self
            .client
            .reset_counters(pb::ResetCountersRequest {})
            .await
        {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.err(s)),
        }
    }

    /// A snapshot.
    pub async fn stats(&mut self) -> Result<pb::TargetStats, TargetError> {
        match self.client.stats(pb::StatsRequest {}).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.err(s)),
        }
    }

    /// Accepts as fast as possible until the accept queue is empty (or `within` passes),
    /// so the next step starts from an empty queue. Returns the queue length left.
    pub async fn drain(&mut self, within: Duration) -> Result<u32, TargetError> {
        self.configure(None, Some(f64::INFINITY)).await?;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = self.stats().await?.accept_queue_len;
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return Ok(left);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
