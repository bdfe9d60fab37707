//! From a finished (or failed) run to a judged row: [`Entry::record`] builds the row from
//! whatever the run produced, [`Store::insert_judged`] writes it and compares its batch (one
//! run, or a `repeat = N` tick's runs so far) with its baseline, storing the verdict on every
//! row of it in the same transaction.

use rusqlite::params;

use super::record::{Figures, Kind, Record, Status, now_rfc3339, scenario_diff, scenario_hash};
use super::verdict::{self, Thresholds, Verdict, VerdictKind};
use super::{HistoryError, Store, sqlite_error};
use crate::report::Report;
use crate::sweep::SweepReport;

/// What a run produced.
#[derive(Debug)]
pub enum Ran<'a> {
    /// A run's report.
    Run(&'a Report),
    /// A sweep's report.
    Sweep(&'a SweepReport),
    /// Nothing: it failed before a report, was aborted before the start, or was skipped.
    Nothing {
        /// Failed, aborted or skipped.
        status: Status,
        /// Why.
        reason: String,
    },
}

/// Which entry and scenario a run belongs to.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The schedule entry's name (or the scenario's, for `run --db`).
    pub name: String,
    /// Run or sweep.
    pub kind: Kind,
    /// The scenario's name.
    pub scenario_name: String,
    /// The scenario as run (its serialized settings, as report.json's `scenario`).
    pub scenario: serde_json::Value,
}

impl Entry {
    /// The row for one run of this entry that started at `started_at` (RFC 3339) in `batch`.
    pub fn record(&self, batch: &str, started_at: &str, ran: Ran<'_>) -> Record {
        let (hash, canonical) = scenario_hash(self.kind, &self.scenario);
        let (run_id, status, reason, figures, json) = match ran {
            Ran::Run(r) => {
                let (status, reason) = run_status(r);
                let json = serde_json::to_string(r).ok();
                (
                    r.run_id.clone(),
                    status,
                    reason,
                    Figures::of_report(r),
                    json,
                )
            }
            Ran::Sweep(s) => {
                let (status, reason) = sweep_status(s);
                let json = serde_json::to_string(s).ok();
                let id = s
                    .reports
                    .first()
                    .map_or_else(|| fresh_id("sweep"), |r| format!("sweep-{}", r.run_id));
                (id, status, reason, Figures::of_sweep(s), json)
            }
            Ran::Nothing { status, reason } => (
                fresh_id(status.name()),
                status,
                Some(reason),
                Figures::default(),
                None,
            ),
        };
        Record {
            run_id,
            batch: batch.to_owned(),
            entry: self.name.clone(),
            kind: self.kind,
            scenario_name: self.scenario_name.clone(),
            scenario_hash: hash,
            scenario_canonical: canonical,
            started_at: started_at.to_owned(),
            finished_at: now_rfc3339(),
            status,
            reason,
            figures,
            verdict: VerdictKind::NotJudged.name().to_owned(),
            reasons: Vec::new(),
            baseline_run_id: None,
            report_json: json,
        }
    }
}

/// A unique id for a row that has no run id of its own.
pub fn fresh_id(what: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let now = chrono::Utc::now();
    format!(
        "{what}-{}-{}-{}",
        now.format("%Y%m%dT%H%M%S%.3fZ"),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn run_status(r: &Report) -> (Status, Option<String>) {
    if r.aborted {
        return (Status::Aborted, Some("interrupted (SIGINT/SIGTERM)".into()));
    }
    let mut why: Vec<String> = Vec::new();
    for (agent, reason) in &r.lost_reasons {
        why.push(format!("agent {agent} lost: {reason}"));
    }
    for (agent, reason) in &r.cut_reasons {
        why.push(format!("agent {agent} cut short: {reason}"));
    }
    if let Some(e) = &r.target_error {
        why.push(format!("no target stats: {e}"));
    }
    if r.partial || !why.is_empty() {
        if why.is_empty() {
            why.push("partial".into());
        }
        return (Status::Partial, Some(why.join("; ")));
    }
    (Status::Complete, None)
}

fn sweep_status(s: &SweepReport) -> (Status, Option<String>) {
    match &s.stopped {
        Some(why) if why == "interrupted" => {
            (Status::Aborted, Some("interrupted (SIGINT/SIGTERM)".into()))
        }
        Some(why) => (Status::Partial, Some(format!("stopped early: {why}"))),
        None if s.steps.iter().any(|st| st.partial) => {
            (Status::Partial, Some("a step was partial".into()))
        }
        None => (Status::Complete, None),
    }
}

impl Store {
    /// Sets the verdict of runs already written (inside the caller's transaction).
    fn set_verdict(&self, run_ids: &[String], verdict: &Verdict) -> Result<(), HistoryError> {
        let reasons = serde_json::to_string(&verdict.reasons).expect("strings serialize");
        for id in run_ids {
            self.conn
                .execute(
                    "UPDATE runs SET verdict = ?1, reasons = ?2, baseline_run_id = ?3 WHERE run_id = ?4",
                    params![verdict.kind.name(), reasons, verdict.baseline, id],
                )
                .map_err(|e| sqlite_error(&self.path, e))?;
        }
        Ok(())
    }

    /// Judges `batch` and stores its verdict on its rows, inside the caller's transaction.
    pub(super) fn judge_in_place(
        &self,
        batch: &str,
        t: &Thresholds,
    ) -> Result<Verdict, HistoryError> {
        let rows = self.batch(batch)?;
        let verdict = self.verdict_of(batch, &rows, t)?;
        let ids: Vec<String> = rows.iter().map(|r| r.run_id.clone()).collect();
        self.set_verdict(&ids, &verdict)?;
        Ok(verdict)
    }

    fn verdict_of(
        &self,
        batch: &str,
        rows: &[Record],
        t: &Thresholds,
    ) -> Result<Verdict, HistoryError> {
        let complete: Vec<&Record> = rows
            .iter()
            .filter(|r| r.status == Status::Complete)
            .collect();
        let Some(first) = complete.first() else {
            let why = rows
                .first()
                .and_then(|r| r.reason.clone())
                .unwrap_or_else(|| "nothing ran".into());
            return Ok(Verdict::plain(
                VerdictKind::NotJudged,
                format!("not judged: no complete run ({why})"),
            ));
        };
        let Some((baseline, pinned)) = self.baseline(&first.scenario_hash, batch)? else {
            let reason = match self.previous(&first.entry, batch)? {
                Some(prev) if prev.scenario_hash != first.scenario_hash => format!(
                    "not compared with the entry's previous run {}: its scenario differs ({}); this run is the new baseline",
                    prev.run_id,
                    scenario_diff(&prev.scenario_canonical, &first.scenario_canonical).join(", ")
                ),
                _ => "first clean run of this scenario: it is the baseline from now on".into(),
            };
            return Ok(Verdict::plain(VerdictKind::NoBaseline, reason));
        };
        // A pinned run stands alone; a baseline found by its verdict brings its batch.
        let base_rows = if pinned {
            vec![baseline.clone()]
        } else {
            self.batch(&baseline.batch)?
        };
        let base: Vec<&Figures> = base_rows
            .iter()
            .filter(|r| r.status == Status::Complete)
            .map(|r| &r.figures)
            .collect();
        let new: Vec<&Figures> = complete.iter().map(|r| &r.figures).collect();
        let mut v = verdict::judge(
            &verdict::median(&base),
            &verdict::median(&new),
            t,
            new.len(),
            &baseline,
        );
        if pinned {
            v.reasons
                .push(format!("baseline {} is pinned", baseline.run_id));
        }
        let left_out = rows.len() - complete.len();
        if left_out > 0 {
            v.reasons.push(format!(
                "{left_out} of {} runs were not complete and are left out",
                rows.len()
            ));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Latency, Outcomes};

    fn report(id: &str, p99: u64, ghost: u64) -> Report {
        Report {
            run_id: id.into(),
            outcomes: Outcomes {
                established: 100 - ghost,
                ghost,
                ..Outcomes::default()
            },
            connect_latency_us: Latency {
                count: 100,
                p99,
                ..Latency::default()
            },
            ..Report::default()
        }
    }

    /// A new history in a directory of its own (`stampede-NAME-PID`), and the entry the
    /// tests record runs of.
    fn fresh_store(name: &str) -> (std::path::PathBuf, std::path::PathBuf, Store, Entry) {
        let dir = std::env::temp_dir().join(format!("stampede-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.db");
        let _ = std::fs::remove_file(&path);
        let store = Store::open(&path).unwrap();
        let entry = Entry {
            name: "web".into(),
            kind: Kind::Run,
            scenario_name: "burst".into(),
            scenario: serde_json::json!({"connections": 100}),
        };
        (dir, path, store, entry)
    }

    #[test]
    fn a_batch_is_judged_against_the_latest_clean_run_of_its_scenario() {
        let (dir, _, mut store, entry) = fresh_store("judge");
        let t = Thresholds::default();
        let add = |store: &mut Store, e: &Entry, r: Report| {
            let id = r.run_id.clone();
            store
                .insert_judged(
                    &e.record(&id, "2026-01-01T00:00:00Z", Ran::Run(&r)),
                    &t,
                    None,
                )
                .unwrap()
        };
        let v = add(&mut store, &entry, report("a", 1000, 0));
        assert_eq!(v.kind, VerdictKind::NoBaseline);
        let v = add(&mut store, &entry, report("b", 1100, 0));
        assert_eq!(
            (v.kind, v.baseline.as_deref()),
            (VerdictKind::Pass, Some("a"))
        );
        let v = add(&mut store, &entry, report("c", 50_000, 7));
        assert_eq!(v.kind, VerdictKind::Regression, "{v:?}");
        // A regression is never a baseline: the next run is compared with b.
        let v = add(&mut store, &entry, report("d", 1000, 0));
        assert_eq!(v.baseline.as_deref(), Some("b"));
        // Pinned: a is the baseline whatever ran since.
        store.pin("a").unwrap();
        let v = add(&mut store, &entry, report("e", 1000, 0));
        assert_eq!(v.baseline.as_deref(), Some("a"));
        // Another scenario is never compared, and says why.
        let other = Entry {
            scenario: serde_json::json!({"connections": 200}),
            ..entry.clone()
        };
        let v = add(&mut store, &other, report("f", 1000, 0));
        assert_eq!(v.kind, VerdictKind::NoBaseline);
        assert!(v.reasons[0].contains("connections 100 → 200"), "{v:?}");
        // A failed run is recorded with its reason, not judged.
        store
            .insert(&entry.record(
                "g",
                "2026-01-01T00:00:00Z",
                Ran::Nothing {
                    status: Status::Failed,
                    reason: "no agents".into(),
                },
            ))
            .unwrap();
        let rows = store.list(Some("web")).unwrap();
        assert_eq!(rows.len(), 7);
        assert_eq!(rows[6].status, Status::Failed);
        assert_eq!(rows[6].reason.as_deref(), Some("no agents"));
        assert_eq!(rows[2].verdict, "regression");
        assert!(
            rows[2]
                .report_json
                .as_deref()
                .unwrap()
                .contains("\"run_id\":\"c\"")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A run and its verdict are one write: when storing the verdict fails (a trigger
    /// refuses it here, as a kill between the two would stop it), the run is not left behind
    /// unjudged; once the verdict can be stored the run is there with it.
    #[test]
    fn a_run_is_never_written_without_its_verdict() {
        let (dir, path, mut store, entry) = fresh_store("atomic");
        let row = entry.record("a", "2026-01-01T00:00:00Z", Ran::Run(&report("a", 1000, 0)));
        let other = rusqlite::Connection::open(&path).unwrap();
        other
            .execute_batch(
                "CREATE TRIGGER refuse_verdict BEFORE UPDATE OF verdict ON runs \
                 BEGIN SELECT RAISE(ABORT, 'verdict refused'); END;",
            )
            .unwrap();
        let e = store
            .insert_judged(&row, &Thresholds::default(), None)
            .unwrap_err();
        assert!(e.to_string().contains("verdict refused"), "{e}");
        assert!(store.list(None).unwrap().is_empty(), "no unjudged row");
        other.execute_batch("DROP TRIGGER refuse_verdict").unwrap();
        let v = store
            .insert_judged(&row, &Thresholds::default(), None)
            .unwrap();
        assert_eq!(v.kind, VerdictKind::NoBaseline);
        let rows = store.list(None).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].verdict, "no-baseline");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
