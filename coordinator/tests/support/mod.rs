//! Helpers for the coordinator's whole-system tests.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Command;

/// A binary of another workspace package, in this test binary's target directory.
/// `cargo test --workspace` builds every package's binaries before running any test; a
/// lone `cargo test -p stampede` may not, so build them then.
pub fn sibling_bin(name: &str) -> PathBuf {
    if name == "stampede" {
        return PathBuf::from(env!("CARGO_BIN_EXE_stampede"));
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "stampede-agent",
                "-p",
                "stampede-target",
                "--bins",
            ])
            .status()
            .unwrap();
        assert!(status.success(), "building {name}");
    }
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// One line of an HdrHistogram interval log: tag, start (whole seconds), histogram.
pub type HlogLine = (Option<String>, u64, hdrhistogram::Histogram<u64>);

/// Parses an interval log (`report.hlog`), decoding every line's histogram.
pub fn read_hlog(text: &[u8]) -> Vec<HlogLine> {
    use base64::Engine as _;
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    IntervalLogIterator::new(text)
        .filter_map(|entry| match entry.expect("a well-formed interval log") {
            LogEntry::Interval(h) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(h.encoded_histogram())
                    .expect("base64 histogram");
                let hist = Deserializer::new()
                    .deserialize(&mut bytes.as_slice())
                    .expect("a V2 histogram");
                let tag = h.tag().map(|t| t.as_str().to_owned());
                Some((tag, h.start_timestamp().as_secs(), hist))
            }
            _ => None,
        })
        .collect()
}
