//! The HdrHistogram interval log (`.hlog`, the text format of HdrHistogram's
//! HistogramLogWriter, read by HistogramLogProcessor and other HDR tools): a histogram per
//! interval, optionally tagged, base64 of V2 + DEFLATE bytes.
//!
//! stampede's intervals are whole seconds after the start instant (interval `seq` covers
//! `[seq, seq + 1)` s; the last also holds what completed later), so the log's StartTime and
//! BaseTime are that instant and a line's timestamp is its `seq`. Values are microseconds.

use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriter, IntervalLogWriterBuilder, LogEntry, Tag,
};

use crate::histogram::HistogramError;

/// Where a log's lines go; [`render`] lends one to its body.
pub struct Lines<'a> {
    log: IntervalLogWriter<'a, 'a, Vec<u8>, V2DeflateSerializer>,
}

impl Lines<'_> {
    /// Appends interval `seq` (one second, `seq` seconds after the start) with an optional
    /// tag; characters the format forbids in tags (comma, space, line breaks) become `_`.
    pub fn line(
        &mut self,
        seq: u32,
        tag: Option<&str>,
        h: &Histogram<u64>,
    ) -> Result<(), HistogramError> {
        let safe = tag.map(|t| {
            t.chars()
                .map(|c| {
                    if matches!(c, ',' | ' ' | '\r' | '\n') {
                        '_'
                    } else {
                        c
                    }
                })
                .collect::<String>()
        });
        let tag = safe
            .as_deref()
            .map(|t| Tag::new(t).expect("sanitized: no comma, space or line break"));
        self.log
            .write_histogram(
                h,
                Duration::from_secs(u64::from(seq)),
                Duration::from_secs(1),
                tag,
            )
            .map_err(|e| HistogramError::Encode(format!("interval {seq}: {e}")))
    }
}

/// The log's text: `comments` (one `#` line each), StartTime and BaseTime at the start
/// instant, then the lines `body` writes, in the order it writes them (by `seq`, please: HDR
/// tools expect intervals in time order).
pub fn render(
    comments: &[String],
    start_at_unix_nanos: i64,
    body: impl FnOnce(&mut Lines<'_>) -> Result<(), HistogramError>,
) -> Result<Vec<u8>, HistogramError> {
    let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(start_at_unix_nanos.max(0) as u64);
    let mut builder = IntervalLogWriterBuilder::new();
    for c in comments {
        builder.add_comment(c);
    }
    builder.with_start_time(start).with_base_time(start);
    write_with(&builder, body)
}

/// More lines of a log whose header [`render`] wrote (with an empty body): no header, so a
/// log written as its intervals arrive appends each batch to what it wrote before.
pub fn lines(
    body: impl FnOnce(&mut Lines<'_>) -> Result<(), HistogramError>,
) -> Result<Vec<u8>, HistogramError> {
    write_with(&IntervalLogWriterBuilder::new(), body)
}

/// The header `builder` holds (none when it holds nothing), then the lines `body` writes.
fn write_with(
    builder: &IntervalLogWriterBuilder,
    body: impl FnOnce(&mut Lines<'_>) -> Result<(), HistogramError>,
) -> Result<Vec<u8>, HistogramError> {
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let log = builder
        .begin_log_with(&mut out, &mut serializer)
        .map_err(|e| HistogramError::Encode(format!("interval log header: {e}")))?;
    let mut lines = Lines { log };
    body(&mut lines)?;
    drop(lines);
    Ok(out)
}

/// One interval read back from a log.
#[derive(Debug, Clone)]
pub struct Line {
    /// The tag, if any.
    pub tag: Option<String>,
    /// Its start, whole seconds after BaseTime.
    pub seq: u32,
    /// Its histogram.
    pub histogram: Histogram<u64>,
}

/// Reads a log's intervals back (comments and headers are skipped).
pub fn parse(text: &[u8]) -> Result<Vec<Line>, HistogramError> {
    use base64::Engine as _;
    let bad = |what: String| HistogramError::Decode {
        len: text.len(),
        reason: what,
    };
    let mut out = Vec::new();
    for entry in IntervalLogIterator::new(text) {
        let LogEntry::Interval(i) = entry.map_err(|e| bad(format!("interval log: {e:?}")))? else {
            continue;
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(i.encoded_histogram())
            .map_err(|e| bad(format!("base64: {e}")))?;
        if bytes.is_empty() {
            return Err(bad("histogram: empty".into()));
        }
        // Through the bounded decoder: a line is outside input like any message.
        let histogram =
            crate::histogram::decode(&bytes).map_err(|e| bad(format!("histogram: {e}")))?;
        out.push(Line {
            tag: i.tag().map(|t| t.as_str().to_owned()),
            seq: i.start_timestamp().as_secs() as u32,
            histogram,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram;

    #[test]
    fn header_then_lines_in_order_with_safe_tags() {
        let mut h = histogram::new_latency();
        h.record(42).unwrap();
        let text = render(&["run x".into()], 1_764_000_000_500_000_000, |lines| {
            lines.line(0, None, &h)?;
            lines.line(3, Some("agent 1,b"), &h)
        })
        .unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.starts_with("#run x\n"), "{text}");
        assert!(text.contains("#[StartTime: 1764000000.500"), "{text}");
        assert!(text.contains("#[BaseTime: 1764000000.500"), "{text}");
        let got: Vec<(Option<String>, u32, u64, u64)> = parse(text.as_bytes())
            .unwrap()
            .into_iter()
            .map(|l| (l.tag, l.seq, l.histogram.len(), l.histogram.max()))
            .collect();
        assert_eq!(
            got,
            vec![(None, 0, 1, 42), (Some("agent_1_b".to_owned()), 3, 1, 42)]
        );
        assert!(parse(b"0.000,1.000,1.0,not-base64!\n").is_err());
        // A header, then lines appended later: one log.
        let mut log = render(&["run y".into()], 1_764_000_000_000_000_000, |_| Ok(())).unwrap();
        assert!(parse(&log).unwrap().is_empty());
        let more = lines(|l| l.line(2, Some("t"), &h)).unwrap();
        assert!(more.starts_with(b"Tag=t,2.000,"), "no header");
        log.extend(more);
        let back = parse(&log).unwrap();
        assert_eq!(
            (back.len(), back[0].seq, back[0].tag.as_deref()),
            (1, 2, Some("t"))
        );
    }
}
