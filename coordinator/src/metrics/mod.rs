//! Prometheus metrics (`--metrics ADDR` on `stampede schedule` and `stampede run`): `GET
//! /metrics` in the OpenMetrics text format, encoded by prometheus-client.
//!
//! What is served: agents attached (read from the coordinator's registry at each scrape),
//! runs by entry and result, the last run's outcome counts, connect and first-byte latency of
//! the last run that measured them as histograms (from its merged HdrHistograms, so no sample
//! is lost; labelled with that run's id), the target's overflows, the last verdict per entry,
//! and seconds since each entry's last clean run (computed at each scrape). With a history,
//! all but the run counts are filled from it at start ([`Metrics::restore`]): a restarted
//! coordinator shows them again.
//!
//! The endpoint ([`endpoint`]) is a small HTTP/1.1 responder on its own listener.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::history::{Latest, Record, Status};
use hdrhistogram::Histogram as Hdr;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

mod endpoint;

pub use self::endpoint::{MAX_CONCURRENT, REPLY_TIMEOUT, serve};

type Labels = Vec<(String, String)>;

/// Latency buckets' upper bounds, seconds: sub-millisecond loopback to the kernel's SYN
/// retransmit steps (1 s, 3 s, 7 s, 15 s, 31 s; docs/kernel.md §2).
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.5, 3.5,
    7.5, 31.5,
];

/// A histogram per entry, replaced by each run that measured one (the last such run's
/// distribution), labelled with that run's id: after a run that measured nothing (a failed
/// one) the histogram still there says which older run it is from.
#[derive(Debug, Default, Clone)]
struct LastHistograms(Arc<Mutex<BTreeMap<String, (String, Buckets)>>>);

/// A histogram as encoded: sum (seconds), count, and (upper bound, count in that bucket).
type Buckets = (f64, u64, Vec<(f64, u64)>);

impl LastHistograms {
    fn set(&self, entry: &str, run_id: &str, h: &Hdr<u64>) {
        let mut buckets = Vec::with_capacity(BUCKETS.len() + 1);
        let mut below = 0u64;
        for b in BUCKETS {
            let upto = if h.is_empty() {
                0
            } else {
                h.count_between(0, (b * 1e6) as u64)
            };
            buckets.push((b, upto.saturating_sub(below)));
            below = upto.max(below);
        }
        buckets.push((f64::INFINITY, h.len().saturating_sub(below)));
        let sum: f64 = h
            .iter_recorded()
            .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64 / 1e6)
            .sum();
        let mut map = self
            .0
            .lock()
            .expect("metrics lock: never held across a panic");
        map.insert(
            entry.to_owned(),
            (run_id.to_owned(), (sum, h.len(), buckets)),
        );
    }
}

impl EncodeMetric for LastHistograms {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let map = self
            .0
            .lock()
            .expect("metrics lock: never held across a panic");
        for (entry, (run_id, (sum, count, buckets))) in map.iter() {
            let labels = [("entry", entry.as_str()), ("run_id", run_id.as_str())];
            let mut e = encoder.encode_family(&labels)?;
            e.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The metrics of one process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    agents: Gauge,
    runs: Family<Labels, Counter>,
    outcomes: Family<Labels, Gauge>,
    overflows: Family<Labels, Gauge>,
    verdict: Family<Labels, Gauge>,
    since_clean: Family<Labels, Gauge<f64, AtomicU64>>,
    connect: LastHistograms,
    ttfb: LastHistograms,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    service: Option<Arc<crate::service::Registry>>,
    last_clean: BTreeMap<String, f64>,
}

/// Verdicts the `stampede_last_verdict` state set has.
const VERDICTS: [&str; 4] = ["pass", "regression", "no-baseline", "not-judged"];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric registered, none with a value yet.
    pub fn new() -> Metrics {
        let mut m = Metrics {
            agents: Gauge::default(),
            runs: Family::default(),
            outcomes: Family::default(),
            overflows: Family::default(),
            verdict: Family::default(),
            since_clean: Family::default(),
            connect: LastHistograms::default(),
            ttfb: LastHistograms::default(),
            state: Mutex::default(),
            registry: Registry::with_prefix("stampede"),
        };
        let registry = &mut m.registry;
        registry.register(
            "agents_attached",
            "Agents attached to the coordinator now",
            m.agents.clone(),
        );
        registry.register(
            "runs",
            "Runs recorded, by entry and result (complete, partial, failed, aborted, skipped)",
            m.runs.clone(),
        );
        registry.register(
            "last_run_outcomes",
            "The last run's attempts by outcome class, per entry",
            m.outcomes.clone(),
        );
        registry.register(
            "last_run_listen_overflows",
            "The target's ListenOverflows during the last run, per entry",
            m.overflows.clone(),
        );
        registry.register(
            "last_verdict",
            "1 for the last verdict of each entry, 0 for the others",
            m.verdict.clone(),
        );
        registry.register(
            "seconds_since_last_clean_run",
            "Seconds since the entry's last complete run that was not a regression",
            m.since_clean.clone(),
        );
        registry.register(
            "last_run_connect_latency_seconds",
            "Connect latency of the entry's last run that measured it (run_id: which run)",
            m.connect.clone(),
        );
        registry.register(
            "last_run_first_byte_latency_seconds",
            "Time to first byte of the entry's last run that measured it (run_id: which run)",
            m.ttfb.clone(),
        );
        m
    }

    /// Agents attached are read from this coordinator's registry at each scrape.
    pub fn watch(&self, service: Arc<crate::service::Registry>) {
        self.lock().service = Some(service);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("metrics lock: never held across a panic")
    }

    /// A run recorded: its result, outcomes, overflows, verdict, and (when it ran) its
    /// merged latency histograms.
    pub fn record(&self, r: &Record, histograms: Option<(&Hdr<u64>, &Hdr<u64>)>) {
        self.runs
            .get_or_create(&vec![
                ("entry".to_owned(), r.entry.clone()),
                ("result".to_owned(), r.status.name().to_owned()),
            ])
            .inc();
        if r.status == Status::Skipped {
            return;
        }
        self.show_last(r);
        if r.status == Status::Complete && (r.verdict == "pass" || r.verdict == "no-baseline") {
            self.clean_at(&r.entry, &r.finished_at);
        }
        if let Some((connect, ttfb)) = histograms {
            self.connect.set(&r.entry, &r.run_id, connect);
            self.ttfb.set(&r.entry, &r.run_id, ttfb);
        }
    }

    /// What the history says of each entry, shown as if its runs had just been recorded
    /// (run counts excepted: those count this process's runs): a restarted coordinator shows
    /// each entry's last run, last clean run and last histograms again.
    pub fn restore(&self, latest: &Latest) {
        for r in &latest.last {
            self.show_last(r);
        }
        for (entry, finished_at) in &latest.clean {
            self.clean_at(entry, finished_at);
        }
        for h in &latest.histograms {
            self.connect.set(&h.entry, &h.run_id, &h.connect);
            self.ttfb.set(&h.entry, &h.run_id, &h.ttfb);
        }
    }

    /// The entry's last run: its outcomes, overflows and verdict.
    fn show_last(&self, r: &Record) {
        let l = |k: &str, v: &str| {
            vec![
                ("entry".to_owned(), r.entry.clone()),
                (k.to_owned(), v.to_owned()),
            ]
        };
        for class in stampede_proto::outcome::OutcomeClass::ALL {
            let n = r.figures.outcomes.get(class);
            self.outcomes
                .get_or_create(&l("class", class.name()))
                .set(n as i64);
        }
        self.overflows
            .get_or_create(&vec![("entry".to_owned(), r.entry.clone())])
            .set(r.figures.listen_overflows.unwrap_or(0) as i64);
        for v in VERDICTS {
            self.verdict
                .get_or_create(&l("verdict", v))
                .set(i64::from(r.verdict == v));
        }
    }

    /// The entry ran clean, finishing at `finished_at` (RFC 3339). An unreadable time is
    /// skipped with a warning: taking it as now would silence an alert on a stale entry.
    fn clean_at(&self, entry: &str, finished_at: &str) {
        let at = match chrono::DateTime::parse_from_rfc3339(finished_at) {
            Ok(t) => t.timestamp_micros() as f64 / 1e6,
            Err(e) => {
                tracing::warn!(
                    "metrics: entry {entry}: clean run's finish time {finished_at:?} unreadable ({e}); not counted"
                );
                return;
            }
        };
        let mut state = self.lock();
        let known = state.last_clean.entry(entry.to_owned()).or_insert(at);
        *known = known.max(at);
    }

    /// The text a scrape gets (with the values computed at scrape time refreshed).
    pub fn encode(&self) -> String {
        {
            let state = self.lock();
            if let Some(s) = &state.service {
                self.agents.set(s.agents().len() as i64);
            }
            let now = unix_now();
            for (entry, at) in &state.last_clean {
                self.since_clean
                    .get_or_create(&vec![("entry".to_owned(), entry.clone())])
                    .set((now - at).max(0.0));
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding into a String cannot fail");
        out
    }
}

/// Fills `metrics` from the history `store` ([`Metrics::restore`]); a history that cannot be
/// read is said in the log, and the metrics start empty.
pub fn restore_from(metrics: &Metrics, store: &crate::history::Store) {
    match store.latest() {
        Ok(latest) => metrics.restore(&latest),
        Err(e) => tracing::warn!(cause = %e, "metrics not filled from the history"),
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
