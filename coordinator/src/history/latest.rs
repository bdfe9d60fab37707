//! What `/metrics` shows of each entry, kept in the history so a restarted coordinator shows
//! it again (`crate::metrics` reads it at start): each entry's last run, when it last ran
//! clean, and the merged latency histograms of its last run that measured them (table
//! `last_histograms`, written in the same transaction as that run's row).

use hdrhistogram::Histogram as Hdr;
use rusqlite::{Connection, params};
use stampede_proto::histogram;

use super::{HistoryError, Record, Store, record, sqlite_error};

/// An entry's last measured latency histograms and the run they are from.
#[derive(Debug, Clone)]
pub struct LastHistograms {
    /// The entry.
    pub entry: String,
    /// The run they were measured in.
    pub run_id: String,
    /// Connect latency, µs.
    pub connect: Hdr<u64>,
    /// First-byte latency, µs.
    pub ttfb: Hdr<u64>,
}

/// Per entry, what `/metrics` shows.
#[derive(Debug, Default)]
pub struct Latest {
    /// Each entry's last row that ran something (not a skipped tick).
    pub last: Vec<Record>,
    /// Each entry's last clean run (complete, not a regression): (entry, its `finished_at`).
    pub clean: Vec<(String, String)>,
    /// Each entry's last measured histograms.
    pub histograms: Vec<LastHistograms>,
}

/// Keeps `connect` and `ttfb` as `entry`'s last histograms, measured in `run_id` (inside the
/// caller's transaction). A histogram the codec cannot write is a bug, not a history error.
pub(super) fn save(
    conn: &Connection,
    entry: &str,
    run_id: &str,
    (connect, ttfb): (&Hdr<u64>, &Hdr<u64>),
) -> rusqlite::Result<()> {
    let bytes = |h: &Hdr<u64>| {
        histogram::encode(h).expect("the latency layout always encodes (it is made by the codec)")
    };
    conn.execute(
        "INSERT INTO last_histograms (entry, run_id, connect, ttfb) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (entry) DO UPDATE SET run_id = ?2, connect = ?3, ttfb = ?4",
        params![entry, run_id, bytes(connect), bytes(ttfb)],
    )?;
    Ok(())
}

impl Store {
    /// What `/metrics` shows of each entry, as the history has it.
    pub fn latest(&self) -> Result<Latest, HistoryError> {
        let err = |e| sqlite_error(&self.path, e);
        let last = self.query(
            &format!(
                "SELECT {} FROM runs WHERE seq IN \
                 (SELECT max(seq) FROM runs WHERE status != 'skipped' GROUP BY entry) ORDER BY seq",
                record::COLUMNS
            ),
            [],
        )?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT entry, max(finished_at) FROM runs WHERE status = 'complete' \
                 AND verdict IN ('pass', 'no-baseline') GROUP BY entry",
            )
            .map_err(err)?;
        let clean = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        let mut stmt = self
            .conn
            .prepare("SELECT entry, run_id, connect, ttfb FROM last_histograms ORDER BY entry")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        let mut histograms = Vec::with_capacity(rows.len());
        for (entry, run_id, connect, ttfb) in rows {
            // A blob that does not decode is left out, and said: the rest still shows.
            match (histogram::decode(&connect), histogram::decode(&ttfb)) {
                (Ok(connect), Ok(ttfb)) => histograms.push(LastHistograms {
                    entry,
                    run_id,
                    connect,
                    ttfb,
                }),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(%entry, run = %run_id, cause = %e, "stored histograms unreadable: left out");
                }
            }
        }
        Ok(Latest {
            last,
            clean,
            histograms,
        })
    }
}
