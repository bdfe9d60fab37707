//! The progress line of long waits (agents attaching, a run's attempts deciding, a sweep's
//! steps). The run reports through a plain `Fn(&str)`; this turns those lines into one live
//! line on a terminal (an indicatif spinner with the time elapsed, redrawn in place) or, when
//! stderr is a file or a pipe, into log lines at most every [`PLAIN_EVERY`] (and whenever
//! the wait changes), so logs stay short. `--quiet` shows none.

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
    /// When the last line went out, and what it was about.
    Plain(Mutex<Option<(Instant, String)>>),
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
                    *last = Some((Instant::now(), topic(line).to_owned()));
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

/// What a line is about: its text up to the first digit ("waiting for agents: ", "start in ").
fn topic(line: &str) -> &str {
    line.find(|c: char| c.is_ascii_digit())
        .map_or(line, |i| &line[..i])
}

/// Whether a plain line is due: the first, one about another wait, or [`PLAIN_EVERY`] after
/// the last.
fn plain_due(last: Option<&(Instant, String)>, line: &str, now: Instant) -> bool {
    match last {
        None => true,
        Some((at, about)) => about != topic(line) || now.duration_since(*at) >= PLAIN_EVERY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_come_on_a_new_wait_or_every_few_seconds() {
        let t0 = Instant::now();
        let last = (t0, topic("waiting for agents: 1/3 attached").to_owned());
        assert!(plain_due(None, "anything", t0));
        assert!(!plain_due(
            Some(&last),
            "waiting for agents: 2/3 attached",
            t0 + Duration::from_secs(1)
        ));
        assert!(plain_due(
            Some(&last),
            "waiting for agents: 2/3 attached",
            t0 + PLAIN_EVERY
        ));
        assert!(plain_due(Some(&last), "start in 2.0s", t0));
    }

    #[test]
    fn quiet_shows_nothing() {
        let p = Progress::stderr(true);
        p.line("waiting");
        p.finish();
        assert!(matches!(p.mode, Mode::Quiet));
    }
}
