//! The history's schema and its migrations. `PRAGMA user_version` is the number of
//! migrations applied; opening a file applies the missing ones in order, each in its own
//! transaction with the version bump, so a file is always at one exact version. A file newer
//! than this binary is refused, never written.

use std::path::Path;

use rusqlite::Connection;

use super::{HistoryError, sqlite_error};

/// The migrations, in order: migration `i` takes a file from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: one row per run (or skipped tick).
    "CREATE TABLE runs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL UNIQUE,
        batch TEXT NOT NULL,
        entry TEXT NOT NULL,
        kind TEXT NOT NULL,
        scenario_name TEXT NOT NULL,
        scenario_hash TEXT NOT NULL,
        scenario_canonical TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        established INTEGER NOT NULL DEFAULT 0,
        syn_retransmitted INTEGER NOT NULL DEFAULT 0,
        refused INTEGER NOT NULL DEFAULT 0,
        reset INTEGER NOT NULL DEFAULT 0,
        timeout INTEGER NOT NULL DEFAULT 0,
        pending INTEGER NOT NULL DEFAULT 0,
        error INTEGER NOT NULL DEFAULT 0,
        ghost INTEGER NOT NULL DEFAULT 0,
        connect_p50_us INTEGER, connect_p90_us INTEGER, connect_p99_us INTEGER,
        connect_p999_us INTEGER, connect_max_us INTEGER, connect_count INTEGER,
        ttfb_p50_us INTEGER, ttfb_p90_us INTEGER, ttfb_p99_us INTEGER,
        ttfb_p999_us INTEGER, ttfb_max_us INTEGER, ttfb_count INTEGER,
        listen_overflows INTEGER, listen_drops INTEGER, syncookies_sent INTEGER,
        accept_queue_max INTEGER, accepted INTEGER, backlog_effective INTEGER,
        start_spread_us INTEGER,
        recommended_backlog INTEGER,
        verdict TEXT NOT NULL DEFAULT 'not-judged',
        reasons TEXT NOT NULL DEFAULT '[]',
        baseline_run_id TEXT,
        report_json TEXT
    );
    CREATE INDEX runs_entry ON runs (entry, seq);
    CREATE INDEX runs_hash ON runs (scenario_hash, seq);
    CREATE INDEX runs_batch ON runs (batch);",
    // 2: `stampede history pin RUN`: one pinned baseline per scenario hash.
    "CREATE TABLE pins (
        scenario_hash TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        pinned_at TEXT NOT NULL
    );",
    // 3: the merged latency histograms of each entry's last run that measured them (for
    // /metrics after a restart), written with that run.
    "CREATE TABLE last_histograms (
        entry TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        connect BLOB NOT NULL,
        ttfb BLOB NOT NULL
    );",
];

/// The version this binary writes.
pub(super) const VERSION: i64 = MIGRATIONS.len() as i64;

/// Applies the missing migrations.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), HistoryError> {
    let err = |e| sqlite_error(path, e);
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if found > VERSION {
        return Err(HistoryError::TooNew {
            path: path.display().to_string(),
            found,
            known: VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        // Immediate: two processes opening a new file at once migrate it once; the second
        // waits, then sees the version already bumped.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let now: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        if now > i as i64 {
            continue;
        }
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_is_migrated_to_the_latest_version_once() {
        let dir = std::env::temp_dir().join(format!("stampede-schema-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.db");
        let _ = std::fs::remove_file(&path);
        // Version 1 only, as an older stampede left it, with a row.
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
        }
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn, &path).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, VERSION);
        let pins: i64 = conn
            .query_row("SELECT count(*) FROM pins", [], |r| r.get(0))
            .unwrap();
        assert_eq!(pins, 0, "migration 2 made the pins table");
        let hists: i64 = conn
            .query_row("SELECT count(*) FROM last_histograms", [], |r| r.get(0))
            .unwrap();
        assert_eq!(hists, 0, "migration 3 made the last_histograms table");
        // Again: nothing to do, nothing fails.
        migrate(&mut conn, &path).unwrap();
        // A newer file is refused, never written.
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        let e = migrate(&mut conn, &path).unwrap_err().to_string();
        assert!(e.contains("newer than this stampede knows"), "{e}");
        // What to do, in the same line: upgrade every binary that opens it, or use a copy.
        for part in [
            "upgrade this stampede",
            "every one that opens the file",
            "a copy",
        ] {
            assert!(e.contains(part), "{part}: {e}");
        }
        assert!(!e.contains('\n'), "one line: {e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
