//! The supervised server as a child process: started in a process group of its own (so a
//! stop reaches the workers a master forks, as nginx's does), its stdout and stderr read line
//! by line into the log with a prefix (`nginx[1234]: ...`), the last stderr lines kept for
//! the error when it dies, and stopped gracefully: the stop signal to the group, a bounded
//! wait, then SIGKILL.
//!
//! Everything here blocks (std::process, reader threads): the control service calls it off
//! the async runtime (`spawn_blocking`).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Stderr lines kept for an error message.
const KEPT_LINES: usize = 8;
/// A line longer than this is cut (a child printing without newlines cannot grow memory).
const MAX_LINE: u64 = 4096;

/// A running child.
#[derive(Debug)]
pub(crate) struct Child {
    child: std::process::Child,
    name: String,
    /// The last stderr lines, and whether the pipe is read to its end.
    stderr_tail: Arc<Tail>,
}

/// The last stderr lines (newest last) and whether the reader reached the pipe's end; the
/// condvar wakes a waiter when it does.
#[derive(Debug, Default)]
struct Tail {
    lines: Mutex<TailLines>,
    closed: Condvar,
}

#[derive(Debug, Default)]
struct TailLines {
    lines: VecDeque<String>,
    closed: bool,
}

/// How long `death` waits for the reader to take the dead server's last lines out of the
/// pipe (a worker of its group may hold the pipe open: then what was read by then).
const TAIL_WAIT: Duration = Duration::from_millis(200);

impl Child {
    /// Starts `program args` in a new process group, its output going to the log.
    pub(crate) fn spawn(program: &str, args: &[String]) -> std::io::Result<Child> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: the stop signal reaches every process it forks.
            .process_group(0)
            .spawn()?;
        let name = std::path::Path::new(program)
            .file_name()
            .map_or_else(|| program.to_owned(), |n| n.to_string_lossy().into_owned());
        let prefix = format!("{name}[{}]", child.id());
        let stderr_tail = Arc::new(Tail::default());
        if let Some(out) = child.stdout.take() {
            forward(out, prefix.clone(), "stdout", None);
        }
        if let Some(err) = child.stderr.take() {
            forward(err, prefix, "stderr", Some(stderr_tail.clone()));
        }
        Ok(Child {
            child,
            name,
            stderr_tail,
        })
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// "nginx exited with status 1; its last stderr lines: ..." for an error message, once
    /// the reader has taken its last lines out of the pipe (a bounded wait: blocking code
    /// only, never on the async runtime; there, [`Child::death_now`]).
    pub(crate) fn death(&mut self, status: ExitStatus) -> String {
        let t = &self.stderr_tail;
        let lines = t.lines.lock().expect("stderr tail lock poisoned");
        let (lines, _) = t
            .closed
            .wait_timeout_while(lines, TAIL_WAIT, |l| !l.closed)
            .expect("stderr tail lock poisoned");
        drop(lines);
        format!("{} {}{}", self.name, describe(status), self.tail())
    }

    /// As [`Child::death`] without waiting: the message with the lines read so far, and
    /// whether those are all (the pipe was read to its end).
    pub(crate) fn death_now(&mut self, status: ExitStatus) -> (String, bool) {
        let complete = self
            .stderr_tail
            .lines
            .lock()
            .expect("stderr tail lock poisoned")
            .closed;
        let why = format!("{} {}{}", self.name, describe(status), self.tail());
        (why, complete)
    }

    /// `; its last stderr lines: a | b` or nothing.
    pub(crate) fn tail(&self) -> String {
        let tail = self
            .stderr_tail
            .lines
            .lock()
            .expect("stderr tail lock poisoned");
        if tail.lines.is_empty() {
            String::new()
        } else {
            let lines: Vec<&str> = tail.lines.iter().map(String::as_str).collect();
            format!("; its last stderr lines: {}", lines.join(" | "))
        }
    }

    /// Sends `signal` to its process group, waits up to `within` for it to exit, then kills
    /// the group. Returns how it ended.
    pub(crate) fn stop(&mut self, signal: i32, within: Duration) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.exited() {
            kill_group(self.pid(), libc::SIGKILL);
            return Ok(status);
        }
        kill_group(self.pid(), signal);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                // Whatever of the group outlived its leader goes too.
                kill_group(self.pid(), libc::SIGKILL);
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        tracing::warn!(
            pid = self.pid(),
            waited = ?within,
            "the server did not stop in time: SIGKILL"
        );
        kill_group(self.pid(), libc::SIGKILL);
        self.child.wait()
    }
}

impl Drop for Child {
    /// A child is never left behind, nor its group: workers a server forked outlive a master
    /// that died and would hold the port, so the group is killed even when the leader is gone
    /// (as `stop` does).
    fn drop(&mut self) {
        kill_group(self.pid(), libc::SIGKILL);
        if self.exited().is_none() {
            let _ = self.child.wait();
        }
    }
}

/// "exited with status 1" / "was killed by signal 9".
pub(crate) fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => format!("ended ({status})"),
    }
}

fn kill_group(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; it has no memory effects.
    // The group is the child's own (process_group(0) at spawn), led by the child's pid.
    unsafe {
        libc::kill(-(pid as libc::pid_t), signal);
    }
}

/// Reads `pipe` line by line on a thread of its own into the log, keeping the last lines in
/// `tail` and marking it closed at the pipe's end; ends when the pipe closes.
fn forward(
    pipe: impl Read + Send + 'static,
    prefix: String,
    stream: &'static str,
    tail: Option<Arc<Tail>>,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
            if line.is_empty() {
                continue;
            }
            tracing::info!(stream, "{prefix}: {line}");
            if let Some(tail) = &tail {
                let mut t = tail.lines.lock().expect("stderr tail lock poisoned");
                if t.lines.len() == KEPT_LINES {
                    t.lines.pop_front();
                }
                t.lines
                    .push_back(stampede_proto::usage::cut(&line).into_owned());
            }
        }
        if let Some(tail) = &tail {
            tail.lines.lock().expect("stderr tail lock poisoned").closed = true;
            tail.closed.notify_all();
        }
    });
}

/// The stop signal by name (`TERM`, `SIGQUIT`, `int`) or number.
pub(crate) fn parse_signal(s: &str) -> Result<i32, String> {
    let t = s.trim().to_ascii_uppercase();
    let name = t.strip_prefix("SIG").unwrap_or(&t);
    let sig = match name {
        "TERM" => libc::SIGTERM,
        "QUIT" => libc::SIGQUIT,
        "INT" => libc::SIGINT,
        "HUP" => libc::SIGHUP,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "WINCH" => libc::SIGWINCH,
        n => match n.parse::<i32>() {
            Ok(n) if (1..=64).contains(&n) => n,
            _ => {
                return Err(format!(
                    "invalid stop signal \"{}\": expected TERM, QUIT, INT, HUP, KILL, USR1, \
                     USR2, WINCH or a number 1-64",
                    stampede_proto::usage::cut(s)
                ));
            }
        },
    };
    Ok(sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_or_number() {
        assert_eq!(parse_signal("TERM"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("sigquit"), Ok(libc::SIGQUIT));
        assert_eq!(parse_signal("9"), Ok(9));
        assert!(
            parse_signal("BOGUS")
                .unwrap_err()
                .contains("invalid stop signal")
        );
        assert!(parse_signal("0").is_err());
    }

    /// A child that dies is reported with its status and its last stderr lines; a child
    /// that ignores the stop signal is killed after the bounded wait.
    #[test]
    fn death_and_stubborn_children() {
        let mut c = Child::spawn(
            "sh",
            &["-c".into(), "echo first >&2; echo boom >&2; exit 3".into()],
        )
        .unwrap();
        let status = c.child.wait().unwrap();
        let why = c.death(status);
        assert!(why.starts_with("sh exited with status 3"), "{why}");
        assert!(why.ends_with("first | boom"), "{why}");

        // It says when the trap is set (a file appears), so the signal cannot come before.
        let ready = std::env::temp_dir().join(format!("stp-child-{}", std::process::id()));
        let script = format!("trap '' TERM; touch {}; sleep 30", ready.display());
        let mut c = Child::spawn("sh", &["-c".into(), script]).unwrap();
        let start = Instant::now();
        while !ready.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sh never started"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::fs::remove_file(&ready).unwrap();
        let status = c.stop(libc::SIGTERM, Duration::from_millis(300)).unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    /// While a process of the dead server's group holds its stderr open, the death is told
    /// at once with the lines read so far (never waiting for the pipe's end); once the
    /// pipe closes it is complete, with every last line.
    #[test]
    fn death_now_never_waits_for_the_pipe() {
        let script = "echo boom >&2; sleep 30 & exit 3";
        let mut c = Child::spawn("sh", &["-c".into(), script.into()]).unwrap();
        let status = c.child.wait().unwrap();
        let (why, complete) = c.death_now(status);
        assert!(why.starts_with("sh exited with status 3"), "{why}");
        assert!(!complete, "sleep 30 holds the pipe: {why}");
        // The group goes (as a stop does): the pipe closes, the tail is complete.
        kill_group(c.pid(), libc::SIGKILL);
        let start = Instant::now();
        loop {
            let (why, complete) = c.death_now(status);
            if complete {
                assert!(why.ends_with("its last stderr lines: boom"), "{why}");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the pipe never closed"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
