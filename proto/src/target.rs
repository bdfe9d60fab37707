//! What a target reports, the contract between the target and the coordinator: the
//! `target{}` object of report.json ([`TargetStats`]), the kernel counter deltas behind it
//! ([`CounterDeltas`]), and their wire form (`pb::TargetStats`). The target fills it (its own
//! listener or an observed one); the coordinator receives it over `TargetControl` and puts it
//! in its report as it is: one type on both sides, never a JSON map read back by key.

use serde::{Deserialize, Serialize};

use crate::netstat::{self, Counters};
use crate::pb;
use crate::timeline::{Point, Timeline};

/// Most timeline points taken from the wire (the target keeps 4096; twice that leaves room).
pub const WIRE_TIMELINE_POINTS: usize = 8192;

/// What serves a listener, so a coordinator knows what it may ask of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// stampede-target's own listener: backlog and accept policy can be set.
    Target,
    /// Another process's listener, watched only (`stampede-target observe`).
    Observe,
    /// A real server run as stampede-target's child (`stampede-target supervise`): the backlog
    /// is set by restarting it, its accept policy is its own.
    Supervise,
}

impl TargetKind {
    /// The name on the wire and in report.json.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Target => "target",
            TargetKind::Observe => "observe",
            TargetKind::Supervise => "supervise",
        }
    }

    /// The kind a wire name stands for (`None`: empty, from an older target, or unknown).
    pub fn from_name(name: &str) -> Option<TargetKind> {
        [
            TargetKind::Target,
            TargetKind::Observe,
            TargetKind::Supervise,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }

    /// Whether a Configure may carry an accept policy: only stampede-target's own accept loop
    /// has one to set.
    pub fn accept_policy_settable(self) -> bool {
        self == TargetKind::Target
    }

    /// Whether a Configure may carry a backlog.
    pub fn backlog_settable(self) -> bool {
        self != TargetKind::Observe
    }
}

/// When and how fast stampede-target accepts, as reported (`accept_policy` in `target{}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct AcceptPolicy {
    /// Nothing is accepted until this long after the policy took effect.
    pub delay_ms: u64,
    /// Accepts per second; `None`: as fast as possible.
    pub rate_per_sec: Option<f64>,
    /// Token bucket size (0 is taken as 1).
    pub batch: u32,
    /// Accepting is paused.
    pub paused: bool,
}

impl From<&pb::AcceptPolicy> for AcceptPolicy {
    fn from(p: &pb::AcceptPolicy) -> Self {
        AcceptPolicy {
            delay_ms: p.delay_ms,
            rate_per_sec: p.rate_per_sec,
            batch: p.batch,
            paused: p.paused,
        }
    }
}

impl From<&AcceptPolicy> for pb::AcceptPolicy {
    fn from(p: &AcceptPolicy) -> Self {
        pb::AcceptPolicy {
            delay_ms: p.delay_ms,
            rate_per_sec: p.rate_per_sec,
            batch: p.batch,
            paused: p.paused,
        }
    }
}

impl From<&Timeline> for pb::Timeline {
    fn from(t: &Timeline) -> Self {
        pb::Timeline {
            bucket_us: t.bucket_us,
            points: t
                .points
                .iter()
                .map(|p| pb::TimelinePoint {
                    t_us: p.t_us,
                    queue_max: p.queue_max,
                    queue_last: p.queue_last,
                    accepted: p.accepted,
                })
                .collect(),
        }
    }
}

impl From<&pb::Timeline> for Timeline {
    /// Bounded to [`WIRE_TIMELINE_POINTS`] whatever the peer sent.
    fn from(t: &pb::Timeline) -> Self {
        let points: Vec<Point> = t
            .points
            .iter()
            .map(|p| Point {
                t_us: p.t_us,
                queue_max: p.queue_max,
                queue_last: p.queue_last,
                accepted: p.accepted,
            })
            .collect();
        Timeline::from_points(t.bucket_us, &points, WIRE_TIMELINE_POINTS)
    }
}

/// Listener-related kernel counters over an interval (namespace-wide: every listener in
/// the namespace adds to them; docs/kernel.md §4 says what each means).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterDeltas {
    /// SYNs and ACKs dropped for a full accept queue.
    pub listen_overflows: u64,
    /// All listener drops (≥ listen_overflows).
    pub listen_drops: u64,
    /// SYNs dropped by the SYN-queue limit (only with tcp_syncookies=0).
    pub req_qfull_drops: u64,
    /// Syncookies sent.
    pub syncookies_sent: u64,
    /// Cookie SYN-ACKs sent because the SYN queue was full: potential phantoms.
    pub req_qfull_do_cookies: u64,
    /// Resets sent because of tcp_abort_on_overflow.
    pub embryonic_rsts: u64,
}

impl CounterDeltas {
    /// `now - baseline` for the counters stampede reports.
    pub fn between(baseline: &Counters, now: &Counters) -> CounterDeltas {
        let d = now.since(baseline);
        CounterDeltas {
            listen_overflows: d.get(netstat::LISTEN_OVERFLOWS),
            listen_drops: d.get(netstat::LISTEN_DROPS),
            req_qfull_drops: d.get(netstat::REQ_QFULL_DROP),
            syncookies_sent: d.get(netstat::SYNCOOKIES_SENT),
            req_qfull_do_cookies: d.get(netstat::REQ_QFULL_DO_COOKIES),
            embryonic_rsts: d.get(netstat::EMBRYONIC_RSTS),
        }
    }
}

/// The keys of `report.json`'s `target{}` object (docs/design.md "Reports"), in contract order.
pub const CONTRACT_KEYS: [&str; 9] = [
    "backlog_requested",
    "backlog_effective",
    "somaxconn",
    "accept_queue_max",
    "accepted",
    "listen_overflows",
    "listen_drops",
    "req_qfull_drops",
    "syncookies_sent",
];

/// A snapshot of a listener's queue and counters: `target{}` in report.json.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetStats {
    /// The listener's address.
    pub listen_addr: String,
    /// Backlog passed to listen(); `None` when observing another process's listener.
    pub backlog_requested: Option<i32>,
    /// Effective backlog A read back from the kernel; the queue holds A+1.
    pub backlog_effective: u32,
    /// `net.core.somaxconn` of the listener's namespace.
    pub somaxconn: u32,
    /// Largest accept-queue length sampled.
    pub accept_queue_max: u32,
    /// Accept-queue length at the last sample.
    pub accept_queue_len: u32,
    /// Connections accepted; `None` when observing another process's listener.
    pub accepted: Option<u64>,
    /// Kernel counter deltas since start (or the last reset).
    #[serde(flatten)]
    pub counters: CounterDeltas,
    /// True while accepting is paused.
    pub paused: bool,
    /// Microseconds since start (or the last reset).
    pub elapsed_us: u64,
    /// Queue samples taken.
    pub samples: u64,
    /// The bounded queue/accept timeline (over gRPC only when a Stats request asks for it;
    /// `stampede run` and `sweep` ask at the end of each run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
    /// What serves the listener; `None` from a target older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<TargetKind>,
    /// The accept policy in force (stampede-target's own listener only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_policy: Option<AcceptPolicy>,
    /// The supervised server's process id (`stampede-target supervise` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_pid: Option<u32>,
}

impl From<&TargetStats> for pb::TargetStats {
    fn from(s: &TargetStats) -> Self {
        pb::TargetStats {
            listen_addr: s.listen_addr.clone(),
            backlog_requested: s.backlog_requested,
            backlog_effective: s.backlog_effective,
            somaxconn: s.somaxconn,
            accept_queue_max: s.accept_queue_max,
            accept_queue_len: s.accept_queue_len,
            accepted: s.accepted,
            listen_overflows: s.counters.listen_overflows,
            listen_drops: s.counters.listen_drops,
            req_qfull_drops: s.counters.req_qfull_drops,
            syncookies_sent: s.counters.syncookies_sent,
            req_qfull_do_cookies: s.counters.req_qfull_do_cookies,
            embryonic_rsts: s.counters.embryonic_rsts,
            paused: s.paused,
            elapsed_us: s.elapsed_us,
            samples: s.samples,
            kind: s.kind.map(|k| k.name().to_owned()).unwrap_or_default(),
            accept_policy: s.accept_policy.as_ref().map(Into::into),
            server_pid: s.server_pid,
            timeline: s.timeline.as_ref().map(Into::into),
        }
    }
}

impl From<&pb::TargetStats> for TargetStats {
    /// A snapshot as received over `TargetControl` (the timeline bounded on the way in).
    fn from(s: &pb::TargetStats) -> Self {
        TargetStats {
            listen_addr: s.listen_addr.clone(),
            backlog_requested: s.backlog_requested,
            backlog_effective: s.backlog_effective,
            somaxconn: s.somaxconn,
            accept_queue_max: s.accept_queue_max,
            accept_queue_len: s.accept_queue_len,
            accepted: s.accepted,
            counters: CounterDeltas {
                listen_overflows: s.listen_overflows,
                listen_drops: s.listen_drops,
                req_qfull_drops: s.req_qfull_drops,
                syncookies_sent: s.syncookies_sent,
                req_qfull_do_cookies: s.req_qfull_do_cookies,
                embryonic_rsts: s.embryonic_rsts,
            },
            paused: s.paused,
            elapsed_us: s.elapsed_us,
            samples: s.samples,
            timeline: s.timeline.as_ref().map(Into::into),
            kind: TargetKind::from_name(&s.kind),
            accept_policy: s.accept_policy.as_ref().map(Into::into),
            server_pid: s.server_pid,
        }
    }
}

impl TargetStats {
    /// The `target{}` contract fields in [`CONTRACT_KEYS`] order, each as text; `None` where
    /// the value is unknown (an observed listener's `accepted` and `backlog_requested`).
    pub fn contract(&self) -> [(&'static str, Option<String>); 9] {
        let c = &self.counters;
        let values = [
            self.backlog_requested.map(|b| b.to_string()),
            Some(self.backlog_effective.to_string()),
            Some(self.somaxconn.to_string()),
            Some(self.accept_queue_max.to_string()),
            self.accepted.map(|a| a.to_string()),
            Some(c.listen_overflows.to_string()),
            Some(c.listen_drops.to_string()),
            Some(c.req_qfull_drops.to_string()),
            Some(c.syncookies_sent.to_string()),
        ];
        let mut i = 0;
        CONTRACT_KEYS.map(|k| {
            let v = values[i].clone();
            i += 1;
            (k, v)
        })
    }

    /// A one-line human summary for the terminal.
    pub fn summary(&self) -> String {
        let accepted = self
            .accepted
            .map_or_else(|| "-".to_owned(), |a| a.to_string());
        format!(
            "{addr}: backlog {req} (effective {eff}, somaxconn {smc}) queue max {qmax} now {q} \
             accepted {accepted} overflows {ov} drops {dr} cookies {ck} qfull-drops {qd} \
             embryonic-rsts {er}",
            addr = self.listen_addr,
            req = self
                .backlog_requested
                .map_or_else(|| "-".to_owned(), |b| b.to_string()),
            eff = self.backlog_effective,
            smc = self.somaxconn,
            qmax = self.accept_queue_max,
            q = self.accept_queue_len,
            ov = self.counters.listen_overflows,
            dr = self.counters.listen_drops,
            ck = self.counters.syncookies_sent,
            qd = self.counters.req_qfull_drops,
            er = self.counters.embryonic_rsts,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_report_contract_keys() {
        let s = TargetStats {
            listen_addr: "127.0.0.1:1".into(),
            backlog_requested: Some(2),
            backlog_effective: 2,
            somaxconn: 4096,
            accept_queue_max: 3,
            accept_queue_len: 0,
            accepted: Some(6),
            counters: CounterDeltas {
                listen_overflows: 91,
                ..Default::default()
            },
            paused: false,
            elapsed_us: 1,
            samples: 1,
            ..Default::default()
        };
        let v = serde_json::to_value(&s).unwrap();
        // Spelled out, not CONTRACT_KEYS: the test is the contract's independent check.
        for key in [
            "backlog_requested",
            "backlog_effective",
            "somaxconn",
            "accept_queue_max",
            "accepted",
            "listen_overflows",
            "listen_drops",
            "req_qfull_drops",
            "syncookies_sent",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        for key in CONTRACT_KEYS {
            assert!(
                v.get(key).is_some(),
                "CONTRACT_KEYS names {key}, not in {v}"
            );
        }
        assert_eq!(v["listen_overflows"], 91);
    }

    /// Kind, policy, pid and timeline survive the wire both ways.
    #[test]
    fn the_wire_form_round_trips() {
        let mut timeline = Timeline::new(1_000, 16);
        timeline.record(10, 3, 1);
        timeline.record(2_500, 9, 4);
        let s = TargetStats {
            listen_addr: "127.0.0.1:1".into(),
            kind: Some(TargetKind::Supervise),
            accept_policy: Some(AcceptPolicy {
                delay_ms: 3,
                rate_per_sec: Some(5.0),
                batch: 2,
                paused: false,
            }),
            server_pid: Some(42),
            timeline: Some(timeline),
            ..Default::default()
        };
        let wire = pb::TargetStats::from(&s);
        assert_eq!(wire.kind, "supervise");
        let back = TargetStats::from(&wire);
        assert_eq!(back.kind, s.kind);
        assert_eq!(back.accept_policy, s.accept_policy);
        assert_eq!(back.server_pid, Some(42));
        assert_eq!(
            back.timeline.as_ref().map(|t| &t.points),
            s.timeline.as_ref().map(|t| &t.points)
        );
        let v = serde_json::to_value(&back).unwrap();
        assert_eq!(v["kind"], "supervise");
        assert_eq!(v["timeline"]["points"][1]["queue_max"], 9);
        assert!(TargetKind::from_name("").is_none());
    }
}
