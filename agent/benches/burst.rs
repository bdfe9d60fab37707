//! The agent against the kernel's own ceiling (docs/kernel.md §7), in one run, in a fresh
//! network namespace (loopback inside it): raw one-thread baselines and the engine (`arm` +
//! `fire`), alternating, with the ratios printed.
//!
//! Both sides are timed the same way (`support/raw.rs` says it in full): the same syscalls
//! per attempt (connect + one-shot epoll registration; at completion SO_ERROR, TCP_INFO,
//! close with RST), sockets created before the clock, completions stamped with the time the
//! epoll_wait that returned them came back (during a burst, one epoll_wait(0) every 32
//! connects), and *all* = first connect() call to the last completion's stamp.
//!
//! The server is a listener thread that accepts and closes; every run starts once it has
//! accepted every connection of the runs before (an idle server, whichever side ran last).
//!
//! Burst: N connects at once; *issue* = first to last connect() call, *all* as above; the
//! burst.c-style baseline (socket() inside the timed loop) is printed for reference only.
//!
//! Churn, at the same number in flight: the raw loop is cps.c (`-m client -c rst`) over
//! N sockets created before the clock, W connects in flight, each completion replaced by the
//! next connect. The engine has no closed-loop pattern (it is open-loop: attempts go out at
//! their intended times whatever completes), so it gets a ramp of the same N at the rate
//! the raw loop reached in the run just before. Both sides' mean in-flight is then measured
//! the same way, by Little's law: completions per second × mean time from connect() call to
//! completion seen. Last, the engine ramps at twice the fastest raw rate, to show where it
//! falls behind (attempts cancelled as overdue, `skipped`).
//!
//! Run (needs root for the namespace): `cargo bench -p stampede-agent --bench burst`
//! Environment: `BENCH_N` (10000), `BENCH_REPS` (9), `BENCH_CHURN_N` (16000, capped by the
//! fd limit), `BENCH_CHURN_W` (in-flight windows, comma-separated: 1,64),
//! `BENCH_CHURN_REPS` (3).

use std::cell::Cell;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use stampede_lab::Netns;

#[allow(dead_code)] // shared with the wrk bench, which uses other parts of it
mod support;
use support::{engine, env_or, median, raw};

/// A listener that accepts and closes (FIN) as fast as it can until dropped, counting what
/// it accepted, so that each run can start once the server has drained the one before.
struct Sink {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    /// Connections the runs so far made (what `accepted` must reach to be idle).
    made: Cell<u64>,
    thread: Option<std::thread::JoinHandle<()>>,
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
        let accepted = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, accepted) = (stop.clone(), accepted.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        // Close with FIN: an RST from the server before the agent processed the
                        // completion would (rightly) count the attempt as `reset`.
                        Ok((c, _)) => {
                            drop(c);
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => std::thread::sleep(Duration::from_micros(50)),
                    }
                }
            })
        };
        Sink {
            addr,
            stop,
            accepted,
            made: Cell::new(0),
            thread: Some(thread),
        }
    }

    /// Counts `n` more connections made, and waits (at most 10 s) until the sink accepted
    /// every one so far: the next run then starts against an idle server, whichever side ran
    /// before it.
    fn settle(&self, n: u64) {
        self.made.set(self.made.get() + n);
        let until = Instant::now() + Duration::from_secs(10);
        while self.accepted.load(Ordering::Relaxed) < self.made.get() {
            if Instant::now() > until {
                println!(
                    "  (warning: the sink accepted {} of {} connections within 10 s)",
                    self.accepted.load(Ordering::Relaxed),
                    self.made.get()
                );
                self.made.set(self.accepted.load(Ordering::Relaxed));
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The burst: `reps` rounds of the four contenders, medians and ratios.
fn bursts(sink: &Sink, n: usize, reps: usize) {
    let addr = sink.addr;
    // (issue, all) per contender: raw socket-in-loop, raw pre-created, engine 1 w, engine.
    let mut figs: [(Vec<f64>, Vec<f64>); 4] = Default::default();
    let mut default_workers = 0;
    let mut arms = Vec::new();
    // Warm-up round (page cache, allocator, socket slabs), not counted.
    let _ = raw::burst(addr, n, false);
    sink.settle(n as u64);
    let _ = engine::run(stampede_agent::FireConfig::new(addr, n as u64).load, None);
    sink.settle(n as u64);
    for _ in 0..reps {
        for (k, prearm) in [(0, false), (1, true)] {
            let o = raw::burst(addr, n, prearm);
            sink.settle(n as u64);
            assert_eq!(o.established, n, "baseline connects failed");
            figs[k].0.push(ms(o.issue));
            figs[k].1.push(ms(o.all));
        }
        for (k, workers) in [(2, Some(1)), (3, None)] {
            let e = engine::run(
                stampede_agent::FireConfig::new(addr, n as u64).load,
                workers,
            );
            assert_eq!(e.established, n as u64, "{}", e.summary);
            figs[k].0.push(ms(e.issue));
            figs[k].1.push(ms(e.all));
            if workers.is_none() {
                default_workers = e.workers;
                arms.push(ms(e.arm));
            }
        }
    }
    let m: Vec<(f64, f64)> = figs
        .into_iter()
        .map(|(i, a)| (median(i), median(a)))
        .collect();
    println!(
        "\n{n}-connect burst on loopback (medians of {reps}; load {}):",
        support::load()
    );
    println!(
        "  {:<44} {:>9} {:>9}   engine ÷ pre-created",
        "", "issue", "all"
    );
    let names = [
        "raw, socket() in the loop (burst.c; ref.)".to_owned(),
        "raw, sockets pre-created (the baseline)".to_owned(),
        "engine, 1 worker".to_owned(),
        format!("engine, default workers ({default_workers})"),
    ];
    for (k, name) in names.iter().enumerate() {
        let (i, a) = m[k];
        let ratio = if k >= 2 {
            format!("issue {:.2}  all {:.2}", i / m[1].0, a / m[1].1)
        } else {
            String::new()
        };
        println!("  {name:<44} {i:>7.1}ms {a:>7.1}ms   {ratio}");
    }
    println!(
        "  (the engine's sockets are created before the start instant: arming took {:.1}ms)",
        median(arms)
    );
}

/// Churn at the same number in flight: the raw cps loop at each W, then the engine ramping
/// at the rate that loop reached; last, the engine at twice the fastest raw rate.
fn churn(sink: &Sink, n: usize, windows: &[usize], reps: usize) {
    let addr = sink.addr;
    println!(
        "\nconnect + RST close churn, {n} connections per run (medians of {reps} pairs; load {}):",
        support::load()
    );
    println!(
        "  {:<36} {:>9} {:>10} {:>10} {:>16}",
        "", "conn/s", "in flight", "mean lat.", "lag p99 / skipped"
    );
    let mut fastest: f64 = 0.0;
    for &w in windows {
        let (mut rr, mut rf, mut rl) = (Vec::new(), Vec::new(), Vec::new());
        let (mut er, mut ef, mut el, mut elag, mut eskip) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut workers = 0;
        for _ in 0..reps {
            let o = raw::churn(addr, n, w);
            sink.settle(n as u64);
            assert_eq!(o.established, n, "baseline connects failed");
            rr.push(o.rate());
            rf.push(o.in_flight());
            rl.push(o.mean_latency.as_secs_f64() * 1e6);
            let e = engine::run(engine::ramp(addr, n as u64, o.rate()), None);
            sink.settle(e.established);
            assert_eq!(e.established + e.skipped, n as u64, "{}", e.summary);
            workers = e.workers;
            er.push(e.rate());
            ef.push(e.in_flight());
            el.push(e.mean_latency.as_secs_f64() * 1e6);
            elag.push(e.lag_p99_us as f64);
            eskip.push(e.skipped as f64);
        }
        let raw_rate = median(rr);
        fastest = fastest.max(raw_rate);
        println!(
            "  {:<36} {:>9.0} {:>10.1} {:>8.0}µs",
            format!("raw cps loop, W = {w}"),
            raw_rate,
            median(rf),
            median(rl)
        );
        println!(
            "  {:<36} {:>9.0} {:>10.1} {:>8.0}µs {:>8.0}µs / {:.0}",
            format!("engine ramp at that rate ({workers} w)"),
            median(er),
            median(ef),
            median(el),
            median(elag),
            median(eskip)
        );
    }
    let rate = 2.0 * fastest;
    let e = engine::run(engine::ramp(addr, n as u64, rate), None);
    sink.settle(e.established);
    assert_eq!(e.established + e.skipped, n as u64, "{}", e.summary);
    println!(
        "  {:<36} {:>9.0} {:>10.1} {:>8.0}µs {:>8}µs / {}   (asked {rate:.0}/s)",
        format!("engine ramp at 2 × fastest raw ({} w)", e.workers),
        e.rate(),
        e.in_flight(),
        e.mean_latency.as_secs_f64() * 1e6,
        e.lag_p99_us,
        e.skipped
    );
}

fn main() {
    if support::listing_only() || !support::root_or_skip("burst") {
        return;
    }
    let n: usize = env_or("BENCH_N", 10_000);
    let reps: usize = env_or("BENCH_REPS", 9);
    let churn_reps: usize = env_or("BENCH_CHURN_REPS", 3);
    let windows: Vec<usize> = std::env::var("BENCH_CHURN_W")
        .unwrap_or_else(|_| "1,64".into())
        .split(',')
        .map(|w| {
            w.trim()
                .parse()
                .expect("BENCH_CHURN_W: comma-separated integers")
        })
        .collect();
    let limit = stampede_agent::raise_fd_limit().unwrap();
    // Every socket of a run is open at once on the engine's side (armed before the start).
    let headroom = stampede_agent::arm::FD_RESERVE + 100;
    let churn_n =
        env_or("BENCH_CHURN_N", 16_000usize).min(limit.soft.saturating_sub(headroom) as usize);
    let ns = Netns::new("bench").expect("creating a network namespace");
    ns.sysctl("net.core.somaxconn", "65535").unwrap();
    // Room for every armed socket's port (RST close frees each at once).
    ns.sysctl("net.ipv4.ip_local_port_range", "1024 65535")
        .unwrap();
    println!("burst bench: {}", support::machine());
    println!(
        "  N={n}, {reps} rounds; churn N={churn_n}, W={windows:?}; RLIMIT_NOFILE {}; netns {}",
        limit.soft,
        ns.name()
    );
    ns.run(|| {
        let sink = Sink::start("127.0.0.1:9200".parse().unwrap());
        bursts(&sink, n, reps);
        churn(&sink, churn_n, &windows, churn_reps);
        drop(sink);
    });
}
