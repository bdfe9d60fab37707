//! `report.html`: one self-contained page (no scripts, no external files) that tells a run's
//! story top-down: the verdict in plain words, what was run against which target policy, the
//! outcomes (stacked over time, by class, with the kernel's SYN-retransmit schedule), latency
//! percentiles for connect and first byte, the accept queue against its backlog, per-agent
//! rows, the kernel settings, the target's counters under readable names, and the thresholds.
//!
//! The markup comes from maud templates; the charts from [`crate::chart`] ([`charts`] builds
//! them). [`page`] holds the frame `sweep.html` shares, so the arrow is sweep → report.

mod charts;
pub(crate) mod page;
mod sections;

use maud::html;
use stampede_proto::tally::Tally;

use self::page::{alert, verdict};
use super::Report;
use crate::chart;

/// The page for a run: `merged` is every agent's tally merged, the histograms behind the
/// report (connect, first byte, completion times by class).
pub fn render(r: &Report, merged: &Tally) -> String {
    let status = if r.aborted {
        "aborted"
    } else if r.partial {
        "partial"
    } else {
        "complete"
    };
    let body = html! {
        p { "started " (r.started_at) ", " strong { (status) } }
        (verdict(&super::story::verdict(r)))
        @if !r.lost_agents.is_empty() {
            (alert("lost agents", &r.lost_agents.join(", ")))
        }
        @if r.skipped_overdue > 0 || r.issued_late > 0 {
            (alert("stalled", &format!(
                "{} attempts skipped overdue (never fired late), {} issued late",
                r.skipped_overdue, r.issued_late
            )))
        }
        @for (agent, why) in &r.cut_reasons {
            (alert("cut short", &format!("{agent}: {why}")))
        }
        @if let Some(caveat) = r.admission.caveat(r.outcomes.connected()) {
            (alert("admission", &caveat))
        }
        @if let Some(e) = &r.target_error {
            (alert("target stats missing", e))
        }
        (sections::thresholds(r))
        (sections::scenario(r))
        h2 { "Outcomes" }
        (sections::outcomes(r))
        (chart::render(&charts::completions(r, merged)))
        p.note { (charts::schedule_text(r)) ". Times are from the agreed start instant; each \
                 attempt counts when its connect() completed (ghosts too), or when it ended \
                 if it never did." }
        h2 { "Latency" }
        (sections::latency(r))
        (chart::render(&charts::percentiles(merged)))
        h2 { "Target" }
        @match &r.target {
            Some(t) => {
                (sections::target(t))
                @match charts::queue(t, r.target_reset_before_start_us) {
                    Some(c) => (chart::render(&c)),
                    None => p.note { "No accept-queue timeline in this report (the target \
                                      sent none)." },
                }
            }
            None => p.note { "No target stats: the run had no --target-control." },
        }
        h2 { "Agents" }
        (sections::agents(r))
        h2 { "Kernel settings" }
        (sections::kernel(r))
    };
    page::page(&format!("stampede run {}", r.run_id), body)
}

#[cfg(test)]
mod tests;
