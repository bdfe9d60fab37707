//! A round-trip delay between two namespaces without netem (sch_netem is not built into this
//! kernel): a TUN device in each namespace and a thread that copies every IP packet from one
//! to the other after a fixed one-way delay. It is the TUN relay of docs/kernel.md §8, in Rust.
//!
//! The devices are not persistent: they exist while the relay holds their file descriptors,
//! so dropping the [`Relay`] (or the relay's lifetime running out) removes both, and the two
//! addresses stop answering.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Netns, run_ip};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
/// The longest a relay may live, whatever its caller asks.
const MAX_LIFETIME: Duration = Duration::from_secs(900);

/// Two namespaces joined point to point through a delaying userspace relay.
///
/// Side A gets `addr_a/24` on a TUN device, side B `addr_b/24`; both addresses must be in
/// 198.18.0.0/15 and in one /24. Packets between them take `one_way` each way, so a TCP
/// connect from A to B takes about `2 × one_way`.
#[derive(Debug)]
pub struct Relay {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    forwarded: Arc<AtomicU32>,
}

impl Relay {
    /// Creates the two devices, addresses them, and starts relaying for at most `lifetime`
    /// (capped at 15 minutes).
    pub fn new(
        a: &Netns,
        addr_a: Ipv4Addr,
        b: &Netns,
        addr_b: Ipv4Addr,
        one_way: Duration,
        lifetime: Duration,
    ) -> io::Result<Relay> {
        for addr in [addr_a, addr_b] {
            let [x, y, ..] = addr.octets();
            if x != 198 || (y != 18 && y != 19) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{addr} is outside 198.18.0.0/15"),
                ));
            }
        }
        if addr_a.octets()[..3] != addr_b.octets()[..3] || addr_a == addr_b {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{addr_a} and {addr_b} must be two addresses of one /24"),
            ));
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dev = format!("stpr{}", NEXT.fetch_add(1, Ordering::Relaxed) % 100_000);
        // Each device is created in the namespace of the thread that opens it and stays
        // there; the relay thread itself needs no namespace.
        let tun_a = a.run(|| open_tun(&dev))?;
        let tun_b = b.run(|| open_tun(&dev))?;
        for (ns, addr) in [(a, addr_a), (b, addr_b)] {
            run_ip(&[
                "-n",
                ns.name(),
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &dev,
            ])?;
            run_ip(&["-n", ns.name(), "link", "set", &dev, "up"])?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU32::new(0));
        let deadline = Instant::now() + lifetime.min(MAX_LIFETIME);
        let thread = std::thread::Builder::new()
            .name("tun-relay".into())
            .spawn({
                let stop = Arc::clone(&stop);
                let forwarded = Arc::clone(&forwarded);
                move || relay(tun_a, tun_b, one_way, deadline, &stop, &forwarded)
            })?;
        Ok(Relay {
            stop,
            thread: Some(thread),
            forwarded,
        })
    }

    /// Packets delivered so far (both directions).
    pub fn forwarded(&self) -> u32 {
        self.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open_tun(name: &str) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")?;
    // struct ifreq: a 16-byte name, then the flags (a short), in a 40-byte union.
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    ifr[16..18].copy_from_slice(&(IFF_TUN | IFF_NO_PI).to_ne_bytes());
    // SAFETY: the fd is open; TUNSETIFF reads and writes a struct ifreq, and `ifr` is a
    // 40-byte buffer (the size of struct ifreq) that outlives the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, ifr.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

fn relay(
    mut a: File,
    mut b: File,
    one_way: Duration,
    deadline: Instant,
    stop: &AtomicBool,
    forwarded: &AtomicU32,
) {
    // One delay for every packet: arrival order is due order, so a FIFO per direction is
    // enough. (Bounded: a packet waits at most `one_way`.)
    let mut to_b: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut to_a: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let now = Instant::now();
        for (queue, out) in [(&mut to_b, &mut b), (&mut to_a, &mut a)] {
            while queue.front().is_some_and(|(due, _)| *due <= now) {
                let (_, pkt) = queue.pop_front().expect("front checked");
                // A full or vanished device drops the packet, as a real link would.
                if out.write(&pkt).is_ok() {
                    forwarded.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let next_due = [to_b.front(), to_a.front()]
            .into_iter()
            .flatten()
            .map(|(due, _)| due.saturating_duration_since(now))
            .min();
        let wait = next_due
            .unwrap_or(Duration::MAX)
            .min(Duration::from_millis(10));
        let mut fds = [
            libc::pollfd {
                fd: a.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: b.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // Round up so a packet due in 300 µs does not spin through zero-timeout polls.
        let ms = wait.as_micros().div_ceil(1000) as libc::c_int;
        // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
        unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        for (src, queue) in [(&mut a, &mut to_b), (&mut b, &mut to_a)] {
            // At most 1024 packets per wake-up, so neither direction starves the other.
            for _ in 0..1024 {
                match src.read(&mut buf) {
                    Ok(n) if n > 0 => {
                        queue.push_back((Instant::now() + one_way, buf[..n].to_vec()));
                    }
                    _ => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel_tests_enabled;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn relay_delays_a_tcp_connect_by_the_round_trip() {
        if !kernel_tests_enabled("relay_delays_a_tcp_connect_by_the_round_trip") {
            return;
        }
        let client_ns = Netns::new("rlya").unwrap();
        let server_ns = Netns::new("rlyb").unwrap();
        let (ca, sa) = (Ipv4Addr::new(198, 18, 1, 1), Ipv4Addr::new(198, 18, 1, 2));
        let one_way = Duration::from_millis(40);
        let relay = Relay::new(
            &client_ns,
            ca,
            &server_ns,
            sa,
            one_way,
            Duration::from_secs(30),
        )
        .unwrap();
        let listener = server_ns.run(|| TcpListener::bind((sa, 0)).unwrap());
        let port = listener.local_addr().unwrap().port();
        let (mut client, took) = client_ns.run(|| {
            let t = Instant::now();
            let s = TcpStream::connect_timeout(&(sa, port).into(), Duration::from_secs(5)).unwrap();
            (s, t.elapsed())
        });
        // SYN and SYN-ACK each wait one_way: the connect takes a full round trip, and (on
        // this idle path) not much more.
        assert!(took >= 2 * one_way, "connect took {took:?}");
        assert!(took < 2 * one_way + Duration::from_millis(500), "{took:?}");
        let (mut server, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), std::net::IpAddr::V4(ca));
        client.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        assert!(relay.forwarded() >= 4, "{}", relay.forwarded());
        drop(relay);
        // The devices went with the relay: the server's address is no longer reachable.
        let after = client_ns
            .run(|| TcpStream::connect_timeout(&(sa, port).into(), Duration::from_millis(500)));
        assert!(after.is_err(), "connected after the relay stopped");
        let links = client_ns
            .command("ip")
            .args(["-o", "link"])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&links.stdout).contains("stpr"),
            "the TUN device outlived its relay"
        );
    }

    #[test]
    fn relay_refuses_addresses_outside_the_benchmarking_range() {
        if !kernel_tests_enabled("relay_refuses_addresses_outside_the_benchmarking_range") {
            return;
        }
        let a = Netns::new("rlyc").unwrap();
        let b = Netns::new("rlyd").unwrap();
        let d = Duration::from_millis(1);
        let bad = Relay::new(
            &a,
            Ipv4Addr::new(10, 0, 0, 1),
            &b,
            Ipv4Addr::new(10, 0, 0, 2),
            d,
            d,
        );
        assert_eq!(bad.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let split = Relay::new(
            &a,
            Ipv4Addr::new(198, 18, 1, 1),
            &b,
            Ipv4Addr::new(198, 18, 2, 1),
            d,
            d,
        );
        assert_eq!(split.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
