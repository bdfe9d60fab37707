//! `report.hlog`: the run second by second in the HdrHistogram interval log format, for the
//! existing HDR tooling (HistogramLogProcessor, HdrHistogram's plotters, `hdrhistogram`'s
//! `IntervalLogIterator`).
//!
//! Interval `seq` of every agent covers `[seq, seq + 1)` seconds after the agreed start
//! instant (its last interval also holds what completed later), so the log's BaseTime and
//! StartTime are that instant and each line starts at `seq` seconds and lasts one. Per second:
//! an untagged line with every agent's connect latencies merged exactly (`Histogram::add`),
//! `Tag=ttfb` with the merged first-byte latencies, then `Tag=agent.<id>` and
//! `Tag=agent.<id>.ttfb` for each agent. Values are microseconds. Lost agents contribute the
//! intervals they delivered, as in the report.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use stampede_proto::histogram;
use stampede_proto::pb;

/// Why the log could not be written; the message names the agent and the interval.
#[derive(Debug, thiserror::Error)]
#[error("interval log: {0}")]
pub struct HlogError(String);

/// The log's text. `start_at_unix_nanos` is the agreed start instant in coordinator time.
pub fn render(
    run_id: &str,
    start_at_unix_nanos: i64,
    intervals: &BTreeMap<String, Vec<pb::IntervalResult>>,
) -> Result<Vec<u8>, HlogError> {
    let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(start_at_unix_nanos.max(0) as u64);
    let seqs: BTreeSet<u32> = intervals.values().flatten().map(|r| r.seq).collect();
    let any_ttfb = intervals
        .values()
        .flatten()
        .any(|r| !r.ttfb_hist.is_empty());
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment(&format!("stampede run {run_id}"))
        .add_comment(
            "values: microseconds; untagged: connect latency of all agents; \
             ttfb: time to first byte; agent.<id>[.ttfb]: one agent",
        )
        .with_start_time(start)
        .with_base_time(start)
        .begin_log_with(&mut out, &mut serializer)
        .map_err(|e| HlogError(e.to_string()))?;
    let mut write = |h: &Histogram<u64>, seq: u32, tag: Option<&str>| {
        let tag = tag.map(|t| Tag::new(t).expect("tags are sanitized: no comma, space or newline"));
        log.write_histogram(
            h,
            Duration::from_secs(u64::from(seq)),
            Duration::from_secs(1),
            tag,
        )
        .map_err(|e| HlogError(format!("second {seq}: {e}")))
    };
    for seq in seqs {
        let mut connect = histogram::new_latency();
        let mut ttfb = histogram::new_latency();
        let mut per_agent = Vec::new();
        for (id, results) in intervals {
            // An agent sends each seq once; several would simply add.
            for r in results.iter().filter(|r| r.seq == seq) {
                let decode = |bytes: &[u8], what: &str| {
                    histogram::decode(bytes)
                        .map_err(|e| HlogError(format!("agent {id}, second {seq}, {what}: {e}")))
                };
                let c = decode(&r.connect_latency_hist, "connect latency")?;
                let t = decode(&r.ttfb_hist, "time to first byte")?;
                let merge_err = |e: histogram::HistogramError| HlogError(e.to_string());
                histogram::merge(&mut connect, &c).map_err(merge_err)?;
                histogram::merge(&mut ttfb, &t).map_err(merge_err)?;
                per_agent.push((tag_safe(id), c, t));
            }
        }
        write(&connect, seq, None)?;
        if any_ttfb {
            write(&ttfb, seq, Some("ttfb"))?;
        }
        for (id, c, t) in &per_agent {
            write(c, seq, Some(&format!("agent.{id}")))?;
            if any_ttfb {
                write(t, seq, Some(&format!("agent.{id}.ttfb")))?;
            }
        }
    }
    drop(log);
    Ok(out)
}

/// An agent id as a tag: the format forbids commas, spaces and line breaks.
fn tag_safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if matches!(c, ',' | ' ' | '\r' | '\n') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    fn interval(seq: u32, samples: &[u64]) -> pb::IntervalResult {
        let mut h = histogram::new_latency();
        for s in samples {
            h.record(*s).unwrap();
        }
        pb::IntervalResult {
            seq,
            connect_latency_hist: histogram::encode(&h).unwrap(),
            ..Default::default()
        }
    }

    /// Two agents over two seconds: one untagged line per second holding both agents'
    /// samples, one tagged line per agent and second, timestamps relative to the start.
    #[test]
    fn lines_per_second_merge_agents_and_tag_each() {
        let mut intervals = BTreeMap::new();
        intervals.insert(
            "a 1".to_owned(),
            vec![interval(0, &[10, 20, 30]), interval(1, &[1_030_000])],
        );
        intervals.insert("b".to_owned(), vec![interval(0, &[40])]);
        let start = 1_764_000_000_123_000_000;
        let text = render("r1", start, &intervals).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("#[StartTime: 1764000000.123"), "{text}");
        assert!(text.contains("#[BaseTime: 1764000000.123"), "{text}");
        let mut lines = Vec::new();
        for entry in IntervalLogIterator::new(text.as_bytes()) {
            if let LogEntry::Interval(h) = entry.unwrap() {
                let bytes = base64_decode(h.encoded_histogram());
                let hist: Histogram<u64> = Deserializer::new()
                    .deserialize(&mut bytes.as_slice())
                    .unwrap();
                lines.push((
                    h.tag().map(|t| t.as_str().to_owned()),
                    h.start_timestamp().as_secs(),
                    hist.len(),
                    hist.max(),
                ));
            }
        }
        // Small values are exact; 1.03 s is within the histogram's 0.1 %.
        let mut big = histogram::new_latency();
        big.record(1_030_000).unwrap();
        assert_eq!(
            lines,
            vec![
                (None, 0, 4, 40),
                (Some("agent.a_1".to_owned()), 0, 3, 30),
                (Some("agent.b".to_owned()), 0, 1, 40),
                (None, 1, 1, big.max()),
                (Some("agent.a_1".to_owned()), 1, 1, big.max()),
            ]
        );
    }

    fn base64_decode(s: &str) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    }
}
