//! `stampede-target supervise`: a real server (nginx, haproxy, anything that listens) run as
//! this process's child and restarted at each backlog, so `stampede sweep` can size it.
//!
//! Only the backlog travels over the wire: the command and its templates are fixed on the
//! target host's command line. On Configure(backlog) the [`supervisor::Supervisor`] renders
//! the templates and restarts the command with `{backlog}` substituted, waits until its
//! listener has that backlog as the kernel's effective value, and the counters are reset.
//! The listener is watched exactly as `observe` watches one ([`crate::observe`]: sock_diag
//! samples, kernel counters, the timeline), with what only the supervisor knows added
//! (`backlog_requested`, `server_pid`, kind `supervise`). A real server's accept policy is
//! its own: Configure with one is refused (FailedPrecondition), and so are Pause and Resume.
//!
//! [`child`] runs the process and forwards its output to the log, [`template`] renders the
//! configuration files.

mod child;
mod supervisor;
pub mod template;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stampede_proto::pb;
use stampede_proto::target::{TargetKind, TargetStats};
use tokio_util::sync::CancellationToken;

use self::supervisor::{Started, Supervisor};
pub use self::template::Template;
use crate::config::{ConfigError, check_backlog};
use crate::control::{ControlAuth, Source};
use crate::observe::{Observe, ObserveConfig, ObserveHandle};
use crate::{Change, Error};

pub(crate) use self::child::parse_signal;

/// What `--somaxconn` does when a backlog is above `net.core.somaxconn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SomaxconnMode {
    /// Raise it to the backlog (root), and put the old value back on exit.
    Raise,
    /// Leave it: the kernel caps the backlog, and the stats show the cap.
    Keep,
}

/// What to supervise and how.
#[derive(Debug, Clone)]
pub struct SuperviseConfig {
    /// The server's listening port.
    pub port: u16,
    /// Only its listener on this address (any address if `None`).
    pub addr: Option<IpAddr>,
    /// Serve `TargetControl` here.
    pub control: Option<SocketAddr>,
    /// Files rendered for each backlog.
    pub templates: Vec<Template>,
    /// Raise somaxconn when a backlog needs it, or keep it.
    pub somaxconn: SomaxconnMode,
    /// Sent to the server's process group to stop it.
    pub stop_signal: i32,
    /// How long a stop may take before SIGKILL.
    pub stop_timeout: Duration,
    /// How long the server may take to listen after it is started.
    pub listen_timeout: Duration,
    /// The backlog of the first start.
    pub backlog: i32,
    /// Time between two looks at the accept queue.
    pub interval: Duration,
    /// Stop by itself after this long.
    pub duration: Option<Duration>,
    /// Where to write the stats JSON at exit.
    pub stats_json: Option<PathBuf>,
    /// The command and its arguments (`{backlog}` substituted).
    pub command: Vec<String>,
}

impl SuperviseConfig {
    /// Checks the values, that the command exists and that every template can be read.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_backlog(self.backlog)?;
        for t in &self.templates {
            t.read()?;
        }
        if self.port == 0 {
            return Err(ConfigError::new(
                "port",
                0,
                "must be the server's port, 1-65535",
            ));
        }
        for (field, d) in [
            ("stop timeout", self.stop_timeout),
            ("listen timeout", self.listen_timeout),
        ] {
            if d.is_zero() || d > Duration::from_secs(600) {
                return Err(ConfigError::new(
                    field,
                    stampede_proto::duration::format_duration(d),
                    "must be above 0 and at most 10m",
                ));
            }
        }
        let Some(program) = self.command.first() else {
            return Err(ConfigError::new(
                "command",
                "",
                "give the server's command after --, e.g. -- nginx -c /etc/stampede/nginx.conf",
            ));
        };
        if !program.contains("{backlog}") && find_program(program).is_none() {
            return Err(ConfigError::new(
                "command",
                program,
                if program.contains('/') {
                    "no such executable file"
                } else {
                    "not found in PATH"
                },
            ));
        }
        Ok(())
    }

    fn observe_config(&self) -> ObserveConfig {
        ObserveConfig {
            port: self.port,
            addr: self.addr,
            interval: self.interval,
            duration: self.duration,
            // Written by `run`, with what the supervisor adds.
            stats_json: None,
            control: self.control,
        }
    }
}

/// The executable `program` names: a path as given, else the first match in `PATH`.
fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

/// What the supervisor's handle knows without waiting for a restart.
#[derive(Debug, Clone, Copy)]
struct Current {
    started: Started,
}

/// The control service's view: the watch plus the supervisor.
#[derive(Debug, Clone)]
pub struct SuperviseHandle {
    observe: ObserveHandle,
    supervisor: Arc<Mutex<Supervisor>>,
    current: Arc<Mutex<Current>>,
}

impl SuperviseHandle {
    /// The watch's stats with what the supervisor knows; an error when the server died.
    fn patched(&self, stats: Result<TargetStats, Error>) -> Result<TargetStats, Error> {
        // A restart in progress holds the lock: no death to report meanwhile.
        if let Ok(mut s) = self.supervisor.try_lock()
            && let Some(why) = s.dead()
        {
            return Err(Error::Server(why));
        }
        let mut stats = stats?;
        let c = self.current.lock().expect("current lock poisoned").started;
        stats.kind = Some(TargetKind::Supervise);
        stats.backlog_requested = Some(c.backlog);
        stats.somaxconn = c.somaxconn;
        stats.server_pid = Some(c.pid);
        stats.accept_policy = None;
        Ok(stats)
    }
}

/// Why Configure with an accept policy (or an action), Pause and Resume are refused.
const NOT_SETTABLE: &str = "this is stampede-target supervise, running a real server: its \
     accept policy and what it does with a connection are its own and cannot be set (only the \
     backlog can: the server is restarted with it)";

impl Source for SuperviseHandle {
    fn configure(&self, change: Change) -> Result<TargetStats, Error> {
        if change.accept.is_some() || change.on_accept.is_some() {
            return Err(Error::Unsupported(NOT_SETTABLE.into()));
        }
        if let Some(backlog) = change.backlog {
            check_backlog(backlog)?;
            let started = self
                .supervisor
                .lock()
                .expect("supervisor lock poisoned")
                .start(backlog)?;
            self.current.lock().expect("current lock poisoned").started = started;
            // A new measurement for the new server.
            self.observe.reset_counters()?;
        }
        self.stats(false)
    }

    fn set_paused(&self, _: bool) -> Result<TargetStats, Error> {
        Err(Error::Unsupported(NOT_SETTABLE.into()))
    }

    fn reset_counters(&self) -> Result<TargetStats, Error> {
        let stats = self.observe.reset_counters();
        self.patched(stats)
    }

    fn stats(&self, with_timeline: bool) -> Result<TargetStats, Error> {
        let stats = self.observe.stats(with_timeline);
        self.patched(stats)
    }

    fn watch_queue(&self) -> tokio::sync::broadcast::Receiver<pb::QueueSample> {
        self.observe.watch_queue()
    }
}

/// Starts the server at the configured backlog, watches its listener and serves control
/// until `shutdown` or the duration; then stops the server, puts somaxconn back and returns
/// the final stats (with the timeline). `status` is called about every 250 ms.
pub async fn run(
    config: SuperviseConfig,
    auth: ControlAuth,
    shutdown: CancellationToken,
    status: &mut (dyn FnMut(&TargetStats) + Send),
) -> Result<TargetStats, Error> {
    config.validate()?;
    // The control port first: a port in use fails before any server is started.
    let observe = Observe::open(&config.observe_config())?.with_control_auth(auth);
    let mut supervisor = Supervisor::new(config.clone())?;
    let (supervisor, started) = tokio::task::spawn_blocking(move || {
        let started = supervisor.start(config.backlog);
        (supervisor, started)
    })
    .await
    .map_err(|e| Error::Server(format!("starting the server: {e}")))?;
    let started = started?;
    let handle = SuperviseHandle {
        observe: observe.handle(),
        supervisor: Arc::new(Mutex::new(supervisor)),
        current: Arc::new(Mutex::new(Current { started })),
    };
    handle.observe.reset_counters()?;
    tracing::info!(
        port = config.port,
        pid = started.pid,
        backlog = started.backlog,
        backlog_effective = started.backlog_effective,
        somaxconn = started.somaxconn,
        control = ?observe.control_addr(),
        "supervising"
    );
    let mut live = |s: &TargetStats| {
        if let Ok(s) = handle.patched(Ok(s.clone())) {
            status(&s);
        }
    };
    let result = observe.run_with(handle.clone(), shutdown, &mut live).await;
    // The final stats as the supervisor knows them (the watch's own if the server died).
    let result = result.map(|s| {
        let mut s = handle.patched(Ok(s.clone())).unwrap_or(s);
        s.kind = Some(TargetKind::Supervise);
        s
    });
    let supervisor = handle.supervisor.clone();
    let stopped = tokio::task::spawn_blocking(move || {
        supervisor
            .lock()
            .expect("supervisor lock poisoned")
            .shutdown()
    })
    .await
    .map_err(|e| Error::Server(format!("stopping the server: {e}")))?;
    let stats = result?;
    stopped?;
    if let Some(path) = &config.stats_json {
        stampede_proto::output::write_json_atomic(path, &stats)
            .map_err(Error::io("writing --stats-json"))?;
    }
    Ok(stats)
}
