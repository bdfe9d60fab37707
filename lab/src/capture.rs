//! [`Capture`]: a small packet capture of TCP SYNs, an observer of when connects really left
//! that owes nothing to the code under test (no tshark, no libpcap: an `AF_PACKET` socket).
//!
//! It is opened before a run on one interface of a namespace (the lab's bridge or a host's
//! port in its hub, a host's `eth0`) and drained after: the kernel queues what matched
//! meanwhile, so no thread of ours competes for a core while agents fire. A classic BPF
//! filter in the kernel keeps only IPv4 TCP segments to the given destination with SYN set
//! and ACK clear (first SYNs and their retransmits; not the SYN-ACKs, not the rest of the
//! handshake), so the queue holds SYNs only; [`parse_syn`] checks every frame again in user
//! space. Each SYN carries the kernel's receive timestamp (`SO_TIMESTAMPNS`):
//! **`CLOCK_REALTIME`**, ns since the Unix epoch, the clock `SystemTime` reads, so on one
//! machine it is the coordinator's clock and the agents' (report.json's `started_at` and
//! `start_error_us` are in that clock; docs/design.md "Start spread, cross-checked").
//!
//! Bounds: at most `max` SYNs are kept; the socket's queue is 32 MiB (root may force it) and
//! what the kernel dropped beyond it is counted ([`Captured::dropped`]), never hidden.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::mem::{size_of, size_of_val, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::Netns;

/// Bytes of each frame the filter passes up: Ethernet (14) + the longest IPv4 header (60) +
/// the TCP ports and flags (14), rounded up.
const SNAP: u32 = 128;

/// The socket's receive queue: room for tens of thousands of queued SYNs.
const QUEUE_BYTES: libc::c_int = 32 << 20;

/// One SYN seen on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syn {
    /// The kernel's timestamp of the frame, `CLOCK_REALTIME` ns since the Unix epoch.
    pub at_unix_nanos: i64,
    /// Who sent it.
    pub src: SocketAddrV4,
    /// Where it went.
    pub dst: SocketAddrV4,
}

/// What a capture saw, in the order the kernel queued it.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    /// The SYNs kept (at most the capture's `max`).
    pub syns: Vec<Syn>,
    /// Frames the kernel dropped because the socket's queue was full (`PACKET_STATISTICS`).
    pub dropped: u32,
    /// True if `max` SYNs were kept and more were left unread.
    pub truncated: bool,
}

impl Captured {
    /// Each source address's earliest SYN (a host's first connect on the wire).
    pub fn first_by_source(&self) -> BTreeMap<Ipv4Addr, Syn> {
        let mut first = BTreeMap::<Ipv4Addr, Syn>::new();
        for s in &self.syns {
            let e = first.entry(*s.src.ip()).or_insert(*s);
            if s.at_unix_nanos < e.at_unix_nanos {
                *e = *s;
            }
        }
        first
    }

    /// Latest minus earliest of the sources' first SYNs, ns (`None` without a SYN).
    pub fn start_spread_ns(&self) -> Option<i64> {
        let first = self.first_by_source();
        let times = first.values().map(|s| s.at_unix_nanos);
        Some(times.clone().max()? - times.min()?)
    }
}

/// An open capture of SYNs to one destination; [`Capture::drain`] reads what it queued.
#[derive(Debug)]
pub struct Capture {
    fd: OwnedFd,
    dst: SocketAddrV4,
    max: usize,
    /// On loopback every frame shows twice (out, then in): the outgoing copy is skipped.
    skip_outgoing: bool,
}

impl Capture {
    /// Starts capturing, in `ns`, the SYNs to `dst` that cross interface `iface`, in either
    /// direction (promiscuous, so a bridge also passes up the frames it forwards between its
    /// ports); keeps at most `max`. Needs root (`CAP_NET_RAW`).
    pub fn open(ns: &Netns, iface: &str, dst: SocketAddrV4, max: usize) -> io::Result<Capture> {
        let (fd, loopback) = ns.run(|| {
            let opened = open_socket(iface, dst)?;
            wait_for_stamping()?;
            Ok::<_, io::Error>(opened)
        })?;
        Ok(Capture {
            fd,
            dst,
            max,
            skip_outgoing: loopback,
        })
    }

    /// Reads every SYN queued so far (up to `max`) and closes the capture.
    pub fn drain(self) -> io::Result<Captured> {
        let mut out = Captured::default();
        let mut frame = [0u8; SNAP as usize];
        // Every queued frame is read once: the loop ends when the queue is empty (EAGAIN),
        // and a queue holds at most QUEUE_BYTES.
        while let Some(got) = self.recv(&mut frame)? {
            if got.outgoing && self.skip_outgoing {
                continue;
            }
            let Some((src, dst)) = parse_syn(&frame[..got.len], self.dst) else {
                continue;
            };
            if out.syns.len() == self.max {
                out.truncated = true;
                break;
            }
            out.syns.push(Syn {
                at_unix_nanos: got.at_unix_nanos,
                src,
                dst,
            });
        }
        out.dropped = self.dropped()?;
        Ok(out)
    }

    /// One queued frame into `buf`, without waiting; `None` when the queue is empty.
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Frame>> {
        recv_stamped(self.fd.as_raw_fd(), buf)
    }

    /// Frames the kernel dropped for a full queue since the socket was opened.
    fn dropped(&self) -> io::Result<u32> {
        let mut stats = [0u32; 2]; // struct tpacket_stats { tp_packets, tp_drops }
        let mut len = size_of_val(&stats) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `stats`, which is that long.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                stats.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stats[1])
    }
}

/// One queued packet of socket `fd` into `buf` with its arrival time, without waiting;
/// `None` when the queue is empty. `outgoing` is a packet socket's direction (false for
/// any other socket, whose smaller address leaves `sll_pkttype` zero).
fn recv_stamped(fd: libc::c_int, buf: &mut [u8]) -> io::Result<Option<Frame>> {
    // SAFETY: all-zero is a valid sockaddr_ll and a valid (empty) msghdr.
    let mut from: libc::sockaddr_ll = unsafe { zeroed() };
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&raw mut from).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control);
    // SAFETY: every pointer in `msg` points at a live local buffer of the stated length,
    // and the socket is ours.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        // MSG_DONTWAIT: never blocks, so never interrupted by a signal either.
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock => Ok(None),
            _ => Err(e),
        };
    }
    let mut at = None;
    // SAFETY: `msg` was filled in by recvmsg; the CMSG macros walk its control buffer
    // within msg_controllen, and SCM_TIMESTAMPNS data is one timespec (read unaligned).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                at = Some(ts.tv_sec * 1_000_000_000 + ts.tv_nsec);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let at_unix_nanos = at.ok_or_else(|| io::Error::other("a frame came without its time"))?;
    Ok(Some(Frame {
        len: (n as usize).min(buf.len()),
        outgoing: from.sll_pkttype == libc::PACKET_OUTGOING,
        at_unix_nanos,
    }))
}

struct Frame {
    len: usize,
    outgoing: bool,
    at_unix_nanos: i64,
}

/// The socket, made in the calling thread's namespace: filter attached before it is bound, so
/// nothing unfiltered is ever queued. Returns it and whether `iface` is a loopback device.
fn open_socket(iface: &str, dst: SocketAddrV4) -> io::Result<(OwnedFd, bool)> {
    // Protocol 0: the socket receives nothing until bind names ETH_P_ALL below.
    // SAFETY: socket(2) with constant arguments; the fd is owned at once.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let program = syn_filter(dst);
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)?;
    setsockopt(
        &fd,
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMPNS,
        &1 as &libc::c_int,
    )?;
    if setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &QUEUE_BYTES).is_err() {
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &QUEUE_BYTES)?;
    }
    let name = CString::new(iface).map_err(|_| io::Error::other("a NUL in the name"))?;
    // SAFETY: a NUL-terminated string that outlives the call.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::other(format!("no interface {iface:?} here")));
    }
    // SAFETY: all-zero is a valid packet_mreq.
    let mut mreq: libc::packet_mreq = unsafe { zeroed() };
    mreq.mr_ifindex = ifindex as libc::c_int;
    mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
    setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)?;
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    addr.sll_ifindex = ifindex as libc::c_int;
    // SAFETY: `addr` is a sockaddr_ll of the stated length.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // The bound address names the device's hardware type.
    let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes into `addr`, which is that long.
    if unsafe { libc::getsockname(fd.as_raw_fd(), (&raw mut addr).cast(), &mut len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((fd, addr.sll_hatype == libc::ARPHRD_LOOPBACK))
}

/// Waits until the kernel stamps packets as they arrive (at most [`STAMPING_WAIT`]).
///
/// A packet socket reads `skb->tstamp`, which the kernel sets on arrival only while some
/// socket asked for timestamps; else the time is taken when the packet is *read*, long after.
/// The first such request switches stamping on from a work queue, a moment later. So: a
/// datagram to ourselves on loopback, read [`STAMP_PROOF`] after it was sent, must carry a
/// time before the read; then every later packet is stamped on arrival, as long as the
/// capture (which asked too) stays open.
fn wait_for_stamping() -> io::Result<()> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    setsockopt(
        &socket,
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMPNS,
        &1 as &libc::c_int,
    )?;
    socket.set_nonblocking(true)?;
    let until = std::time::Instant::now() + STAMPING_WAIT;
    // Bounded by STAMPING_WAIT: each pass sleeps STAMP_PROOF.
    loop {
        socket.send_to(b"t", socket.local_addr()?)?;
        std::thread::sleep(STAMP_PROOF);
        let read_at = stampede_proto::clock::unix_nanos_now();
        let mut buf = [0u8; 8];
        if let Some(got) = recv_stamped(socket.as_raw_fd(), &mut buf)?
            && got.at_unix_nanos < read_at - STAMP_PROOF.as_nanos() as i64 / 2
        {
            return Ok(());
        }
        if std::time::Instant::now() >= until {
            return Err(io::Error::other(format!(
                "the kernel still stamps packets when read, not on arrival, after {STAMPING_WAIT:?}"
            )));
        }
    }
}

/// How long [`wait_for_stamping`] waits for the kernel's arrival stamps.
const STAMPING_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long its test datagram waits before it is read.
const STAMP_PROOF: std::time::Duration = std::time::Duration::from_millis(2);

fn setsockopt<T>(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: &T,
) -> io::Result<()> {
    // SAFETY: `v` points at a live T of the stated size; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The classic BPF program (what `tcpdump -dd 'ip and tcp and dst host D and dst port P and
/// tcp[13] & 0x12 == 2'` compiles to): IPv4 over Ethernet, TCP, unfragmented (or the first
/// fragment), to `dst`, SYN without ACK; passes the first [`SNAP`] bytes of a match.
fn syn_filter(dst: SocketAddrV4) -> Vec<libc::sock_filter> {
    use libc::{
        BPF_ABS, BPF_ALU, BPF_AND, BPF_B, BPF_H, BPF_IND, BPF_JEQ, BPF_JMP, BPF_JSET, BPF_K,
        BPF_LD, BPF_LDX, BPF_MSH, BPF_RET, BPF_W,
    };
    let op = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    // Conditional jumps go on (jt or jf 0) or to the last instruction (drop): `at` is the
    // instruction's own index, and offsets count from the next one.
    const DROP: u8 = 15;
    let jump = |code: u32, k: u32, at: u8, on_true_drop: bool| {
        let away = DROP - at - 1;
        let (jt, jf) = if on_true_drop { (away, 0) } else { (0, away) };
        libc::sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        }
    };
    let program = vec![
        op(BPF_LD | BPF_H | BPF_ABS, 12),                  // 0: ethertype
        jump(BPF_JMP | BPF_JEQ | BPF_K, 0x0800, 1, false), // 1: IPv4
        op(BPF_LD | BPF_B | BPF_ABS, 14 + 9),              // 2: protocol
        jump(BPF_JMP | BPF_JEQ | BPF_K, 6, 3, false),      // 3: TCP
        op(BPF_LD | BPF_W | BPF_ABS, 14 + 16),             // 4: destination address
        jump(BPF_JMP | BPF_JEQ | BPF_K, dst.ip().to_bits(), 5, false),
        op(BPF_LD | BPF_H | BPF_ABS, 14 + 6), // 6: fragment offset
        jump(BPF_JMP | BPF_JSET | BPF_K, 0x1fff, 7, true), // 7: not a later fragment
        op(BPF_LDX | BPF_B | BPF_MSH, 14),    // 8: X = IP header length
        op(BPF_LD | BPF_H | BPF_IND, 14 + 2), // 9: TCP destination port
        jump(BPF_JMP | BPF_JEQ | BPF_K, dst.port().into(), 10, false),
        op(BPF_LD | BPF_B | BPF_IND, 14 + 13), // 11: TCP flags
        op(BPF_ALU | BPF_AND | BPF_K, 0x12),   // 12: SYN | ACK
        jump(BPF_JMP | BPF_JEQ | BPF_K, 0x02, 13, false), // 13: SYN alone
        op(BPF_RET | BPF_K, SNAP),             // 14: keep
        op(BPF_RET | BPF_K, 0),                // 15: drop
    ];
    debug_assert_eq!(program.len(), usize::from(DROP) + 1);
    program
}

/// An Ethernet frame's (source, destination) if it is an IPv4 TCP segment to `dst` with SYN
/// set and ACK clear; `None` for anything else, including a frame too short to tell.
pub fn parse_syn(frame: &[u8], dst: SocketAddrV4) -> Option<(SocketAddrV4, SocketAddrV4)> {
    let be16 = |at: usize| Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]));
    let addr = |at: usize| -> Option<Ipv4Addr> {
        let b: [u8; 4] = frame.get(at..at + 4)?.try_into().ok()?;
        Some(Ipv4Addr::from(b))
    };
    if be16(12)? != 0x0800 {
        return None;
    }
    let ip = 14;
    let (version, ihl) = (frame.get(ip)? >> 4, usize::from(frame.get(ip)? & 0xf) * 4);
    if version != 4 || ihl < 20 || *frame.get(ip + 9)? != 6 || be16(ip + 6)? & 0x1fff != 0 {
        return None;
    }
    let tcp = ip + ihl;
    let src = SocketAddrV4::new(addr(ip + 12)?, be16(tcp)?);
    let to = SocketAddrV4::new(addr(ip + 16)?, be16(tcp + 2)?);
    let flags = *frame.get(tcp + 13)?;
    (to == dst && flags & 0x12 == 0x02).then_some((src, to))
}

#[cfg(test)]
#[path = "capture_tests.rs"]
mod tests;
