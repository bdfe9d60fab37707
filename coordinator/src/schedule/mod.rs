//! `stampede schedule CAPACITY.toml`: a long-running coordinator that runs each entry of a
//! capacity file ([`capacity`]) at its cron times (UTC) on the agents that stay attached to
//! its one endpoint between runs, records every run in the history and judges it against
//! its baseline ([`crate::history`]), and updates the metrics ([`crate::metrics`]).
//!
//! Time rules: entries due at the same instant run one after another in file order; a tick
//! that falls due while a run is in progress is skipped and recorded as skipped (a run is
//! never started late or twice); ticks missed while the scheduler was not running are
//! logged at start, not run. SIGINT/SIGTERM aborts the current run, which is recorded as
//! aborted, and the scheduler exits. `--once` runs every entry once, now, in file order.
//!
//! Children: `capacity` (the file), `tick` (one entry's runs, recorded and judged).

pub mod capacity;
pub mod record;
mod tick;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::Args;
use tokio_util::sync::CancellationToken;

use self::capacity::{Capacity, Entry};
use crate::history::{self, HistoryError, Ran, Status, Store, VerdictKind};
use crate::metrics::{self, Metrics};
use crate::scenario::{ConfigError, Scenario};

/// `stampede schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// The capacity file: [[entry]] tables with name, cron (UTC), kind, scenario, repeat and
    /// thresholds.
    pub capacity: PathBuf,
    /// The history file (SQLite, created if missing).
    #[arg(long, env = "STAMPEDE_DB", value_name = "FILE", default_value = history::DEFAULT_DB)]
    pub db: PathBuf,
    /// Run every entry once, now, in file order, and exit: 0 all clean, 2 a regression, 1 a
    /// run failed.
    #[arg(long)]
    pub once: bool,
    /// Serve Prometheus metrics on ADDR (GET /metrics).
    #[arg(long, env = "STAMPEDE_METRICS", value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// The endpoint's flags (--listen, --token-file, TLS); any other run flag given here goes
    /// over every entry's scenario.
    #[command(flatten)]
    pub settings: Scenario,
}

/// Why `schedule` (or a run's recording) could not start: bad usage (exit 64) or else.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// A bad capacity file or flag.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The history, the metrics endpoint.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// A checked capacity file and an open history: what `schedule` has before it listens.
#[derive(Debug)]
pub struct Prepared {
    /// The capacity file.
    pub capacity: Capacity,
    /// The endpoint's settings (the flags over the defaults).
    pub endpoint: Scenario,
    store: Store,
}

impl Prepared {
    /// Reads and checks the capacity file (with the flags over each entry), opens the
    /// history: everything that can be refused is refused before the coordinator listens.
    pub fn new(
        args: &ScheduleArgs,
        explicit: &BTreeSet<String>,
    ) -> Result<Prepared, ScheduleError> {
        let capacity = Capacity::load(&args.capacity)?;
        capacity.check(&args.settings, explicit)?;
        let endpoint = Scenario::layered(None, &args.settings, explicit);
        let store = Store::open(&args.db).map_err(anyhow::Error::from)?;
        Ok(Prepared {
            capacity,
            endpoint,
            store,
        })
    }

    /// Serves the metrics (if asked) and runs the schedule on `coordinator`'s agents.
    pub async fn run(
        &mut self,
        args: &ScheduleArgs,
        coordinator: &crate::Coordinator,
        explicit: &BTreeSet<String>,
        shutdown: &CancellationToken,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Outcome, ScheduleError> {
        let metrics = Arc::new(Metrics::new());
        metrics.watch(coordinator.registry.clone());
        metrics::restore_from(&metrics, &self.store);
        if let Some(addr) = args.metrics {
            let token = self.endpoint.serve_config()?.token;
            metrics::serve(addr, metrics.clone(), token, shutdown.clone())
                .await
                .map_err(anyhow::Error::from)?;
        }
        tracing::info!(
            capacity = %self.capacity.path.display(),
            db = %args.db.display(),
            entries = self.capacity.entries.len(),
            "scheduling"
        );
        let scheduler = Scheduler::new(
            coordinator,
            &mut self.store,
            &metrics,
            &args.settings,
            explicit,
            shutdown,
            progress,
        );
        let outcome = if args.once {
            scheduler.once(&self.capacity).await
        } else {
            scheduler.run(&self.capacity).await
        };
        outcome.map_err(|e| ScheduleError::Other(e.into()))
    }
}

/// Most skipped ticks recorded one by one per entry after one run; the rest are counted in
/// the log (a run that took a day would otherwise write 1440 rows for a minutely entry).
const MAX_SKIPPED_ROWS: usize = 100;

/// What a schedule left: its summary and exit code.
#[derive(Debug)]
pub struct Outcome {
    /// One line per tick run (with `--once`, one per entry), then the verdicts.
    pub summary: String,
    /// 0 all clean, 2 a regression, 1 a run failed, was partial or aborted (1 wins).
    pub code: u8,
}

/// The scheduler's state: the endpoint, the history, the metrics.
pub struct Scheduler<'a> {
    /// The agents' endpoint (kept between runs).
    pub coordinator: &'a crate::Coordinator,
    /// The history.
    pub store: &'a mut Store,
    /// The metrics.
    pub metrics: &'a Metrics,
    /// The command line's run flags (over every entry's scenario).
    pub flags: &'a Scenario,
    /// Which of them were given.
    pub explicit: &'a BTreeSet<String>,
    /// SIGINT/SIGTERM.
    pub shutdown: &'a CancellationToken,
    /// One-line status updates.
    pub progress: &'a (dyn Fn(&str) + Sync),
    summary: String,
    code: u8,
}

impl<'a> Scheduler<'a> {
    /// A scheduler over these parts.
    pub fn new(
        coordinator: &'a crate::Coordinator,
        store: &'a mut Store,
        metrics: &'a Metrics,
        flags: &'a Scenario,
        explicit: &'a BTreeSet<String>,
        shutdown: &'a CancellationToken,
        progress: &'a (dyn Fn(&str) + Sync),
    ) -> Scheduler<'a> {
        Scheduler {
            coordinator,
            store,
            metrics,
            flags,
            explicit,
            shutdown,
            progress,
            summary: String::new(),
            code: 0,
        }
    }

    /// `--once`: every entry once, now, in file order.
    pub async fn once(mut self, capacity: &Capacity) -> Result<Outcome, HistoryError> {
        for entry in &capacity.entries {
            if self.shutdown.is_cancelled() {
                let _ = writeln!(self.summary, "{}: not run (interrupted)", entry.name);
                self.code = 1;
                continue;
            }
            self.tick(entry, Utc::now()).await?;
        }
        Ok(self.outcome())
    }

    /// Runs the entries at their times until SIGINT/SIGTERM.
    pub async fn run(mut self, capacity: &Capacity) -> Result<Outcome, HistoryError> {
        let entries = &capacity.entries;
        let now = Utc::now();
        for e in entries {
            self.log_missed(e, now)?;
        }
        let mut next: Vec<Option<DateTime<Utc>>> = entries.iter().map(|e| after(e, now)).collect();
        for (e, n) in entries.iter().zip(&next) {
            let first = n.map_or_else(|| "never".to_owned(), |t| t.to_rfc3339());
            tracing::info!(entry = %e.name, cron = %e.cron_text, first = %first, "entry scheduled");
        }
        loop {
            let Some(due) = next.iter().flatten().min().copied() else {
                tracing::warn!("no entry has a future time: nothing left to schedule");
                break;
            };
            for (e, n) in entries.iter().zip(&next) {
                if *n == Some(due) {
                    tracing::info!(entry = %e.name, at = %due.to_rfc3339(), "next run");
                }
            }
            let wait = (due - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            // The summary and exit code are the last tick's: a process that runs for months
            // keeps no growing record in memory (the history has it all).
            self.summary.clear();
            self.code = 0;
            // Entries due at the same instant run in file order.
            for (i, e) in entries.iter().enumerate() {
                if next[i] == Some(due) && !self.shutdown.is_cancelled() {
                    self.tick(e, due).await?;
                    next[i] = after(e, due);
                }
            }
            if self.shutdown.is_cancelled() {
                break;
            }
            // Whatever fell due while those ran is skipped, and recorded as skipped.
            let now = Utc::now();
            for (i, e) in entries.iter().enumerate() {
                next[i] = self.skip_overdue(e, next[i], due, now)?;
            }
        }
        Ok(self.outcome())
    }

    async fn tick(&mut self, entry: &Entry, at: DateTime<Utc>) -> Result<(), HistoryError> {
        let result = self.run_tick(entry, at).await?;
        let v = &result.verdict;
        let statuses: Vec<&str> = result.rows.iter().map(|r| r.status.name()).collect();
        let _ = writeln!(
            self.summary,
            "{}: {} ({}), verdict {}",
            entry.name,
            result
                .rows
                .iter()
                .map(|r| r.run_id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            statuses.join(", "),
            v.kind.name()
        );
        for r in &v.reasons {
            let _ = writeln!(self.summary, "  {r}");
        }
        if result.failed() || result.rows.is_empty() {
            self.code = 1;
        } else if v.kind == VerdictKind::Regression && self.code == 0 {
            self.code = 2;
        }
        Ok(())
    }

    /// Records each tick of `e` from `next` to `now` as skipped (the run in progress since
    /// `busy_since` overlapped it); returns the entry's next tick after `now`.
    fn skip_overdue(
        &mut self,
        e: &Entry,
        mut next: Option<DateTime<Utc>>,
        busy_since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, HistoryError> {
        let mut skipped = 0usize;
        while let Some(t) = next.filter(|t| *t <= now) {
            if skipped < MAX_SKIPPED_ROWS {
                let reason = format!(
                    "tick at {} fell due while a run was in progress (since {}): skipped",
                    t.to_rfc3339(),
                    busy_since.to_rfc3339()
                );
                let row = history_entry(e, self.flags, self.explicit).record(
                    &history::fresh_id("skipped"),
                    &t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    Ran::Nothing {
                        status: Status::Skipped,
                        reason,
                    },
                );
                self.store.insert(&row)?;
                self.metrics.record(&row, None);
                // Logged once recorded: what the log says is in the history and metrics.
                tracing::warn!(entry = %e.name, "{}", row.reason.as_deref().unwrap_or_default());
            }
            skipped += 1;
            next = after(e, t);
        }
        if skipped > MAX_SKIPPED_ROWS {
            tracing::warn!(entry = %e.name, skipped, recorded = MAX_SKIPPED_ROWS, "more ticks skipped than recorded");
        }
        Ok(next)
    }

    /// Logs the ticks of `e` that passed since its last recorded run while nothing ran them.
    fn log_missed(&self, e: &Entry, now: DateTime<Utc>) -> Result<(), HistoryError> {
        let Some(last) = self.store.last_started(&e.name)? else {
            return Ok(());
        };
        let Ok(last) = DateTime::parse_from_rfc3339(&last) else {
            return Ok(());
        };
        let last = last.with_timezone(&Utc);
        if let Some((count, first)) = missed(e, last, now) {
            tracing::warn!(
                entry = %e.name,
                missed = count,
                first = %first.to_rfc3339(),
                last_run = %last.to_rfc3339(),
                "ticks missed while the scheduler was not running (not run now)"
            );
        }
        Ok(())
    }

    fn outcome(self) -> Outcome {
        Outcome {
            summary: self.summary,
            code: self.code,
        }
    }
}

/// The history's view of an entry, with the command line's flags over its scenario.
fn history_entry(e: &Entry, flags: &Scenario, explicit: &BTreeSet<String>) -> history::Entry {
    let settings = Scenario::layered(Some(e.scenario.clone()), flags, explicit);
    history::Entry {
        name: e.name.clone(),
        kind: e.kind,
        scenario_name: e.scenario_name.clone(),
        scenario: serde_json::to_value(&settings).unwrap_or_default(),
    }
}

/// How many ticks of `e` fell in (`last`, `now`] (counted up to 10,000) and the first one.
fn missed(e: &Entry, last: DateTime<Utc>, now: DateTime<Utc>) -> Option<(u32, DateTime<Utc>)> {
    let mut t = after(e, last);
    let (mut count, mut first) = (0u32, None);
    while let Some(at) = t.filter(|t| *t <= now) {
        first.get_or_insert(at);
        count += 1;
        if count >= 10_000 {
            break;
        }
        t = after(e, at);
    }
    first.map(|f| (count, f))
}

/// The entry's first tick strictly after `t`.
fn after(e: &Entry, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    e.cron.find_next_occurrence(&t, false).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn ticks_are_utc_and_strictly_after() {
        let e = Capacity::parse(
            "[[entry]]\nname = \"n\"\ncron = \"0 3 * * *\"\n[entry.scenario]\ntarget = \"127.0.0.1:1\"\n",
            "c.toml",
            Path::new("."),
        )
        .unwrap()
        .remove(0);
        let t: DateTime<Utc> = "2026-11-27T03:00:00Z".parse().unwrap();
        assert_eq!(
            after(&e, t).unwrap().to_rfc3339(),
            "2026-11-28T03:00:00+00:00"
        );
        let t: DateTime<Utc> = "2026-11-27T02:59:59Z".parse().unwrap();
        assert_eq!(
            after(&e, t).unwrap().to_rfc3339(),
            "2026-11-27T03:00:00+00:00"
        );
        // Down from the 27th's run to the 30th at noon: the 28th, 29th and 30th were missed.
        let last: DateTime<Utc> = "2026-11-27T03:00:05Z".parse().unwrap();
        let now: DateTime<Utc> = "2026-11-30T12:00:00Z".parse().unwrap();
        let (count, first) = missed(&e, last, now).unwrap();
        assert_eq!(
            (count, first.to_rfc3339().as_str()),
            (3, "2026-11-28T03:00:00+00:00")
        );
        assert!(missed(&e, last, "2026-11-28T02:00:00Z".parse().unwrap()).is_none());
    }
}
