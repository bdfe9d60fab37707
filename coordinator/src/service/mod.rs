//! The `stampede.v1.Coordinator` service and the registry of attached agents.
//!
//! Each agent holds one `Attach` stream. The handler authenticates it, checks its Hello
//! (protocol version, unique id), registers the agent with a sender for coordinator
//! messages, answers Welcome and then Pings it every heartbeat interval (the agent's
//! liveness bound, `Welcome.liveness_ms`, is two of them, plus 2 ms per other agent of the
//! fleet expected or attached: while a large fleet attaches, the coordinator's Pings to the first
//! agents wait behind the others' handshakes). Every refusal is logged with its
//! reason; "agent attached" only once the agent is registered. A successful Hello (or an
//! authenticated Clock probe) admits the connection at the gate (`crate::admission`).
//!
//! What agents send afterwards flows into one event channel that the run in progress reads;
//! runs never touch streams directly. Only messages of the run in progress get in: others
//! are dropped and counted ([`RegistryStats::dropped_messages`]), never buffered; and each
//! agent's queued messages are bounded in bytes ([`Limits::agent_queue_bytes`]): an agent
//! over it is disconnected with [`QueueError::Overloaded`].
//!
//! This file holds the registry and its bookkeeping; `handler` holds the gRPC handlers,
//! `fanout` the sending of one message to many agents at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stampede_proto::pb::{self, agent_message, coordinator_message};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status};

use crate::admission::{Gate, GateStats, Limits};
use crate::auth::Token;

mod fanout;
mod handler;
pub mod health;

pub use handler::CoordinatorService;

/// What happened on an agent's stream.
#[derive(Debug)]
pub enum AgentEvent {
    /// The agent sent a message.
    Message {
        /// Agent id.
        agent: String,
        /// The message (boxed: results are large, departures small).
        msg: Box<agent_message::Msg>,
        /// The message's room in its agent's queue, given back when the event is dropped.
        slot: QueueSlot,
    },
    /// The agent's stream ended or failed.
    Gone {
        /// Agent id.
        agent: String,
        /// Why, in words.
        reason: String,
    },
}

/// The room one message takes in its agent's queue until the run is done with it.
#[derive(Debug)]
pub struct QueueSlot(#[allow(dead_code)] OwnedSemaphorePermit);

/// Why an agent's message was not queued for the run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The agent has more queued than its bound: it sends faster than the run reads.
    #[error(
        "agent {agent:?} overloaded: a {bytes}-byte message over the {limit}-byte queue bound \
         (messages sent faster than the run reads them); disconnected"
    )]
    Overloaded {
        /// Agent id.
        agent: String,
        /// Size of the message that did not fit.
        bytes: usize,
        /// The per-agent bound.
        limit: usize,
    },
}

/// Queue accounting unit: bytes are counted in KiB so that a permit count fits a u32.
const QUEUE_UNIT: usize = 1024;

/// An attached agent.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    /// What it said about itself.
    pub hello: pb::Hello,
    /// Remote address of its stream.
    pub peer: Option<std::net::SocketAddr>,
}

#[derive(Debug)]
struct Attached {
    info: AgentInfo,
    conn: u64,
    tx: mpsc::Sender<Result<pb::CoordinatorMessage, Status>>,
}

/// What the coordinator has refused or dropped since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// The accept loop's connections (pending, timed out, evicted).
    pub gate: GateStats,
    /// Agents' messages dropped because they belong to no run in progress.
    pub dropped_messages: u64,
    /// Agents disconnected because their queue was full.
    pub overloaded: u64,
}

/// The agents attached now, and the events they produce.
#[derive(Debug)]
pub struct Registry {
    agents: Mutex<BTreeMap<String, Attached>>,
    /// Cancelled when the coordinator is done: every agent's stream ends cleanly.
    closing: CancellationToken,
    count: watch::Sender<usize>,
    events_tx: mpsc::UnboundedSender<AgentEvent>,
    events_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<AgentEvent>>,
    next_conn: AtomicU64,
    token: Option<Token>,
    heartbeat: Duration,
    gate: Arc<Gate>,
    /// The run in progress: only its messages (and departures) reach the event channel.
    active_run: Mutex<Option<String>>,
    /// Ids refused as duplicates since the last run ended, for the run's error.
    refused_duplicates: Mutex<BTreeSet<String>>,
    dropped: AtomicU64,
    overloaded: AtomicU64,
    /// The fleet the endpoint serves (`--agents`; 0: not said), for the Welcome's bound.
    expected: AtomicUsize,
    /// The most other agents a Welcome's bound allowed for.
    welcomed_others: AtomicUsize,
}

/// Most duplicate ids remembered for an error message.
const MAX_REMEMBERED_DUPLICATES: usize = 16;

/// Longest agent-supplied string written into a log line or an error.
const MAX_ECHO: usize = 128;

/// `s` cut to [`MAX_ECHO`] characters, marked when cut: agents choose these strings.
fn cut(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(MAX_ECHO) {
        Some((i, _)) => format!("{}… ({} bytes)", &s[..i], s.len()).into(),
        None => s.into(),
    }
}

/// The run in progress, registered with [`Registry::begin_run`]; the run ends when it drops.
#[derive(Debug)]
pub struct ActiveRun<'a> {
    registry: &'a Registry,
    id: String,
}

impl Drop for ActiveRun<'_> {
    fn drop(&mut self) {
        let mut active = self.registry.active_run.lock().expect("run lock poisoned");
        // A later run may already have taken over: only this run's own note is removed.
        if active.as_deref() == Some(self.id.as_str()) {
            *active = None;
            self.registry
                .refused_duplicates
                .lock()
                .expect("duplicates lock poisoned")
                .clear();
        }
    }
}

impl Registry {
    /// A registry that admits agents presenting `token` (any agent when `None`, for
    /// loopback demos and tests only), asking them for a heartbeat every `heartbeat`, with
    /// the default [`Limits`].
    pub fn new(token: Option<Token>, heartbeat: Duration) -> Registry {
        Registry::with_limits(token, heartbeat, Limits::default())
    }

    /// [`Registry::new`] with these limits.
    pub fn with_limits(token: Option<Token>, heartbeat: Duration, limits: Limits) -> Registry {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        Registry {
            agents: Mutex::new(BTreeMap::new()),
            closing: CancellationToken::new(),
            count: watch::Sender::new(0),
            events_tx,
            events_rx: tokio::sync::Mutex::new(events_rx),
            next_conn: AtomicU64::new(0),
            token,
            heartbeat,
            gate: Arc::new(Gate::new(limits)),
            active_run: Mutex::new(None),
            refused_duplicates: Mutex::new(BTreeSet::new()),
            dropped: AtomicU64::new(0),
            overloaded: AtomicU64::new(0),
            expected: AtomicUsize::new(0),
            welcomed_others: AtomicUsize::new(0),
        }
    }

    /// The heartbeat interval agents were asked for.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// How long an agent may stay silent before it should consider the coordinator gone
    /// (`Welcome.liveness_ms`), for the agent being welcomed now: two heartbeats, as the
    /// coordinator Pings every heartbeat, plus 2 ms per other agent of the fleet
    /// ([`Registry::expect_agents`], or as many as are attached if more): 1,000 agents
    /// attaching at once keep a 2-core coordinator busy for seconds, and the first ones must
    /// not give up on it meanwhile. The largest fleet a Welcome allowed for is kept
    /// ([`Registry::welcomed_fleet`]): a run judges its agents' silence by no less.
    pub fn welcome_liveness(&self) -> Duration {
        // Asked before the agent is registered: those attached are the others.
        let expected_others = self.expected.load(Ordering::Relaxed).saturating_sub(1);
        let others = expected_others.max(*self.count.borrow());
        self.welcomed_others.fetch_max(others, Ordering::Relaxed);
        self.heartbeat * 2 + Duration::from_millis(2) * others.min(u32::MAX as usize) as u32
    }

    /// The largest fleet any Welcome so far allowed for in its liveness bound (0: none sent).
    /// A run with fewer agents than that still judges their silence by this fleet's size: its
    /// agents may hold a Welcome's bound longer than the run's own.
    pub fn welcomed_fleet(&self) -> usize {
        match self.welcomed_others.load(Ordering::Relaxed) {
            0 => 0,
            others => others + 1,
        }
    }

    /// Ends every agent's stream cleanly (an OK status, so an agent reads "the coordinator
    /// is done", not a broken connection), and the stream of any agent attaching after.
    /// [`crate::Coordinator::close`] calls it as the endpoint stops.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Cancelled by [`Registry::close`].
    pub(crate) fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    /// The fleet this endpoint expects (`stampede run --agents`), for the Welcome's bound.
    pub fn expect_agents(&self, agents: usize) {
        self.expected.store(agents, Ordering::Relaxed);
    }

    /// The admission gate of the endpoint's connections.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// What was refused or dropped so far.
    pub fn stats(&self) -> RegistryStats {
        RegistryStats {
            gate: self.gate.stats(),
            dropped_messages: self.dropped.load(Ordering::Relaxed),
            overloaded: self.overloaded.load(Ordering::Relaxed),
        }
    }

    /// Ids refused as duplicates since the last run ended (at most a few).
    pub fn refused_duplicates(&self) -> Vec<String> {
        self.refused_duplicates
            .lock()
            .expect("duplicates lock poisoned")
            .iter()
            .cloned()
            .collect()
    }

    /// Declares run `id` in progress: from now until the guard drops, agents' messages
    /// of this run (and departures) reach the event channel; all others are dropped.
    pub fn begin_run(&self, id: &str) -> ActiveRun<'_> {
        *self.active_run.lock().expect("run lock poisoned") = Some(id.to_owned());
        ActiveRun {
            registry: self,
            id: id.to_owned(),
        }
    }

    /// The attached agents, by id.
    pub fn agents(&self) -> BTreeMap<String, AgentInfo> {
        self.lock()
            .iter()
            .map(|(id, a)| (id.clone(), a.info.clone()))
            .collect()
    }

    /// Waits until at least `n` agents are attached or `timeout` passes, calling `progress`
    /// with the count whenever it changes. Returns the attached ids (all of them).
    pub async fn wait_for(
        &self,
        n: usize,
        timeout: Duration,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<String>, Vec<String>> {
        let mut rx = self.count.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let have = *rx.borrow_and_update();
            progress(have);
            if have >= n {
                return Ok(self.agents().into_keys().collect());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(self.agents().into_keys().collect()),
            }
        }
    }

    /// Sends a message to an agent; false if it is gone.
    pub async fn send(&self, agent: &str, msg: coordinator_message::Msg) -> bool {
        let tx = match self.lock().get(agent) {
            Some(a) => a.tx.clone(),
            None => return false,
        };
        tx.send(Ok(pb::CoordinatorMessage { msg: Some(msg) }))
            .await
            .is_ok()
    }

    /// The event stream; one run at a time holds it.
    pub async fn events(&self) -> tokio::sync::MutexGuard<'_, mpsc::UnboundedReceiver<AgentEvent>> {
        self.events_rx.lock().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Attached>> {
        self.agents.lock().expect("registry lock poisoned")
    }

    fn authenticate<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match &self.token {
            Some(t) => t.check(req.metadata()),
            None => Ok(()),
        }
    }

    fn register(&self, id: &str, a: Attached) -> Result<(), Status> {
        let mut agents = self.lock();
        if agents.contains_key(id) {
            let mut refused = self
                .refused_duplicates
                .lock()
                .expect("duplicates lock poisoned");
            if refused.len() < MAX_REMEMBERED_DUPLICATES {
                refused.insert(id.to_owned());
            }
            return Err(Status::already_exists(format!(
                "duplicate agent id {id:?}: an agent with this id is already attached; give \
                 each agent a unique --id"
            )));
        }
        agents.insert(id.to_owned(), a);
        self.count.send_replace(agents.len());
        Ok(())
    }

    fn unregister(&self, id: &str, conn: u64) -> bool {
        let mut agents = self.lock();
        if agents.get(id).is_some_and(|a| a.conn == conn) {
            agents.remove(id);
            self.count.send_replace(agents.len());
            true
        } else {
            false
        }
    }

    /// Whether a message of run `run_id` goes to the run in progress. Idle heartbeats
    /// (no run id) count as signs of life during a run and are dropped quietly outside one.
    fn route(&self, msg: &agent_message::Msg) -> Route {
        let idle = matches!(msg, agent_message::Msg::Heartbeat(h) if h.run_id.is_empty());
        let active = self.active_run.lock().expect("run lock poisoned");
        match (active.as_deref(), run_id(msg)) {
            (Some(a), Some(r)) if a == r => Route::Run,
            (Some(_), _) if idle => Route::Run,
            (None, _) if idle => Route::Quiet,
            _ => Route::Drop,
        }
    }

    /// Queues an agent's message for the run in progress, or drops (and counts) it when it
    /// belongs to no such run. Fails when the agent's queue is full.
    fn forward(
        &self,
        agent: &str,
        msg: agent_message::Msg,
        queue: &Arc<Semaphore>,
        dropped: &mut u64,
    ) -> Result<(), QueueError> {
        match self.route(&msg) {
            Route::Run => {}
            Route::Quiet => return Ok(()),
            Route::Drop => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                *dropped += 1;
                if *dropped == 1 {
                    tracing::warn!(
                        agent = %cut(agent),
                        kind = kind(&msg),
                        run_id = %cut(run_id(&msg).unwrap_or("")),
                        "dropping agent messages for no run in progress (counted, not queued)"
                    );
                }
                return Ok(());
            }
        }
        let bytes = msg.encoded_len();
        let limit = self.gate.limits().agent_queue_bytes;
        let units = u32::try_from(bytes / QUEUE_UNIT + 1).unwrap_or(u32::MAX);
        let permit =
            queue
                .clone()
                .try_acquire_many_owned(units)
                .map_err(|_| QueueError::Overloaded {
                    agent: cut(agent).into_owned(),
                    bytes,
                    limit,
                })?;
        let _ = self.events_tx.send(AgentEvent::Message {
            agent: agent.to_owned(),
            msg: Box::new(msg),
            slot: QueueSlot(permit),
        });
        Ok(())
    }

    /// Tells the run in progress, if any, that an agent left.
    fn gone(&self, agent: String, reason: String) {
        if self.active_run.lock().expect("run lock poisoned").is_some() {
            let _ = self.events_tx.send(AgentEvent::Gone { agent, reason });
        }
    }
}

/// Where an agent's message goes.
enum Route {
    /// To the run in progress.
    Run,
    /// Nowhere, and that is normal (an idle heartbeat between runs).
    Quiet,
    /// Nowhere, counted: it names no run in progress.
    Drop,
}

/// The run a message belongs to (`Some("")` for an idle heartbeat; `None`: a second Hello).
fn run_id(msg: &agent_message::Msg) -> Option<&str> {
    match msg {
        agent_message::Msg::Hello(_) => None,
        agent_message::Msg::Ready(r) => Some(&r.run_id),
        agent_message::Msg::Rejected(r) => Some(&r.run_id),
        agent_message::Msg::Interval(r) => Some(&r.run_id),
        agent_message::Msg::Result(r) => Some(&r.run_id),
        agent_message::Msg::Heartbeat(h) => Some(&h.run_id),
    }
}

/// The message's kind, for logs.
fn kind(msg: &agent_message::Msg) -> &'static str {
    match msg {
        agent_message::Msg::Hello(_) => "hello",
        agent_message::Msg::Ready(_) => "ready",
        agent_message::Msg::Rejected(_) => "rejected",
        agent_message::Msg::Interval(_) => "interval",
        agent_message::Msg::Result(_) => "result",
        agent_message::Msg::Heartbeat(_) => "heartbeat",
    }
}
