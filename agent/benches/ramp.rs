//! How precisely the engine paces an open-loop ramp and waves, against a one-thread paced C-style
//! loop in the same run and namespace.
//!
//! The baseline is the idea of the `ramp.c` probe (the founders' kernel-ceiling programs),
//! rewritten here with libc:
//! attempt i is due at t0 + i/R; one thread sleeps (nanosleep) to ~50 µs before each due time,
//! then spins on the clock; it looks for completions (epoll, closing each with RST) before every
//! attempt and after every sleep. Its *issue lag* is the connect() call minus the due time.
//! The engine side is `Plan` → `arm` → `Armed::fire` of `ramp:R:N/R` with the default workers;
//! its issue lag is the run's own histogram (the same definition: connect() call minus intended
//! time, floored to whole µs). The baseline keeps ramp.c's default timer slack (50 µs); the
//! engine sets its workers' to 1 µs (docs/design.md "Pacing"): that is part of what is compared.
//! At 40,000/s the engine uses two workers (one per 20,000/s), the baseline its one thread. Both sides fire N connects at a listener in the namespace that accepts and closes.
//! Pairs alternate (baseline, engine) per rate, so drift in the machine's load hits both alike.
//!
//! Waves: `waves:20:50ms` with one connection per wave (one worker), so every connect is the
//! first of its wave and the issue lag is each wave's start error.
//!
//! Run (needs root): `cargo bench -p stampede-agent --bench ramp`
//!
//! Before and after the pairs, `stampede_lab::stalls::probe` spins a pinned thread on each
//! CPU for `BENCH_STALL_SECS` (default 3; 0: not at all) and prints the time it lost: the
//! machine's own floor under both sides' tails.
//!
//! Environment: `BENCH_N` (default 10000), `BENCH_PAIRS` (default 5), `BENCH_RATES`
//! (comma-separated, default 5000,10000,20000,40000), `BENCH_WORKERS` (the engine's workers;
//! default: the plan's own choice).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use stampede_agent::{FireConfig, Plan, arm};
use stampede_lab::{Acceptor, Netns};
use stampede_proto::pattern::Pattern;
use tokio_util::sync::CancellationToken;

/// What one side of a pair measured.
struct Side {
    /// Issue lag percentiles, µs: p50, p90, p99, max.
    lag: [f64; 4],
    /// Connects per second from the first due time to the last connect() call.
    achieved: f64,
    /// Attempts that ended established.
    established: u64,
    /// CPU time of the whole process (both threads of the listener included, alike for both
    /// sides) per second of the side's run: how much of the machine pacing took (the
    /// engine's includes arming its sockets, the baseline's creating them in its loop).
    cpu: f64,
}

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: `ru` is a writable rusage for the duration of the call.
    let ru = unsafe {
        let mut ru = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs `f`, then sets the CPU share it took (process CPU time ÷ wall time).
fn measured(f: impl FnOnce() -> Side) -> Side {
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let mut side = f();
    side.cpu = (cpu_time() - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
    side
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sockaddr(addr: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only")
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

/// The `ramp.c` loop: `n` connects at `rate`, paced from one thread.
fn baseline(addr: SocketAddr, rate: f64, n: usize) -> Side {
    // SAFETY: epoll_create1 has no memory arguments; the descriptor is owned below.
    let ep = unsafe { OwnedFd::from_raw_fd(libc::epoll_create1(0)) };
    let sa = sockaddr(addr);
    let mut fds = vec![-1i32; n];
    let mut lag = Vec::with_capacity(n);
    let mut established = 0u64;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut drain = |timeout_ms: i32, fds: &mut [i32], established: &mut u64| -> usize {
        // SAFETY: `events` is a writable buffer of its length; `ep` is an open epoll.
        let got = unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), 256, timeout_ms) };
        for ev in &events[..got.max(0) as usize] {
            let i = ev.u64 as usize;
            let (mut err, mut len) = (0i32, 4u32);
            let lg = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: fds[i] is an open socket of ours; the option buffers live across the
            // calls and have the lengths given.
            unsafe {
                libc::getsockopt(
                    fds[i],
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&raw mut err).cast(),
                    &mut len,
                );
                libc::setsockopt(
                    fds[i],
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&raw const lg).cast(),
                    8,
                );
                libc::epoll_ctl(
                    ep.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    fds[i],
                    std::ptr::null_mut(),
                );
                libc::close(fds[i]);
            }
            fds[i] = -1;
            if err == 0 {
                *established += 1;
            }
        }
        got.max(0) as usize
    };
    let t0 = Instant::now() + Duration::from_millis(10);
    let mut last_call = t0;
    for i in 0..n {
        let due = t0 + Duration::from_secs_f64(i as f64 / rate);
        drain(0, &mut fds, &mut established);
        loop {
            let now = Instant::now();
            if now >= due {
                break;
            }
            let w = due - now;
            if w > Duration::from_micros(100) {
                std::thread::sleep(w - Duration::from_micros(50));
                drain(0, &mut fds, &mut established);
            }
        }
        let a = Instant::now();
        // SAFETY: plain socket/connect/epoll_ctl calls on a descriptor created here; `sa`
        // and `ev` live across the calls.
        unsafe {
            let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
            let r = libc::connect(
                s,
                (&raw const sa).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            );
            lag.push(a.saturating_duration_since(due).as_secs_f64() * 1e6);
            if r != 0 && *libc::__errno_location() != libc::EINPROGRESS {
                libc::close(s);
                continue;
            }
            fds[i] = s;
            let mut ev = libc::epoll_event {
                events: libc::EPOLLOUT as u32,
                u64: i as u64,
            };
            libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, s, &mut ev);
        }
        last_call = a;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while fds.iter().any(|&f| f >= 0) && Instant::now() < deadline {
        drain(10, &mut fds, &mut established);
    }
    for &f in fds.iter().filter(|&&f| f >= 0) {
        // SAFETY: a socket of ours still open after the deadline.
        unsafe { libc::close(f) };
    }
    lag.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lag[((lag.len() - 1) as f64 * p) as usize];
    Side {
        lag: [pct(0.5), pct(0.9), pct(0.99), lag[lag.len() - 1]],
        achieved: (n - 1) as f64 / (last_call - t0).as_secs_f64(),
        established,
        cpu: 0.0,
    }
}

/// The engine firing `pattern` with `n` connections at `addr`.
fn engine(addr: SocketAddr, pattern: Pattern, n: u64) -> Side {
    let mut c = FireConfig::new(addr, n);
    c.load.pattern = pattern;
    c.max_connections = n;
    c.workers = std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok());
    let plan = Plan::new(c).expect("plan");
    let armed = arm(&plan).expect("arming");
    let r = armed
        .fire(
            Instant::now() + Duration::from_millis(10),
            &CancellationToken::new(),
            None,
        )
        .expect("firing");
    let h = &r.tally.issue_lag;
    let spread = pattern.duration().as_secs_f64();
    Side {
        lag: [
            h.value_at_quantile(0.5) as f64,
            h.value_at_quantile(0.9) as f64,
            h.value_at_quantile(0.99) as f64,
            h.max() as f64,
        ],
        // Issue duration from the first connect to the last; for a ramp, ≈ the pattern's span.
        achieved: if spread > 0.0 {
            (n - 1) as f64 / r.issue_duration.as_secs_f64()
        } else {
            f64::NAN
        },
        established: r.tally.outcomes.admitted(),
        cpu: 0.0,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !stampede_lab::is_root() {
        eprintln!("ramp bench: skipped, needs root for a network namespace");
        return;
    }
    let n: usize = env("BENCH_N", 10_000);
    let pairs: usize = env("BENCH_PAIRS", 5);
    let rates: Vec<f64> = std::env::var("BENCH_RATES")
        .unwrap_or_else(|_| "5000,10000,20000,40000".into())
        .split(',')
        .map(|r| r.trim().parse().expect("BENCH_RATES: numbers"))
        .collect();
    stampede_agent::raise_fd_limit().expect("fd limit");
    machine_stalls("before");
    let ns = Netns::new("rampb").expect("creating a network namespace");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "ramp bench: N={n}, {pairs} pairs per rate, {} cores, load {}",
        std::thread::available_parallelism().map_or(1, |c| c.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    ns.run(|| {
        let acceptor = Acceptor::start().expect("listener");
        let addr = acceptor.addr;
        // Warm-up (allocator, socket slabs), not counted.
        baseline(addr, 20_000.0, 2_000);
        engine(addr, ramp(20_000.0, 2_000), 2_000);
        println!(
            "\nissue lag, µs (p50 / p90 / p99 / max), achieved rate, process CPU ÷ wall time; C = the ramp.c loop, E = engine"
        );
        for &rate in &rates {
            let (mut c99, mut e99, mut wins) = (Vec::new(), Vec::new(), 0);
            let (mut c90, mut e90) = (Vec::new(), Vec::new());
            for pair in 0..pairs {
                let c = measured(|| baseline(addr, rate, n));
                let e = measured(|| engine(addr, ramp(rate, n), n as u64));
                assert_eq!(e.established, n as u64, "engine: not every connect established");
                println!(
                    "  {rate:>6}/s pair {pair}: C {:>4.0} / {:>4.0} / {:>6.0} / {:>7.0} at {:>6.0}/s cpu {:>3.0}% ({} est.) | E {:>4.0} / {:>4.0} / {:>6.0} / {:>7.0} at {:>6.0}/s cpu {:>3.0}%",
                    c.lag[0], c.lag[1], c.lag[2], c.lag[3], c.achieved, c.cpu * 100.0, c.established,
                    e.lag[0], e.lag[1], e.lag[2], e.lag[3], e.achieved, e.cpu * 100.0,
                );
                wins += usize::from(e.lag[2] <= c.lag[2]);
                c90.push(c.lag[1]);
                e90.push(e.lag[1]);
                c99.push(c.lag[2]);
                e99.push(e.lag[2]);
            }
            let worst = e99.iter().cloned().fold(0.0, f64::max);
            println!(
                "  {rate:>6}/s: p99 median C {:.0} µs, E {:.0} µs; E at or below C in {wins} of {pairs}; E worst p99 {worst:.0} µs; p90 median C {:.0} µs, E {:.0} µs",
                median(c99),
                median(e99),
                median(c90),
                median(e90),
            );
        }
        // 20 connects: one worker, one connect per wave.
        let waves = 20u32;
        let per = 1;
        let mut worst = Vec::new();
        for _ in 0..pairs {
            let e = engine(
                addr,
                Pattern::Waves { waves, period: Duration::from_millis(50) },
                u64::from(waves) * per,
            );
            worst.push(e.lag[3]);
        }
        println!(
            "\nwaves ({waves} waves, 50 ms apart, {per} connect(s) per wave): worst start error per run, µs: {:?}",
            worst.iter().map(|w| *w as u64).collect::<Vec<_>>()
        );
        drop(acceptor);
    });
    machine_stalls("after");
}

/// What a thread spinning on each CPU loses on this machine (`stampede_lab::stalls`): the
/// floor under any paced loop's tail, the C loop's and the engine's alike.
fn machine_stalls(when: &str) {
    let secs = env("BENCH_STALL_SECS", 3u64);
    if secs > 0 {
        println!();
    }
    stampede_lab::stalls::print_probe(&format!("the machine {when}"), Duration::from_secs(secs));
}

fn ramp(rate: f64, n: usize) -> Pattern {
    Pattern::Ramp {
        rate,
        duration: Duration::from_secs_f64(n as f64 / rate),
    }
}
