//! Test support: a tiny listener with an exact backlog, a delayed start of accepting and an
//! optional 8-byte greeting, standing in for stampede-target (the agent must not depend on it).

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// A listener run by a thread: waits `accept_delay`, then accepts as fast as it can.
pub struct Listener {
    pub addr: SocketAddr,
    socket: std::net::TcpListener,
    accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<std::net::TcpStream>>>,
}

impl Listener {
    /// Binds 127.0.0.1:0 in the calling thread's namespace with exactly `backlog`.
    pub fn start(backlog: i32, accept_delay: Duration, greet: bool) -> Listener {
        Listener::start_at("127.0.0.1:0".parse().unwrap(), backlog, accept_delay, greet)
    }

    /// Accepts at once and resets every connection (SO_LINGER 0, close) without a byte.
    pub fn resetting() -> Listener {
        Listener::start_with(
            "127.0.0.1:0".parse().unwrap(),
            64,
            Duration::ZERO,
            false,
            true,
            u64::MAX,
        )
    }

    /// Like [`Listener::start`], but stops accepting after `max_accepts`.
    pub fn start_limited(backlog: i32, accept_delay: Duration, max_accepts: u64) -> Listener {
        Listener::start_with(
            "127.0.0.1:0".parse().unwrap(),
            backlog,
            accept_delay,
            false,
            false,
            max_accepts,
        )
    }

    /// Connections waiting in the accept queue now.
    pub fn queue_len(&self) -> u32 {
        use std::os::fd::AsFd;
        stampede_proto::tcp_info::listener_queue(self.socket.as_fd())
            .unwrap()
            .len
    }

    /// Binds `addr` (a fixed port only inside a test's own namespace).
    pub fn start_at(
        addr: SocketAddr,
        backlog: i32,
        accept_delay: Duration,
        greet: bool,
    ) -> Listener {
        Listener::start_with(addr, backlog, accept_delay, greet, false, u64::MAX)
    }

    fn start_with(
        addr: SocketAddr,
        backlog: i32,
        accept_delay: Duration,
        greet: bool,
        reset: bool,
        max_accepts: u64,
    ) -> Listener {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.bind(&addr.into()).unwrap();
        socket.listen(backlog).unwrap();
        let listener: std::net::TcpListener = socket.into();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let socket = listener.try_clone().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                // Waiting on the wall clock is the point: the queue must stay full until then.
                while started.elapsed() < accept_delay && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                while !stop.load(Ordering::Relaxed) {
                    if accepted.load(Ordering::Relaxed) >= max_accepts {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            if reset {
                                let s = Socket::from(s);
                                s.set_linger(Some(Duration::ZERO)).unwrap();
                                drop(s);
                                continue;
                            }
                            if greet {
                                let _ = s.write_all(&[7u8; 8]);
                            }
                            kept.push(s);
                        }
                        Err(_) => std::thread::sleep(Duration::from_micros(200)),
                    }
                }
                kept
            })
        };
        Listener {
            addr,
            socket,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Stops accepting and returns the accepted connections.
    pub fn stop(mut self) -> Vec<std::net::TcpStream> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
