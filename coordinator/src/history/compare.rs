//! Two runs side by side (`stampede history compare OLD NEW`, `history show`): every figure
//! with both values, the changed ones marked, then the verdict of NEW against OLD under the
//! default thresholds. Runs of different scenarios are shown but never judged.

use std::fmt::Write as _;

use stampede_proto::duration::human_us;

use super::record::{Figures, Record, scenario_diff};
use super::verdict::{self, Thresholds, Verdict, VerdictKind};

/// Each figure of a run: name and value as printed.
pub fn rows(f: &Figures) -> Vec<(&'static str, String)> {
    let o = &f.outcomes;
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let lat = |count: u64, v: u64| {
        if count == 0 {
            "-".to_owned()
        } else {
            human_us(v)
        }
    };
    vec![
        ("attempts", o.total().to_string()),
        ("established", o.established.to_string()),
        ("syn_retransmitted", o.syn_retransmitted.to_string()),
        ("refused", o.refused.to_string()),
        ("reset", o.reset.to_string()),
        ("timeout", o.timeout.to_string()),
        ("pending", o.pending.to_string()),
        ("error", o.error.to_string()),
        ("ghost", o.ghost.to_string()),
        ("connect p50", lat(f.connect_us.count, f.connect_us.p50)),
        ("connect p99", lat(f.connect_us.count, f.connect_us.p99)),
        ("connect max", lat(f.connect_us.count, f.connect_us.max)),
        ("first-byte p50", lat(f.ttfb_us.count, f.ttfb_us.p50)),
        ("first-byte p99", lat(f.ttfb_us.count, f.ttfb_us.p99)),
        ("listen_overflows", opt(f.listen_overflows)),
        ("listen_drops", opt(f.listen_drops)),
        ("syncookies_sent", opt(f.syncookies_sent)),
        ("accept_queue_max", opt(f.accept_queue_max)),
        ("accepted", opt(f.accepted)),
        ("backlog_effective", opt(f.backlog_effective)),
        (
            "start spread",
            f.start_spread_us.map_or_else(|| "-".to_owned(), human_us),
        ),
        (
            "recommended backlog",
            f.recommended_backlog
                .map_or_else(|| "-".to_owned(), |b| b.to_string()),
        ),
    ]
}

/// The verdict of `new` against `old`, or why they cannot be compared.
pub fn judge(old: &Record, new: &Record) -> Result<Verdict, String> {
    if old.scenario_hash != new.scenario_hash {
        return Err(format!(
            "not compared: {} and {} ran different scenarios ({})",
            old.run_id,
            new.run_id,
            scenario_diff(&old.scenario_canonical, &new.scenario_canonical).join(", ")
        ));
    }
    Ok(verdict::judge(
        &old.figures,
        &new.figures,
        &Thresholds::default(),
        1,
        old,
    ))
}

/// The side-by-side text and whether NEW regressed (None: not compared).
pub fn render(old: &Record, new: &Record) -> (String, Option<bool>) {
    let mut s = String::new();
    let _ = writeln!(s, "{:<22} {:>24} {:>24}", "", "OLD", "NEW");
    for (name, a, b) in [
        ("run", old.run_id.as_str(), new.run_id.as_str()),
        ("entry", &old.entry, &new.entry),
        ("started_at", &old.started_at, &new.started_at),
        ("status", old.status.name(), new.status.name()),
    ] {
        let _ = writeln!(s, "{name:<22} {a:>24} {b:>24}");
    }
    for ((name, a), (_, b)) in rows(&old.figures).into_iter().zip(rows(&new.figures)) {
        let mark = if a == b { "" } else { "  changed" };
        let _ = writeln!(s, "{name:<22} {a:>24} {b:>24}{mark}");
    }
    let regressed = match judge(old, new) {
        Ok(v) => {
            let _ = writeln!(s, "\nverdict: {}", v.kind.name());
            for r in &v.reasons {
                let _ = writeln!(s, "  {r}");
            }
            Some(v.kind == VerdictKind::Regression)
        }
        Err(why) => {
            let _ = writeln!(s, "\nverdict: {why}");
            None
        }
    };
    (s, regressed)
}
