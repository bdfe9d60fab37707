//! The agent against the kernel's own ceiling (docs/kernel.md §7), in one run, in a fresh
//! network namespace: a raw-syscall baseline (the idea of the burst.c and cps.c probes of
//! docs/kernel.md §7,
//! rewritten here with libc: nonblocking socket + connect in one thread, epoll for
//! completions) and the engine (`arm` + `fire`), alternating, with the ratios printed.
//!
//! Measured: the issue time of a 10,000-connect burst (first to last connect() call), the time
//! until all 10,000 are established, and connect+close churn per second (RST close).
//! Absolute times drift on shared machines; the ratios are what to compare.
//!
//! Run (needs root for the namespace): `cargo bench -p stampede-agent --bench burst`
//! Environment: `BENCH_N` (default 10000), `BENCH_REPS` (default 9).

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use stampede_agent::{FireConfig, Plan, arm};
use stampede_lab::Netns;
use tokio_util::sync::CancellationToken;

/// A listener that accepts and closes (FIN) as fast as it can until dropped.
struct Sink {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Sink {
    fn start(addr: SocketAddr) -> Sink {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind(&addr.into()).unwrap();
        s.listen(65535).unwrap();
        let l: TcpListener = s.into();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        // Close with FIN: an RST from the server before the agent processed the
                        // completion would (rightly) count the attempt as `reset`.
                        Ok((c, _)) => {
                            drop(c);
                            n += 1;
                        }
                        Err(_) => std::thread::sleep(Duration::from_micros(50)),
                    }
                }
                n
            })
        };
        Sink {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sockaddr(addr: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(v4) = addr else {
        panic!("bench uses IPv4")
    };
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn epoll() -> OwnedFd {
    // SAFETY: no memory preconditions; the result is checked.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(
        fd >= 0,
        "epoll_create1: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// burst.c, in Rust: N × (socket, connect, epoll_ctl) in one thread, then wait for all.
/// With `prearm`, the sockets are created before the clock starts (as the engine does), so
/// only connect + epoll_ctl are timed. Returns (issue time, time until all completed,
/// failures).
fn raw_burst(addr: SocketAddr, n: usize, prearm: bool) -> (Duration, Duration, usize) {
    let sa = sockaddr(addr);
    let ep = epoll();
    let mut fds = Vec::with_capacity(n);
    let mut failed = 0;
    let new_socket = || {
        // SAFETY: socket() has no memory preconditions.
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0) }
    };
    let armed: Vec<i32> = if prearm {
        (0..n).map(|_| new_socket()).collect()
    } else {
        Vec::new()
    };
    let t0 = Instant::now();
    for i in 0..n {
        let s = armed.get(i).copied().unwrap_or_else(new_socket);
        // SAFETY: plain syscalls on descriptors this function owns; `sa` outlives connect.
        unsafe {
            let r = libc::connect(
                s,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            );
            if r != 0 && *libc::__errno_location() != libc::EINPROGRESS {
                failed += 1;
            }
            let mut ev = libc::epoll_event {
                events: libc::EPOLLOUT as u32,
                u64: i as u64,
            };
            libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, s, &mut ev);
            fds.push(OwnedFd::from_raw_fd(s));
        }
    }
    let issue = t0.elapsed();
    let mut done = failed;
    let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    while done < n && t0.elapsed() < Duration::from_secs(10) {
        // SAFETY: `evs` is a writable buffer of 1024 events.
        let got = unsafe { libc::epoll_wait(ep.as_raw_fd(), evs.as_mut_ptr(), 1024, 50) };
        for ev in evs.iter().take(got.max(0) as usize) {
            let fd = fds[ev.u64 as usize].as_raw_fd();
            // SAFETY: `fd` is open (owned by `fds`).
            unsafe {
                libc::epoll_ctl(
                    ep.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    fd,
                    std::ptr::null_mut(),
                )
            };
            done += 1;
        }
    }
    let all = t0.elapsed();
    // RST close, like the engine's default: no TIME_WAIT left for the next round.
    for fd in fds {
        let _ = Socket::from(fd).set_linger(Some(Duration::ZERO));
    }
    (issue, all, failed)
}

/// cps.c `-m client -c rst`, in Rust: W connects in flight; each completion is closed with
/// RST and replaced. Returns connections per second over `dur`.
fn raw_churn(addr: SocketAddr, w: usize, dur: Duration) -> f64 {
    let sa = sockaddr(addr);
    let ep = epoll();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let start_one = || {
        // SAFETY: plain syscalls on a descriptor created here; pointers outlive the calls.
        unsafe {
            let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
            libc::setsockopt(
                s,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as u32,
            );
            libc::connect(
                s,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            );
            let mut ev = libc::epoll_event {
                events: libc::EPOLLOUT as u32,
                u64: s as u64,
            };
            libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, s, &mut ev);
        }
    };
    for _ in 0..w {
        start_one();
    }
    let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let t0 = Instant::now();
    let mut done = 0u64;
    while t0.elapsed() < dur {
        // SAFETY: `evs` is a writable buffer of 256 events.
        let got = unsafe { libc::epoll_wait(ep.as_raw_fd(), evs.as_mut_ptr(), 256, 50) };
        for ev in evs.iter().take(got.max(0) as usize) {
            // SAFETY: the descriptor was created by start_one and is closed exactly once.
            unsafe { libc::close(ev.u64 as i32) };
            done += 1;
            start_one();
        }
    }
    let rate = done as f64 / t0.elapsed().as_secs_f64();
    // The W still in flight are left to the process exit (a few dozen descriptors).
    rate
}

struct EngineRun {
    issue: Duration,
    all: Duration,
    arm: Duration,
    established: u64,
    summary: String,
}

fn engine_burst(addr: SocketAddr, n: u64, workers: Option<usize>) -> EngineRun {
    let mut c = FireConfig::new(addr, n);
    c.workers = workers;
    c.max_connections = n;
    let plan = Plan::new(c).unwrap();
    let t = Instant::now();
    let armed = arm(&plan).unwrap();
    let arm_time = t.elapsed();
    let r = armed
        .fire(
            Instant::now() + Duration::from_millis(5),
            &CancellationToken::new(),
            None,
        )
        .unwrap();
    EngineRun {
        issue: r.issue_duration,
        all: r.last_completion.unwrap_or_default(),
        arm: arm_time,
        established: r.tally.outcomes.admitted(),
        summary: r.summary(&addr.to_string(), "burst"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would too: only run for real under
    // `cargo bench` (or when run directly).
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("burst bench: skipped, needs root for a network namespace");
        return;
    }
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let limit = stampede_agent::raise_fd_limit().unwrap();
    let ns = Netns::new("bench").expect("creating a network namespace");
    ns.sysctl("net.core.somaxconn", "65535").unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!(
        "burst bench: N={n}, {reps} rounds, {cores} cores, RLIMIT_NOFILE {}, netns {}",
        limit.soft,
        ns.name()
    );
    ns.run(|| {
        let sink = Sink::start("127.0.0.1:9200".parse().unwrap());
        let addr = sink.addr;
        let (mut raw_issue, mut raw_all) = (Vec::new(), Vec::new());
        let (mut pre_issue, mut pre_all) = (Vec::new(), Vec::new());
        let (mut e1_issue, mut e1_all) = (Vec::new(), Vec::new());
        let (mut en_issue, mut en_all, mut en_arm) = (Vec::new(), Vec::new(), Vec::new());
        // Warm-up round (page cache, allocator, socket slabs), not counted.
        let _ = raw_burst(addr, n, false);
        let _ = engine_burst(addr, n as u64, None);
        for _ in 0..reps {
            let (i, a, failed) = raw_burst(addr, n, false);
            assert_eq!(failed, 0, "baseline connects failed");
            raw_issue.push(i.as_secs_f64());
            raw_all.push(a.as_secs_f64());
            let (i, a, failed) = raw_burst(addr, n, true);
            assert_eq!(failed, 0, "baseline connects failed");
            pre_issue.push(i.as_secs_f64());
            pre_all.push(a.as_secs_f64());
            let e = engine_burst(addr, n as u64, Some(1));
            assert_eq!(e.established, n as u64, "{}", e.summary);
            e1_issue.push(e.issue.as_secs_f64());
            e1_all.push(e.all.as_secs_f64());
            let e = engine_burst(addr, n as u64, None);
            assert_eq!(e.established, n as u64, "{}", e.summary);
            en_issue.push(e.issue.as_secs_f64());
            en_all.push(e.all.as_secs_f64());
            en_arm.push(e.arm.as_secs_f64());
        }
        let (ri, ra) = (median(raw_issue), median(raw_all));
        let (pi, pa) = (median(pre_issue), median(pre_all));
        let (e1i, e1a) = (median(e1_issue), median(e1_all));
        let (eni, ena) = (median(en_issue), median(en_all));
        println!("\n{n}-connect burst on loopback (medians of {reps}):");
        println!("  {:<34} {:>10} {:>14}", "", "issue", "all established");
        println!("  {:<36} {:>8.1}ms {:>12.1}ms", "raw baseline (burst.c: socket+connect)", ri * 1e3, ra * 1e3);
        println!("  {:<36} {:>8.1}ms {:>12.1}ms", "raw, sockets pre-created (connect)", pi * 1e3, pa * 1e3);
        println!("  ratios below: engine ÷ burst.c-style baseline, and ÷ pre-created baseline");
        for (name, i, a) in [
            ("engine, 1 worker".to_owned(), e1i, e1a),
            (format!("engine, default workers ({})", cores.min(n.div_ceil(500))), eni, ena),
        ] {
            println!(
                "  {:<36} {:>8.1}ms {:>12.1}ms   issue {:.2} / {:.2}   all {:.2} / {:.2}",
                name,
                i * 1e3,
                a * 1e3,
                i / ri,
                i / pi,
                a / ra,
                a / pa
            );
        }
        println!(
            "  (engine sockets are created before the start instant: arming took {:.1}ms)",
            median(en_arm) * 1e3
        );

        // Churn: connect + RST close.
        let dur = Duration::from_secs(2);
        let raw = raw_churn(addr, 64, dur);
        let churn_n = (n as u64).min(limit.soft.saturating_sub(2000));
        let t = Instant::now();
        let e = engine_burst(addr, churn_n, None);
        let with_arm = churn_n as f64 / t.elapsed().as_secs_f64();
        let fire_only = churn_n as f64 / e.all.as_secs_f64().max(1e-9);
        println!("\nconnect + RST close churn:");
        println!("  raw baseline (cps-style, W=64, 2 s)  {raw:>10.0}/s");
        println!(
            "  engine burst of {churn_n}, close on connect: {fire_only:>10.0}/s firing ({:.2}×), {with_arm:.0}/s incl. arming ({:.2}×)",
            fire_only / raw,
            with_arm / raw
        );
        drop(sink);
    });
}
