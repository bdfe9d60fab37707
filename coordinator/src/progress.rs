//! The progress line of long waits (agents attaching, a run's attempts deciding, a sweep's
//! steps). The run reports through a plain `Fn(&str)`; this turns those lines into one live
//! line on a terminal (an indicatif spinner with the time elapsed, redrawn in place) or, when
//! stderr is a file or a pipe, into log lines only when the wait changes, its first count
//! moves (attempts decided, agents attached) or [`PLAIN_EVERY`] has passed, so a log shows
//! progress without a line per second of waiting. `--quiet` shows none.

use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                    .expect("a constant, valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            Mode::Live(bar)
        } else {
            Mode::Plain(Mutex::new(None))
        };
        Progress { mode }
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
            bar.finish_and_clear();
        }
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
}
