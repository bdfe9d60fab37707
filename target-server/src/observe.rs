//! `stampede-target observe`: the target's queue and counter view for a listener owned by
//! another process on this host (nginx, haproxy, ...), through sock_diag ([`crate::diag`]).
//! Its stats have the same keys as the target's own; what only the owner can know (the
//! backlog it asked for, how many it accepted) is `null`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use stampede_proto::netstat::Netstat;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::diag::{Diag, ListenerInfo};
use crate::stats::{CounterDeltas, TargetStats, write_json_atomic};
use crate::timeline::Timeline;
use crate::{Error, config::ConfigError};

/// What to observe and for how long.
#[derive(Debug, Clone)]
pub struct ObserveConfig {
    /// Listening port to watch.
    pub port: u16,
    /// Only listeners bound to this address (any address if `None`).
    pub addr: Option<IpAddr>,
    /// Time between two dumps.
    pub interval: Duration,
    /// Stop by itself after this long.
    pub duration: Option<Duration>,
    /// Where to write the stats JSON at exit.
    pub stats_json: Option<PathBuf>,
}

impl ObserveConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.port == 0 {
            return Err(ConfigError::new(
                "port",
                0,
                "must be the listener's port, 1-65535",
            ));
        }
        if self.interval < Duration::from_micros(100) || self.interval > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "interval",
                stampede_proto::duration::format_duration(self.interval),
                "must be between 100us and 1m",
            ));
        }
        Ok(())
    }

    fn matches(&self, l: &ListenerInfo) -> bool {
        l.addr.port() == self.port && self.addr.is_none_or(|a| a == l.addr.ip())
    }

    fn describe(&self) -> String {
        match self.addr {
            Some(a) => std::net::SocketAddr::new(a, self.port).to_string(),
            None => format!("*:{}", self.port),
        }
    }
}

/// Watches until `shutdown` or the duration; calls `status` about every 250 ms with the
/// current stats (for a live terminal line) and returns the final stats with the timeline.
/// Fails at once if no listener matches at the start.
pub async fn run(
    config: &ObserveConfig,
    shutdown: CancellationToken,
    status: &mut (dyn FnMut(&TargetStats) + Send),
) -> Result<TargetStats, Error> {
    config.validate()?;
    let mut diag = Diag::open().map_err(Error::io("opening sock_diag netlink"))?;
    let mut netstat = Netstat::open().map_err(Error::io("opening /proc/net/netstat"))?;
    let baseline = netstat
        .read()
        .map_err(Error::io("reading kernel counters"))?;
    let listeners = diag.listeners().map_err(Error::io("dumping listeners"))?;
    if !listeners.iter().any(|l| config.matches(l)) {
        return Err(Error::Io {
            op: "finding the listener",
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no TCP listener on {} in this network namespace",
                    config.describe()
                ),
            ),
        });
    }
    let somaxconn = stampede_proto::sysctl::read_u64(stampede_proto::sysctl::SOMAXCONN)
        .map_err(Error::io("reading somaxconn"))? as u32;
    let start = Instant::now();
    let mut stats = TargetStats {
        listen_addr: config.describe(),
        backlog_requested: None,
        backlog_effective: 0,
        somaxconn,
        accept_queue_max: 0,
        accept_queue_len: 0,
        accepted: None,
        counters: CounterDeltas::default(),
        paused: false,
        elapsed_us: 0,
        samples: 0,
        timeline: None,
    };
    let mut timeline = Timeline::new(config.interval.as_micros().max(1000) as u64, 4096);
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let deadline = config.duration.map(|d| start + d);
    let mut next_status = start;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = async { match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            } } => break,
            _ = tick.tick() => {}
        }
        let found: Vec<ListenerInfo> = diag
            .listeners()
            .map_err(Error::io("dumping listeners"))?
            .into_iter()
            .filter(|l| config.matches(l))
            .collect();
        // Several sockets can share a port (SO_REUSEPORT, IPv4 + IPv6): their queues add up.
        let len: u32 = found.iter().map(|l| l.queue_len).sum();
        stats.accept_queue_len = len;
        stats.accept_queue_max = stats.accept_queue_max.max(len);
        stats.backlog_effective = found.iter().map(|l| l.backlog).max().unwrap_or(0);
        stats.samples += 1;
        let now = Instant::now();
        stats.elapsed_us = (now - start).as_micros() as u64;
        timeline.record(stats.elapsed_us, len, 0);
        if now >= next_status {
            next_status = now + Duration::from_millis(250);
            let current = netstat
                .read()
                .map_err(Error::io("reading kernel counters"))?;
            stats.counters = CounterDeltas::between(&baseline, &current);
            status(&stats);
        }
    }
    let current = netstat
        .read()
        .map_err(Error::io("reading kernel counters"))?;
    stats.counters = CounterDeltas::between(&baseline, &current);
    stats.elapsed_us = start.elapsed().as_micros() as u64;
    stats.timeline = Some(timeline);
    if let Some(path) = &config.stats_json {
        write_json_atomic(path, &stats).map_err(Error::io("writing --stats-json"))?;
    }
    Ok(stats)
}
