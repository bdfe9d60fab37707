//! Merge time for 1,000 simulated agents' interval results: decode V2+DEFLATE histograms
//! and add them exactly, as the coordinator does when a large fleet reports each second.
//! Prints numbers; asserts nothing (tests check behaviour, benches measure).
//!
//! Run: `cargo bench -p stampede --bench merge`

use std::time::Instant;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use stampede_proto::pb;
use stampede_proto::tally::Tally;

fn main() {
    let agents = 1_000u64;
    let per_agent = 10_000u64;
    // Each agent's interval: 10k connects, most fast, a share at the 1 s and 3 s SYN steps.
    let results: Vec<pb::IntervalResult> = (0..agents)
        .map(|a| {
            let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
            for i in 0..per_agent {
                let v = match (i + a) % 20 {
                    0 => 1_024_000 + (i * 37 + a) % 20_000,
                    1 => 3_074_000 + (i * 11) % 30_000,
                    _ => 4 + (i * 7 + a * 3) % 400,
                };
                h.record(v).unwrap();
            }
            let mut bytes = Vec::new();
            V2DeflateSerializer::new()
                .serialize(&h, &mut bytes)
                .unwrap();
            pb::IntervalResult {
                run_id: "bench".into(),
                seq: 0,
                outcomes: Some(pb::Outcomes {
                    established: per_agent * 18 / 20,
                    syn_retransmitted: per_agent * 2 / 20,
                    ..Default::default()
                }),
                syn_retransmits: [(1, per_agent / 20), (3, per_agent / 20)].into(),
                connect_latency_hist: bytes,
                ..Default::default()
            }
        })
        .collect();
    let bytes: usize = results.iter().map(|r| r.connect_latency_hist.len()).sum();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let mut tally = Tally::default();
        for r in &results {
            tally.add_wire(r).unwrap();
        }
        assert_eq!(tally.connect_latency.len(), agents * per_agent);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "merge: {agents} agents x {per_agent} samples, {:.1} KiB of histograms: best of 5 {:.1} ms ({:.1} us per agent)",
        bytes as f64 / 1024.0,
        best * 1e3,
        best * 1e6 / agents as f64
    );
}
