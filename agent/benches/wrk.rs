//! stampede against wrk, the HTTP load generator Debian packages (`apt-get install wrk`;
//! tcpkali is not in Debian), on the same server in the same run: nginx (as .ci/run installs
//! it: one worker, `return 200`, backlog 65535), in a network namespace this bench creates,
//! loopback inside it.
//!
//! What each side does per connection, and so what its figures mean:
//! - wrk `-H 'Connection: close'` is closed-loop: each of its C connections connects, sends
//!   a GET, reads the whole response, sees nginx close, and connects again. C are in flight
//!   all the time; its requests/s are new connections/s; its latency is the request's write
//!   to the response's end (the connect is not in it).
//! - stampede is open-loop: a ramp issues each connect() at its intended time, whatever
//!   completes; it sends nothing, and closes with RST as soon as the connect completed. Its
//!   rate is completions/s from the first connect() call to the last completion seen; its
//!   connect latency runs from the intended time to the completion (the issue lag, intended
//!   time → connect() call, is in it and given apart as *lag*); *call→seen* is the mean
//!   time from connect() call to completion seen, and its in-flight is measured by Little's
//!   law (rate × that mean).
//!
//! So stampede is run at the rate wrk reached with C connections, and both in-flight figures
//! are printed: the same rate of new connections against the same server, what each holds
//! open to do it. Last, stampede ramps at twice wrk's best rate. The kernel's own count of
//! connections opened (`Tcp.ActiveOpens` in the namespace) is printed for each side as an
//! independent check.
//!
//! Run (needs root, wrk and nginx): `cargo bench -p stampede-agent --bench wrk`
//! Environment: `BENCH_WRK_CONNS` (wrk's -c values, comma-separated: 1,16,64),
//! `BENCH_WRK_SECS` (wrk's -d: 3), `BENCH_WRK_REPS` (pairs per C: 3).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use stampede_lab::{ChildGuard, Netns, SIGTERM, run_within};

#[allow(dead_code)] // shared with the burst bench, which uses other parts of it
mod support;
use support::{engine, env_or, median};

const PORT: u16 = 8080;

/// `program` on PATH (or in /usr/sbin, where Debian puts nginx).
fn find(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// nginx, stopped with SIGTERM (its master stops its worker) however the bench ends.
struct Nginx {
    child: ChildGuard,
    dir: PathBuf,
}

impl Nginx {
    fn start(ns: &Netns, nginx: &Path) -> Nginx {
        let dir = std::env::temp_dir().join(format!("stampede-wrk-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating nginx's directory");
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log crit;\nevents {{ worker_connections 4096; }}\nhttp {{\n  \
             access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  \
             scgi_temp_path {d}/scgi;\n  server {{\n    \
             listen 127.0.0.1:{PORT} backlog=65535;\n    location / {{ return 200 \"ok\\n\"; }}\n  \
             }}\n}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).expect("writing nginx.conf");
        let child = ChildGuard::spawn(
            ns.command(nginx)
                .arg("-c")
                .arg(&path)
                .arg("-p")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        )
        .expect("starting nginx");
        let server = Nginx { child, dir };
        // Ready once it accepts (bounded: 10 s).
        let ready = ns.run(|| {
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                let addr: SocketAddr = ([127, 0, 0, 1], PORT).into();
                if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        });
        assert!(
            ready,
            "nginx did not accept on 127.0.0.1:{PORT} within 10 s"
        );
        server
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.signal(SIGTERM);
        if self.child.wait_exit(Duration::from_secs(5)).is_none() {
            eprintln!("nginx did not stop on SIGTERM within 5 s: killed");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What wrk printed, the figures compared.
struct Wrk {
    requests: u64,
    secs: f64,
    p50_us: f64,
    p99_us: f64,
    errors: String,
}

/// "37.00us", "1.20ms", "2.00s" in µs.
fn micros(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * scale)
}

fn parse_wrk(out: &str) -> Wrk {
    let words = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let mut w = Wrk {
        requests: 0,
        secs: 0.0,
        p50_us: f64::NAN,
        p99_us: f64::NAN,
        errors: String::new(),
    };
    for line in out.lines() {
        let ws = words(line);
        match ws.as_slice() {
            [n, r, i, s, ..] if r == "requests" && i == "in" => {
                w.requests = n.parse().unwrap_or(0);
                w.secs = s
                    .trim_end_matches(',')
                    .strip_suffix('s')
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0.0);
            }
            [q, v] if q == "50%" => w.p50_us = micros(v).unwrap_or(f64::NAN),
            [q, v] if q == "99%" => w.p99_us = micros(v).unwrap_or(f64::NAN),
            _ if line.contains("Socket errors") || line.contains("Non-2xx") => {
                w.errors.push_str(line.trim());
                w.errors.push_str("; ");
            }
            _ => {}
        }
    }
    assert!(
        w.requests > 0 && w.secs > 0.0,
        "could not read wrk's output:\n{out}"
    );
    w
}

/// One side's figures over the pairs of one C, medians taken at the end.
#[derive(Default)]
struct Samples {
    rate: Vec<f64>,
    in_flight: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    mean: Vec<f64>,
    lag: Vec<f64>,
    kernel: Vec<f64>,
    /// Attempts cancelled as overdue, over all pairs (stampede only).
    skipped: u64,
}

fn active_opens(ns: &Netns) -> u64 {
    ns.counters()
        .expect("reading the namespace's counters")
        .get("Tcp.ActiveOpens")
}

fn main() {
    if support::listing_only() || !support::root_or_skip("wrk") {
        return;
    }
    let Some(wrk) = find("wrk") else {
        println!("wrk bench: skipped, wrk is not installed (Debian: apt-get install wrk)");
        return;
    };
    let Some(nginx) = find("nginx") else {
        println!(
            "wrk bench: skipped, nginx is not installed (apt-get install nginx-light or nginx)"
        );
        return;
    };
    let conns: Vec<usize> = std::env::var("BENCH_WRK_CONNS")
        .unwrap_or_else(|_| "1,16,64".into())
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .expect("BENCH_WRK_CONNS: comma-separated integers")
        })
        .collect();
    let secs: u64 = env_or("BENCH_WRK_SECS", 3);
    let reps: usize = env_or("BENCH_WRK_REPS", 3);
    let limit = stampede_agent::raise_fd_limit().unwrap();
    let cap = limit
        .soft
        .saturating_sub(stampede_agent::arm::FD_RESERVE + 100);
    let ns = Netns::new("wrk").expect("creating a network namespace");
    ns.sysctl("net.core.somaxconn", "65535").unwrap();
    ns.sysctl("net.ipv4.ip_local_port_range", "1024 65535")
        .unwrap();
    println!("wrk bench: {}", support::machine());
    let version = run_within(
        std::process::Command::new(&wrk).arg("--version"),
        Duration::from_secs(5),
    );
    println!(
        "  {}; nginx {}, 1 worker; wrk -d {secs}s, {reps} pairs per C; stampede runs capped at {cap} connections (RLIMIT_NOFILE); netns {}",
        String::from_utf8_lossy(&version.stdout)
            .lines()
            .next()
            .unwrap_or("wrk")
            .trim(),
        nginx.display(),
        ns.name()
    );
    let server = Nginx::start(&ns, &nginx);
    let addr: SocketAddr = ([127, 0, 0, 1], PORT).into();
    let url = format!("http://{addr}/");
    println!(
        "\n  {:<30} {:>8} {:>9} {:>18} {:>10} {:>10} {:>9}",
        "", "conn/s", "in flight", "latency p50 / p99", "call→seen", "lag p99", "kernel/s"
    );
    let mut best: f64 = 0.0;
    for &c in &conns {
        let (mut w, mut s) = (Samples::default(), Samples::default());
        let mut errors = String::new();
        for _ in 0..reps {
            let before = active_opens(&ns);
            let threads = c.min(2).to_string();
            let out = run_within(
                ns.command(&wrk)
                    .args([
                        "-t",
                        &threads,
                        "-c",
                        &c.to_string(),
                        "-d",
                        &format!("{secs}s"),
                    ])
                    .args(["--latency", "-H", "Connection: close", &url]),
                Duration::from_secs(secs + 60),
            );
            let opened = active_opens(&ns) - before;
            let r = parse_wrk(&String::from_utf8_lossy(&out.stdout));
            let rate = r.requests as f64 / r.secs;
            w.rate.push(rate);
            w.p50.push(r.p50_us);
            w.p99.push(r.p99_us);
            w.kernel.push(opened as f64 / r.secs);
            errors.push_str(&r.errors);

            let n = ((rate * secs as f64) as u64).clamp(1, cap);
            let before = active_opens(&ns);
            let e = ns.run(|| engine::run(engine::ramp(addr, n, rate), None));
            let opened = active_opens(&ns) - before;
            assert_eq!(e.established + e.skipped, n, "{}", e.summary);
            s.rate.push(e.rate());
            s.in_flight.push(e.in_flight());
            s.p50.push(e.latency_p50_us as f64);
            s.p99.push(e.latency_p99_us as f64);
            s.mean.push(e.mean_latency.as_secs_f64() * 1e6);
            s.lag.push(e.lag_p99_us as f64);
            s.kernel.push(opened as f64 / e.all.as_secs_f64().max(1e-9));
            s.skipped += e.skipped;
        }
        let rate = median(w.rate);
        best = best.max(rate);
        println!(
            "  {:<30} {:>8.0} {:>9} {:>8.0} / {:>5.0}µs {:>10} {:>10} {:>9.0}",
            format!("wrk -c {c} (request, reply)"),
            rate,
            c,
            median(w.p50),
            median(w.p99),
            "",
            "",
            median(w.kernel)
        );
        println!(
            "  {:<30} {:>8.0} {:>9.2} {:>8.0} / {:>5.0}µs {:>8.0}µs {:>8.0}µs {:>9.0}   skipped {} in {reps} runs",
            "stampede ramp at that rate",
            median(s.rate),
            median(s.in_flight),
            median(s.p50),
            median(s.p99),
            median(s.mean),
            median(s.lag),
            median(s.kernel),
            s.skipped
        );
        if errors.is_empty() {
            println!("    wrk reported no socket errors and no non-2xx replies");
        } else {
            println!("    wrk reported: {errors}");
        }
    }
    let rate = 2.0 * best;
    let n = ((rate * secs as f64) as u64).clamp(1, cap);
    let e = ns.run(|| engine::run(engine::ramp(addr, n, rate), None));
    assert_eq!(e.established + e.skipped, n, "{}", e.summary);
    println!(
        "  {:<30} {:>8.0} {:>9.2} {:>8} / {:>5}µs {:>8.0}µs {:>8}µs   skipped {} of {n} (asked {rate:.0}/s)",
        "stampede ramp at 2 × wrk's best",
        e.rate(),
        e.in_flight(),
        e.latency_p50_us,
        e.latency_p99_us,
        e.mean_latency.as_secs_f64() * 1e6,
        e.lag_p99_us,
        e.skipped
    );
    println!("  (load {})", support::load());
    drop(server);
}
