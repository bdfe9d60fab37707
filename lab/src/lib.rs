//! The network-namespace lab for stampede's tests.
//!
//! Kernel-facing tests (backlog overflow, SYN retransmits, counters) run against the real
//! kernel inside namespaces the test creates: [`Netns::new`] makes one with its loopback up
//! and a name no other test (or test run) shares, and its `Drop` deletes it even when the
//! test panics. Code runs inside it in two ways:
//! - in-process: [`Netns::run`] / [`Netns::block_on`] run a closure or future on a thread
//!   that entered the namespace with setns(2); sockets and tokio worker threads created
//!   there belong to it;
//! - as a child process: [`Netns::command`] is `ip netns exec NAME PROGRAM`, and
//!   [`ChildGuard`] kills the child when the test ends, however it ends (and signals it and
//!   waits for it on cue); [`Acceptor`] accepts and records when, as an independent observer.
//!
//! [`Lab`] joins several such namespaces into "hosts" on a bridge, with addresses from
//! 198.18.0.0/24, for whole-system tests across real network paths. [`Relay`] puts a fixed
//! round-trip delay between two namespaces (a userspace TUN relay: this kernel has no netem).
//!
//! Such tests need root. Each starts with [`kernel_tests_enabled`] (module `gate`): without
//! root it FAILS, saying how to run it or skip it; only with the explicit opt-out
//! `STAMPEDE_SKIP_KERNEL_TESTS=1` (refused in CI) is it skipped, and every skip is printed and
//! counted where `cargo test` shows it. A kernel test is never reported as passed unrun.
//!
//! [`Capture`] records when TCP SYNs crossed an interface (an `AF_PACKET` socket with the
//! kernel's timestamps): the independent observer of when agents really started.
//!
//! [`stalls`] measures what the machine takes from a thread that spins on each CPU (time
//! lost, the longest gaps, gaps that start together on several CPUs): the floor under any
//! paced loop's tail, printed by the ramp and capture benches.
//!
//! [`sibling_bin`] finds the agent and target binaries a test or bench runs (building them
//! when missing, and for a bench when stale).
//!
//! [`chromium`] loads the HTML pages stampede writes in headless Chromium for browser tests,
//! under the same rule: missing in CI fails, missing elsewhere is a loud skip.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use stampede_proto::netstat::{Counters, Netstat};

mod acceptor;
mod bins;
mod capture;
pub mod chromium;
pub mod cpu;
pub mod gate;
mod hosts;
mod relay;
pub mod stalls;
pub use acceptor::Acceptor;
pub use bins::sibling_bin;
pub use capture::{Capture, Captured, Syn, parse_syn};
pub use gate::kernel_tests_enabled;
pub use hosts::Lab;
/// The signals tests send with [`ChildGuard::signal`], so a test needs no libc of its own.
pub use libc::{SIGCONT, SIGKILL, SIGSTOP, SIGTERM};
pub use relay::Relay;

/// True when running as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub(crate) fn ip_available() -> bool {
    Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A network namespace owned by one test; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a uniquely named namespace (`stp<pid>x<n><tag>`) with loopback up.
    pub fn new(tag: &str) -> io::Result<Netns> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag: String = tag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(24)
            .collect();
        let name = format!("stp{}x{n}{tag}", std::process::id());
        run_ip(&["netns", "add", &name])?;
        // From here on Drop removes it, even if bringing lo up fails.
        let ns = Netns { name };
        run_ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as `ip netns list` shows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves the calling thread into this namespace. Threads it spawns afterwards start there.
    pub fn enter_current_thread(&self) -> io::Result<()> {
        let file = File::open(format!("/var/run/netns/{}", self.name))?;
        // SAFETY: the fd is a valid open namespace file for the duration of the call; setns
        // only changes the calling thread's network namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Runs `f` on a fresh thread inside the namespace and returns its result (a panic in
    /// `f` propagates).
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter_current_thread()
                    .unwrap_or_else(|e| panic!("entering netns {}: {e}", self.name));
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Runs a future to completion on a 2-worker tokio runtime whose threads live in the
    /// namespace.
    pub fn block_on<F: Future + Send>(&self, fut: F) -> F::Output
    where
        F::Output: Send,
    {
        self.run(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("building a tokio runtime")
                .block_on(fut)
        })
    }

    /// Sets a sysctl inside the namespace (`net.core.somaxconn`, `net.ipv4.*` are per netns).
    pub fn sysctl(&self, name: &str, value: &str) -> io::Result<()> {
        self.run(|| stampede_proto::sysctl::write(name, value))
    }

    /// Reads the namespace's TCP counters.
    pub fn counters(&self) -> io::Result<Counters> {
        self.run(|| Netstat::open()?.read())
    }

    /// `ip netns exec NAME program`: a command that runs inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run_ip(&["netns", "del", &self.name]) {
            eprintln!("warning: could not delete netns {}: {e}", self.name);
        }
    }
}

pub(crate) fn run_ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A child process that is killed and reaped when the guard drops, so a failing test never
/// leaves its processes behind.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Spawns `cmd` and guards the child.
    pub fn spawn(cmd: &mut Command) -> io::Result<ChildGuard> {
        cmd.spawn().map(ChildGuard)
    }

    /// Spawns `cmd` (without `RUST_LOG`, so its log is at its default level) with its stderr
    /// piped, and returns once a line of that log contains `needle`; the rest of its stderr is
    /// drained from then on (a closed pipe would fail its next log line). Panics, with the
    /// lines seen, if the child closes its stderr first (it exited) or if more than `within`
    /// passes before the needle; a child that logs nothing at all is ended by its own bounds.
    pub fn spawn_until_logged(
        cmd: &mut Command,
        needle: &str,
        within: std::time::Duration,
    ) -> ChildGuard {
        use std::io::BufRead as _;
        let mut child = ChildGuard::spawn(cmd.env_remove("RUST_LOG").stderr(Stdio::piped()))
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stderr = child.0.stderr.take().expect("piped");
        let mut lines = std::io::BufReader::new(stderr).lines();
        let started = std::time::Instant::now();
        let mut seen = Vec::new();
        // Bounded by the child: it ends (its stderr with it) or logs the needle.
        loop {
            let line = lines
                .next()
                .and_then(Result::ok)
                .unwrap_or_else(|| panic!("{cmd:?} exited before logging {needle:?}: {seen:#?}"));
            if line.contains(needle) {
                break;
            }
            seen.push(line);
            assert!(
                started.elapsed() < within,
                "{cmd:?} did not log {needle:?} within {within:?}: {seen:#?}"
            );
        }
        std::thread::spawn(move || lines.for_each(drop));
        child
    }

    /// Sends `sig` (`libc::SIGSTOP`, `libc::SIGCONT`, `libc::SIGTERM` ...) to the child.
    pub fn signal(&self, sig: libc::c_int) -> io::Result<()> {
        let pid = self.0.id() as libc::pid_t;
        // SAFETY: kill(2) with the pid of a child this guard owns and has not reaped (it is
        // reaped only on drop or by `wait_exit`) and a signal number; no memory is involved.
        if unsafe { libc::kill(pid, sig) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Waits for the child to exit, at most `within` (polling every 20 ms); `None` if it
    /// is still running then.
    pub fn wait_exit(&mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= until {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Runs `cmd` to its end within `limit`, stdout and stderr collected (drained meanwhile, so a
/// huge output cannot block it). Panics, naming the command, if it is still running then; the
/// guard kills it.
pub fn run_within(
    cmd: &mut std::process::Command,
    limit: std::time::Duration,
) -> std::process::Output {
    use std::process::Stdio;
    let mut child = ChildGuard::spawn(
        cmd.env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.0.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.0.stderr.take().expect("piped")));
    let status = child
        .wait_exit(limit)
        .unwrap_or_else(|| panic!("{cmd:?} still running after {limit:?}"));
    std::process::Output {
        status,
        stdout: stdout.join().expect("the drain thread does not panic"),
        stderr: stderr.join().expect("the drain thread does not panic"),
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The child's log is read up to the needle, and the child runs on.
    #[test]
    fn spawn_until_logged_returns_at_the_needle_with_the_child_running() {
        let mut child = ChildGuard::spawn_until_logged(
            Command::new("sh").args(["-c", "echo one >&2; echo ready now >&2; sleep 30"]),
            "ready",
            std::time::Duration::from_secs(30),
        );
        assert!(matches!(child.0.try_wait(), Ok(None)), "still running");
    }

    /// A child that exits without the needle is a failure that names what it logged.
    #[test]
    #[should_panic(expected = "exited before logging \"ready\"")]
    fn spawn_until_logged_fails_when_the_child_exits_first() {
        ChildGuard::spawn_until_logged(
            Command::new("sh").args(["-c", "echo something else >&2"]),
            "ready",
            std::time::Duration::from_secs(30),
        );
    }

    #[test]
    fn namespace_is_isolated_and_removed() {
        if !kernel_tests_enabled("namespace_is_isolated_and_removed") {
            return;
        }
        let name;
        {
            let ns = Netns::new("lab").unwrap();
            name = ns.name().to_owned();
            ns.sysctl("net.core.somaxconn", "7").unwrap();
            let inside = ns.run(|| stampede_proto::sysctl::read_u64("net.core.somaxconn"));
            assert_eq!(inside.unwrap(), 7);
            // The test's own namespace is untouched.
            assert_ne!(
                stampede_proto::sysctl::read_u64("net.core.somaxconn").unwrap(),
                7,
                "host somaxconn happens to be 7 or the sysctl leaked"
            );
            let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
            assert!(String::from_utf8_lossy(&listed.stdout).contains(&name));
        }
        let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&listed.stdout).contains(&name));
    }
}
