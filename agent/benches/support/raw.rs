//! The raw baselines: one thread, socket2 and libc only, doing per attempt exactly the
//! syscalls the engine does, and seeing completions exactly as the engine sees them.
//!
//! Per attempt, on both sides: before the clock, `socket(SOCK_NONBLOCK)` and `SO_LINGER 0`
//! (the engine arms its sockets before the start instant); timed, `connect()` and
//! `epoll_ctl(ADD, EPOLLOUT | EPOLLONESHOT)`; at completion `getsockopt(SO_ERROR)`,
//! `getsockopt(TCP_INFO)` and `close()` (RST). Neither side removes sockets from epoll one by
//! one: the registration is one-shot and close() drops it.
//!
//! How completions are seen, on both sides: every completion is stamped with the time the
//! `epoll_wait` that returned it came back. During a burst's issue loop, `epoll_wait(0)` runs
//! after every 32nd connect() (the engine's `POLL_EVERY`) and its completions are only
//! stamped; they are handled (the getsockopts and close) once the loop is done. After it,
//! `epoll_wait` runs until every attempt was seen, each batch stamped when it returns and
//! then handled. A connect() that fails at once is a completion seen at that moment.
//!
//! Figures: *issue* = first to last connect() call (each stamped just before the call);
//! *all* = first connect() call to the last completion's stamp; latency = an attempt's
//! connect() call to its stamp.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use stampede_proto::tcp_info::tcp_info;

/// The engine's `POLL_EVERY`: completions are collected every this many connects of a burst.
const POLL_EVERY: usize = 32;
/// No run of the baseline waits longer than this for its completions.
const LIMIT: Duration = Duration::from_secs(30);

/// What one run of a baseline saw.
pub(crate) struct Observed {
    /// First to last connect() call.
    pub(crate) issue: Duration,
    /// First connect() call to the last completion seen.
    pub(crate) all: Duration,
    /// Attempts seen completed, established and failed.
    pub(crate) seen: usize,
    /// Completed without an error.
    pub(crate) established: usize,
    /// Mean connect() call → completion seen.
    pub(crate) mean_latency: Duration,
}

impl Observed {
    /// Attempts per second, first call to last completion.
    pub(crate) fn rate(&self) -> f64 {
        self.seen as f64 / self.all.as_secs_f64().max(1e-9)
    }

    /// Mean attempts in flight (called, completion not yet seen), by Little's law: rate ×
    /// mean time in flight.
    pub(crate) fn in_flight(&self) -> f64 {
        self.rate() * self.mean_latency.as_secs_f64()
    }
}

/// A socket as `arm` makes it for an RST close: nonblocking, zero linger.
fn new_socket() -> Socket {
    let s = Socket::new(
        Domain::IPV4,
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )
    .expect("creating a socket");
    // Zero linger: close() sends RST, as the engine's default close does.
    s.set_linger(Some(Duration::ZERO)).expect("SO_LINGER 0");
    s
}

/// The epoll instance, the completions seen and not yet handled, and the tallies.
struct Completions {
    ep: OwnedFd,
    events: Vec<libc::epoll_event>,
    ready: Vec<(usize, Instant)>,
    seen: usize,
    established: usize,
    last_seen: Option<Instant>,
    latency_sum: Duration,
}

impl Completions {
    fn new(n: usize) -> Completions {
        // SAFETY: no memory preconditions; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(
            fd >= 0,
            "epoll_create1: {}",
            std::io::Error::last_os_error()
        );
        Completions {
            // SAFETY: a fresh descriptor nobody else owns.
            ep: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
            ready: Vec::with_capacity(n),
            seen: 0,
            established: 0,
            last_seen: None,
            latency_sum: Duration::ZERO,
        }
    }

    /// connect() and the one-shot registration of attempt `idx`; a connect() that fails at
    /// once is seen completed now.
    fn issue(&mut self, idx: usize, socket: &Socket, target: &SockAddr) {
        if let Err(e) = socket.connect(target)
            && e.raw_os_error() != Some(libc::EINPROGRESS)
        {
            self.ready.push((idx, Instant::now()));
            return;
        }
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLOUT | libc::EPOLLONESHOT) as u32,
            u64: idx as u64,
        };
        // SAFETY: `ev` is valid for the call; both descriptors are open.
        let rc = unsafe {
            libc::epoll_ctl(
                self.ep.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                socket.as_raw_fd(),
                &mut ev,
            )
        };
        assert_eq!(rc, 0, "epoll_ctl: {}", std::io::Error::last_os_error());
    }

    /// One epoll_wait; what it returned is stamped with the time it returned.
    fn collect(&mut self, timeout_ms: i32) {
        // SAFETY: `events` is a writable buffer of its length that outlives the call.
        let got = unsafe {
            libc::epoll_wait(
                self.ep.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                timeout_ms,
            )
        };
        let now = Instant::now();
        for ev in &self.events[..got.max(0) as usize] {
            self.ready.push((ev.u64 as usize, now));
        }
    }

    /// Handles one completion: SO_ERROR, TCP_INFO, close.
    fn finish(
        &mut self,
        idx: usize,
        at: Instant,
        sockets: &mut [Option<Socket>],
        calls: &[Instant],
    ) {
        let s = sockets[idx].take().expect("each attempt completes once");
        let ok = matches!(s.take_error(), Ok(None));
        // What the engine reads for the SYN retransmit count of every completion.
        let _ = tcp_info(s.as_fd());
        drop(s);
        self.seen += 1;
        self.established += usize::from(ok);
        self.latency_sum += at.saturating_duration_since(calls[idx]);
        self.last_seen = Some(self.last_seen.map_or(at, |l| l.max(at)));
    }

    /// Handles every completion collected so far.
    fn handle_all(&mut self, sockets: &mut [Option<Socket>], calls: &[Instant]) {
        let mut ready = std::mem::take(&mut self.ready);
        for &(idx, at) in &ready {
            self.finish(idx, at, sockets, calls);
        }
        ready.clear();
        self.ready = ready;
    }

    fn observed(&self, calls: &[Instant]) -> Observed {
        let first = calls[0];
        Observed {
            issue: calls[calls.len() - 1] - first,
            all: self.last_seen.map_or(Duration::ZERO, |l| l - first),
            seen: self.seen,
            established: self.established,
            mean_latency: self.latency_sum / self.seen.max(1) as u32,
        }
    }
}

/// A burst of `n` connects to `addr`, seen as the engine sees one. With `prearm`, the
/// sockets are created before the clock (as the engine's are); without, socket() and
/// SO_LINGER are in the timed loop too (the burst.c probe of docs/kernel.md §7).
pub(crate) fn burst(addr: SocketAddr, n: usize, prearm: bool) -> Observed {
    let target = SockAddr::from(addr);
    let mut sockets: Vec<Option<Socket>> = if prearm {
        (0..n).map(|_| Some(new_socket())).collect()
    } else {
        (0..n).map(|_| None).collect()
    };
    let mut calls = Vec::with_capacity(n);
    let mut c = Completions::new(n);
    for (i, slot) in sockets.iter_mut().enumerate() {
        calls.push(Instant::now());
        let socket = slot.get_or_insert_with(new_socket);
        c.issue(i, socket, &target);
        if (i + 1).is_multiple_of(POLL_EVERY) {
            c.collect(0);
        }
    }
    c.collect(0);
    c.handle_all(&mut sockets, &calls);
    while c.seen < n && calls[0].elapsed() < LIMIT {
        c.collect(50);
        c.handle_all(&mut sockets, &calls);
    }
    c.observed(&calls)
}

/// The cps.c loop (`-m client -c rst`) over `n` sockets created before the clock: `w`
/// connects in flight; each completion, as soon as it is handled, is replaced by the next
/// connect, until all `n` were seen.
pub(crate) fn churn(addr: SocketAddr, n: usize, w: usize) -> Observed {
    let target = SockAddr::from(addr);
    let mut sockets: Vec<Option<Socket>> = (0..n).map(|_| Some(new_socket())).collect();
    let mut calls = Vec::with_capacity(n);
    let mut c = Completions::new(n);
    let issue_next = |c: &mut Completions, sockets: &[Option<Socket>], calls: &mut Vec<Instant>| {
        let i = calls.len();
        if i < n {
            calls.push(Instant::now());
            c.issue(i, sockets[i].as_ref().expect("not yet issued"), &target);
        }
    };
    for _ in 0..w {
        issue_next(&mut c, &sockets, &mut calls);
    }
    while c.seen < n && calls[0].elapsed() < LIMIT {
        c.collect(50);
        // A connect() that fails at once lands in `c.ready` again, for the next round.
        for (idx, at) in std::mem::take(&mut c.ready) {
            c.finish(idx, at, &mut sockets, &calls);
            issue_next(&mut c, &sockets, &mut calls);
        }
    }
    c.observed(&calls)
}
