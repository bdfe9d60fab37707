//! `stampede history list|show|compare|pin|report`: the history read back. Each action
//! returns its text and exit code (0; 2 when `compare` finds a regression; 1 when it cannot
//! compare), so the CLI layer only prints.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use stampede_proto::duration::human_us;

use super::{DEFAULT_DB, HistoryError, Record, Store, compare};

/// `stampede history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The history file (SQLite).
    #[arg(long, global = true, env = "STAMPEDE_DB", value_name = "FILE", default_value = DEFAULT_DB)]
    pub db: PathBuf,
    /// Only this schedule entry's runs (list; report needs it).
    #[arg(long, global = true, value_name = "NAME")]
    pub entry: Option<String>,
    /// JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub action: HistoryAction,
}

/// The history's actions.
#[derive(Debug, Subcommand)]
pub enum HistoryAction {
    /// Every run, oldest first (newest last).
    List,
    /// One run: its figures, status, verdict and reasons.
    Show {
        /// Run id (or a unique prefix of 4 characters or more).
        run: String,
    },
    /// Two runs side by side with each changed figure and the verdict of NEW against OLD
    /// (exit 2: a regression).
    Compare {
        /// The older run.
        old: String,
        /// The newer run.
        new: String,
    },
    /// Make RUN the baseline of its scenario (instead of the latest clean run).
    Pin {
        /// Run id.
        run: String,
    },
    /// Write capacity.html: the entry's trends over time, regressions marked.
    Report {
        /// Directory for capacity.html (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// Why a history command failed: a usage error (exit 64) or the store's (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Bad usage: `invalid NAME "VALUE": expected EXPECTED`.
    #[error("invalid {name} \"{value}\": expected {expected}")]
    Usage {
        /// The flag.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it takes.
        expected: &'static str,
    },
    /// The store.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// Writing the report.
    #[error("writing {path}: {source}")]
    Write {
        /// Where.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs one history action: its stdout text and exit code.
pub fn execute(args: &HistoryArgs) -> Result<(String, u8), CommandError> {
    let store = Store::open_existing(&args.db)?;
    match &args.action {
        HistoryAction::List => list(&store, args),
        HistoryAction::Show { run } => show(&store, run, args.json),
        HistoryAction::Compare { old, new } => {
            let (old, new) = (store.get(old)?, store.get(new)?);
            let (text, regressed) = compare::render(&old, &new);
            let code = match regressed {
                Some(true) => 2,
                Some(false) => 0,
                None => 1,
            };
            if args.json {
                let verdict = compare::judge(&old, &new);
                let v = serde_json::json!({
                    "old": old, "new": new,
                    "verdict": verdict.as_ref().ok(),
                    "not_compared": verdict.as_ref().err(),
                });
                return Ok((format!("{v:#}\n"), code));
            }
            Ok((text, code))
        }
        HistoryAction::Pin { run } => {
            let mut store = store;
            let r = store.pin(run)?;
            Ok((
                format!(
                    "pinned {} as the baseline of its scenario ({}, hash {})\n",
                    r.run_id,
                    r.scenario_name,
                    &r.scenario_hash[..12]
                ),
                0,
            ))
        }
        HistoryAction::Report { out } => {
            let Some(entry) = &args.entry else {
                return Err(CommandError::Usage {
                    name: "--entry",
                    value: String::new(),
                    expected: "the entry to chart: history report --entry NAME --out DIR",
                });
            };
            let runs = store.list(Some(entry))?;
            if runs.is_empty() {
                return Err(CommandError::Usage {
                    name: "--entry",
                    value: entry.clone(),
                    expected: "an entry with runs in the history (see stampede history list)",
                });
            }
            let page = super::html::render(entry, &runs);
            let write = || -> std::io::Result<PathBuf> {
                let dir = stampede_proto::output::OutDir::create(out)?;
                dir.file("capacity.html", page)?;
                Ok(out.join("capacity.html"))
            };
            let path = write().map_err(|source| CommandError::Write {
                path: out.display().to_string(),
                source,
            })?;
            Ok((
                format!("wrote {} ({} runs)\n", path.display(), runs.len()),
                0,
            ))
        }
    }
}

fn list(store: &Store, args: &HistoryArgs) -> Result<(String, u8), CommandError> {
    let runs = store.list(args.entry.as_deref())?;
    if args.json {
        return Ok((format!("{:#}\n", serde_json::json!(runs)), 0));
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<18} {:<16} {:<20} {:<9} {:<11} {:>10} {:>7} {:>9}",
        "run_id", "entry", "started_at", "status", "verdict", "conn p99", "ghosts", "overflows"
    );
    for r in &runs {
        let f = &r.figures;
        let _ = writeln!(
            s,
            "{:<18} {:<16} {:<20} {:<9} {:<11} {:>10} {:>7} {:>9}",
            r.run_id,
            r.entry,
            r.started_at,
            r.status.name(),
            r.verdict,
            if f.connect_us.count > 0 {
                human_us(f.connect_us.p99)
            } else {
                "-".into()
            },
            f.outcomes.ghost,
            f.listen_overflows
                .map_or_else(|| "-".into(), |v| v.to_string()),
        );
    }
    Ok((s, 0))
}

fn show(store: &Store, run: &str, json: bool) -> Result<(String, u8), CommandError> {
    let r: Record = store.get(run)?;
    if json {
        let report: serde_json::Value = r
            .report_json
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        let mut v = serde_json::json!(r);
        v["report"] = report;
        return Ok((format!("{v:#}\n"), 0));
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "run {} ({} of entry {})",
        r.run_id,
        r.kind.name(),
        r.entry
    );
    let _ = writeln!(
        s,
        "scenario {} (hash {})",
        r.scenario_name,
        &r.scenario_hash[..12]
    );
    let _ = writeln!(s, "started {}, finished {}", r.started_at, r.finished_at);
    let _ = writeln!(
        s,
        "status {}{}",
        r.status.name(),
        r.reason
            .as_deref()
            .map(|w| format!(": {w}"))
            .unwrap_or_default()
    );
    for (name, value) in compare::rows(&r.figures) {
        let _ = writeln!(s, "  {name:<22} {value}");
    }
    let _ = writeln!(
        s,
        "verdict {}{}",
        r.verdict,
        r.baseline_run_id
            .as_deref()
            .map(|b| format!(" (baseline {b})"))
            .unwrap_or_default()
    );
    for reason in &r.reasons {
        let _ = writeln!(s, "  {reason}");
    }
    Ok((s, 0))
}
