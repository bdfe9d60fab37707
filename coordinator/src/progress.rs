//! The progress line of long waits (agents attaching, a run's attempts deciding, a sweep's
//! steps). The run reports through a plain `Fn(&str)`; this turns those lines into one live
//! line on a terminal (an indicatif spinner with the time elapsed, redrawn in place) or, when
//! stderr is a file or a pipe, into log lines only when the wait changes, its first count
//! moves (attempts decided, agents attached) or [`PLAIN_EVERY`] has passed, so a log shows
//! progress without a line per second of waiting. `--quiet` shows none. While the live line
//! is drawn, log lines are written through its suspend ([`logging::set_live_line`]): the
//! line is cleared, the log line written, the line drawn again, never mixed.

use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use stampede_proto::logging;

/// The shortest gap between two plain progress lines about the same wait.
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Where progress goes.
#[derive(Debug)]
pub struct Progress {
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    Quiet,
    Live(ProgressBar),
    /// When the last line went out, and its key.
    Plain(Mutex<Option<(Instant, Key)>>),
}

impl Progress {
    /// A live line when stderr is a terminal, plain log lines otherwise, nothing when `quiet`.
    pub fn stderr(quiet: bool) -> Progress {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            return Progress::live(ProgressDrawTarget::stderr());
        } else {
            Mode::Plain(Mutex::new(None))
        };
        Progress { mode }
    }

    /// A live line drawn on `target`, log lines written through its suspend until
    /// [`Progress::finish`].
    fn live(target: ProgressDrawTarget) -> Progress {
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                .expect("a constant, valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        let drawn = bar.clone();
        logging::set_live_line(Some(Arc::new(move |write: &mut dyn FnMut()| {
            drawn.suspend(write)
        })));
        Progress {
            mode: Mode::Live(bar),
        }
    }

    /// Shows `line`: the live line's new text, or a log line when one is due.
    pub fn line(&self, line: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Live(bar) => bar.set_message(line.to_owned()),
            Mode::Plain(last) => {
                let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
                if plain_due(last.as_ref(), line, Instant::now()) {
                    tracing::info!("{line}");
                    *last = Some((Instant::now(), key(line)));
                }
            }
        }
    }

    /// Clears the live line (before the summary is printed).
    pub fn finish(&self) {
        if let Mode::Live(bar) = &self.mode {
            logging::set_live_line(None);
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    /// A line dropped without `finish` (an early return, a panic) stops taking log lines too.
    fn drop(&mut self) {
        self.finish();
    }
}

/// What a line is about (its words, numbers left out) and its first number (the count that
/// progresses): the same key means nothing moved but the clock.
type Key = (String, Option<u64>);

fn key(line: &str) -> Key {
    let about = line.chars().filter(|c| !c.is_ascii_digit()).collect();
    let first = line
        .split(|c: char| !c.is_ascii_digit() && c != ',')
        .find(|w| w.chars().any(|c| c.is_ascii_digit()))
        .and_then(|w| w.replace(',', "").parse().ok());
    (about, first)
}

/// Whether a plain line is due: the first, one whose key changed, or [`PLAIN_EVERY`] after
/// the last.
fn plain_due(last: Option<&(Instant, Key)>, line: &str, now: Instant) -> bool {
    match last {
        None => true,
        Some((at, k)) => *k != key(line) || now.duration_since(*at) >= PLAIN_EVERY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_come_when_something_moves_or_every_few_seconds() {
        let t0 = Instant::now();
        let second = t0 + Duration::from_secs(1);
        let wait = "waiting for agents: 1 of 3 attached, up to 9 s more";
        let last = (t0, key(wait));
        assert!(plain_due(None, "anything", t0));
        // Only the countdown moved: not yet.
        let later = "waiting for agents: 1 of 3 attached, up to 8 s more";
        assert!(!plain_due(Some(&last), later, second));
        assert!(plain_due(Some(&last), later, t0 + PLAIN_EVERY));
        // An agent attached, or another wait began: at once.
        assert!(plain_due(
            Some(&last),
            "waiting for agents: 2 of 3 attached, up to 8 s more",
            second
        ));
        assert!(plain_due(Some(&last), "start in 2.0s", second));
        let decided = "1,524 of 3,000 attempts decided, the rest waiting up to 8 s more for x";
        assert_eq!(key(decided).1, Some(1524));
        assert_ne!(
            key(decided),
            key("1,524 of 3,000 attempts decided; 2 of 3 agents have sent")
        );
    }

    #[test]
    fn quiet_shows_nothing() {
        let p = Progress::stderr(true);
        p.line("waiting");
        p.finish();
        assert!(matches!(p.mode, Mode::Quiet));
    }

    /// A terminal that records what is drawn, in order, with the log's lines beside.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<Vec<String>>>);

    impl Screen {
        fn push(&self, s: String) {
            self.0.lock().unwrap().push(s);
        }
    }

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            80
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.push(format!("bar: {s}"));
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            if !s.is_empty() {
                self.push(format!("bar: {s}"));
            }
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.push("clear".into());
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A log line while the live line is drawn: the line is cleared first, the log line
    /// written whole, the line drawn again after it; after `finish` the log writes alone.
    #[test]
    fn log_lines_never_mix_with_the_live_line() {
        let screen = Screen::default();
        let log = screen.clone();
        let writer = logging::LogWriter::to(move |line| {
            log.push(format!("log: {}", String::from_utf8_lossy(line).trim_end()));
        });
        // As the subscriber writes an event: one line, written out when done.
        let log_line = |text: &str| {
            use std::io::Write as _;
            let mut line = writer.line();
            writeln!(line, "WARN stampede: {text}").unwrap();
        };
        let p = Progress::live(ProgressDrawTarget::term_like(Box::new(screen.clone())));
        p.line("waiting for agents: 1 of 3 attached");
        log_line("an agent left");
        let seen = screen.0.lock().unwrap().clone();
        let at = seen
            .iter()
            .position(|l| l.starts_with("log: ") && l.contains("an agent left"))
            .unwrap_or_else(|| panic!("{seen:#?}"));
        assert!(
            seen[..at].last().is_some_and(|l| l == "clear"),
            "the live line is cleared before the log line: {seen:#?}"
        );
        assert!(
            seen[at + 1..]
                .iter()
                .any(|l| l.contains("waiting for agents")),
            "and drawn again after it: {seen:#?}"
        );
        p.finish();
        screen.0.lock().unwrap().clear();
        log_line("after the end");
        let seen = screen.0.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{seen:#?}");
        assert!(seen[0].contains("after the end"), "{seen:#?}");
    }
}
