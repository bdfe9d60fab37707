//! The history and metrics of a lone `stampede run --db` / `stampede sweep --db` (and
//! `--metrics`): the history file opened before anything runs, the run recorded whatever
//! happened (a failed or aborted run with its reason), judged against its baseline under
//! the default thresholds, and shown on `/metrics`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::ScheduleError;
use crate::history::{self, Kind, Ran, Status, Store};
use crate::metrics::{self, Metrics};
use crate::run::RunError;
use crate::scenario::Scenario;

/// `--db` and `--metrics` of `run` and `sweep`.
#[derive(Debug, Args)]
pub struct Recording {
    /// Record the run in this history file (SQLite, created if missing) and judge it against
    /// its baseline (see `stampede history`).
    #[arg(long, env = "STAMPEDE_DB", value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// Serve Prometheus metrics on ADDR (GET /metrics) while running.
    #[arg(long, env = "STAMPEDE_METRICS", value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
}

/// What `--db` and `--metrics` keep of one run.
#[derive(Debug)]
pub struct Recorder {
    store: Option<Store>,
    metrics: Option<Arc<Metrics>>,
    entry: history::Entry,
    started: String,
}

impl Recorder {
    /// Opens the history (before anything runs: a bad file is found now) and serves the
    /// metrics, as the flags ask. The entry is the scenario file's stem (or `run`/`sweep`).
    pub async fn start(
        flags: &Recording,
        scenario_file: Option<&Path>,
        settings: &Scenario,
        kind: Kind,
        coordinator: &crate::Coordinator,
        shutdown: &CancellationToken,
    ) -> Result<Recorder, ScheduleError> {
        let store = flags
            .db
            .as_deref()
            .map(Store::open)
            .transpose()
            .map_err(anyhow::Error::from)?;
        let metrics = match flags.metrics {
            Some(addr) => {
                let m = Arc::new(Metrics::new());
                m.watch(coordinator.registry.clone());
                if let Some(store) = &store {
                    metrics::restore_from(&m, store);
                }
                let token = settings.serve_config()?.token;
                metrics::serve(addr, m.clone(), token, shutdown.clone())
                    .await
                    .map_err(anyhow::Error::from)?;
                Some(m)
            }
            None => None,
        };
        let name = scenario_file.and_then(Path::file_stem).map_or_else(
            || kind.name().to_owned(),
            |s| s.to_string_lossy().into_owned(),
        );
        Ok(Recorder {
            store,
            metrics,
            entry: history::Entry {
                name: name.clone(),
                kind,
                scenario_name: name,
                scenario: serde_json::to_value(settings).unwrap_or_default(),
            },
            started: history::record::now_rfc3339(),
        })
    }

    /// A run that produced no report, recorded with its reason.
    pub fn failed(self, e: &RunError) {
        let status = match e {
            RunError::Aborted => Status::Aborted,
            _ => Status::Failed,
        };
        let reason = e.to_string();
        self.finish(Ran::Nothing { status, reason }, None);
    }

    /// Records and judges the run. A failure to record is logged, not fatal: the report is
    /// still written and printed.
    pub fn finish(self, ran: Ran<'_>, merged: Option<&stampede_proto::tally::Tally>) {
        let Recorder {
            store,
            metrics,
            entry,
            started,
        } = self;
        let mut row = entry.record(&started, &started, ran);
        row.batch = row.run_id.clone();
        if let Some(mut store) = store {
            let h = merged.map(|t| (&t.connect_latency, &t.ttfb));
            let judged = store.insert_judged(&row, &history::Thresholds::default(), h);
            match judged {
                Ok(v) => {
                    tracing::info!(
                        db = %store.path().display(),
                        run = %row.run_id,
                        verdict = v.kind.name(),
                        reasons = %v.reasons.join("; "),
                        "recorded"
                    );
                    row.verdict = v.kind.name().to_owned();
                }
                Err(e) => tracing::error!(cause = %e, "recording the run in the history failed"),
            }
        }
        if let Some(m) = metrics {
            m.record(&row, merged.map(|t| (&t.connect_latency, &t.ttfb)));
        }
    }
}
