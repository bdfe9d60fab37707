//! How far behind the `report.hlog` writer thread is, and what it last said about it: it
//! warns past [`BEHIND_WARN`], again each time the lag doubles, and once it has caught up.

use std::time::Duration;

use super::BEHIND_WARN;

/// How far behind the thread is, and what it last said about it.
#[derive(Debug, Default)]
pub(in crate::report::hlog) struct Backlog {
    /// How far behind it was when it last warned (`None`: not behind).
    warned: Option<Duration>,
}

/// What [`Backlog::note`] said.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::report::hlog) enum Said {
    Nothing,
    Behind,
    CaughtUp,
}

impl Backlog {
    /// A second taken up `lag` after it was handed over, with `waiting` more queued: warns
    /// past [`BEHIND_WARN`] and each time the lag doubles, and says when it caught up.
    pub(in crate::report::hlog) fn note(&mut self, lag: Duration, waiting: usize) -> Said {
        match self.warned {
            Some(_) if lag < Duration::from_secs(1) => {
                self.warned = None;
                tracing::info!(waiting, "report.hlog's writer has caught up");
                Said::CaughtUp
            }
            Some(last) if lag < last * 2 => Said::Nothing,
            None if lag < BEHIND_WARN => Said::Nothing,
            _ => {
                self.warned = Some(lag);
                tracing::warn!(
                    behind_s = lag.as_secs(),
                    waiting_seconds = waiting,
                    "report.hlog's writer is behind: the seconds waiting are held in memory \
                     until written (none is dropped)"
                );
                Said::Behind
            }
        }
    }
}
