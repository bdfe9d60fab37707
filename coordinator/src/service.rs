//! The `stampede.v1.Coordinator` service and the registry of attached agents.
//!
//! Each agent holds one `Attach` stream. The handler authenticates it, checks its Hello
//! (protocol version, unique id), registers the agent with a sender for coordinator
//! messages, answers Welcome and then Pings it every heartbeat interval (the agent's
//! liveness bound, `Welcome.liveness_ms`, is two of them). Every refusal is logged with its
//! reason; "agent attached" only once the agent is registered. A successful Hello (or an
//! authenticated Clock probe) admits the connection at the gate (`crate::admission`).
//!
//! What agents send afterwards flows into one event channel that the run in progress reads;
//! runs never touch streams directly. Only messages of the run in progress get in: others
//! are dropped and counted ([`RegistryStats::dropped_messages`]), never buffered; and each
//! agent's queued messages are bounded in bytes ([`Limits::agent_queue_bytes`]): an agent
//! over it is disconnected with [`QueueError::Overloaded`].

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stampede_proto::PROTOCOL_VERSION;
use stampede_proto::clock::unix_nanos_now;
use stampede_proto::pb::{self, agent_message, coordinator_message};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::admission::{Gate, GateStats, Limits};
use crate::auth::Token;

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
        }
    }

    /// The heartbeat interval agents were asked for.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// How long an agent may stay silent before it should consider the coordinator gone
    /// (`Welcome.liveness_ms`): two heartbeats, as the coordinator Pings every heartbeat.
    pub fn liveness(&self) -> Duration {
        self.heartbeat * 2
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

/// The gRPC service over a shared registry.
#[derive(Debug, Clone)]
pub struct CoordinatorService {
    registry: std::sync::Arc<Registry>,
}

impl CoordinatorService {
    /// The service, ready for `Server::add_service`.
    pub fn new(
        registry: std::sync::Arc<Registry>,
    ) -> pb::coordinator_server::CoordinatorServer<CoordinatorService> {
        pb::coordinator_server::CoordinatorServer::new(CoordinatorService { registry })
    }
}

/// Checks a Hello; the error is the status the agent gets.
fn check_hello(hello: &pb::Hello) -> Result<(), Status> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(Status::failed_precondition(format!(
            "protocol version mismatch: agent {:?} speaks stampede.v1 protocol {}, this \
             coordinator speaks {}; run the same stampede release on both",
            cut(&hello.agent_id),
            hello.protocol_version,
            PROTOCOL_VERSION
        )));
    }
    if hello.agent_id.is_empty() || hello.agent_id.len() > 128 {
        return Err(Status::invalid_argument(
            "agent_id must be 1 to 128 characters",
        ));
    }
    Ok(())
}

type OutStream = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, Status>> + Send>>;

type OutTx = mpsc::Sender<Result<pb::CoordinatorMessage, Status>>;

impl CoordinatorService {
    /// The Attach handshake: token, Hello, registration, Welcome. Any error is a refusal.
    async fn admit(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
        peer: Option<std::net::SocketAddr>,
        id: &mut Option<String>,
    ) -> Result<Response<OutStream>, Status> {
        let registry = &self.registry;
        registry.authenticate(&req)?;
        let mut inbound = req.into_inner();
        let timeout = registry.gate.limits().handshake_timeout;
        let first = tokio::time::timeout(timeout, inbound.next())
            .await
            .map_err(|_| Status::deadline_exceeded(format!("no Hello within {timeout:?}")))?;
        let hello = match first {
            Some(Ok(pb::AgentMessage {
                msg: Some(agent_message::Msg::Hello(h)),
            })) => h,
            Some(Err(e)) => return Err(e),
            _ => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        *id = Some(cut(&hello.agent_id).into_owned());
        check_hello(&hello)?;
        let agent = hello.agent_id.clone();
        let (tx, rx) = mpsc::channel(64);
        let conn = registry.next_conn.fetch_add(1, Ordering::Relaxed);
        // A fresh channel has room: Welcome is the first message the agent reads.
        tx.try_send(Ok(pb::CoordinatorMessage {
            msg: Some(coordinator_message::Msg::Welcome(pb::Welcome {
                protocol_version: PROTOCOL_VERSION,
                heartbeat_interval_ms: registry.heartbeat.as_millis() as u64,
                liveness_ms: registry.liveness().as_millis() as u64,
            })),
        }))
        .map_err(|_| Status::internal("stream closed"))?;
        let (host, fd_limit) = (cut(&hello.host).into_owned(), hello.fd_limit);
        registry.register(
            &agent,
            Attached {
                info: AgentInfo { hello, peer },
                conn,
                tx: tx.clone(),
            },
        )?;
        registry.gate.admit(peer);
        tracing::info!(agent = %agent, %host, ?peer, fd_limit, "agent attached");
        tokio::spawn(ping(tx.downgrade(), registry.heartbeat));
        tokio::spawn(read(registry.clone(), agent, conn, inbound, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Pings the agent every heartbeat until its stream is gone (`tx` only upgrades while the
/// registry or the reader still holds the stream's sender). A full queue skips a Ping: the
/// agent is then not reading, and its liveness bound is the honest outcome.
async fn ping(tx: mpsc::WeakSender<Result<pb::CoordinatorMessage, Status>>, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(tx) = tx.upgrade() else { return };
        let ping = pb::Ping {
            sent_unix_nanos: unix_nanos_now(),
        };
        let msg = Ok(pb::CoordinatorMessage {
            msg: Some(coordinator_message::Msg::Ping(ping)),
        });
        if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(msg) {
            return;
        }
    }
}

/// Reads an attached agent's messages until its stream ends, forwarding those of the run in
/// progress; an agent over its queue bound is told why and disconnected.
async fn read(
    registry: Arc<Registry>,
    agent: String,
    conn: u64,
    mut inbound: Streaming<pb::AgentMessage>,
    tx: OutTx,
) {
    let limit = registry.gate.limits().agent_queue_bytes;
    let queue = Arc::new(Semaphore::new(limit / QUEUE_UNIT));
    let mut dropped = 0u64;
    let reason = loop {
        match inbound.next().await {
            Some(Ok(pb::AgentMessage { msg: Some(msg) })) => {
                if let Err(e) = registry.forward(&agent, msg, &queue, &mut dropped) {
                    registry.overloaded.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(agent = %agent, cause = %e, "agent disconnected");
                    let _ = tx.try_send(Err(Status::resource_exhausted(e.to_string())));
                    break e.to_string();
                }
            }
            Some(Ok(_)) => {}
            // An agent that ends cleanly (SIGTERM) sends its cut-short result and closes its
            // stream; a broken one (killed, crashed, its host gone) shows as a transport error.
            Some(Err(e)) => {
                break format!(
                    "its stream broke (agent killed, crashed or cut off): {}",
                    e.message()
                );
            }
            None => break "it closed its stream".to_owned(),
        }
    };
    drop(tx);
    if registry.unregister(&agent, conn) {
        tracing::info!(agent = %agent, %reason, dropped, "agent detached");
        registry.gone(agent, reason);
    }
}

#[tonic::async_trait]
impl pb::coordinator_server::Coordinator for CoordinatorService {
    type AttachStream = OutStream;

    async fn attach(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<OutStream>, Status> {
        let peer = req.remote_addr();
        let mut id = None;
        let answer = self.admit(req, peer, &mut id).await;
        if let Err(refusal) = &answer {
            tracing::warn!(
                agent = id.as_deref().unwrap_or("-"),
                ?peer,
                code = ?refusal.code(),
                reason = %refusal.message(),
                "agent refused"
            );
        }
        answer
    }

    async fn clock(
        &self,
        req: Request<pb::ClockProbe>,
    ) -> Result<Response<pb::ClockReply>, Status> {
        let t1 = unix_nanos_now();
        let peer = req.remote_addr();
        if let Err(refusal) = self.registry.authenticate(&req) {
            tracing::warn!(?peer, code = ?refusal.code(), reason = %refusal.message(), "clock probe refused");
            return Err(refusal);
        }
        self.registry.gate.admit(peer);
        Ok(Response::new(pb::ClockReply {
            t0_unix_nanos: req.into_inner().t0_unix_nanos,
            t1_unix_nanos: t1,
            t2_unix_nanos: unix_nanos_now(),
        }))
    }
}
