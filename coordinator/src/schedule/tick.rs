//! One tick of one entry: its `repeat` runs (or sweeps) on the attached agents, each
//! recorded in the history whatever happened (complete, partial, failed, aborted), then the
//! batch judged against its baseline and the metrics updated.

use std::path::Path;

use chrono::{DateTime, Utc};
use stampede_proto::tally::Tally;

use super::Scheduler;
use super::capacity::Entry;
use crate::history::{self, Ran, Record, Status, Verdict, fresh_id};
use crate::run::RunError;
use crate::scenario::Scenario;

/// What a tick left: its rows and verdict.
#[derive(Debug)]
pub(super) struct TickResult {
    /// The rows written, in order.
    pub(super) rows: Vec<Record>,
    /// The batch's verdict.
    pub(super) verdict: Verdict,
}

impl TickResult {
    /// A run of the tick failed, was partial or aborted.
    pub(super) fn failed(&self) -> bool {
        self.rows.iter().any(|r| r.status != Status::Complete)
    }
}

impl Scheduler<'_> {
    /// Runs `entry`'s tick due at `tick`.
    pub(super) async fn run_tick(
        &mut self,
        entry: &Entry,
        tick: DateTime<Utc>,
    ) -> Result<TickResult, history::HistoryError> {
        let settings = Scenario::layered(Some(entry.scenario.clone()), self.flags, self.explicit);
        let target = super::history_entry(entry, self.flags, self.explicit);
        let batch = format!("{}@{}", entry.name, tick.format("%Y-%m-%dT%H:%M:%SZ"));
        // --once may run an entry twice within a second: each batch id is unique.
        let batch = format!("{batch}#{}", fresh_id("b"));
        tracing::info!(entry = %entry.name, kind = entry.kind.name(), repeat = entry.repeat, "tick");
        let mut verdict = None;
        let mut last_hist = None;
        for i in 0..entry.repeat {
            // A tick interrupted before its first run still gets its row (aborted, by the run
            // itself): every tick that fell due is accounted for. Later repeats are not begun.
            if i > 0 && self.shutdown.is_cancelled() {
                break;
            }
            if entry.repeat > 1 {
                (self.progress)(&format!("{}: run {}/{}", entry.name, i + 1, entry.repeat));
            }
            let started = history::record::now_rfc3339();
            let (record, hist) = self
                .one_run(entry, &settings, &target, &batch, &started)
                .await;
            // A synchronous write on this task: it takes milliseconds, or waits out another
            // process's lock (bounded by history::BUSY_TIMEOUT) while no run is in flight.
            // The run and its batch's verdict so far are one write.
            let h = hist.as_ref().map(|t| (&t.connect_latency, &t.ttfb));
            verdict = Some(self.store.insert_judged(&record, &entry.thresholds, h)?);
            if let Some(h) = hist {
                last_hist = Some((record.run_id, h));
            }
        }
        let verdict = match verdict {
            Some(v) => v,
            // No run at all (an entry always has one: defensive).
            None => history::Verdict::plain(
                history::VerdictKind::NotJudged,
                "not judged: nothing ran (interrupted)",
            ),
        };
        let rows = self.store.batch(&batch)?;
        for r in &rows {
            // The histograms go with the run that measured them (the batch's last that did).
            let h = last_hist.as_ref().filter(|(id, _)| *id == r.run_id);
            self.metrics.record(
                r,
                h.map(|(_, t): &(String, Tally)| (&t.connect_latency, &t.ttfb)),
            );
        }
        tracing::info!(
            entry = %entry.name,
            verdict = verdict.kind.name(),
            reasons = %verdict.reasons.join("; "),
            "judged"
        );
        Ok(TickResult { rows, verdict })
    }

    /// One run or sweep: its row (not yet judged) and, for a run, its merged histograms.
    async fn one_run(
        &mut self,
        entry: &Entry,
        settings: &Scenario,
        target: &history::Entry,
        batch: &str,
        started: &str,
    ) -> (Record, Option<Tally>) {
        let registry = &self.coordinator.registry;
        let nothing = |e: RunError| match e {
            RunError::Aborted => Ran::Nothing {
                status: Status::Aborted,
                reason: "interrupted before the start (SIGINT/SIGTERM)".into(),
            },
            e => Ran::Nothing {
                status: Status::Failed,
                reason: e.to_string(),
            },
        };
        match entry.kind {
            history::Kind::Run => {
                let plan = match settings.plan() {
                    Ok(p) => p,
                    Err(e) => return (self.refused(target, batch, started, e.to_string()), None),
                };
                match crate::run::execute(registry, &plan, self.shutdown, self.progress).await {
                    Ok(mut done) => {
                        done.report.thresholds =
                            crate::threshold::evaluate(&settings.fail_if, &done.report);
                        write_out(
                            settings.out.as_deref(),
                            &entry.name,
                            &done.report.run_id,
                            |d| done.write(d),
                        );
                        let rec = target.record(batch, started, Ran::Run(&done.report));
                        (rec, Some(done.merged().clone()))
                    }
                    Err(e) => (target.record(batch, started, nothing(e)), None),
                }
            }
            history::Kind::Sweep => {
                let sweep = settings.sweep.clone().unwrap_or_default();
                let plan = match settings.sweep_plan(&sweep) {
                    Ok(p) => p,
                    Err(e) => return (self.refused(target, batch, started, e.to_string()), None),
                };
                match crate::sweep::execute(registry, &plan, self.shutdown, self.progress).await {
                    Ok(mut report) => {
                        report.judge(&settings.fail_if);
                        let rec = target.record(batch, started, Ran::Sweep(&report));
                        write_out(settings.out.as_deref(), &entry.name, &rec.run_id, |d| {
                            report.write(d)
                        });
                        (rec, None)
                    }
                    Err(e) => (target.record(batch, started, nothing(e)), None),
                }
            }
        }
    }

    fn refused(&self, target: &history::Entry, batch: &str, started: &str, why: String) -> Record {
        target.record(
            batch,
            started,
            Ran::Nothing {
                status: Status::Failed,
                reason: format!("the scenario was refused: {why}"),
            },
        )
    }
}

/// Writes a run's files under `out/ENTRY/RUN_ID` when `--out` (or `out =`) was given; a
/// failure is logged (the history holds the report.json all the same).
fn write_out(
    out: Option<&Path>,
    entry: &str,
    run_id: &str,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) {
    let Some(out) = out else { return };
    let safe: String = entry
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dir = out.join(safe).join(run_id);
    match write(&dir) {
        Ok(()) => tracing::info!(dir = %dir.display(), "reports written"),
        Err(e) => {
            tracing::error!(dir = %dir.display(), cause = %e, "writing the reports failed (report.json is in the history)")
        }
    }
}
