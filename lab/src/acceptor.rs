//! [`Acceptor`]: a listener that accepts as fast as it can and records when each connection
//! was accepted, so a test can ask how many arrived and how densely (a catch-up burst shows as
//! many accepts in a short window), independently of the code under test.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// When the kernel completed `conn`'s handshake: now, less the time since the last ACK it
/// received (`tcpi_last_ack_recv`, ms; for a connection never used, the handshake's ACK).
fn established_at(conn: &std::net::TcpStream) -> Instant {
    let now = Instant::now();
    match stampede_proto::tcp_info::tcp_info(std::os::fd::AsFd::as_fd(conn)) {
        Ok(info) => now
            .checked_sub(Duration::from_millis(info.last_ack_recv_ms.into()))
            .unwrap_or(now),
        Err(_) => now,
    }
}

/// A loopback listener (in the calling thread's network namespace) with a thread accepting
/// on it; stopped and joined on drop.
#[derive(Debug)]
pub struct Acceptor {
    /// Where it listens.
    pub addr: SocketAddr,
    times: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    /// Listens on 127.0.0.1 (an ephemeral port) with a backlog of 4096 and starts accepting.
    pub fn start() -> io::Result<Acceptor> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        // std listens with a backlog of 128; listen() again raises it (docs/kernel.md §1), so
        // a fast ramp never meets a full queue here.
        // SAFETY: listen(2) on a socket this function owns; no memory is involved.
        if unsafe { libc::listen(listener.as_raw_fd(), 4096) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let addr = listener.local_addr()?;
        let times = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        listener.set_nonblocking(true)?;
        // Each connection is stamped with when the kernel completed its handshake (read from
        // the accepted socket), not when this thread got to it: a starved test process must
        // not turn a steady arrival into a fake burst. poll(2) keeps the thread idle between
        // connections; its timeout only bounds how long a stop waits.
        let thread = {
            let (times, stop) = (times.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut pfd = libc::pollfd {
                    fd: listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: one pollfd that lives across the call, for a descriptor this
                    // thread owns (the listener).
                    unsafe { libc::poll(&mut pfd, 1, 50) };
                    while let Ok((conn, _)) = listener.accept() {
                        times
                            .lock()
                            .expect("times lock")
                            .push(established_at(&conn));
                    }
                }
            })
        };
        Ok(Acceptor {
            addr,
            times,
            stop,
            thread: Some(thread),
        })
    }

    /// Connections accepted so far.
    pub fn count(&self) -> usize {
        self.times.lock().expect("times lock").len()
    }

    /// The most connections accepted within any `window`.
    pub fn densest(&self, window: Duration) -> usize {
        // Accept order is not quite handshake order: sort the stamps first.
        let mut times = self.times.lock().expect("times lock").clone();
        times.sort_unstable();
        let (mut best, mut lo) = (0, 0);
        for hi in 0..times.len() {
            while times[hi] - times[lo] > window {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_windows_what_it_accepts() {
        let a = Acceptor::start().unwrap();
        let conns: Vec<_> = (0..5)
            .map(|_| std::net::TcpStream::connect(a.addr).unwrap())
            .collect();
        let until = Instant::now() + Duration::from_secs(5);
        while a.count() < 5 {
            assert!(Instant::now() < until, "accepted {} of 5", a.count());
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(a.densest(Duration::from_secs(5)), 5);
        drop(conns);
    }
}
