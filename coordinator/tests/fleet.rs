//! A fleet of real agent processes against one coordinator, as a user runs it: 200
//! `stampede-agent` daemons and `stampede run` in a network namespace of the test's own, 10
//! connections each at a loopback target that counts what it accepted. Nobody may be lost
//! (no agent refuses a late Start, none goes silent), every attempt is accounted for
//! (classified by the agents or skipped by a starved agent, and, for those that connected,
//! seen by the target), within bounds that hold on a loaded 2-core machine; the report
//! states the pacing the run chose and the fleet's issue lag.
//! How the coordinator's memory grows with the run's length is `tests/fleet_memory.rs`.
//! Kernel tests: they need root. The 1,000-agent version is
//! `cargo bench -p stampede --bench fleet`.

use std::time::Duration;

use stampede_lab::{Netns, kernel_tests_enabled};

#[path = "support/fleet.rs"]
mod fleet;

use fleet::{Fleet, bin, clean, out_dir, secs};

/// One fleet at a time: each test measures a fleet on this machine, not two fleets sharing
/// its cores (a 200-agent burst beside a 40-agent ramp starved both into late Starts).
static ONE_FLEET: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fleet(agents: usize, per_agent: u64, pattern: &str, tag: &str) -> Fleet {
    Fleet {
        agents,
        per_agent,
        pattern: pattern.to_owned(),
        stampede: std::path::PathBuf::from(env!("CARGO_BIN_EXE_stampede")),
        agent: bin("stampede-agent"),
        out: out_dir(tag),
        limit: Duration::from_secs(180),
    }
}

#[test]
fn two_hundred_agents_run_whole_and_account_for_every_attempt() {
    if !kernel_tests_enabled("two_hundred_agents_run_whole_and_account_for_every_attempt") {
        return;
    }
    let _one = ONE_FLEET.lock().unwrap_or_else(|e| e.into_inner());
    const AGENTS: usize = 200;
    let ns = Netns::new("fleet200").unwrap();
    let f = fleet(AGENTS, 10, "burst", "fleet200");
    let m = fleet::run(&ns, &f);
    eprintln!(
        "200 agents: attach {} (spawning {:.3}s), prepare {}, run {}, total {:.3}s, peak RSS {} MiB; {}",
        secs(m.attach),
        m.spawn.as_secs_f64(),
        secs(m.prepare),
        secs(m.run),
        m.total.as_secs_f64(),
        m.peak_rss_kib / 1024,
        m.start_line
    );
    let r = m.report.as_ref().unwrap_or_else(|| {
        panic!(
            "no report.json; the coordinator said:\n{}",
            m.log_tail.join("\n")
        )
    });
    let why = || {
        format!(
            "{}; agents' logs in {}",
            r["verdict"],
            fleet::agents_log(&f.out).display()
        )
    };
    // The coordinator's part: nobody lost, no agent refused a Start that came too late, no
    // result missing. An agent *process* starved past the late bound (250 ms) on a loaded
    // 2-core machine skips what fell due and says so, as it must (docs/design.md "Never
    // late, never alone"): that is the host's load, counted below, not a lost attempt.
    //
    // A Start that reaches a starved agent process after the instant is refused, never fired
    // late; on a loaded 2-core CI machine 2 of 200 agents did (25-73 ms late). That is the
    // behaviour this test checks (the run stays honest: partial, every attempt accounted
    // for); how many a fleet loses is the bench's figure (issue 15). A coordinator that
    // paced Start badly again (hundreds refused, as with the fixed lead) still fails here.
    let lost = r["lost_agents"].as_array().unwrap();
    let refused_late = lost.len() as u64;
    for agent in lost {
        let reason = r["lost_reasons"][agent.as_str().unwrap()]
            .as_str()
            .unwrap_or("");
        assert!(
            reason.contains("refused to fire") && reason.contains("start"),
            "{agent} lost for another reason: {reason}; {}",
            why()
        );
    }
    assert!(refused_late <= AGENTS as u64 / 20, "{}", why());
    assert_eq!(r["agents"].as_array().map(Vec::len), Some(AGENTS));
    for (agent, reason) in r["cut_reasons"].as_object().unwrap() {
        assert!(
            reason.as_str().unwrap().contains("stalled"),
            "{agent}: {reason}; {}",
            why()
        );
    }
    let skipped = r["skipped_overdue"].as_u64().unwrap();
    let partial = skipped > 0 || refused_late > 0;
    assert_eq!(r["partial"], partial, "{}", why());
    let o = &r["outcomes"];
    let total: u64 = o
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        total + skipped + 10 * refused_late,
        2_000,
        "every attempt classified, skipped, or never fired by an agent that refused a late \
         Start: {o}"
    );
    let connected = o["established"].as_u64().unwrap() + o["syn_retransmitted"].as_u64().unwrap();
    assert_eq!(
        m.accepted as u64, connected,
        "the target's own count equals what the agents saw connect"
    );
    assert_eq!(r["issue_lag_us"]["count"], total, "{}", r["issue_lag_us"]);
    let pacing = &r["pacing"];
    assert_eq!(pacing["prepare_timeout_ms"], 36_000, "{pacing}");
    assert!(pacing["liveness_ms"].as_u64().unwrap() >= 3_400, "{pacing}");
    // Welcome's 2 s (1 s heartbeat) + 2 ms per agent.
    assert_eq!(pacing["agent_liveness_ms"], 2_400, "{pacing}");
    let basis = pacing["start_lead_basis"].as_str().unwrap();
    assert!(basis.contains("to 200 agents"), "{basis}");
    assert!(
        !basis.contains("did not echo"),
        "every agent echoed: {basis}"
    );
    assert_eq!(m.exit, Some(if partial { 1 } else { 0 }));
    // Loose bounds for a loaded 2-core machine (the bench prints the figures).
    assert!(m.total < Duration::from_secs(90), "{:?}", m.total);
    // 30 MiB here on a loaded machine; 209 MiB when the report kept every agent's decoded
    // tally (three ~0.2 MB histograms each) and the hlog held a second's of them at once.
    assert!(m.peak_rss_kib < 100 * 1024, "{} KiB", m.peak_rss_kib);
    clean(&f.out);
}
