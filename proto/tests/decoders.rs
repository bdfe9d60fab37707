//! Property tests for every decoder of outside input in proto: histogram bytes, interval-log
//! text, durations, patterns, errno names, token files, and the two gRPC messages a peer
//! fills with numbers (`Prepare`, the result messages' tallies). Each decoder must answer
//! any input with Ok or an error, never a panic, and what stampede writes must read back.
//! Generated inputs find the panics and lossy round-trips hand-picked cases miss.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use stampede_proto::clock::{self, ClockSample};
use stampede_proto::duration::{format_duration, parse_duration};
use stampede_proto::histogram::{self, MAX_LATENCY_US};
use stampede_proto::outcome::Errno;
use stampede_proto::pattern::Pattern;
use stampede_proto::pb;
use stampede_proto::plan::Load;
use stampede_proto::tally::Tally;
use stampede_proto::token::Token;
use stampede_proto::{backlog, hlog, token, usage};

/// Every allocation of this test binary is capped: a decoder that trusts a length read from
/// its input and allocates it makes the process abort here, naming the size ("memory
/// allocation of N bytes failed"), instead of quietly taking gigabytes.
struct Capped;

/// The cap: far above what any decoder needs for the inputs below (a histogram with the
/// widest layout a header may ask for takes about 50 MB).
const MAX_ALLOCATION: usize = 256 << 20;

// SAFETY: every call is forwarded unchanged to the system allocator, except oversized
// requests, which return null as the `GlobalAlloc` contract allows for a failed allocation.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract (non-zero size) is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` came from `System` with `layout`; the caller's contract holds.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

/// Cases per property: enough to find a panic, few enough that the suite takes seconds.
fn config() -> ProptestConfig {
    ProptestConfig::with_cases(384)
}

/// A latency histogram with up to `n` (value, count) pairs recorded.
fn latency_histogram(n: usize) -> impl Strategy<Value = hdrhistogram::Histogram<u64>> {
    prop::collection::vec((1..=MAX_LATENCY_US, 1..1_000_000u64), 0..n).prop_map(|samples| {
        let mut h = histogram::new_latency();
        for (v, c) in samples {
            h.record_n(v, c).expect("values are within the layout");
        }
        h
    })
}

/// V2 headers with every field chosen by the generator: the payload length, digits, range
/// and ratio, then some payload bytes; sent plain or DEFLATE'd (hdrhistogram's cookies,
/// 0x1c849313 and 0x1c849314). Random bytes almost never get past the cookie; these reach
/// the decoder's allocation and counting code.
fn v2_header() -> BoxedStrategy<Vec<u8>> {
    (
        prop_oneof![any::<u32>(), Just(u32::MAX), 0..64u32],
        prop_oneof![Just(0u32), any::<u32>()],
        0u32..8,
        prop_oneof![Just(1u64), any::<u64>()],
        prop_oneof![Just(MAX_LATENCY_US), Just(u64::MAX), any::<u64>()],
        prop_oneof![Just(1.0f64), any::<f64>()],
        prop::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
    )
        .prop_map(
            |(len, offset, digits, low, high, ratio, payload, deflate)| {
                // The V2 cookie, then the fields in the order the decoder reads them.
                let mut b = 0x1c84_9313u32.to_be_bytes().to_vec();
                b.extend(len.to_be_bytes());
                b.extend(offset.to_be_bytes());
                b.extend(digits.to_be_bytes());
                b.extend(low.to_be_bytes());
                b.extend(high.to_be_bytes());
                b.extend(ratio.to_be_bytes());
                b.extend(payload);
                if !deflate {
                    return b;
                }
                let mut z =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                std::io::Write::write_all(&mut z, &b).unwrap();
                let z = z.finish().unwrap();
                let mut outer = 0x1c84_9314u32.to_be_bytes().to_vec();
                outer.extend((z.len() as u32).to_be_bytes());
                outer.extend(z);
                outer
            },
        )
        .boxed()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn histogram_decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = histogram::decode(&bytes);
    }

    /// A header that claims a 4 GiB payload is refused before anything is allocated for it
    /// (each case would otherwise take seconds and gigabytes).
    #[test]
    fn histogram_decode_of_forged_headers_never_panics(bytes in v2_header()) {
        let _ = histogram::decode(&bytes);
    }

    #[test]
    fn histogram_round_trips(h in latency_histogram(64)) {
        let back = histogram::decode(&histogram::encode(&h).unwrap()).unwrap();
        prop_assert_eq!(back, h);
    }

    #[test]
    fn hlog_parse_never_panics(text in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = hlog::parse(&text);
    }

    /// Text shaped like log lines (a tag, timestamps, base64) reaches the line parser.
    #[test]
    fn hlog_parse_of_line_shaped_text_never_panics(
        text in "(#[^\n]{0,20}\n|(Tag=[^,\n]{0,8},)?[0-9]{0,22}\\.[0-9]{0,12},[0-9.]{0,8},[0-9.e+-]{0,8},[A-Za-z0-9+/=]{0,40}\r?\n){0,6}"
    ) {
        let _ = hlog::parse(text.as_bytes());
    }

    #[test]
    fn hlog_round_trips(
        comments in prop::collection::vec(any::<String>(), 0..3),
        start in any::<i64>(),
        lines in prop::collection::vec(
            (any::<u32>(), prop::option::of(any::<String>()), latency_histogram(8)),
            0..6,
        ),
    ) {
        let text = hlog::render(&comments, start, |out| {
            for (seq, tag, h) in &lines {
                out.line(*seq, tag.as_deref(), h)?;
            }
            Ok(())
        })
        .unwrap();
        let back = hlog::parse(&text).unwrap();
        prop_assert_eq!(back.len(), lines.len());
        for (got, (seq, tag, h)) in back.iter().zip(&lines) {
            prop_assert_eq!(got.seq, *seq);
            prop_assert_eq!(&got.histogram, h);
            // The tag comes back with the characters the format forbids replaced.
            let safe = tag.as_ref().map(|t| t.replace([',', ' ', '\r', '\n'], "_"));
            prop_assert_eq!(&got.tag, &safe);
        }
    }

    #[test]
    fn parse_duration_never_panics(s in any::<String>()) {
        let _ = parse_duration(&s);
    }

    #[test]
    fn parse_duration_of_number_shaped_text_never_panics(
        s in "[ ]?[0-9.]{0,30}(ns|us|µs|ms|s|m|h|x|)[ ]?"
    ) {
        let _ = parse_duration(&s);
    }

    /// Every duration up to a day, at microsecond precision, reads back as itself.
    #[test]
    fn format_duration_round_trips(us in 0..=24 * 3600 * 1_000_000u64) {
        let d = Duration::from_micros(us);
        prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{}", format_duration(d));
    }

    #[test]
    fn pattern_from_str_never_panics(s in any::<String>()) {
        let _ = s.parse::<Pattern>();
    }

    #[test]
    fn pattern_shaped_text_never_panics_and_reads_back(
        s in "(burst|ramp|waves|x)(:[0-9.e+-]{0,24}(ns|us|ms|s|m|h)?){0,3}"
    ) {
        if let Ok(p) = s.parse::<Pattern>() {
            prop_assert_eq!(p.to_string().parse::<Pattern>(), Ok(p));
        }
    }

    /// Patterns with any rate and durations at microsecond precision print and read back.
    #[test]
    fn pattern_display_round_trips(p in pattern()) {
        prop_assert_eq!(p.to_string().parse::<Pattern>(), Ok(p), "{}", p);
    }

    #[test]
    fn errno_from_str_never_panics_and_round_trips(s in "(errno [+-]?[0-9]{0,12}|E[A-Z]{0,14}|.{0,8})") {
        if let Ok(e) = s.parse::<Errno>() {
            prop_assert_eq!(e.to_string().parse::<Errno>(), Ok(e));
        }
    }

    #[test]
    fn errno_display_round_trips(n in any::<i32>()) {
        prop_assert_eq!(Errno(n).to_string().parse::<Errno>(), Ok(Errno(n)));
    }

    /// Absurd Prepare values: never a panic, and whatever is accepted follows every rule.
    #[test]
    fn prepare_with_absurd_values_never_panics(p in prepare()) {
        if let Ok(load) = Load::try_from(&p) {
            prop_assert_eq!(load.check(), Ok(()));
            // What is accepted travels again unchanged in its settings.
            let again = Load::try_from(&load.to_prepare(&p.run_id));
            prop_assert!(again.is_ok(), "{:?}", again);
        }
    }

    /// Absurd result tallies: counts that would pass u64::MAX saturate, never wrap or
    /// panic, and a failure adds nothing.
    #[test]
    fn tally_add_wire_with_absurd_maps_never_panics(
        a in interval_result(),
        b in interval_result(),
    ) {
        let mut t = Tally::default();
        let first = t.add_wire(&a);
        let after_first = t.clone();
        let second = t.add_wire(&b);
        if second.is_err() {
            prop_assert_eq!(&t, &after_first, "a failed add changed the tally");
        }
        if first.is_ok() && second.is_ok() {
            // Saturating: every count is at least what either message carried.
            let (oa, ob) = (a.outcomes.unwrap_or_default(), b.outcomes.unwrap_or_default());
            prop_assert!(t.outcomes.established >= oa.established.max(ob.established));
            prop_assert!(t.outcomes.ghost >= oa.ghost.max(ob.ghost));
            for (k, n) in a.syn_retransmits.iter().chain(&b.syn_retransmits) {
                prop_assert!(t.syn_retransmits[k] >= *n);
            }
        }
        let _ = t.attempts();
        let _ = t.to_wire();
        let mut merged = Tally::default();
        let _ = merged.merge(&t);
        let _ = merged.merge(&t);
    }

    /// Clock probes carry the peer's timestamps: any i64s give an estimate, never a panic,
    /// and plausible ones (within a few centuries of the epoch) give the formula's values.
    #[test]
    fn clock_estimates_of_any_timestamps_never_panic(
        t in prop::collection::vec(
            prop_oneof![any::<i64>(), Just(i64::MAX), Just(i64::MIN), -(1i64 << 62)..(1i64 << 62)],
            4..=16,
        ),
        now in any::<i64>(),
    ) {
        let samples: Vec<ClockSample> = t
            .chunks_exact(4)
            .map(|c| ClockSample { t0: c[0], t1: c[1], t2: c[2], t3: c[3] })
            .collect();
        let e = clock::best(&samples).unwrap();
        let _ = (e.to_agent(now), e.to_coordinator(now), e.uncertainty_ns());
        let _ = clock::rfc3339(now);
        let s = samples[0];
        if [s.t0, s.t1, s.t2, s.t3].iter().all(|t| t.unsigned_abs() < 1 << 61) {
            prop_assert_eq!(s.offset_ns(), ((s.t1 - s.t0) + (s.t2 - s.t3)) / 2);
            prop_assert_eq!(s.rtt_ns(), ((s.t3 - s.t0) - (s.t2 - s.t1)).max(0) as u64);
        }
    }

    /// Error lines echo outside values cut; any text is cut without a panic, and what is
    /// echoed stays bounded.
    #[test]
    fn error_lines_of_any_text_never_panic(text in any::<String>(), long in "[a-z'\"` ]{0,400}") {
        for t in [&text, &long] {
            let line = usage::one_line(t);
            prop_assert!(line.chars().count() <= usage::MAX_LINE_CHARS + 1);
            let _ = usage::cut_values(t);
            let _ = backlog::parse(t);
        }
    }

    /// Any token file contents: Ok (a printable token) or a named error, never a panic.
    #[test]
    fn token_file_of_any_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..5000)) {
        let dir = TempDir::new();
        let path = dir.0.join("token");
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(t) = Token::from_file(&path) {
            let v = t.header_value();
            let tok = v.strip_prefix("Bearer ").unwrap();
            prop_assert!(!tok.is_empty() && tok.len() <= token::MAX_TOKEN_BYTES);
            prop_assert!(tok.bytes().all(|b| b.is_ascii_graphic()));
        }
    }
}

/// A pattern the text syntax can carry exactly: rates as f64 print in full, durations at
/// microsecond precision up to a day.
fn pattern() -> BoxedStrategy<Pattern> {
    let dur = (0..=24 * 3600 * 1_000_000u64).prop_map(Duration::from_micros);
    let rate = prop_oneof![
        (1u32..100_000).prop_map(f64::from),
        (1e-9f64..1e12f64),
        any::<f64>().prop_filter("a positive finite rate", |r| r.is_finite() && *r > 0.0),
    ];
    prop_oneof![
        Just(Pattern::Burst),
        (
            rate,
            dur.clone().prop_filter("a ramp lasts", |d| !d.is_zero())
        )
            .prop_map(|(rate, duration)| Pattern::Ramp { rate, duration }),
        (1..=u32::MAX, dur).prop_map(|(waves, period)| Pattern::Waves { waves, period }),
    ]
    .boxed()
}

fn absurd_u64() -> BoxedStrategy<u64> {
    prop_oneof![
        Just(0u64),
        Just(1u64),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(u64::MAX / 2 + 1),
        0..100_000u64,
        any::<u64>(),
    ]
    .boxed()
}

fn absurd_f64() -> BoxedStrategy<f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-1.0),
        Just(0.0),
        Just(-0.0),
        Just(f64::MIN_POSITIVE),
        Just(5e-324),
        Just(f64::MAX),
        0.0f64..1e6,
        any::<f64>(),
    ]
    .boxed()
}

fn prepare() -> BoxedStrategy<pb::Prepare> {
    let target = prop_oneof![
        Just("127.0.0.1:9000".to_owned()),
        Just("[::1]:1".to_owned()),
        Just("198.18.0.1:65535".to_owned()),
        Just("127.0.0.1:65536".to_owned()),
        Just(String::new()),
        any::<String>(),
        "[0-9.:\\[\\]a-f]{0,30}",
    ];
    let pattern = (
        prop_oneof![0..4i32, any::<i32>()],
        absurd_f64(),
        absurd_u64(),
        prop_oneof![Just(0u32), Just(1u32), Just(u32::MAX), any::<u32>()],
        absurd_u64(),
    )
        .prop_map(
            |(kind, rate_per_sec, duration_ms, waves, period_ms)| pb::Pattern {
                kind,
                rate_per_sec,
                duration_ms,
                waves,
                period_ms,
            },
        );
    (
        any::<String>(),
        prop::collection::vec(target, 0..3),
        absurd_u64(),
        prop::option::of(pattern),
        absurd_u64(),
        absurd_u64(),
        prop_oneof![0..4i32, any::<i32>()],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(run_id, targets, connections, pattern, timeout_ms, hold_ms, close, greet, probe)| {
                pb::Prepare {
                    run_id,
                    targets,
                    connections,
                    pattern,
                    timeout_ms,
                    hold_ms,
                    close,
                    expect_greeting: greet,
                    probe_admission: probe,
                    liveness_ms: 0,
                }
            },
        )
        .boxed()
}

fn counts_by_k() -> BoxedStrategy<HashMap<u32, u64>> {
    prop::collection::hash_map(prop_oneof![0..8u32, any::<u32>()], absurd_u64(), 0..4).boxed()
}

/// Histogram bytes a peer may send: real ones (some with huge counts), none, or garbage.
fn histogram_bytes() -> BoxedStrategy<Vec<u8>> {
    let huge = (1..=MAX_LATENCY_US, absurd_u64()).prop_map(|(v, c)| {
        let mut h = histogram::new_latency();
        // V2 carries counts as i64: the largest a peer can send.
        h.record_n(v, c.clamp(1, i64::MAX as u64)).unwrap();
        histogram::encode(&h).unwrap()
    });
    prop_oneof![
        Just(Vec::new()),
        latency_histogram(4).prop_map(|h| histogram::encode(&h).unwrap()),
        huge,
        prop::collection::vec(any::<u8>(), 0..64),
        v2_header(),
    ]
    .boxed()
}

fn interval_result() -> BoxedStrategy<pb::IntervalResult> {
    let outcomes = (
        absurd_u64(),
        absurd_u64(),
        absurd_u64(),
        absurd_u64(),
        absurd_u64(),
        absurd_u64(),
        absurd_u64(),
        absurd_u64(),
    )
        .prop_map(
            // Other branches add outcome classes; the rest stay zero.
            #[allow(clippy::needless_update)]
            |(a, b, c, d, e, f, g, h)| pb::Outcomes {
                established: a,
                syn_retransmitted: b,
                refused: c,
                reset: d,
                timeout: e,
                pending: f,
                error: g,
                ghost: h,
                ..Default::default()
            },
        );
    let errno_name = prop_oneof![
        Just("EADDRNOTAVAIL".to_owned()),
        Just("ECONNRESET".to_owned()),
        "errno -?[0-9]{1,11}",
        any::<String>(),
    ];
    (
        prop::option::of(outcomes),
        counts_by_k(),
        counts_by_k(),
        counts_by_k(),
        prop::collection::hash_map(errno_name, absurd_u64(), 0..3),
        histogram_bytes(),
        histogram_bytes(),
    )
        .prop_map(
            |(outcomes, syn, ghost, pending, errors, connect, ttfb)| pb::IntervalResult {
                outcomes,
                syn_retransmits: syn,
                ghost_syn_retransmits: ghost,
                pending_syn_retransmits: pending,
                errors,
                connect_latency_hist: connect,
                ttfb_hist: ttfb,
                ..Default::default()
            },
        )
        .boxed()
}

/// A directory removed when dropped, even when a property fails.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "stampede-props-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
