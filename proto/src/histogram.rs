//! The histogram codec: HDR histograms travel as V2 + DEFLATE bytes and merge exactly.
//!
//! Every latency histogram in stampede is made by [`new_latency`] (µs, 1 µs to 1 h, 3
//! significant digits), so any two of them have the same bucket layout and
//! [`merge`] (`Histogram::add`) is exact: merging the workers' or agents' histograms gives the
//! same counts as recording every sample into one. Percentiles are never averaged.

use std::io::Read as _;

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

/// Largest V2 payload (the counts, after inflating) [`decode`] reads. A latency histogram's
/// payload is at most a few hundred kB (23,552 counts of at most 9 bytes each); the V2 header
/// states its payload's length and hdrhistogram allocates that much before reading a byte,
/// so a 40-byte message claiming 4 GiB would take 4 GiB. Larger claims are refused.
pub const MAX_PAYLOAD_BYTES: usize = 4 << 20;

/// The V2 cookie, and that of V2 + DEFLATE (the first four bytes, big-endian; hdrhistogram's
/// base cookies with the word-size bits `0x10`).
const V2_COOKIE: u32 = 0x1c84_9313;
const V2_DEFLATE_COOKIE: u32 = 0x1c84_9314;
/// A V2 header: cookie, payload length, offset, digits, low, high, ratio.
const V2_HEADER_BYTES: usize = 40;

/// The big-endian u32 at `at`, if the bytes reach that far.
fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Deserializes V2 or V2 + DEFLATE bytes; empty bytes are an empty latency histogram (an
/// interval with no samples may travel as nothing). Bytes from a peer are bounded before
/// hdrhistogram sees them: DEFLATE'd ones inflate to at most [`MAX_PAYLOAD_BYTES`] (plus the
/// header), and a V2 header must not claim more payload than follows it.
pub fn decode(bytes: &[u8]) -> Result<Histogram<u64>, HistogramError> {
    if bytes.is_empty() {
        return Ok(new_latency());
    }
    let bad = |reason: String| HistogramError::Decode {
        len: bytes.len(),
        reason,
    };
    let inflated;
    let plain = if be_u32(bytes, 0) == Some(V2_DEFLATE_COOKIE) {
        // Outer header: cookie, compressed length; the compressed stream follows.
        let compressed = bytes.get(8..).unwrap_or_default();
        let claimed = be_u32(bytes, 4).unwrap_or_default() as usize;
        let compressed = &compressed[..claimed.min(compressed.len())];
        let mut out = Vec::new();
        let limit = (V2_HEADER_BYTES + MAX_PAYLOAD_BYTES) as u64;
        flate2::read::ZlibDecoder::new(compressed)
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("inflating: {e}")))?;
        if out.len() as u64 > limit {
            return Err(bad(format!("inflates to more than {limit} bytes")));
        }
        inflated = out;
        inflated.as_slice()
    } else {
        bytes
    };
    if be_u32(plain, 0) == Some(V2_COOKIE) {
        let claimed = be_u32(plain, 4).unwrap_or_default() as usize;
        let follows = plain.len().saturating_sub(V2_HEADER_BYTES);
        if claimed > follows {
            return Err(bad(format!(
                "header claims a payload of {claimed} bytes, {follows} follow"
            )));
        }
        if claimed > MAX_PAYLOAD_BYTES {
            return Err(bad(format!(
                "payload of {claimed} bytes, at most {MAX_PAYLOAD_BYTES} read"
            )));
        }
    }
    let mut reader = plain;
    Deserializer::new()
        .deserialize(&mut reader)
        .map_err(|e| bad(format!("{e:?}")))
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

    /// Found by proto/tests/decoders.rs: a 40-byte V2 header claiming a 4 GiB payload made
    /// hdrhistogram allocate and zero 4 GiB before failing to read it (4.2 GB RSS, 25 s in a
    /// debug build); plain or inside a DEFLATE stream, the claim is now refused first.
    #[test]
    fn a_header_claiming_a_huge_payload_is_refused_before_allocating() {
        let mut header = V2_COOKIE.to_be_bytes().to_vec();
        header.extend(u32::MAX.to_be_bytes()); // payload length
        header.extend(0u32.to_be_bytes()); // normalizing offset
        header.extend(3u32.to_be_bytes()); // digits
        header.extend(1u64.to_be_bytes()); // low
        header.extend(MAX_LATENCY_US.to_be_bytes()); // high
        header.extend(1.0f64.to_be_bytes()); // int/double ratio
        let e = decode(&header).unwrap_err().to_string();
        assert!(
            e.contains("claims a payload of 4294967295 bytes, 0 follow"),
            "{e}"
        );
        // A payload that is there but larger than any latency histogram's is refused too.
        let mut big = header.clone();
        big[4..8].copy_from_slice(&((MAX_PAYLOAD_BYTES + 1) as u32).to_be_bytes());
        big.resize(V2_HEADER_BYTES + MAX_PAYLOAD_BYTES + 1, 0);
        let e = decode(&big).unwrap_err().to_string();
        assert!(e.contains("at most 4194304 read"), "{e}");

        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut z, &header).unwrap();
        let compressed = z.finish().unwrap();
        let mut deflated = V2_DEFLATE_COOKIE.to_be_bytes().to_vec();
        deflated.extend((compressed.len() as u32).to_be_bytes());
        deflated.extend(compressed);
        let e = decode(&deflated).unwrap_err().to_string();
        assert!(e.contains("claims a payload of 4294967295 bytes"), "{e}");

        // The cookies are hdrhistogram's: a real encoding starts with the DEFLATE one, and
        // inflated, with the V2 one.
        let real = encode(&new_latency()).unwrap();
        assert_eq!(be_u32(&real, 0), Some(V2_DEFLATE_COOKIE));
    }
}
