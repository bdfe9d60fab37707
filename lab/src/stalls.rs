//! [`probe`]: how much of each CPU a thread really gets on this machine, for benchmarks
//! that must tell the code under test's stalls from the machine's.
//!
//! One thread per CPU, pinned, reads the monotonic clock in a tight loop for a while; any
//! step between two readings longer than [`GAP`] is time the thread did not run. The kernel
//! says how much of that it spent running other threads of this machine (the thread's
//! runqueue wait, `/proc/thread-self/schedstat`); the rest went to interrupts or, on a
//! virtual machine, to the host (steal: the virtual CPU itself was not running). The split is
//! approximate (a wait may overlap steal). Any loop on that CPU loses the interrupt and host
//! share at the same moments, whatever it is written in; what goes to other threads depends
//! on the loop's own scheduling (a sleeping thread, or one in the real-time class, fares
//! differently from a spinning one).
//!
//! The threads share one clock origin, so their gaps can be compared ([`Probe::together`]):
//! how many start within a microsecond on two CPUs, against what chance would give. On a
//! kernel whose scheduler ticks are aligned across CPUs (no `skew_tick`), a tick that costs
//! more than [`GAP`] shows as such a pair on every tick.

use std::io;
use std::time::{Duration, Instant};

use crate::cpu;

/// A step between two clock readings longer than this counts as a gap (a spin loop's own
/// step is well under a microsecond).
pub const GAP: Duration = Duration::from_micros(20);

/// At most this many gap starts are kept per CPU for [`Probe::together`].
const KEPT_STARTS: usize = 200_000;

/// What the spinning threads saw, one [`CpuStalls`] per CPU.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// One per CPU probed, in the order asked for.
    pub cpus: Vec<CpuStalls>,
}

impl Probe {
    /// Of the first CPU's gaps (those kept), how many started within `within` of a gap on
    /// another CPU, and how many would by chance: each with probability 1 − e^(−rate × 2 ×
    /// `within`), where rate is the other CPUs' gap count over the first CPU's wall time
    /// (gaps placed at random, Poisson). `None` with fewer than two CPUs.
    pub fn together(&self, within: Duration) -> Option<(usize, f64)> {
        let (first, rest) = self.cpus.split_first()?;
        if rest.is_empty() {
            return None;
        }
        let w = u64::try_from(within.as_nanos()).unwrap_or(u64::MAX);
        let others: Vec<u64> = {
            let mut v: Vec<u64> = rest
                .iter()
                .flat_map(|c| c.gap_starts_ns.iter().copied())
                .collect();
            v.sort_unstable();
            v
        };
        let hits = first
            .gap_starts_ns
            .iter()
            .filter(|&&t| {
                // The first gap elsewhere that starts no earlier than `w` before this one.
                let i = others.partition_point(|&o| o.saturating_add(w) < t);
                others.get(i).is_some_and(|&o| o <= t.saturating_add(w))
            })
            .count();
        let wall = first.wall.as_nanos().max(1) as f64;
        let per_gap = 1.0 - (-(others.len() as f64) * 2.0 * w as f64 / wall).exp();
        Some((hits, first.gap_starts_ns.len() as f64 * per_gap))
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.cpus {
            writeln!(f, "{c}")?;
        }
        if let Some((hits, chance)) = self.together(Duration::from_micros(1)) {
            write!(
                f,
                "gaps of cpu{} that started within 1 µs of a gap on another CPU: {hits} of {} (by chance: {chance:.0})",
                self.cpus[0].cpu,
                self.cpus[0].gap_starts_ns.len(),
            )?;
        }
        Ok(())
    }
}

/// What one pinned spinning thread saw on its CPU.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuStalls {
    /// The CPU the thread was pinned to.
    pub cpu: usize,
    /// How long the thread spun (wall time).
    pub wall: Duration,
    /// Time lost in gaps longer than [`GAP`].
    pub lost: Duration,
    /// Gaps of 1 ms or more.
    pub gaps_over_1ms: u32,
    /// The longest gap.
    pub max_gap: Duration,
    /// The thread's runqueue wait over the probe: time the kernel ran other threads of this
    /// machine on its CPU while it was ready to run. Approximate as a share of `lost`: it
    /// includes waits shorter than [`GAP`] and may overlap steal.
    pub other_threads: Duration,
    /// When each gap started, ns after the probe's common origin (the first
    /// [`KEPT_STARTS`]).
    pub gap_starts_ns: Vec<u64>,
}

impl CpuStalls {
    /// `lost` as a share of `wall`.
    pub fn lost_share(&self) -> f64 {
        self.lost.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    /// Lost time not spent on other threads of this machine: interrupts, or the host.
    pub fn not_guest(&self) -> Duration {
        self.lost.saturating_sub(self.other_threads)
    }
}

impl std::fmt::Display for CpuStalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cpu{}: lost {:.1} % of {:.1} s ({:.1} ms to other threads, {:.1} ms to interrupts or the host), {} gaps >= 1 ms, longest {} µs",
            self.cpu,
            self.lost_share() * 100.0,
            self.wall.as_secs_f64(),
            self.other_threads.as_secs_f64() * 1e3,
            self.not_guest().as_secs_f64() * 1e3,
            self.gaps_over_1ms,
            self.max_gap.as_micros(),
        )
    }
}

/// Spins one pinned thread on each CPU of `cpus` for `duration` (at most 60 s) at once and
/// reports what each saw.
pub fn probe(cpus: &[usize], duration: Duration) -> io::Result<Probe> {
    let duration = duration.min(Duration::from_secs(60));
    let origin = Instant::now();
    let cpus = std::thread::scope(|s| {
        let handles: Vec<_> = cpus
            .iter()
            .map(|&c| s.spawn(move || spin_on(c, origin, duration, &|| {})))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<io::Result<Vec<_>>>()
    })?;
    Ok(Probe { cpus })
}

/// For benches: probes every CPU this process may run on for `duration` (none when zero) and
/// prints what it saw under `heading`, indented; a probe that fails is printed, not fatal.
pub fn print_probe(heading: &str, duration: Duration) {
    if duration.is_zero() {
        return;
    }
    let probed = cpu::cpus().and_then(|cpus| {
        println!(
            "{heading}: a pinned thread spinning {:.0} s on each CPU {cpus:?} (gaps > {} µs)",
            duration.as_secs_f64(),
            GAP.as_micros()
        );
        probe(&cpus, duration)
    });
    match probed {
        Ok(p) => p.to_string().lines().for_each(|l| println!("  {l}")),
        Err(e) => println!("{heading}: stall probe failed: {e}"),
    }
}

/// The probe on the calling thread, pinned to `cpu` for `duration`; gap starts are counted
/// from `origin`; `on_start` is called once the thread runs on `cpu`, as it starts timing.
fn spin_on(
    cpu: usize,
    origin: Instant,
    duration: Duration,
    on_start: &dyn Fn(),
) -> io::Result<CpuStalls> {
    let on_cpu = |e: io::Error| io::Error::other(format!("stall probe on cpu{cpu}: {e}"));
    cpu::pin_current_thread(cpu).map_err(on_cpu)?;
    let waited_before = runqueue_wait().map_err(on_cpu)?;
    // Sized for the longest probe at ~1,000 gaps a second, so the loop seldom allocates.
    let mut gap_starts_ns = Vec::with_capacity(65_536);
    let start = Instant::now();
    let end = start + duration;
    on_start();
    let mut last = start;
    let (mut lost, mut max_gap, mut gaps_over_1ms) = (Duration::ZERO, Duration::ZERO, 0u32);
    // Bounded by `end`.
    while last < end {
        let now = Instant::now();
        let step = now - last;
        if step > GAP {
            lost += step;
            max_gap = max_gap.max(step);
            gaps_over_1ms += u32::from(step >= Duration::from_millis(1));
            if gap_starts_ns.len() < KEPT_STARTS {
                gap_starts_ns.push((last - origin).as_nanos() as u64);
            }
        }
        last = now;
    }
    let other_threads = runqueue_wait()
        .map_err(on_cpu)?
        .saturating_sub(waited_before);
    Ok(CpuStalls {
        cpu,
        wall: last - start,
        lost,
        gaps_over_1ms,
        max_gap,
        other_threads,
        gap_starts_ns,
    })
}

/// The calling thread's time spent runnable but not running so far (schedstat's second
/// field, ns).
fn runqueue_wait() -> io::Result<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let ns = text
        .split_whitespace()
        .nth(1)
        .and_then(|w| w.parse::<u64>().ok())
        .ok_or_else(|| io::Error::other(format!("schedstat unreadable: {text:?}")))?;
    Ok(Duration::from_nanos(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread of ours that takes the probe's CPU for 20 ms in the real-time class shows as
    /// a gap of at least that long, spent on another thread (root: SCHED_FIFO).
    #[test]
    fn a_thread_that_takes_the_cpu_shows_as_a_gap_spent_on_other_threads() {
        if !crate::kernel_tests_enabled(
            "a_thread_that_takes_the_cpu_shows_as_a_gap_spent_on_other_threads",
        ) {
            return;
        }
        let cpu = *cpu::cpus().unwrap().last().unwrap();
        let hog = Duration::from_millis(20);
        let spinning = std::sync::atomic::AtomicBool::new(false);
        let stalls = std::thread::scope(|s| {
            let probing = s.spawn(|| {
                spin_on(cpu, Instant::now(), Duration::from_millis(300), &|| {
                    spinning.store(true, std::sync::atomic::Ordering::SeqCst)
                })
            });
            s.spawn(|| {
                cpu::pin_current_thread(cpu).unwrap();
                // The event: the probe runs on the CPU and is timing (5 s at most).
                let until = Instant::now() + Duration::from_secs(5);
                while !spinning.load(std::sync::atomic::Ordering::SeqCst) {
                    assert!(Instant::now() < until, "the probe never started");
                    std::thread::sleep(Duration::from_millis(1));
                }
                let param = libc::sched_param { sched_priority: 1 };
                // SAFETY: sets the calling thread's policy from a valid sched_param.
                let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
                assert_eq!(rc, 0, "SCHED_FIFO: {}", io::Error::last_os_error());
                let until = Instant::now() + hog;
                // Bounded by `until`.
                while Instant::now() < until {}
            })
            .join()
            .unwrap();
            probing.join().unwrap().unwrap()
        });
        eprintln!("{stalls}");
        assert_eq!(stalls.cpu, cpu);
        assert!(stalls.wall >= Duration::from_millis(300), "{stalls}");
        assert!(stalls.lost <= stalls.wall, "{stalls}");
        assert!(stalls.max_gap <= stalls.lost, "{stalls}");
        assert!(stalls.max_gap >= hog, "the 20 ms hog not seen: {stalls}");
        assert!(stalls.gaps_over_1ms >= 1, "{stalls}");
        assert!(
            stalls.other_threads >= hog - Duration::from_millis(1),
            "the hog's time not counted as another thread's: {stalls}"
        );
        // The runqueue wait, not the time on the CPU (schedstat's first field, ~280 ms here).
        assert!(
            stalls.other_threads <= stalls.lost + Duration::from_millis(5),
            "more waiting than lost time: {stalls}"
        );
        assert!(!stalls.gap_starts_ns.is_empty());
    }

    fn cpu_with_gaps(cpu: usize, starts_us: &[u64]) -> CpuStalls {
        CpuStalls {
            cpu,
            wall: Duration::from_secs(1),
            lost: Duration::ZERO,
            gaps_over_1ms: 0,
            max_gap: Duration::ZERO,
            other_threads: Duration::ZERO,
            gap_starts_ns: starts_us.iter().map(|us| us * 1_000).collect(),
        }
    }

    /// Gaps that start together on two CPUs are counted; those a little apart are not.
    #[test]
    fn gaps_that_start_together_on_two_cpus_are_counted() {
        let probe = Probe {
            cpus: vec![
                cpu_with_gaps(0, &[100, 5_000, 9_000, 20_000, 40_000]),
                // 39,997 (cpu1) is outside the window, 39,999.5 (cpu2) inside: every other
                // CPU's gaps are searched together.
                cpu_with_gaps(1, &[99, 5_001, 9_010, 30_000, 39_997]),
                cpu_with_gaps(2, &[]),
            ],
        };
        let mut probe = probe;
        probe.cpus[2].gap_starts_ns.push(39_999_500);
        let (hits, chance) = probe.together(Duration::from_micros(1)).unwrap();
        assert_eq!(
            hits, 3,
            "100/99 (before), 5,000/5,001 (after) and 40,000/39,999.5 together; 9,000/9,010 not"
        );
        // 5 gaps, each meeting one of 6 others within 2 µs of 1 s by chance.
        let expected = 5.0 * (1.0 - (-6.0f64 * 2e-6).exp());
        assert!((chance - expected).abs() < 1e-12, "{chance}");
        assert_eq!(probe.together(Duration::from_micros(10)).unwrap().0, 4);
        assert_eq!(probe.together(Duration::MAX).unwrap().0, 5, "no overflow");
        let alone = Probe {
            cpus: vec![cpu_with_gaps(0, &[1])],
        };
        assert_eq!(alone.together(Duration::from_micros(1)), None);
    }
}
