//! The run page's tables, one function each: thresholds, scenario, outcomes (with the
//! breakdowns by k and errno), latency summary, target counters under readable names,
//! agents, and the kernel settings of every agent.

use std::collections::BTreeMap;

use maud::{Markup, html};
use stampede_proto::duration::{human_signed_us, human_us};
use stampede_proto::outcome::OutcomeClass;
use stampede_proto::report::{Latency, k_counts};
use stampede_proto::target::TargetStats;

use super::page::{pairs, pass_fail};
use crate::report::Report;

/// Each `--fail-if` threshold with its value and verdict (nothing when none was given).
pub(super) fn thresholds(r: &Report) -> Markup {
    html! {
        @if !r.thresholds.is_empty() {
            h2 { "Thresholds" }
            table {
                tr { th { "threshold" } th { "value" } th { "result" } }
                @for t in &r.thresholds {
                    tr { td { code { (t.expr) } } td { (t.detail) } td { (pass_fail(t.passed)) } }
                }
            }
        }
    }
}

/// A scenario value as a person reads it.
fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a.iter().map(value_text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// The scenario as run, every setting that was set, and the target's policy.
pub(super) fn scenario(r: &Report) -> Markup {
    let rows: Vec<(&str, String)> = match &r.scenario {
        serde_json::Value::Object(m) => m
            .iter()
            .filter(|(_, v)| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
            .map(|(k, v)| (k.as_str(), value_text(v)))
            .collect(),
        _ => Vec::new(),
    };
    html! {
        h2 { "Scenario and target policy" }
        @if let Some(t) = &r.target {
            p {
                "Target " code { (t.listen_addr) } ": backlog "
                (t.backlog_requested.map_or_else(|| "unknown (observed listener)".to_owned(), |b| b.to_string()))
                ", effective " (t.backlog_effective) " (the queue holds " (u64::from(t.backlog_effective) + 1)
                "), somaxconn " (t.somaxconn)
                @if t.paused { ", accepting paused" }
                ". Admission checked by: " (format!("{:?}", r.admission).to_lowercase()) "."
            }
        }
        @if let Some(p) = &r.pacing {
            p {
                "Paced for " (r.agents.len()) @if r.agents.len() == 1 { " agent" } @else { " agents" } ": start lead " (human_us(p.start_lead_ms * 1_000))
                " (" (p.start_lead_basis) "), prepare timeout " (human_us(p.prepare_timeout_ms * 1_000))
                ", an agent silent for " (human_us(p.liveness_ms * 1_000)) " is lost (each stops firing on its own after "
                (human_us(p.agent_liveness_ms * 1_000)) " without the coordinator)."
            }
        }
        @if rows.is_empty() { p.note { "No scenario recorded." } } @else { (pairs(rows)) }
    }
}

/// Percent of `total`, one decimal.
fn share(n: u64, total: u64) -> String {
    if total == 0 {
        return "–".into();
    }
    format!("{:.1}%", n as f64 * 100.0 / total as f64)
}

/// Attempts by class with their breakdowns.
pub(super) fn outcomes(r: &Report) -> Markup {
    let total = r.outcomes.total();
    let detail = |class: OutcomeClass| -> String {
        let by_k = |m: &BTreeMap<u32, u64>| {
            if m.is_empty() {
                String::new()
            } else {
                k_counts(m)
            }
        };
        match class {
            OutcomeClass::SynRetransmitted => by_k(&r.syn_retransmits),
            OutcomeClass::Ghost => by_k(&r.ghost_syn_retransmits),
            OutcomeClass::Pending => by_k(&r.pending_syn_retransmits),
            OutcomeClass::Error => r
                .errors
                .iter()
                .map(|(e, n)| format!("{e}: {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            _ => String::new(),
        }
    };
    html! {
        table {
            tr { th { "class" } th { "attempts" } th { "share" } th { "by k / errno" } }
            @for class in OutcomeClass::ALL {
                tr {
                    td { (class.name()) }
                    td { (r.outcomes.get(class)) }
                    td { (share(r.outcomes.get(class), total)) }
                    td.text { (detail(class)) }
                }
            }
            tr { th { "total" } th { (total) } th { } th { } }
        }
    }
}

fn latency_row(name: &str, l: &Latency) -> Markup {
    html! {
        tr {
            td { (name) }
            @if l.count == 0 {
                td colspan="7" { "not measured" }
            } @else {
                td { (l.count) }
                @for v in [l.p50, l.p90, l.p99, l.p999, l.max] { td { (human_us(v)) } }
            }
        }
    }
}

/// The percentiles of connect and first-byte time.
pub(super) fn latency(r: &Report) -> Markup {
    html! {
        table {
            tr { th { "from the intended send time to" } th { "n" } th { "p50" } th { "p90" } th { "p99" } th { "p99.9" } th { "max" } }
            (latency_row("the connect() call (issue lag: the agents' own lateness)", &r.issue_lag_us))
            (latency_row("connect() done", &r.connect_latency_us))
            (latency_row("the server's first byte", &r.ttfb_us))
        }
    }
}

/// The target's counters under names a reader knows; each row carries its report.json key
/// (`data-key`) for scripts and tests.
pub(super) fn target(t: &TargetStats) -> Markup {
    let c = &t.counters;
    let unknown = || "– (observed listener: only its own process knows)".to_owned();
    let rows: [(&str, &str, String); 13] = [
        ("listen_addr", "listener", t.listen_addr.clone()),
        (
            "backlog_requested",
            "backlog requested",
            t.backlog_requested.map_or_else(unknown, |b| b.to_string()),
        ),
        (
            "backlog_effective",
            "effective backlog A (min of backlog and somaxconn)",
            t.backlog_effective.to_string(),
        ),
        ("somaxconn", "net.core.somaxconn", t.somaxconn.to_string()),
        (
            "accept_queue_max",
            "accept queue peak",
            t.accept_queue_max.to_string(),
        ),
        (
            "accepted",
            "accepted",
            t.accepted.map_or_else(unknown, |a| a.to_string()),
        ),
        (
            "listen_overflows",
            "SYNs dropped on a full accept queue (ListenOverflows)",
            c.listen_overflows.to_string(),
        ),
        (
            "listen_drops",
            "SYNs dropped at the listener (ListenDrops)",
            c.listen_drops.to_string(),
        ),
        (
            "req_qfull_drops",
            "SYNs dropped on a full SYN queue (TCPReqQFullDrop)",
            c.req_qfull_drops.to_string(),
        ),
        (
            "syncookies_sent",
            "SYN cookies sent (SyncookiesSent)",
            c.syncookies_sent.to_string(),
        ),
        (
            "req_qfull_do_cookies",
            "SYN queue full, cookies used (TCPReqQFullDoCookies)",
            c.req_qfull_do_cookies.to_string(),
        ),
        (
            "embryonic_rsts",
            "resets for a full queue (EmbryonicRsts)",
            c.embryonic_rsts.to_string(),
        ),
        ("samples", "queue samples", t.samples.to_string()),
    ];
    html! {
        table {
            @for (key, name, value) in rows {
                tr data-key=(key) { th { (name) } td.text { (value) } }
            }
        }
    }
}

/// One row per agent: its outcomes, clock and start.
pub(super) fn agents(r: &Report) -> Markup {
    html! {
        table {
            tr {
                th { "agent" } th { "host" } th { "planned" } th { "attempts" } th { "established" }
                th { "k ≥ 1" } th { "ghost" } th { "failed" } th { "p99 connect" }
                th { "clock offset" } th { "± uncertainty" } th { "start error" } th { "complete" }
            }
            @for a in &r.agents {
                @let o = &a.outcomes;
                tr {
                    td { (a.id) } td { (a.host) } td { (a.connections) } td { (a.attempts) }
                    td { (o.established) } td { (o.syn_retransmitted) } td { (o.ghost) }
                    td { (o.total().saturating_sub(o.connected())) }
                    td { (human_us(a.connect_latency_us.p99)) }
                    td { (human_signed_us(a.clock_offset_us)) }
                    td { (human_us(a.clock_uncertainty_us)) }
                    td { (a.start_error_us.map_or_else(|| "–".to_owned(), human_signed_us)) }
                    td { @if a.complete { "yes" } @else { "no" } }
                }
            }
        }
        @if let Some(spread) = r.start_spread_us {
            p { "Start spread across agents (latest minus earliest first connect): " (human_us(spread)) }
        }
    }
}

/// Every agent's kernel settings and counters.
pub(super) fn kernel(r: &Report) -> Markup {
    let opt = |v: Option<u64>| v.map_or_else(|| "unknown".to_owned(), |v| v.to_string());
    html! {
        table {
            tr {
                th { "agent" } th { "tcp_syn_retries" } th { "tcp_syn_linear_timeouts" }
                th { "ip_local_port_range" } th { "open files limit" }
                th { "local retransmit failures (TCPRetransFail)" } th { "SYN retransmits (TCPSynRetrans)" }
            }
            @for a in &r.agents {
                @let k = &a.kernel;
                tr {
                    td { (a.id) } td { (opt(k.tcp_syn_retries)) } td { (opt(k.tcp_syn_linear_timeouts)) }
                    td { (k.ip_local_port_range.clone().unwrap_or_else(|| "unknown".into())) }
                    td { (k.fd_limit) } td { (k.retrans_fail) } td { (k.syn_retrans) }
                }
            }
        }
    }
}
