//! stampede-target: the listener under test.
//!
//! It listens with exactly the backlog it is given, accepts on a policy that can hold
//! connections in the kernel's accept queue (delay, rate, burst, pause), does something
//! simple with each accepted connection, and watches its own accept queue and the kernel's
//! listener counters, so that a run can say what the kernel did with every SYN.
//!
//! - [`cli`]: the binary's flags and commands; [`config`]: validated settings;
//!   [`listener`]: the socket and what the kernel made of its backlog; `accept`: the accept
//!   loop; `action`: on-accept actions; `sampler`: the 1 kHz queue watch, its history a
//!   bounded [`stampede_proto::timeline`]; [`control`]: the `stampede.v1.TargetControl` gRPC
//!   service;
//!   [`observe`] and [`diag`]: the same view of another process's listener.
//! - The stats it reports (report.json's `target{}` object) are the contract type
//!   [`stampede_proto::target::TargetStats`].
//!
//! [`Target::bind`] creates every socket at once, in the calling thread's network
//! namespace, so a bad address fails before anything runs and tests can place a target in
//! a namespace of their own; [`Target::run`] then serves until a cancellation token fires
//! or `--duration` passes.

pub mod cli;
pub mod config;
pub mod control;
pub mod diag;
pub mod listener;
pub mod observe;
pub mod supervise;

mod accept;
mod action;
mod sampler;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stampede_proto::netstat::{Counters, Netstat};
use stampede_proto::output::write_json_atomic;
use stampede_proto::pb;
use stampede_proto::target::{CounterDeltas, TargetKind, TargetStats};
use stampede_proto::timeline::Timeline;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept::PolicyState;
use crate::config::{AcceptPolicy, Config, ConfigError, OnAccept};
use crate::control::ControlAuth;
use crate::listener::Listener;

/// Why the target could not start or went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is unusable (exit 64).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The control token file is unusable (exit 64); the message names the file.
    #[error(transparent)]
    Token(#[from] stampede_proto::token::TokenError),
    /// A control TLS file is unreadable (exit 64); the message names the file.
    #[error(transparent)]
    Tls(#[from] stampede_proto::tls::TlsFileError),
    /// A socket could not be bound (address in use, no permission ...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The kernel's answer.
        source: io::Error,
    },
    /// The request needs what this listener does not offer (observing another process's
    /// listener: its backlog and accepting belong to that process).
    #[error("{0}")]
    Unsupported(String),
    /// The supervised server failed: it died, or never listened in time (the message has
    /// its exit status and last stderr lines).
    #[error("{0}")]
    Server(String),
    /// Any other system call failed; the message says which operation.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The kernel's answer.
        source: io::Error,
    },
}

impl Error {
    fn io(op: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { op, source }
    }
}

/// Timeline buckets start at 1 ms and there are at most this many (≈ 100 KiB).
const TIMELINE_CAPACITY: usize = 4096;

/// State shared by the accept loop, the sampler, the control service and handles.
#[derive(Debug)]
pub(crate) struct Shared {
    listener: Listener,
    backlog_requested: AtomicI32,
    somaxconn: AtomicU32,
    policy: watch::Sender<PolicyState>,
    on_accept: Mutex<OnAccept>,
    accepted: AtomicU64,
    queue_len: AtomicU32,
    queue_max: AtomicU32,
    backlog_effective: AtomicU32,
    samples: AtomicU64,
    /// Start of the current measurement (bind, or the last reset) as an offset from `origin`.
    origin: Instant,
    epoch_offset_ns: AtomicU64,
    counters: Mutex<(Netstat, Counters)>,
    timeline: Mutex<Timeline>,
    timeline_bucket_us: u64,
    queue_tx: broadcast::Sender<pb::QueueSample>,
}

impl Shared {
    /// Time since start or the last reset.
    fn elapsed(&self) -> Duration {
        self.origin.elapsed().saturating_sub(Duration::from_nanos(
            self.epoch_offset_ns.load(Ordering::Relaxed),
        ))
    }
}

/// A bound target, ready to [`run`](Target::run).
#[derive(Debug)]
pub struct Target {
    shared: Arc<Shared>,
    control: Option<tokio::net::TcpListener>,
    control_auth: ControlAuth,
    config: Config,
}

/// A change to a running target; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// New listen() backlog.
    pub backlog: Option<i32>,
    /// New accept policy (its delay counts from now).
    pub accept: Option<AcceptPolicy>,
    /// New on-accept action.
    pub on_accept: Option<OnAccept>,
}

/// Controls a running target from the same process (the gRPC service uses one too).
#[derive(Debug, Clone)]
pub struct TargetHandle {
    shared: Arc<Shared>,
}

impl Target {
    /// Validates `config` and binds the listener (and the control port, if any) in the
    /// calling thread's network namespace. Needs a tokio runtime.
    pub fn bind(config: &Config) -> Result<Target, Error> {
        config.validate()?;
        let listener =
            Listener::bind(config.listen, config.backlog).map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let control = config.control.map(control::bind).transpose()?;
        let mut netstat = Netstat::open().map_err(Error::io("opening /proc/net/netstat"))?;
        let baseline = netstat
            .read()
            .map_err(Error::io("reading kernel counters"))?;
        let somaxconn = listener
            .somaxconn()
            .map_err(Error::io("reading somaxconn"))?;
        let queue = listener
            .queue()
            .map_err(Error::io("reading TCP_INFO of the listener"))?;
        let bucket_us = config.sample_every.as_micros().max(1000) as u64;
        let now = Instant::now();
        let shared = Arc::new(Shared {
            listener,
            backlog_requested: AtomicI32::new(config.backlog),
            somaxconn: AtomicU32::new(somaxconn),
            policy: watch::Sender::new(PolicyState {
                policy: config.accept.clone(),
                since: now,
            }),
            on_accept: Mutex::new(config.on_accept),
            accepted: AtomicU64::new(0),
            queue_len: AtomicU32::new(queue.len),
            queue_max: AtomicU32::new(queue.len),
            backlog_effective: AtomicU32::new(queue.backlog),
            samples: AtomicU64::new(0),
            origin: now,
            epoch_offset_ns: AtomicU64::new(0),
            counters: Mutex::new((netstat, baseline)),
            timeline: Mutex::new(Timeline::new(bucket_us, TIMELINE_CAPACITY)),
            timeline_bucket_us: bucket_us,
            queue_tx: broadcast::Sender::new(1024),
        });
        Ok(Target {
            shared,
            control,
            control_auth: ControlAuth::default(),
            config: config.clone(),
        })
    }

    /// The token every control call must carry and the TLS the control service presents
    /// (default: neither, which only a loopback control address should go without).
    pub fn with_control_auth(mut self, auth: ControlAuth) -> Target {
        self.control_auth = auth;
        self
    }

    /// The listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.listener.local_addr()
    }

    /// The control service's address, if one was asked for.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// A handle for controlling the target while it runs.
    pub fn handle(&self) -> TargetHandle {
        TargetHandle {
            shared: self.shared.clone(),
        }
    }

    /// Accepts, samples and serves control until `shutdown` fires or the configured duration
    /// passes. Then it stops accepting, closes the connections it holds, writes
    /// `--stats-json` if asked, and returns the final stats with the timeline.
    pub async fn run(self, shutdown: CancellationToken) -> Result<TargetStats, Error> {
        let Target {
            shared,
            control,
            control_auth,
            config,
        } = self;
        let stop = shutdown.child_token();
        let conn_cancel = CancellationToken::new();
        // The control server runs outside `tasks`: a client may keep its channel open
        // forever, so shutdown gives it a short grace and then aborts it.
        let control_task = control
            .map(|listener| {
                let handle = TargetHandle {
                    shared: shared.clone(),
                };
                control::spawn(listener, handle, control_auth, stop.clone())
            })
            .transpose()?;
        let tasks = TaskTracker::new();
        let conns = TaskTracker::new();
        tasks.spawn(sampler::run(
            shared.clone(),
            config.sample_every,
            stop.clone(),
        ));
        tasks.spawn(accept::run(
            shared.clone(),
            conns.clone(),
            stop.clone(),
            conn_cancel.clone(),
        ));
        match config.duration {
            Some(d) => {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(d) => tracing::info!(duration = ?d, "duration reached"),
                }
            }
            None => stop.cancelled().await,
        }
        stop.cancel();
        tasks.close();
        let handle = TargetHandle { shared };
        let stats = handle
            .snapshot(true)
            .map_err(Error::io("reading final stats"))?;
        conn_cancel.cancel();
        conns.close();
        if tokio::time::timeout(Duration::from_secs(5), async {
            tasks.wait().await;
            conns.wait().await;
        })
        .await
        .is_err()
        {
            tracing::warn!("some tasks did not stop within 5s");
        }
        if let Some(task) = control_task {
            control::stop(task).await;
        }
        if let Some(path) = &config.stats_json {
            write_json_atomic(path, &stats).map_err(Error::io("writing --stats-json"))?;
        }
        Ok(stats)
    }
}

impl TargetHandle {
    /// The listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.listener.local_addr()
    }

    /// Applies a change: backlog (re-listen on the same socket), accept policy, action.
    pub fn configure(&self, change: Change) -> Result<TargetStats, Error> {
        if let Some(p) = &change.accept {
            p.validate()?;
        }
        if let Some(b) = change.backlog {
            config::check_backlog(b)?;
        }
        let s = &self.shared;
        if let Some(backlog) = change.backlog {
            s.listener
                .relisten(backlog)
                .map_err(Error::io("re-listening with the new backlog"))?;
            s.backlog_requested.store(backlog, Ordering::Relaxed);
            let somaxconn = s
                .listener
                .somaxconn()
                .map_err(Error::io("reading somaxconn"))?;
            s.somaxconn.store(somaxconn, Ordering::Relaxed);
            tracing::info!(backlog, somaxconn, "re-listened");
        }
        if let Some(action) = change.on_accept {
            *s.on_accept.lock().expect("on_accept lock poisoned") = action;
        }
        if let Some(policy) = change.accept {
            s.policy.send_replace(PolicyState {
                policy,
                since: Instant::now(),
            });
        }
        self.stats()
    }

    /// Stops accepting; queued connections stay in the kernel's queue.
    pub fn pause(&self) -> Result<TargetStats, Error> {
        self.set_paused(true)
    }

    /// Accepts again under the current policy.
    pub fn resume(&self) -> Result<TargetStats, Error> {
        self.set_paused(false)
    }

    fn set_paused(&self, paused: bool) -> Result<TargetStats, Error> {
        self.shared.policy.send_if_modified(|state| {
            let changed = state.policy.paused != paused;
            state.policy.paused = paused;
            changed
        });
        self.stats()
    }

    /// Starts a new measurement: accepted count, queue max, timeline, counter baseline.
    pub fn reset_counters(&self) -> Result<TargetStats, Error> {
        let s = &self.shared;
        {
            let mut counters = s.counters.lock().expect("counters lock poisoned");
            counters.1 = counters
                .0
                .read()
                .map_err(Error::io("reading kernel counters"))?;
            let mut timeline = s.timeline.lock().expect("timeline lock poisoned");
            timeline.clear(s.timeline_bucket_us);
            s.epoch_offset_ns
                .store(s.origin.elapsed().as_nanos() as u64, Ordering::Relaxed);
            s.accepted.store(0, Ordering::Relaxed);
            s.samples.store(0, Ordering::Relaxed);
            s.queue_max
                .store(s.queue_len.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.stats()
    }

    /// A snapshot without the timeline.
    pub fn stats(&self) -> Result<TargetStats, Error> {
        self.snapshot(false)
            .map_err(Error::io("reading kernel counters"))
    }

    /// A snapshot, with the timeline if asked.
    pub fn snapshot(&self, with_timeline: bool) -> io::Result<TargetStats> {
        let s = &self.shared;
        // The queue as of now, not as of the last tick.
        sampler::sample(s);
        let counters = {
            let mut c = s.counters.lock().expect("counters lock poisoned");
            let now = c.0.read()?;
            CounterDeltas::between(&c.1, &now)
        };
        Ok(TargetStats {
            listen_addr: s.listener.local_addr().to_string(),
            backlog_requested: Some(s.backlog_requested.load(Ordering::Relaxed)),
            backlog_effective: s.backlog_effective.load(Ordering::Relaxed),
            somaxconn: s.somaxconn.load(Ordering::Relaxed),
            accept_queue_max: s.queue_max.load(Ordering::Relaxed),
            accept_queue_len: s.queue_len.load(Ordering::Relaxed),
            accepted: Some(s.accepted.load(Ordering::Relaxed)),
            counters,
            paused: s.policy.borrow().policy.paused,
            elapsed_us: s.elapsed().as_micros() as u64,
            samples: s.samples.load(Ordering::Relaxed),
            timeline: with_timeline
                .then(|| s.timeline.lock().expect("timeline lock poisoned").clone()),
            kind: Some(TargetKind::Target),
            accept_policy: Some(s.policy.borrow().policy.report()),
            server_pid: None,
        })
    }

    /// Live queue samples (about one per sample interval); a slow reader skips samples.
    pub fn watch_queue(&self) -> broadcast::Receiver<pb::QueueSample> {
        self.shared.queue_tx.subscribe()
    }
}
