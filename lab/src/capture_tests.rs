//! Tests of `capture.rs`: the parser and the kernel filter on crafted frames (the filter
//! through a small interpreter of the few classic BPF instructions it uses), and real
//! connects across a lab's bridge seen where they should be, when they happened.

use super::*;
use crate::{Lab, kernel_tests_enabled};
use std::net::{SocketAddr, TcpListener};
use std::time::SystemTime;

const DST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 9), 8000);
const SRC: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 40000);
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// An Ethernet + IPv4 + TCP frame; `options` 32-bit words of IP options.
fn frame(src: SocketAddrV4, dst: SocketAddrV4, flags: u8, options: usize, frag: u16) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend(0x0800u16.to_be_bytes());
    let ihl = 5 + options;
    f.push(0x40 | ihl as u8);
    f.push(0);
    f.extend(((ihl * 4 + 20) as u16).to_be_bytes());
    f.extend([0, 0]);
    f.extend(frag.to_be_bytes());
    f.extend([64, 6, 0, 0]);
    f.extend(src.ip().octets());
    f.extend(dst.ip().octets());
    f.extend(vec![1u8; options * 4]);
    f.extend(src.port().to_be_bytes());
    f.extend(dst.port().to_be_bytes());
    f.extend([0u8; 8]);
    f.push(0x50);
    f.push(flags);
    f.extend([0u8; 6]);
    f
}

/// Runs the classic BPF `program` on `pkt` as the kernel would (only the instructions
/// `syn_filter` uses): the number of bytes it keeps, 0 to drop.
fn run_bpf(program: &[libc::sock_filter], pkt: &[u8]) -> u32 {
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    let load = |at: usize, n: usize| -> Option<u32> {
        let b = pkt.get(at..at + n)?;
        Some(b.iter().fold(0, |v, &byte| v << 8 | u32::from(byte)))
    };
    for _ in 0..program.len() {
        let i = program[pc];
        let (code, k) = (u32::from(i.code), i.k);
        pc += 1;
        let size = |c: u32| match c & 0x18 {
            libc::BPF_W => 4,
            libc::BPF_H => 2,
            _ => 1,
        };
        match code & 0x07 {
            libc::BPF_LD => {
                let at = k as usize
                    + if code & 0xe0 == libc::BPF_IND {
                        x as usize
                    } else {
                        0
                    };
                match load(at, size(code)) {
                    Some(v) => a = v,
                    None => return 0, // out of bounds: the kernel drops the packet
                }
            }
            libc::BPF_LDX => match load(k as usize, 1) {
                Some(v) => x = (v & 0xf) * 4,
                None => return 0,
            },
            libc::BPF_ALU => a &= k,
            libc::BPF_JMP => {
                let taken = match code & 0xf0 {
                    libc::BPF_JEQ => a == k,
                    libc::BPF_JSET => a & k != 0,
                    other => panic!("jump {other:#x} not interpreted"),
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            libc::BPF_RET => return k,
            other => panic!("class {other:#x} not interpreted"),
        }
    }
    panic!("the program ran off its end");
}

/// The parser and the kernel filter agree on `f`; the parser's answer.
fn judge(f: &[u8]) -> Option<(SocketAddrV4, SocketAddrV4)> {
    let parsed = parse_syn(f, DST);
    let kept = run_bpf(&syn_filter(DST), f);
    assert_eq!(
        kept != 0,
        parsed.is_some(),
        "filter and parser disagree on {f:?}"
    );
    if kept != 0 {
        assert_eq!(kept, SNAP);
    }
    parsed
}

#[test]
fn a_syn_to_the_destination_is_taken_with_its_source() {
    assert_eq!(judge(&frame(SRC, DST, SYN, 0, 0)), Some((SRC, DST)));
    // IP options move the TCP header; ECN bits beside SYN leave it a SYN; DF is no fragment.
    assert_eq!(judge(&frame(SRC, DST, SYN, 3, 0)), Some((SRC, DST)));
    assert_eq!(judge(&frame(SRC, DST, SYN | 0xc0, 0, 0)), Some((SRC, DST)));
    assert_eq!(judge(&frame(SRC, DST, SYN, 0, 0x4000)), Some((SRC, DST)));
}

#[test]
fn everything_else_is_left_out() {
    let other_port = SocketAddrV4::new(*DST.ip(), 8001);
    let other_host = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 8), 8000);
    for (what, f) in [
        ("SYN-ACK", frame(SRC, DST, SYN | ACK, 0, 0)),
        ("ACK", frame(SRC, DST, ACK, 0, 0)),
        ("RST", frame(SRC, DST, 0x04, 0, 0)),
        ("reply from the destination", frame(DST, SRC, SYN, 0, 0)),
        ("another port", frame(SRC, other_port, SYN, 0, 0)),
        ("another host", frame(SRC, other_host, SYN, 0, 0)),
        ("a later fragment", frame(SRC, DST, SYN, 0, 0x0010)),
    ] {
        assert_eq!(judge(&f), None, "{what}");
    }
    let mut ipv6 = frame(SRC, DST, SYN, 0, 0);
    ipv6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    assert_eq!(judge(&ipv6), None, "IPv6");
    let mut udp = frame(SRC, DST, SYN, 0, 0);
    udp[14 + 9] = 17;
    assert_eq!(judge(&udp), None, "UDP");
}

#[test]
fn a_frame_cut_short_is_never_taken_and_never_panics() {
    let whole = frame(SRC, DST, SYN, 2, 0);
    // The flags byte is the last one needed: 14 + 28 + 13.
    let needed = 14 + 28 + 14;
    for len in 0..whole.len() {
        let got = judge(&whole[..len]);
        assert_eq!(got.is_some(), len >= needed, "cut at {len}");
    }
}

#[test]
fn the_first_syn_per_source_and_the_spread() {
    let syn = |ip: [u8; 4], port, at| Syn {
        at_unix_nanos: at,
        src: SocketAddrV4::new(Ipv4Addr::from(ip), port),
        dst: DST,
    };
    let c = Captured {
        syns: vec![
            syn([198, 18, 0, 2], 1, 1_000_500),
            syn([198, 18, 0, 3], 1, 1_000_020),
            syn([198, 18, 0, 2], 2, 1_000_100), // queued later, sent earlier
            syn([198, 18, 0, 3], 2, 1_000_900),
        ],
        ..Captured::default()
    };
    let first = c.first_by_source();
    assert_eq!(first.len(), 2);
    assert_eq!(first[&Ipv4Addr::new(198, 18, 0, 2)].src.port(), 2);
    assert_eq!(
        first[&Ipv4Addr::new(198, 18, 0, 3)].at_unix_nanos,
        1_000_020
    );
    assert_eq!(c.start_spread_ns(), Some(80));
    assert_eq!(Captured::default().start_spread_ns(), None);
}

fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as i64
}

#[test]
fn connects_across_the_bridge_are_seen_when_they_happen() {
    if !kernel_tests_enabled("connects_across_the_bridge_are_seen_when_they_happen") {
        return;
    }
    let lab = Lab::new("cap", 2).unwrap();
    let listen = |port| {
        lab.host(1)
            .run(|| TcpListener::bind((lab.addr(1), port)).unwrap())
    };
    let (listener, other) = (listen(0), listen(0));
    let dst = SocketAddrV4::new(lab.addr(1), listener.local_addr().unwrap().port());
    let noise = other.local_addr().unwrap();
    let captures = [
        (
            "the bridge",
            Capture::open(lab.hub(), Lab::BRIDGE, dst, 100),
        ),
        (
            "the client's port",
            Capture::open(lab.hub(), &lab.port(0), dst, 100),
        ),
        (
            "the client's eth0",
            Capture::open(lab.host(0), "eth0", dst, 100),
        ),
        (
            "the server's eth0",
            Capture::open(lab.host(1), "eth0", dst, 100),
        ),
    ]
    .map(|(what, c)| (what, c.unwrap_or_else(|e| panic!("opening on {what}: {e}"))));
    let truncating = Capture::open(lab.hub(), Lab::BRIDGE, dst, 2).unwrap();
    // Five connects, each between two clock readings; one to another port between them.
    let spans: Vec<_> = (0..5)
        .map(|i| {
            lab.host(0).run(|| {
                if i == 2 {
                    std::net::TcpStream::connect(noise).unwrap();
                }
                let before = unix_nanos(SystemTime::now());
                let s = std::net::TcpStream::connect(dst).unwrap();
                let after = unix_nanos(SystemTime::now());
                let SocketAddr::V4(local) = s.local_addr().unwrap() else {
                    unreachable!("an IPv4 lab")
                };
                (before, after, local, s)
            })
        })
        .collect();
    let mut late = Vec::new();
    for (what, c) in captures {
        let got = c.drain().unwrap();
        assert_eq!((got.dropped, got.truncated), (0, false), "{what}");
        assert_eq!(got.syns.len(), 5, "{what}: {:?}", got.syns);
        for (syn, (before, after, local, _)) in got.syns.iter().zip(&spans) {
            assert_eq!((syn.src, syn.dst), (*local, dst), "{what}");
            // The SYN leaves inside connect(): the kernel's realtime stamp lies between the
            // two readings of the same clock around the call (4-7 µs after the first here,
            // depending on where it is taken). Before the capture waited for the kernel's
            // arrival stamps, some were taken when drained, milliseconds after.
            if !(*before..=*after).contains(&syn.at_unix_nanos) {
                late.push(format!(
                    "{what}: SYN at {} outside connect() [{before}, {after}]",
                    syn.at_unix_nanos
                ));
            }
        }
    }
    assert!(late.is_empty(), "{late:#?}");
    let got = truncating.drain().unwrap();
    assert_eq!((got.syns.len(), got.truncated), (2, true));
}
