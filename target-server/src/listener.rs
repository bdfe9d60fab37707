//! The listening socket: bound with socket2 so the backlog reaches listen() as given
//! (std and mio hard-code 128, docs/kernel.md §1), re-listened in place to change it, and read
//! back through TCP_INFO so the *effective* backlog is what the kernel says, not what we
//! asked for. [`Listener::accept`] reads the queue just before each accept(), so a peak that
//! an accept ends at once (shorter than the sampler's tick) is still seen.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Mutex;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use stampede_proto::tcp_info::{ListenerQueue, listener_queue};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A bound, listening TCP socket plus what the kernel made of its backlog.
#[derive(Debug)]
pub struct Listener {
    /// Non-blocking, watched by the runtime for readability.
    socket: AsyncFd<std::net::TcpListener>,
    addr: SocketAddr,
    /// `/proc/sys/net/core/somaxconn` opened in the listener's namespace, re-read at every
    /// listen() because the kernel reads it then (docs/kernel.md §1).
    somaxconn_file: Mutex<File>,
}

impl Listener {
    /// Binds `addr` and listens with `backlog`. Must run in the network namespace the
    /// listener belongs to; needs a tokio runtime.
    pub fn bind(addr: SocketAddr, backlog: i32) -> io::Result<Listener> {
        let somaxconn_file = File::open("/proc/sys/net/core/somaxconn")?;
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        // Restarting a target right after a run must not fail on the old run's TIME_WAITs.
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket
            .bind(&addr.into())
            .map_err(|e| io::Error::new(e.kind(), format!("binding {addr}: {e}")))?;
        socket.listen(backlog)?;
        let std: std::net::TcpListener = socket.into();
        let addr = std.local_addr()?;
        // SAFETY: the AsyncFd takes ownership of the std listener, which owns its descriptor:
        // it stays open, the same socket, for as long as the AsyncFd lives, and as_raw_fd
        // always returns it.
        let socket = unsafe { AsyncFd::register_with_interest(std, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Listener {
            socket,
            addr,
            somaxconn_file: Mutex::new(somaxconn_file),
        })
    }

    /// The bound address (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for a connection and accepts it, handing `before` the accept queue as the
    /// kernel reports it just before the accept() (when it can be read): the queue's length at
    /// its peak, however briefly, when an accept is what ends the peak.
    pub async fn accept(
        &self,
        mut before: impl FnMut(ListenerQueue),
    ) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
        // Bounded by the runtime: each pass waits for readiness; a spurious one clears it.
        loop {
            let mut ready = self.socket.readable().await?;
            let accepted = ready.try_io(|l| {
                if let Ok(q) = listener_queue(l.get_ref().as_fd()) {
                    before(q);
                }
                l.get_ref().accept()
            });
            match accepted {
                Ok(Ok((stream, peer))) => {
                    stream.set_nonblocking(true)?;
                    return Ok((tokio::net::TcpStream::from_std(stream)?, peer));
                }
                Ok(Err(e)) => return Err(e),
                // Would block: readiness cleared, wait again.
                Err(_) => continue,
            }
        }
    }

    /// Calls listen() again on the same socket: the kernel takes the new backlog (raising or
    /// lowering it) and re-reads somaxconn; queued connections stay queued.
    pub fn relisten(&self, backlog: i32) -> io::Result<()> {
        SockRef::from(self.socket.get_ref()).listen(backlog)
    }

    /// Queue length and effective backlog, from the kernel.
    pub fn queue(&self) -> io::Result<ListenerQueue> {
        listener_queue(self.socket.get_ref().as_fd())
    }

    /// `net.core.somaxconn` of the listener's namespace now.
    pub fn somaxconn(&self) -> io::Result<u32> {
        let mut file = self.somaxconn_file.lock().expect("somaxconn lock poisoned");
        let mut text = String::new();
        file.seek(SeekFrom::Start(0))?;
        file.read_to_string(&mut text)?;
        text.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("net.core.somaxconn is {text:?}"),
            )
        })
    }
}
