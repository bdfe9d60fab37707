//! Helpers shared by the target's integration tests: clients that record when they
//! connected and what greeting they got, and a target started in the current namespace.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use stampede_proto::target::TargetStats;
use stampede_target::config::Config;
use stampede_target::{Target, TargetHandle};
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What one client saw.
#[derive(Debug)]
pub struct ClientResult {
    /// Index in the burst.
    pub index: usize,
    /// Local port (the server sees it as the peer port).
    pub local_port: u16,
    /// When connect() completed, from the burst's start; `None` = still pending at deadline.
    pub connected_at: Option<Duration>,
    /// connect() failed with this error.
    pub connect_error: Option<std::io::ErrorKind>,
    /// The server's greeting: its accept timestamp, ns since the Unix epoch.
    pub greeting: Option<u64>,
    /// The connection, still open: closing it sends a FIN, which can admit a phantom
    /// (docs/kernel.md §3), so tests close it only after reading the target's stats.
    pub stream: Option<std::net::TcpStream>,
}

/// Starts a target on the current runtime (and so in the current namespace).
pub fn start_target(
    config: Config,
) -> (
    TargetHandle,
    CancellationToken,
    JoinHandle<TargetStats>,
    Option<SocketAddr>,
) {
    let target = Target::bind(&config).expect("binding the target");
    let handle = target.handle();
    let control = target.control_addr();
    let stop = CancellationToken::new();
    let run = tokio::spawn(target.run(stop.clone()));
    let join = tokio::spawn(async move { run.await.expect("target task").expect("target run") });
    (handle, stop, join, control)
}

/// One client: connect (until `connect_deadline`), then wait for the 8-byte greeting (until
/// `greet_deadline`), then close.
pub async fn client(
    index: usize,
    addr: SocketAddr,
    t0: Instant,
    connect_deadline: Instant,
    greet_deadline: Instant,
) -> ClientResult {
    let mut r = ClientResult {
        index,
        local_port: 0,
        connected_at: None,
        connect_error: None,
        greeting: None,
        stream: None,
    };
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    // Bind first so the local port is known even if connect() never completes.
    socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    r.local_port = socket.local_addr().unwrap().port();
    let mut stream = match tokio::time::timeout_at(connect_deadline, socket.connect(addr)).await {
        Err(_) => return r,
        Ok(Err(e)) => {
            r.connect_error = Some(e.kind());
            return r;
        }
        Ok(Ok(s)) => s,
    };
    r.connected_at = Some(t0.elapsed());
    let mut buf = [0u8; 8];
    if let Ok(Ok(_)) = tokio::time::timeout_at(greet_deadline, stream.read_exact(&mut buf)).await {
        r.greeting = Some(u64::from_be_bytes(buf));
    }
    r.stream = Some(stream.into_std().expect("detaching the stream"));
    r
}

/// `n` clients started at once on a single-threaded runtime of their own thread (in the
/// caller's namespace), so their SYN-retransmit timers fire together as one wave, as
/// docs/kernel.md §3 describes.
pub fn burst(
    n: usize,
    addr: SocketAddr,
    connect_within: Duration,
    greet_within: Duration,
) -> std::thread::JoinHandle<Vec<ClientResult>> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let t0 = Instant::now();
                let tasks: Vec<_> = (0..n)
                    .map(|i| {
                        tokio::spawn(client(i, addr, t0, t0 + connect_within, t0 + greet_within))
                    })
                    .collect();
                let mut out = Vec::with_capacity(n);
                for t in tasks {
                    out.push(t.await.unwrap());
                }
                out
            })
    })
}
