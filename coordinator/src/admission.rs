//! Admission of TCP connections to the agents' endpoint: the coordinator's own accept loop
//! in front of the gRPC server, so that connections which never prove themselves cannot
//! hold its file descriptors or lock out real agents (docs/design.md, issue 9 item 4).
//!
//! A connection is *pending* from accept until a call on it authenticates (an agent
//! registers with its Hello, or a Clock probe carries the right token): the service then
//! [`Gate::admit`]s it by its peer address. A pending connection is closed when
//! [`Limits::handshake_timeout`] passes, and at most [`Limits::max_pending`] are held: the
//! next accept closes the oldest pending one. A flood of idle connections therefore costs
//! at most `max_pending` descriptors, each for at most the timeout, and a real agent, which
//! authenticates within milliseconds of connecting, gets in whatever the flood does.
//! Closures are logged once per doubling of their count, so a flood is reported without a
//! line per connection.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

mod fleet;

pub use self::fleet::{FD_RESERVE, FleetTooLarge};

/// The coordinator's bounds on what agents and would-be agents may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a connection may stay unauthenticated (and an Attach stream may take to
    /// send its Hello) before it is closed.
    pub handshake_timeout: Duration,
    /// Most connections held before they authenticate; the oldest is closed to make room.
    pub max_pending: usize,
    /// Most bytes of one agent's messages queued for the run before the agent is
    /// disconnected as overloaded ([`crate::service::QueueError::Overloaded`]).
    pub agent_queue_bytes: usize,
}

impl Default for Limits {
    /// 10 s to authenticate, 1,024 pending connections, twice the largest message per agent.
    fn default() -> Limits {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            max_pending: 1024,
            agent_queue_bytes: 2 * crate::MAX_MESSAGE_BYTES,
        }
    }
}

/// What the gate has done since the coordinator started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections held now that have not authenticated.
    pub pending: u64,
    /// Connections that authenticated.
    pub admitted: u64,
    /// Pending connections closed because the handshake timeout passed.
    pub timed_out: u64,
    /// Pending connections closed to make room for a newer one.
    pub evicted: u64,
}

/// One pending connection, as the gate sees it.
#[derive(Debug)]
struct Pending {
    peer: SocketAddr,
    admitted: Arc<AtomicBool>,
    evict: CancellationToken,
}

#[derive(Debug, Default)]
struct Book {
    /// By accept order, oldest first.
    pending: BTreeMap<u64, Pending>,
    /// Peer address to accept order, for [`Gate::admit`].
    by_peer: HashMap<SocketAddr, u64>,
    next: u64,
}

/// The shared state of the accept loop: pending connections and counters.
#[derive(Debug)]
pub struct Gate {
    limits: Limits,
    book: Mutex<Book>,
    accepted: AtomicU64,
    admitted: AtomicU64,
    timed_out: AtomicU64,
    evicted: AtomicU64,
}

impl Gate {
    /// A gate with these limits.
    pub fn new(limits: Limits) -> Gate {
        Gate {
            limits,
            book: Mutex::new(Book::default()),
            accepted: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    /// Its limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Marks the connection from `peer` as authenticated: it is no longer timed out or
    /// evicted. Unknown peers (already admitted, or served without this gate) are ignored.
    pub fn admit(&self, peer: Option<SocketAddr>) {
        let Some(peer) = peer else { return };
        let mut book = self.lock();
        let Some(seq) = book.by_peer.remove(&peer) else {
            return;
        };
        if let Some(p) = book.pending.remove(&seq) {
            p.admitted.store(true, Ordering::Release);
            self.admitted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counters and the pending count now.
    pub fn stats(&self) -> GateStats {
        GateStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            pending: self.lock().pending.len() as u64,
            admitted: self.admitted.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }

    /// Books a freshly accepted connection, closing the oldest pending one when full.
    fn enroll(self: &Arc<Gate>, io: TcpStream, peer: SocketAddr) -> GatedStream {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        let admitted = Arc::new(AtomicBool::new(false));
        let evict = CancellationToken::new();
        let seq = {
            let mut book = self.lock();
            while book.pending.len() >= self.limits.max_pending.max(1) {
                let Some((_, old)) = book.pending.pop_first() else {
                    break;
                };
                book.by_peer.remove(&old.peer);
                old.evict.cancel();
                let n = self.evicted.fetch_add(1, Ordering::Relaxed) + 1;
                // One line per doubling: a flood is reported, not echoed line by line.
                if n.is_power_of_two() {
                    tracing::warn!(
                        peer = %old.peer,
                        evicted = n,
                        max_pending = self.limits.max_pending,
                        "refused: closed the oldest unauthenticated connection to make room"
                    );
                }
            }
            let seq = book.next;
            book.next += 1;
            book.pending.insert(
                seq,
                Pending {
                    peer,
                    admitted: admitted.clone(),
                    evict: evict.clone(),
                },
            );
            book.by_peer.insert(peer, seq);
            seq
        };
        GatedStream {
            io,
            gate: self.clone(),
            seq,
            admitted,
            deadline: Box::pin(tokio::time::sleep(self.limits.handshake_timeout)),
            evicted: Box::pin(evict.cancelled_owned()),
            closed: None,
        }
    }

    /// Forgets a connection that is closing (whatever the reason).
    fn forget(&self, seq: u64) {
        let mut book = self.lock();
        if let Some(p) = book.pending.remove(&seq)
            && book.by_peer.get(&p.peer) == Some(&seq)
        {
            book.by_peer.remove(&p.peer);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().expect("gate lock poisoned")
    }
}

/// An accepted connection that closes itself unless it is admitted in time.
pub struct GatedStream {
    io: TcpStream,
    gate: Arc<Gate>,
    seq: u64,
    admitted: Arc<AtomicBool>,
    deadline: Pin<Box<Sleep>>,
    evicted: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Set once the connection was timed out or evicted: every read fails from then on.
    closed: Option<io::ErrorKind>,
}

impl std::fmt::Debug for GatedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatedStream")
            .field("peer", &self.io.peer_addr().ok())
            .field("admitted", &self.admitted.load(Ordering::Relaxed))
            .finish()
    }
}

impl GatedStream {
    /// While pending: an error once the deadline passes or a newer connection evicts this
    /// one. The read side is always polled by the HTTP/2 server, so this is where an idle
    /// connection notices; the error makes the server drop (close) it.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let Some(kind) = self.closed {
            return Err(io::Error::new(
                kind,
                "connection closed by the admission gate",
            ));
        }
        if self.admitted.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.evicted.as_mut().poll(cx).is_ready() {
            self.closed = Some(io::ErrorKind::ConnectionAborted);
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed unauthenticated to make room for a newer connection",
            ));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            // Admission may have raced the timer; it wins.
            if self.admitted.load(Ordering::Acquire) {
                return Ok(());
            }
            let n = self.gate.timed_out.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    peer = ?self.io.peer_addr().ok(),
                    timed_out = n,
                    bound = ?self.gate.limits.handshake_timeout,
                    "refused: closed a connection that did not authenticate in time"
                );
            }
            self.closed = Some(io::ErrorKind::TimedOut);
            self.gate.forget(self.seq);
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "not authenticated within {:?}",
                    self.gate.limits.handshake_timeout
                ),
            ));
        }
        Ok(())
    }
}

impl AsyncRead for GatedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for GatedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl Connected for GatedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl Drop for GatedStream {
    fn drop(&mut self) {
        self.gate.forget(self.seq);
    }
}

/// How long the accept loop pauses after an accept error (out of descriptors, say), so a
/// full table does not turn into a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts on `listener` until `shutdown`, handing each connection, gated, to the returned
/// channel (the gRPC server's incoming stream).
pub fn accept_loop(
    listener: TcpListener,
    gate: Arc<Gate>,
    shutdown: CancellationToken,
) -> mpsc::Receiver<io::Result<GatedStream>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut failures = 0u64;
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tx.closed() => break,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((io, peer)) => {
                    // Agents' messages are small and latency matters to clock probes.
                    let _ = io.set_nodelay(true);
                    if tx.send(Ok(gate.enroll(io, peer))).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failures += 1;
                    // One line per burst of failures, not one per attempt.
                    if failures.is_power_of_two() {
                        tracing::warn!(cause = %e, failures, "accept failed; pausing");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    });
    rx
}
