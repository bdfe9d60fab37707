//! The histogram codec: HDR histograms travel as V2 + DEFLATE bytes and merge exactly.
//!
//! Every latency histogram in stampede is made by [`new_latency`] (µs, 1 µs to 1 h, 3
//! significant digits), so any two of them have the same bucket layout and
//! [`merge`] (`Histogram::add`) is exact: merging the workers' or agents' histograms gives the
//! same counts as recording every sample into one. Percentiles are never averaged.

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};

/// Largest value a latency histogram tracks, µs (one hour); larger samples saturate.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Significant decimal digits of every latency histogram (0.1 % relative error).
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// A codec or merge failure; the message says which.
#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    /// The bytes are not a V2 (+DEFLATE) histogram.
    #[error("decoding histogram ({len} bytes): {reason}")]
    Decode {
        /// Length of the input.
        len: usize,
        /// The decoder's complaint.
        reason: String,
    },
    /// Serialization failed (should not happen for an in-memory buffer).
    #[error("encoding histogram: {0}")]
    Encode(String),
    /// The two histograms do not share a value range.
    #[error("merging histograms: {0}")]
    Merge(String),
}

/// An empty latency histogram (µs).
pub fn new_latency() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS)
        .expect("constant bounds are valid: 1 <= low, high >= 2 * low, sigfig <= 5")
}

/// Serializes to the V2 + DEFLATE format (what `IntervalResult` and `FinalResult` carry).
pub fn encode(h: &Histogram<u64>) -> Result<Vec<u8>, HistogramError> {
    let mut out = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut out)
        .map_err(|e| HistogramError::Encode(format!("{e:?}")))?;
    Ok(out)
}

/// Deserializes V2 or V2 + DEFLATE bytes; empty bytes are an empty latency histogram (an
/// interval with no samples may travel as nothing).
pub fn decode(bytes: &[u8]) -> Result<Histogram<u64>, HistogramError> {
    if bytes.is_empty() {
        return Ok(new_latency());
    }
    let mut reader = bytes;
    Deserializer::new()
        .deserialize(&mut reader)
        .map_err(|e| HistogramError::Decode {
            len: bytes.len(),
            reason: format!("{e:?}"),
        })
}

/// Adds `other`'s counts into `into` (exact; never an average of percentiles).
pub fn merge(into: &mut Histogram<u64>, other: &Histogram<u64>) -> Result<(), HistogramError> {
    into.add(other)
        .map_err(|e| HistogramError::Merge(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of latencies: a dense body, a 1 s and a 3 s step (SYN
    /// retransmits) and a few outliers, from a small LCG so the test needs no crate.
    fn samples(n: usize) -> Vec<u64> {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        (0..n)
            .map(|i| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let r = x >> 33;
                match i % 10 {
                    0 => 1_000_000 + r % 30_000,
                    1 => 3_000_000 + r % 80_000,
                    9 if i % 1000 == 9 => 60_000_000 + r % 10_000_000,
                    _ => 5 + r % 400,
                }
            })
            .collect()
    }

    #[test]
    fn merge_is_exact_and_matches_the_samples() {
        let all = samples(50_000);
        let mut one = new_latency();
        let mut workers: Vec<Histogram<u64>> = (0..7).map(|_| new_latency()).collect();
        for (i, v) in all.iter().enumerate() {
            one.record(*v).unwrap();
            workers[i % 7].record(*v).unwrap();
        }
        // Workers travel as bytes, like agents' results do.
        let mut merged = new_latency();
        for w in &workers {
            let back = decode(&encode(w).unwrap()).unwrap();
            assert_eq!(&back, w);
            merge(&mut merged, &back).unwrap();
        }
        assert_eq!(
            merged, one,
            "merging worker histograms equals recording once"
        );
        assert_eq!(merged.len(), all.len() as u64);

        let mut sorted = all.clone();
        sorted.sort_unstable();
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let idx = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            let exact = sorted[idx] as f64;
            let hdr = merged.value_at_quantile(q) as f64;
            // 3 significant digits: relative error below 0.1 % (plus one unit of rounding).
            assert!(
                (hdr - exact).abs() <= exact * 0.001 + 1.0,
                "q={q}: hdr {hdr} vs exact {exact}"
            );
        }
        assert_eq!(merged.min(), *sorted.first().unwrap());
        assert!(merged.equivalent(merged.max(), *sorted.last().unwrap()));
    }

    #[test]
    fn empty_bytes_and_garbage() {
        assert!(decode(&[]).unwrap().is_empty());
        let e = decode(b"not a histogram").unwrap_err();
        assert!(e.to_string().contains("15 bytes"), "{e}");
    }
}
