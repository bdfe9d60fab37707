//! `stampede-target observe`: the target's queue and counter view for a listener owned by
//! another process on this host (nginx, haproxy, ...), through sock_diag ([`crate::diag`]).
//! Its stats have the same keys as the target's own; what only the owner can know (the
//! backlog it asked for, how many it accepted) is `null`. With `--control ADDR` it serves
//! `TargetControl` too (Stats, ResetCounters, WatchQueue; Configure and Pause are refused), so
//! `stampede run --target-control` puts a real server's queue and counters in the report.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stampede_proto::netstat::{Counters, Netstat};
use stampede_proto::output::write_json_atomic;
use stampede_proto::pb;
use stampede_proto::target::{CounterDeltas, TargetKind, TargetStats};
use stampede_proto::timeline::Timeline;
use tokio::sync::broadcast;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::control::{self, ControlAuth, Source};
use crate::diag::{Diag, ListenerInfo};
use crate::{Change, Error, config::ConfigError};

/// Timeline points kept at most (the bucket widens as the run grows).
const TIMELINE_CAPACITY: usize = 4096;

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
    /// Serve `TargetControl` (read-only) here.
    pub control: Option<SocketAddr>,
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

    /// The timeline's first bucket: one sample interval, at least 1 ms.
    fn timeline_bucket_us(&self) -> u64 {
        self.interval.as_micros().max(1000) as u64
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

/// What the watcher knows; shared by the sampling loop and the control service.
#[derive(Debug)]
struct State {
    config: ObserveConfig,
    diag: Diag,
    netstat: Netstat,
    baseline: Counters,
    start: Instant,
    stats: TargetStats,
    timeline: Timeline,
}

impl State {
    /// One dump: the queue now, its max, the effective backlog. Returns the queue length.
    fn sample(&mut self) -> Result<u32, Error> {
        let found: Vec<ListenerInfo> = self
            .diag
            .listeners()
            .map_err(Error::io("dumping listeners"))?
            .into_iter()
            .filter(|l| self.config.matches(l))
            .collect();
        // Several sockets can share a port (SO_REUSEPORT, IPv4 + IPv6): their queues add up.
        let len: u32 = found.iter().map(|l| l.queue_len).sum();
        let s = &mut self.stats;
        s.accept_queue_len = len;
        s.accept_queue_max = s.accept_queue_max.max(len);
        s.backlog_effective = found.iter().map(|l| l.backlog).max().unwrap_or(0);
        s.samples += 1;
        s.elapsed_us = self.start.elapsed().as_micros() as u64;
        self.timeline.record(s.elapsed_us, len, 0);
        Ok(len)
    }

    fn refresh_counters(&mut self) -> Result<(), Error> {
        let now = self
            .netstat
            .read()
            .map_err(Error::io("reading kernel counters"))?;
        self.stats.counters = CounterDeltas::between(&self.baseline, &now);
        self.stats.elapsed_us = self.start.elapsed().as_micros() as u64;
        Ok(())
    }

    /// A new measurement from now: counter baseline, queue max, samples, timeline.
    fn reset(&mut self) -> Result<(), Error> {
        self.baseline = self
            .netstat
            .read()
            .map_err(Error::io("reading kernel counters"))?;
        self.start = Instant::now();
        self.stats.samples = 0;
        self.stats.accept_queue_max = 0;
        self.timeline.clear(self.config.timeline_bucket_us());
        self.sample()?;
        self.refresh_counters()
    }
}

/// A handle on a running watch: what the control service serves.
#[derive(Debug, Clone)]
pub struct ObserveHandle {
    state: Arc<Mutex<State>>,
    queue_tx: broadcast::Sender<pb::QueueSample>,
}

impl ObserveHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("observe state lock poisoned")
    }
}

impl Source for ObserveHandle {
    fn configure(&self, _: Change) -> Result<TargetStats, Error> {
        Err(Error::Unsupported(
            "this is stampede-target observe, watching another process's listener: its backlog \
             and accept policy belong to that process (restart it with the backlog to try)"
                .into(),
        ))
    }

    fn set_paused(&self, _: bool) -> Result<TargetStats, Error> {
        self.configure(Change::default())
    }

    fn reset_counters(&self) -> Result<TargetStats, Error> {
        let mut st = self.lock();
        st.reset()?;
        Ok(st.stats.clone())
    }

    fn stats(&self, with_timeline: bool) -> Result<TargetStats, Error> {
        // The queue as of now, not as of the last tick.
        let mut st = self.lock();
        st.sample()?;
        st.refresh_counters()?;
        let mut stats = st.stats.clone();
        stats.timeline = with_timeline.then(|| st.timeline.clone());
        Ok(stats)
    }

    fn watch_queue(&self) -> broadcast::Receiver<pb::QueueSample> {
        self.queue_tx.subscribe()
    }
}

/// A watch set up and ready to run: the listener was found, the control port is bound.
#[derive(Debug)]
pub struct Observe {
    handle: ObserveHandle,
    control: Option<tokio::net::TcpListener>,
    control_auth: ControlAuth,
}

impl Observe {
    /// Validates `config`, finds the listener (an error if none matches), takes the counter
    /// baseline and binds the control port, in the calling thread's namespace. Needs a tokio
    /// runtime when a control port is asked for.
    pub fn bind(config: &ObserveConfig) -> Result<Observe, Error> {
        config.validate()?;
        let mut diag = Diag::open().map_err(Error::io("opening sock_diag netlink"))?;
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
        Observe::open(config)
    }

    /// As [`bind`](Observe::bind), without requiring the listener to be there now (a
    /// supervised server's listener comes and goes with each restart).
    pub(crate) fn open(config: &ObserveConfig) -> Result<Observe, Error> {
        config.validate()?;
        let diag = Diag::open().map_err(Error::io("opening sock_diag netlink"))?;
        let mut netstat = Netstat::open().map_err(Error::io("opening /proc/net/netstat"))?;
        let baseline = netstat
            .read()
            .map_err(Error::io("reading kernel counters"))?;
        let somaxconn = stampede_proto::sysctl::read_u64(stampede_proto::sysctl::SOMAXCONN)
            .map_err(Error::io("reading somaxconn"))? as u32;
        let control = config.control.map(control::bind).transpose()?;
        let mut state = State {
            config: config.clone(),
            diag,
            netstat,
            baseline,
            start: Instant::now(),
            stats: TargetStats {
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
                kind: Some(TargetKind::Observe),
                accept_policy: None,
                server_pid: None,
            },
            timeline: Timeline::new(config.timeline_bucket_us(), TIMELINE_CAPACITY),
        };
        state.sample()?;
        let (queue_tx, _) = broadcast::channel(1024);
        Ok(Observe {
            handle: ObserveHandle {
                state: Arc::new(Mutex::new(state)),
                queue_tx,
            },
            control,
            control_auth: ControlAuth::default(),
        })
    }

    /// The token every control call must carry (ResetCounters alters what a run reports, so
    /// an observer needs one as much as a target) and the TLS the control service presents.
    pub fn with_control_auth(mut self, auth: ControlAuth) -> Observe {
        self.control_auth = auth;
        self
    }

    /// The control service's address, if one was asked for.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// A handle on the watch (what the control service serves).
    pub fn handle(&self) -> ObserveHandle {
        self.handle.clone()
    }

    /// Watches until `shutdown` or the duration; calls `status` about every 250 ms with the
    /// current stats (for a live terminal line); writes `--stats-json` and returns the final
    /// stats with the timeline.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        status: &mut (dyn FnMut(&TargetStats) + Send),
    ) -> Result<TargetStats, Error> {
        let source = self.handle.clone();
        self.run_with(source, shutdown, status).await
    }

    /// As [`run`](Observe::run), with the control service serving `source` (a supervisor's
    /// handle over this watch) instead of the watch itself.
    pub(crate) async fn run_with<S: Source + Clone>(
        self,
        source: S,
        shutdown: CancellationToken,
        status: &mut (dyn FnMut(&TargetStats) + Send),
    ) -> Result<TargetStats, Error> {
        let Observe {
            handle,
            control,
            control_auth,
        } = self;
        let config = handle.lock().config.clone();
        let stop = shutdown.child_token();
        let control_task = control
            .map(|l| control::spawn(l, source, control_auth, stop.clone()))
            .transpose()?;
        let result = watch(&handle, &config, &stop, status).await;
        stop.cancel();
        if let Some(task) = control_task {
            control::stop(task).await;
        }
        result?;
        let stats = {
            let mut st = handle.lock();
            st.refresh_counters()?;
            let mut stats = st.stats.clone();
            stats.timeline = Some(st.timeline.clone());
            stats
        };
        if let Some(path) = &config.stats_json {
            write_json_atomic(path, &stats).map_err(Error::io("writing --stats-json"))?;
        }
        Ok(stats)
    }
}

/// The sampling loop: one dump per interval, counters and `status` every 250 ms.
async fn watch(
    handle: &ObserveHandle,
    config: &ObserveConfig,
    stop: &CancellationToken,
    status: &mut (dyn FnMut(&TargetStats) + Send),
) -> Result<(), Error> {
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let deadline = config.duration.map(|d| start + d);
    let mut next_status = start;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = async { match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            } } => return Ok(()),
            _ = tick.tick() => {}
        }
        let now = tokio::time::Instant::now();
        let snapshot = {
            let mut st = handle.lock();
            let len = st.sample()?;
            let s = &st.stats;
            // No subscriber is fine: nobody is watching.
            let _ = handle.queue_tx.send(pb::QueueSample {
                since_start_us: s.elapsed_us,
                queue_len: len,
                backlog_effective: s.backlog_effective,
                accepted: 0,
            });
            if now >= next_status {
                st.refresh_counters()?;
                Some(st.stats.clone())
            } else {
                None
            }
        };
        if let Some(s) = snapshot {
            next_status = now + Duration::from_millis(250);
            status(&s);
        }
    }
}

/// Watches until `shutdown` or the duration (see [`Observe::run`]). Fails at once if no
/// listener matches at the start.
pub async fn run(
    config: &ObserveConfig,
    shutdown: CancellationToken,
    status: &mut (dyn FnMut(&TargetStats) + Send),
) -> Result<TargetStats, Error> {
    Observe::bind(config)?.run(shutdown, status).await
}
