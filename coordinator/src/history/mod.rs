//! The run history: an embedded SQLite file (`stampede.db` in the working directory unless
//! `--db FILE` says otherwise) where `stampede run --db`, `stampede sweep --db` and every
//! `stampede schedule` run leave one row each, complete or not (docs/design.md "History").
//!
//! A row holds what later questions need without re-reading files: the run's status and why
//! (complete, partial, failed, aborted, skipped), its outcomes, connect and first-byte
//! percentiles, the target's counters, the start spread, a sweep's recommended backlog, the
//! scenario's comparability hash, the regression verdict with its reasons, and the whole
//! report.json. The schema is versioned with `PRAGMA user_version` and migrated forward on
//! open (`schema`); the file runs in WAL mode, each run is written with its verdict in one
//! transaction, and a file locked by another process is waited for a bounded time, then
//! refused with a clear error.
//!
//! Children: `schema` (migrations), `record` (a row and its columns; the scenario hash),
//! `latest` (what `/metrics` shows of each entry, for a restarted coordinator),
//! `judge` (a row built from what a run produced; a batch judged), `verdict` (the regression rules), `compare` (two runs side by side), `command` (the
//! `stampede history` subcommands), `html` (capacity.html, charts through `crate::chart`).

pub mod command;
pub mod compare;
pub mod html;
mod judge;
pub mod latest;
pub mod record;
mod schema;
pub mod verdict;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::Histogram as Hdr;
use rusqlite::{Connection, OptionalExtension, params};

pub use self::judge::{Entry, Ran, fresh_id};
pub use self::latest::{LastHistograms, Latest};
pub use self::record::{Figures, Kind, Record, Status, scenario_hash};
pub use self::verdict::{Thresholds, Verdict, VerdictKind};

/// The history file used when `--db` is not given: in the working directory.
pub const DEFAULT_DB: &str = "stampede.db";

/// How long a write waits for another process holding the file's lock before it gives up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Test hook: when set to a path, the Nth write (`STAMPEDE_TEST_HOOK_HISTORY_AT`, default 1)
/// stops inside its transaction, writes one line to that path (a FIFO the test reads) and
/// sleeps, so a test can kill the process in the middle of a write on an event.
pub const TEST_HOOK_ENV: &str = "STAMPEDE_TEST_HOOK_HISTORY_PIPE";

/// Why the history could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Another process held the file's lock for longer than [`BUSY_TIMEOUT`].
    #[error(
        "the history {path} is locked by another process (waited up to {}s): try again when it is done",
        BUSY_TIMEOUT.as_secs()
    )]
    Locked {
        /// The file.
        path: String,
    },
    /// The file was written by a newer stampede.
    #[error(
        "the history {path} has schema version {found}, newer than this stampede knows ({known}): a newer stampede migrated it; upgrade this stampede (every one that opens the file must be as new), or give --db a copy of the file kept from before the upgrade"
    )]
    TooNew {
        /// The file.
        path: String,
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
    /// The file does not exist (reading commands never create one).
    #[error("no history at {0}: give --db FILE, or record runs first (stampede run --db FILE)")]
    Missing(String),
    /// No run with this id.
    #[error("no run {0} in the history")]
    NoRun(String),
    /// Only a complete run can be a baseline.
    #[error("run {run} is {status}, not complete: only a complete run can be a baseline")]
    NotComplete {
        /// The run.
        run: String,
        /// Its status.
        status: String,
    },
    /// Any other SQLite failure.
    #[error("the history {path}: {source}")]
    Sqlite {
        /// The file.
        path: String,
        /// Why.
        source: rusqlite::Error,
    },
}

/// An open history file.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    writes: u64,
}

impl Store {
    /// Opens (creating it if needed) and migrates the history at `path`.
    pub fn open(path: &Path) -> Result<Store, HistoryError> {
        let conn = Connection::open(path).map_err(|e| sqlite_error(path, e))?;
        let mut store = Store {
            conn,
            path: path.to_owned(),
            writes: 0,
        };
        store.setup()?;
        Ok(store)
    }

    /// Opens an existing history (for the reading commands: a wrong path is an error, not
    /// a new empty file).
    pub fn open_existing(path: &Path) -> Result<Store, HistoryError> {
        if !path.is_file() {
            return Err(HistoryError::Missing(path.display().to_string()));
        }
        Store::open(path)
    }

    /// How long a write waits for another process's lock (default [`BUSY_TIMEOUT`]).
    pub fn set_busy_timeout(&self, wait: Duration) -> Result<(), HistoryError> {
        self.conn
            .busy_timeout(wait)
            .map_err(|e| sqlite_error(&self.path, e))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn setup(&mut self) -> Result<(), HistoryError> {
        let path = self.path.clone();
        let err = |e| sqlite_error(&path, e);
        self.conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        // WAL: readers never block the writer; a kill mid-write leaves the last committed
        // state (the half-written transaction is discarded on the next open).
        self.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        schema::migrate(&mut self.conn, &self.path)
    }

    /// Writes one row in one transaction, unjudged (a skipped tick); returns its row number.
    pub fn insert(&mut self, record: &Record) -> Result<i64, HistoryError> {
        self.write(|s| {
            record::insert(&s.conn, record).map_err(|e| sqlite_error(&s.path, e))?;
            Ok(s.conn.last_insert_rowid())
        })
    }

    /// Writes one run and the verdict of its batch (judged with it under `t`, onto every row
    /// of the batch) in one transaction: a kill or a failure leaves the run either absent or
    /// judged, never written and not judged. A batch of repeats is judged again at each of
    /// its runs: its rows hold the verdict of the runs made so far. `histograms` (connect,
    /// first byte), when the run measured them, become its entry's last ones ([`latest`]).
    pub fn insert_judged(
        &mut self,
        record: &Record,
        t: &Thresholds,
        histograms: Option<(&Hdr<u64>, &Hdr<u64>)>,
    ) -> Result<Verdict, HistoryError> {
        self.write(|s| {
            let err = |e| sqlite_error(&s.path, e);
            record::insert(&s.conn, record).map_err(err)?;
            if let Some(h) = histograms {
                latest::save(&s.conn, &record.entry, &record.run_id, h).map_err(err)?;
            }
            s.judge_in_place(&record.batch, t)
        })
    }

    /// Runs `f` in one transaction that takes the write lock up front (waiting for another
    /// process's at most the busy timeout); `f`'s error rolls it all back.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&Store) -> Result<T, HistoryError>,
    ) -> Result<T, HistoryError> {
        self.writes += 1;
        let write = self.writes;
        let tx = rusqlite::Transaction::new_unchecked(
            &self.conn,
            rusqlite::TransactionBehavior::Immediate,
        )
        .map_err(|e| sqlite_error(&self.path, e))?;
        let out = f(self)?;
        test_hook(write);
        tx.commit().map_err(|e| sqlite_error(&self.path, e))?;
        Ok(out)
    }

    /// Runs, oldest first, of one entry (or all).
    pub fn list(&self, entry: Option<&str>) -> Result<Vec<Record>, HistoryError> {
        let sql = format!(
            "SELECT {} FROM runs WHERE (?1 IS NULL OR entry = ?1) ORDER BY seq",
            record::COLUMNS
        );
        self.query(&sql, params![entry])
    }

    /// One run by id (a unique prefix of at least 4 characters is enough).
    pub fn get(&self, run_id: &str) -> Result<Record, HistoryError> {
        let sql = format!(
            "SELECT {} FROM runs WHERE run_id = ?1 OR (length(?1) >= 4 AND run_id LIKE ?1 || '%') ORDER BY run_id = ?1 DESC, seq LIMIT 2",
            record::COLUMNS
        );
        let mut found = self.query(&sql, params![run_id])?;
        match found.len() {
            0 => Err(HistoryError::NoRun(run_id.to_owned())),
            2 if found[0].run_id != run_id => Err(HistoryError::NoRun(format!(
                "{run_id} (ambiguous: {} and {} match)",
                found[0].run_id, found[1].run_id
            ))),
            _ => Ok(found.swap_remove(0)),
        }
    }

    /// The runs of a batch (a `repeat = N` entry's N runs), in order.
    pub fn batch(&self, batch: &str) -> Result<Vec<Record>, HistoryError> {
        let sql = format!(
            "SELECT {} FROM runs WHERE batch = ?1 ORDER BY seq",
            record::COLUMNS
        );
        self.query(&sql, params![batch])
    }

    /// The baseline for runs of `hash`, other than `batch`: the pinned run (then `true`),
    /// else the latest clean one (complete, and not itself a regression).
    pub fn baseline(
        &self,
        hash: &str,
        batch: &str,
    ) -> Result<Option<(Record, bool)>, HistoryError> {
        if let Some(id) = self.pinned(hash)? {
            return self.get(&id).map(|r| Some((r, true)));
        }
        let sql = format!(
            "SELECT {} FROM runs WHERE scenario_hash = ?1 AND batch != ?2 AND status = 'complete' \
             AND verdict IN ('pass', 'no-baseline') ORDER BY seq DESC LIMIT 1",
            record::COLUMNS
        );
        Ok(self
            .query(&sql, params![hash, batch])?
            .pop()
            .map(|r| (r, false)))
    }

    /// The latest run of `entry` before `batch` that ran some scenario (not a skipped tick).
    pub fn previous(&self, entry: &str, batch: &str) -> Result<Option<Record>, HistoryError> {
        let sql = format!(
            "SELECT {} FROM runs WHERE entry = ?1 AND batch != ?2 AND status != 'skipped' \
             ORDER BY seq DESC LIMIT 1",
            record::COLUMNS
        );
        Ok(self.query(&sql, params![entry, batch])?.pop())
    }

    /// When the latest row of `entry` started (RFC 3339), if it has any.
    pub fn last_started(&self, entry: &str) -> Result<Option<String>, HistoryError> {
        self.conn
            .query_row(
                "SELECT max(started_at) FROM runs WHERE entry = ?1",
                params![entry],
                |r| r.get(0),
            )
            .map_err(|e| sqlite_error(&self.path, e))
    }

    /// The pinned run of a scenario hash, if any.
    pub fn pinned(&self, hash: &str) -> Result<Option<String>, HistoryError> {
        self.conn
            .query_row(
                "SELECT run_id FROM pins WHERE scenario_hash = ?1",
                params![hash],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| sqlite_error(&self.path, e))
    }

    /// Makes `run_id` the baseline of its scenario hash (replacing an earlier pin).
    pub fn pin(&mut self, run_id: &str) -> Result<Record, HistoryError> {
        let run = self.get(run_id)?;
        // A failed, partial or skipped run has no figures to judge against.
        if run.status != record::Status::Complete {
            return Err(HistoryError::NotComplete {
                run: run.run_id,
                status: run.status.name().to_owned(),
            });
        }
        self.conn
            .execute(
                "INSERT INTO pins (scenario_hash, run_id, pinned_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (scenario_hash) DO UPDATE SET run_id = ?2, pinned_at = ?3",
                params![run.scenario_hash, run.run_id, record::now_rfc3339()],
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        Ok(run)
    }

    fn query(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<Record>, HistoryError> {
        let err = |e| sqlite_error(&self.path, e);
        let mut stmt = self.conn.prepare(sql).map_err(err)?;
        let rows = stmt.query_map(params, record::from_row).map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }
}

/// A SQLite error, with a locked file told apart.
fn sqlite_error(path: &Path, e: rusqlite::Error) -> HistoryError {
    let path = path.display().to_string();
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            HistoryError::Locked { path }
        }
        _ => HistoryError::Sqlite { path, source: e },
    }
}

/// See [`TEST_HOOK_ENV`]: used only by the crash test; without the variable it does nothing.
fn test_hook(write: u64) {
    let Some(pipe) = std::env::var_os(TEST_HOOK_ENV) else {
        return;
    };
    let at = std::env::var("STAMPEDE_TEST_HOOK_HISTORY_AT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    if write != at {
        return;
    }
    use std::io::Write as _;
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&pipe) {
        let _ = writeln!(f, "in transaction");
    }
    // Bounded: the test kills the process long before this ends.
    std::thread::sleep(Duration::from_secs(120));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::record::Kind;

    /// Two processes on one file: a writer that holds the lock makes the other wait its
    /// bound, then fail with a clear error; nothing is corrupted and the write succeeds once
    /// the lock is gone.
    #[test]
    fn a_locked_history_waits_then_says_so() {
        let dir = std::env::temp_dir().join(format!("stampede-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.db");
        let _ = std::fs::remove_file(&path);
        let mut store = Store::open(&path).unwrap();
        store.set_busy_timeout(Duration::from_millis(200)).unwrap();
        // Another connection (as another process would) holds the write lock.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let entry = Entry {
            name: "e".into(),
            kind: Kind::Run,
            scenario_name: "s".into(),
            scenario: serde_json::json!({}),
        };
        let row = entry.record(
            "b",
            "2026-11-27T03:00:00Z",
            Ran::Nothing {
                status: Status::Failed,
                reason: "x".into(),
            },
        );
        let started = std::time::Instant::now();
        let e = store.insert(&row).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(150), "it waited");
        assert!(matches!(e, HistoryError::Locked { .. }), "{e:?}");
        assert!(
            e.to_string().contains("is locked by another process"),
            "{e}"
        );
        other.execute_batch("ROLLBACK").unwrap();
        store.insert(&row).unwrap();
        assert_eq!(store.list(None).unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
