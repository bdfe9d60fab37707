//! One row of the history ([`Record`]): built from a run's report, a sweep's report, or a
//! run that never produced one (failed, skipped); read back from SQLite. Also the scenario
//! hash that decides which runs may be compared ([`scenario_hash`]).

use rusqlite::{Connection, Row, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::report::{Latency, Outcomes, Report};
use crate::sweep::SweepReport;

/// What a row is the result of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One run.
    Run,
    /// A sweep over backlogs.
    Sweep,
}

impl Kind {
    /// As stored and printed.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Run => "run",
            Kind::Sweep => "sweep",
        }
    }

    fn parse(s: &str) -> Kind {
        if s == "sweep" { Kind::Sweep } else { Kind::Run }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every agent delivered; the target's stats came (when asked for).
    Complete,
    /// An agent was lost, cut short, or the target's stats are missing.
    Partial,
    /// The run could not happen (no agents, a rejection, the target control failed).
    Failed,
    /// Interrupted (SIGINT/SIGTERM).
    Aborted,
    /// A scheduled tick that fell due while another run was in progress.
    Skipped,
}

impl Status {
    /// As stored and printed.
    pub fn name(self) -> &'static str {
        match self {
            Status::Complete => "complete",
            Status::Partial => "partial",
            Status::Failed => "failed",
            Status::Aborted => "aborted",
            Status::Skipped => "skipped",
        }
    }

    fn parse(s: &str) -> Status {
        match s {
            "complete" => Status::Complete,
            "partial" => Status::Partial,
            "aborted" => Status::Aborted,
            "skipped" => Status::Skipped,
            _ => Status::Failed,
        }
    }
}

/// The figures a verdict compares and a trend plots.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Attempts by outcome class.
    pub outcomes: Outcomes,
    /// Connect latency, µs.
    pub connect_us: Latency,
    /// Time to first byte, µs (count 0: not measured).
    pub ttfb_us: Latency,
    /// The target's ListenOverflows (None: no target stats).
    pub listen_overflows: Option<u64>,
    /// The target's ListenDrops.
    pub listen_drops: Option<u64>,
    /// Syncookies the target sent.
    pub syncookies_sent: Option<u64>,
    /// Largest accept queue seen.
    pub accept_queue_max: Option<u64>,
    /// Accepted by the target.
    pub accepted: Option<u64>,
    /// The effective backlog.
    pub backlog_effective: Option<u64>,
    /// Start spread across agents, µs.
    pub start_spread_us: Option<u64>,
    /// A sweep's recommended backlog (the first accept rate's), if one was found.
    pub recommended_backlog: Option<i64>,
}

/// One row.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// The run's id (a skipped tick gets one too).
    pub run_id: String,
    /// The repeats of one scheduled tick share a batch id (a lone run: its own id).
    pub batch: String,
    /// The schedule entry, or the scenario's name for `run`/`sweep --db`.
    pub entry: String,
    /// Run or sweep.
    pub kind: Kind,
    /// The scenario's name (its file's stem, or the entry's for an inline one).
    pub scenario_name: String,
    /// SHA-256 of the canonical comparable scenario ([`scenario_hash`]).
    pub scenario_hash: String,
    /// That canonical form (JSON), to say how two scenarios differ.
    pub scenario_canonical: String,
    /// RFC 3339 UTC.
    pub started_at: String,
    /// RFC 3339 UTC.
    pub finished_at: String,
    /// How it ended.
    pub status: Status,
    /// Why it is not complete (None when it is).
    pub reason: Option<String>,
    /// The figures (all zero when it never ran).
    pub figures: Figures,
    /// `pass`, `regression`, `no-baseline` or `not-judged`.
    pub verdict: String,
    /// Why, one sentence each.
    pub reasons: Vec<String>,
    /// The run it was compared with.
    pub baseline_run_id: Option<String>,
    /// The whole report.json (sweep.json for a sweep); None when it never ran.
    #[serde(skip)]
    pub report_json: Option<String>,
}

/// The current time, RFC 3339 UTC, seconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The scenario keys that decide whether two runs measured the same thing. Left out: where
/// the coordinator listens, how long it waits, its lead, output, credentials, thresholds and
/// the control URL: they change how a run is driven or judged, not what it measures.
const COMPARABLE: &[&str] = &[
    "agents",
    "target",
    "backlog",
    "connections",
    "pattern",
    "timeout",
    "hold",
    "close",
    "expect_greeting",
    "probe_admission",
    "sweep",
];

/// The canonical comparable form of a scenario (as `report.json`'s `scenario` has it) and
/// its SHA-256, hex. Keys are sorted (serde_json's map is ordered), so the same settings
/// always hash the same.
pub fn scenario_hash(kind: Kind, scenario: &serde_json::Value) -> (String, String) {
    let mut canonical = serde_json::Map::new();
    canonical.insert("kind".into(), kind.name().into());
    for key in COMPARABLE {
        let v = scenario
            .get(*key)
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        // A sweep's p99 bound judges steps; it does not change what they measure.
        let v = match (key, v) {
            (&"sweep", serde_json::Value::Object(mut m)) if kind == Kind::Sweep => {
                m.remove("p99_max");
                serde_json::Value::Object(m)
            }
            (&"sweep", _) => serde_json::Value::Null,
            (_, v) => v,
        };
        canonical.insert((*key).into(), v);
    }
    let text = serde_json::Value::Object(canonical).to_string();
    let digest = Sha256::digest(format!("stampede-scenario-v1\n{text}").as_bytes());
    let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
    (hex, text)
}

/// What differs between two canonical scenarios, key by key (`connections 100 → 200`).
pub fn scenario_diff(old: &str, new: &str) -> Vec<String> {
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap_or_default();
    let (a, b) = (parse(old), parse(new));
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<&String> = a
        .as_object()
        .into_iter()
        .chain(b.as_object())
        .flat_map(|m| m.keys())
        .collect();
    for k in keys {
        let (x, y) = (&a[k.as_str()], &b[k.as_str()]);
        if x != y {
            out.push(format!("{k} {x} → {y}"));
        }
    }
    out
}

impl Figures {
    /// A run's figures.
    pub fn of_report(r: &Report) -> Figures {
        let t = r.target.as_ref();
        Figures {
            outcomes: r.outcomes,
            connect_us: r.connect_latency_us,
            ttfb_us: r.ttfb_us,
            listen_overflows: t.map(|t| t.counters.listen_overflows),
            listen_drops: t.map(|t| t.counters.listen_drops),
            syncookies_sent: t.map(|t| t.counters.syncookies_sent),
            accept_queue_max: t.map(|t| u64::from(t.accept_queue_max)),
            accepted: t.and_then(|t| t.accepted),
            backlog_effective: t.map(|t| u64::from(t.backlog_effective)),
            start_spread_us: r.start_spread_us,
            recommended_backlog: None,
        }
    }

    /// A sweep's figures: those of its step at the largest backlog (the one that should be
    /// cleanest), with the recommended backlog of its first accept rate.
    pub fn of_sweep(s: &SweepReport) -> Figures {
        let largest = s
            .steps
            .iter()
            .zip(&s.reports)
            .max_by_key(|(step, _)| step.backlog)
            .map(|(_, r)| Figures::of_report(r))
            .unwrap_or_default();
        Figures {
            recommended_backlog: s
                .recommendations
                .first()
                .and_then(|r| r.backlog)
                .map(i64::from),
            ..largest
        }
    }
}

/// The columns [`from_row`] reads, in order.
pub(super) const COLUMNS: &str = "run_id, batch, entry, kind, scenario_name, scenario_hash, \
    scenario_canonical, started_at, finished_at, status, reason, \
    established, syn_retransmitted, refused, reset, timeout, pending, error, ghost, \
    connect_p50_us, connect_p90_us, connect_p99_us, connect_p999_us, connect_max_us, connect_count, \
    ttfb_p50_us, ttfb_p90_us, ttfb_p99_us, ttfb_p999_us, ttfb_max_us, ttfb_count, \
    listen_overflows, listen_drops, syncookies_sent, accept_queue_max, accepted, backlog_effective, \
    start_spread_us, recommended_backlog, verdict, reasons, baseline_run_id, report_json";

/// Reads a row selected with [`COLUMNS`].
pub(super) fn from_row(row: &Row<'_>) -> rusqlite::Result<Record> {
    let u = |i: usize| -> rusqlite::Result<u64> {
        Ok(row.get::<_, Option<i64>>(i)?.unwrap_or(0).max(0) as u64)
    };
    let o = |i: usize| -> rusqlite::Result<Option<u64>> {
        Ok(row.get::<_, Option<i64>>(i)?.map(|v| v.max(0) as u64))
    };
    let latency = |i: usize| -> rusqlite::Result<Latency> {
        Ok(Latency {
            p50: u(i)?,
            p90: u(i + 1)?,
            p99: u(i + 2)?,
            p999: u(i + 3)?,
            max: u(i + 4)?,
            count: u(i + 5)?,
            min: 0,
        })
    };
    let reasons: String = row.get(40)?;
    Ok(Record {
        run_id: row.get(0)?,
        batch: row.get(1)?,
        entry: row.get(2)?,
        kind: Kind::parse(&row.get::<_, String>(3)?),
        scenario_name: row.get(4)?,
        scenario_hash: row.get(5)?,
        scenario_canonical: row.get(6)?,
        started_at: row.get(7)?,
        finished_at: row.get(8)?,
        status: Status::parse(&row.get::<_, String>(9)?),
        reason: row.get(10)?,
        figures: Figures {
            outcomes: Outcomes {
                established: u(11)?,
                syn_retransmitted: u(12)?,
                refused: u(13)?,
                reset: u(14)?,
                timeout: u(15)?,
                pending: u(16)?,
                error: u(17)?,
                ghost: u(18)?,
            },
            connect_us: latency(19)?,
            ttfb_us: latency(25)?,
            listen_overflows: o(31)?,
            listen_drops: o(32)?,
            syncookies_sent: o(33)?,
            accept_queue_max: o(34)?,
            accepted: o(35)?,
            backlog_effective: o(36)?,
            start_spread_us: o(37)?,
            recommended_backlog: row.get(38)?,
        },
        verdict: row.get(39)?,
        reasons: serde_json::from_str(&reasons).unwrap_or_default(),
        baseline_run_id: row.get(41)?,
        report_json: row.get(42)?,
    })
}

/// Writes `r` (inside the caller's transaction, open on `tx`).
pub(super) fn insert(tx: &Connection, r: &Record) -> rusqlite::Result<()> {
    let f = &r.figures;
    let o = &f.outcomes;
    let i = |v: u64| v.min(i64::MAX as u64) as i64;
    let oi = |v: Option<u64>| v.map(i);
    let (c, t) = (&f.connect_us, &f.ttfb_us);
    let reasons = serde_json::to_string(&r.reasons).expect("strings serialize");
    tx.execute(
        &format!(
            "INSERT INTO runs (attempts, {COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, \
             ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, \
             ?28, ?29, ?30, ?31, ?32, ?33, ?34, ?35, ?36, ?37, ?38, ?39, ?40, ?41, ?42, ?43, ?44)"
        ),
        params![
            i(o.total()),
            r.run_id,
            r.batch,
            r.entry,
            r.kind.name(),
            r.scenario_name,
            r.scenario_hash,
            r.scenario_canonical,
            r.started_at,
            r.finished_at,
            r.status.name(),
            r.reason,
            i(o.established),
            i(o.syn_retransmitted),
            i(o.refused),
            i(o.reset),
            i(o.timeout),
            i(o.pending),
            i(o.error),
            i(o.ghost),
            i(c.p50),
            i(c.p90),
            i(c.p99),
            i(c.p999),
            i(c.max),
            i(c.count),
            i(t.p50),
            i(t.p90),
            i(t.p99),
            i(t.p999),
            i(t.max),
            i(t.count),
            oi(f.listen_overflows),
            oi(f.listen_drops),
            oi(f.syncookies_sent),
            oi(f.accept_queue_max),
            oi(f.accepted),
            oi(f.backlog_effective),
            oi(f.start_spread_us),
            f.recommended_backlog,
            r.verdict,
            reasons,
            r.baseline_run_id,
            r.report_json,
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_ignores_how_a_run_is_driven_but_not_what_it_measures() {
        let a = serde_json::json!({"connections": 100, "target": "127.0.0.1:80", "listen": "127.0.0.1:7700", "lead": "500ms"});
        let b = serde_json::json!({"lead": "2s", "target": "127.0.0.1:80", "connections": 100, "listen": "0.0.0.0:7700"});
        let c = serde_json::json!({"connections": 200, "target": "127.0.0.1:80"});
        let (ha, ca) = scenario_hash(Kind::Run, &a);
        assert_eq!(ha, scenario_hash(Kind::Run, &b).0);
        assert_ne!(ha, scenario_hash(Kind::Sweep, &a).0);
        let (hc, cc) = scenario_hash(Kind::Run, &c);
        assert_ne!(ha, hc);
        assert_eq!(ha.len(), 64);
        assert_eq!(scenario_diff(&ca, &cc), ["connections 100 → 200"]);
    }
}
