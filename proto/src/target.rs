//! What a target reports, the contract between the target and the coordinator: the
//! `target{}` object of report.json ([`TargetStats`]), the kernel counter deltas behind it
//! ([`CounterDeltas`]), and their wire form (`pb::TargetStats`). The target fills it (its own
//! listener or an observed one); the coordinator receives it over `TargetControl` and puts it
//! in its report as it is: one type on both sides, never a JSON map read back by key.

use serde::{Deserialize, Serialize};

use crate::netstat::{self, Counters};
use crate::pb;
use crate::timeline::Timeline;

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
    /// The bounded queue/accept timeline; left out of gRPC snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
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
        }
    }
}

impl From<&pb::TargetStats> for TargetStats {
    /// A snapshot as received over `TargetControl` (no timeline travels there).
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
            timeline: None,
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
            timeline: None,
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
}
