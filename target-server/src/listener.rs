//! The listening socket: bound with socket2 so the backlog reaches listen() as given
//! (std and mio hard-code 128, docs/kernel.md §1), re-listened in place to change it, and read
//! back through TCP_INFO so the *effective* backlog is what the kernel says, not what we
//! asked for.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Mutex;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use stampede_proto::tcp_info::{ListenerQueue, listener_queue};

/// A bound, listening TCP socket plus what the kernel made of its backlog.
#[derive(Debug)]
pub struct Listener {
    socket: tokio::net::TcpListener,
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
        let socket = tokio::net::TcpListener::from_std(std)?;
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

    /// The tokio listener, for accept().
    pub fn tokio(&self) -> &tokio::net::TcpListener {
        &self.socket
    }

    /// Calls listen() again on the same socket: the kernel takes the new backlog (raising or
    /// lowering it) and re-reads somaxconn; queued connections stay queued.
    pub fn relisten(&self, backlog: i32) -> io::Result<()> {
        SockRef::from(&self.socket).listen(backlog)
    }

    /// Queue length and effective backlog, from the kernel.
    pub fn queue(&self) -> io::Result<ListenerQueue> {
        listener_queue(self.socket.as_fd())
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
