//! Listening sockets of *any* process in this network namespace, through sock_diag
//! (inet_diag) netlink: the kernel's own `ss -lnt` view, where `idiag_rqueue` is the accept
//! queue's length and `idiag_wqueue` the effective backlog (docs/kernel.md §5). A dump costs about
//! 9 µs, cheap enough to poll a third-party listener every few milliseconds.
//!
//! Requests and replies are built and parsed as bytes in native order, so no unsafe code is
//! needed; the layouts are `struct nlmsghdr`, `inet_diag_req_v2` and `inet_diag_msg` from
//! `linux/netlink.h` and `linux/inet_diag.h`.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
const INET_DIAG_MSG_LEN: usize = 72;
const TCP_LISTEN: u32 = 10;

/// One listening socket as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerInfo {
    /// Local address and port.
    pub addr: SocketAddr,
    /// Connections waiting in the accept queue.
    pub queue_len: u32,
    /// Effective backlog A; the queue holds A+1.
    pub backlog: u32,
    /// Socket inode (tells listeners on one port apart, e.g. SO_REUSEPORT groups).
    pub inode: u32,
}

/// A sock_diag netlink socket, bound to the namespace it was created in.
#[derive(Debug)]
pub struct Diag {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Diag {
    /// Opens the netlink socket (in the calling thread's network namespace).
    pub fn open() -> io::Result<Diag> {
        let socket = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::DGRAM,
            Some(Protocol::from(NETLINK_SOCK_DIAG)),
        )?;
        Ok(Diag {
            socket,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// All TCP listeners (IPv4 and IPv6) in the namespace.
    pub fn listeners(&mut self) -> io::Result<Vec<ListenerInfo>> {
        let mut out = Vec::new();
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            self.dump(family, &mut out)?;
        }
        Ok(out)
    }

    fn dump(&mut self, family: u8, out: &mut Vec<ListenerInfo>) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let req = request(family, self.seq);
        // With no address, a netlink datagram goes to the kernel (port id 0).
        self.socket.send(&req)?;
        // A dump arrives as a bounded number of datagrams ending in NLMSG_DONE; the bound
        // only guards against a kernel that never says DONE.
        for _ in 0..100_000 {
            let n = (&self.socket).read(&mut self.buf)?;
            if parse_datagram(&self.buf[..n], self.seq, out)? {
                return Ok(());
            }
        }
        Err(io::Error::other("sock_diag dump did not end"))
    }
}

/// `nlmsghdr` + `inet_diag_req_v2` asking for every TCP socket in LISTEN of `family`.
fn request(family: u8, seq: u32) -> Vec<u8> {
    let len = NLMSG_HDRLEN + 56;
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes()); // nlmsg_len
    b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes()); // nlmsg_type
    b.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes()); // nlmsg_flags
    b.extend_from_slice(&seq.to_ne_bytes()); // nlmsg_seq
    b.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid
    b.push(family); // sdiag_family
    b.push(libc::IPPROTO_TCP as u8); // sdiag_protocol
    b.push(0); // idiag_ext: no extensions
    b.push(0); // pad
    b.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes()); // idiag_states
    b.resize(len, 0); // inet_diag_sockid: zero = any (dumps ignore it)
    b
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

/// Parses one datagram of a dump; true when it held NLMSG_DONE.
fn parse_datagram(mut b: &[u8], seq: u32, out: &mut Vec<ListenerInfo>) -> io::Result<bool> {
    while b.len() >= NLMSG_HDRLEN {
        let len = u32_at(b, 0) as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed netlink message",
            ));
        }
        let kind = u16_at(b, 4);
        let msg_seq = u32_at(b, 8);
        let payload = &b[NLMSG_HDRLEN..len];
        if msg_seq == seq {
            match kind {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => {
                    let errno = i32::from_ne_bytes(payload[..4].try_into().expect("4 bytes"));
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                SOCK_DIAG_BY_FAMILY if payload.len() >= INET_DIAG_MSG_LEN => {
                    out.push(parse_msg(payload));
                }
                _ => {}
            }
        }
        // Messages are 4-byte aligned.
        let step = (len + 3) & !3;
        b = &b[step.min(b.len())..];
    }
    Ok(false)
}

/// `inet_diag_msg`: family, state, timer, retrans, then `inet_diag_sockid` (sport and dport
/// big-endian, src and dst as four 32-bit words, interface, cookie), expires, rqueue,
/// wqueue, uid, inode.
fn parse_msg(m: &[u8]) -> ListenerInfo {
    let family = m[0];
    let port = u16::from_be_bytes([m[4], m[5]]);
    let src = &m[8..24];
    let ip = if i32::from(family) == libc::AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(src).expect("16 bytes")))
    } else {
        IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3]))
    };
    ListenerInfo {
        addr: SocketAddr::new(ip, port),
        queue_len: u32_at(m, 56),
        backlog: u32_at(m, 60),
        inode: u32_at(m, 68),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_own_listener_with_its_queue() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _c = std::net::TcpStream::connect(addr).unwrap();
        let mut diag = Diag::open().unwrap();
        let found: Vec<_> = diag
            .listeners()
            .unwrap()
            .into_iter()
            .filter(|l| l.addr == addr)
            .collect();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].queue_len, 1);
        // Agrees with TCP_INFO on the socket itself.
        use std::os::fd::AsFd;
        let q = stampede_proto::tcp_info::listener_queue(listener.as_fd()).unwrap();
        assert_eq!(found[0].backlog, q.backlog);
    }
}
