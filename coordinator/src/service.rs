//! The `stampede.v1.Coordinator` service and the registry of attached agents.
//!
//! Each agent holds one `Attach` stream. The handler authenticates it, checks its Hello
//! (protocol version, unique id), answers Welcome and registers the agent with a sender for
//! coordinator messages. Everything agents send afterwards, and their departures, flow into
//! one event channel that the run in progress reads; runs never touch streams directly.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use stampede_proto::PROTOCOL_VERSION;
use stampede_proto::clock::unix_nanos_now;
use stampede_proto::pb::{self, agent_message, coordinator_message};
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Token;

/// How long an agent has to send Hello after opening its stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// What happened on an agent's stream.
#[derive(Debug)]
pub enum AgentEvent {
    /// The agent sent a message.
    Message {
        /// Agent id.
        agent: String,
        /// The message (boxed: results are large, departures small).
        msg: Box<agent_message::Msg>,
    },
    /// The agent's stream ended or failed.
    Gone {
        /// Agent id.
        agent: String,
        /// Why, in words.
        reason: String,
    },
}

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
}

impl Registry {
    /// A registry that admits agents presenting `token` (any agent when `None`, for
    /// loopback demos and tests only), asking them for a heartbeat every `heartbeat`.
    pub fn new(token: Option<Token>, heartbeat: Duration) -> Registry {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        Registry {
            agents: Mutex::new(BTreeMap::new()),
            count: watch::Sender::new(0),
            events_tx,
            events_rx: tokio::sync::Mutex::new(events_rx),
            next_conn: AtomicU64::new(0),
            token,
            heartbeat,
        }
    }

    /// The heartbeat interval agents were asked for.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
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
            return Err(Status::already_exists(format!(
                "an agent with id {id:?} is already attached; give each agent a unique --id"
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
            hello.agent_id, hello.protocol_version, PROTOCOL_VERSION
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

#[tonic::async_trait]
impl pb::coordinator_server::Coordinator for CoordinatorService {
    type AttachStream = OutStream;

    async fn attach(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<OutStream>, Status> {
        self.registry.authenticate(&req)?;
        let peer = req.remote_addr();
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.next())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within 10s"))?;
        let hello = match first {
            Some(Ok(pb::AgentMessage {
                msg: Some(agent_message::Msg::Hello(h)),
            })) => h,
            Some(Err(e)) => return Err(e),
            _ => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        check_hello(&hello)?;
        let id = hello.agent_id.clone();
        let (tx, rx) = mpsc::channel(64);
        let conn = self.registry.next_conn.fetch_add(1, Ordering::Relaxed);
        tx.send(Ok(pb::CoordinatorMessage {
            msg: Some(coordinator_message::Msg::Welcome(pb::Welcome {
                protocol_version: PROTOCOL_VERSION,
                heartbeat_interval_ms: self.registry.heartbeat.as_millis() as u64,
                // No Ping is sent yet: agents rely on HTTP/2 keepalive.
                liveness_ms: 0,
            })),
        }))
        .await
        .map_err(|_| Status::internal("stream closed"))?;
        tracing::info!(agent = %id, host = %hello.host, ?peer, fd_limit = hello.fd_limit, "agent attached");
        self.registry.register(
            &id,
            Attached {
                info: AgentInfo { hello, peer },
                conn,
                tx,
            },
        )?;
        let registry = self.registry.clone();
        tokio::spawn(async move {
            let reason = loop {
                match inbound.next().await {
                    Some(Ok(pb::AgentMessage { msg: Some(msg) })) => {
                        let _ = registry.events_tx.send(AgentEvent::Message {
                            agent: id.clone(),
                            msg: Box::new(msg),
                        });
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break format!("stream failed: {}", e.message()),
                    None => break "stream closed".to_owned(),
                }
            };
            if registry.unregister(&id, conn) {
                tracing::info!(agent = %id, %reason, "agent detached");
                let _ = registry
                    .events_tx
                    .send(AgentEvent::Gone { agent: id, reason });
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn clock(
        &self,
        req: Request<pb::ClockProbe>,
    ) -> Result<Response<pb::ClockReply>, Status> {
        let t1 = unix_nanos_now();
        self.registry.authenticate(&req)?;
        Ok(Response::new(pb::ClockReply {
            t0_unix_nanos: req.into_inner().t0_unix_nanos,
            t1_unix_nanos: t1,
            t2_unix_nanos: unix_nanos_now(),
        }))
    }
}
