//! A fleet of real agent processes against one coordinator (`tests/support/fleet.rs`): by
//! default 1,000 `stampede-agent` daemons and `stampede run` in one network namespace, 10
//! connections each in a burst at a loopback target that counts what it accepted; then 100
//! agents on a 10-minute ramp, the coordinator's RSS sampled throughout. Prints the
//! figures (agents, wall time per phase, coordinator peak RSS, partial or not, the pacing
//! the run chose); asserts nothing. Needs root.
//!
//! Run: `cargo bench -p stampede --bench fleet`. `STAMPEDE_FLEET_AGENTS=N` changes the
//! burst's fleet, `STAMPEDE_FLEET_RUNS=N` its repetitions (default 3),
//! `STAMPEDE_FLEET_MINUTES=M` the long run (0 skips it), `STAMPEDE_FLEET_STALL_SECS=S` the
//! machine's stall probe before the runs (`stampede_lab::stalls`; default 2, 0 skips it).

use std::time::Duration;

use stampede_lab::Netns;

#[path = "../tests/support/fleet.rs"]
mod fleet;
mod support;

use fleet::{Fleet, Measured, bin, clean, out_dir, secs};
use support::{env, load};

/// Lost agents' reasons, grouped by their first words, most common first.
fn lost_reasons(m: &Measured) -> String {
    let mut by = std::collections::BTreeMap::<String, usize>::new();
    let reasons = m
        .report
        .as_ref()
        .and_then(|r| r["lost_reasons"].as_object().cloned());
    for why in reasons.into_iter().flatten().map(|(_, v)| v) {
        let words: Vec<&str> = why
            .as_str()
            .unwrap_or("")
            .split_whitespace()
            .take(6)
            .collect();
        *by.entry(words.join(" ")).or_default() += 1;
    }
    let mut by: Vec<_> = by.into_iter().collect();
    by.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    by.iter()
        .take(3)
        .map(|(w, n)| format!("{n} x \"{w} ...\""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(m: &Measured) -> String {
    let r = m.report.as_ref();
    let get = |k: &str| r.map_or(serde_json::Value::Null, |r| r[k].clone());
    let lost = get("lost_agents").as_array().map_or(0, Vec::len);
    format!(
        "partial {} (lost {lost}, skipped {}), outcomes {}, accepted by the target {}, issue lag p99 {} µs max {} µs, start spread {} µs; {}",
        get("partial"),
        get("skipped_overdue"),
        get("outcomes"),
        m.accepted,
        get("issue_lag_us")["p99"],
        get("issue_lag_us")["max"],
        get("start_spread_us"),
        get("pacing")["start_lead_basis"]
    )
}

fn main() {
    if !stampede_lab::is_root() {
        eprintln!("fleet bench: needs root (network namespaces); skipped");
        return;
    }
    let agents = env("STAMPEDE_FLEET_AGENTS", 1_000) as usize;
    let runs = env("STAMPEDE_FLEET_RUNS", 3);
    let minutes = env("STAMPEDE_FLEET_MINUTES", 10);
    let (stampede, agent) = (
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_stampede")),
        bin("stampede-agent"),
    );
    let ns = Netns::new("fleetb").expect("creating the namespace");
    println!(
        "fleet bench, {} UTC",
        stampede_proto::clock::rfc3339(stampede_proto::clock::unix_nanos_now())
    );
    // What the machine itself takes from each CPU, before the fleet adds its own load.
    stampede_lab::stalls::print_probe(
        "the machine",
        std::time::Duration::from_secs(env("STAMPEDE_FLEET_STALL_SECS", 2)),
    );
    for run in 1..=runs {
        let f = Fleet {
            agents,
            per_agent: 10,
            pattern: "burst".into(),
            stampede: stampede.clone(),
            agent: agent.clone(),
            out: out_dir("fleetb"),
            limit: Duration::from_secs(600),
        };
        let before = load();
        let m = fleet::run(&ns, &f);
        println!(
            "burst run {run}: {agents} agents x 10: attach {} (spawning {:.3}s), prepare {}, run+report {}, total {:.3}s; coordinator peak RSS {} MiB; exit {:?}; load {before}",
            secs(m.attach),
            m.spawn.as_secs_f64(),
            secs(m.prepare),
            secs(m.run),
            m.total.as_secs_f64(),
            m.peak_rss_kib / 1024,
            m.exit,
        );
        println!("  {}", describe(&m));
        let lost = lost_reasons(&m);
        if !lost.is_empty() {
            println!("  lost: {lost}");
        }
        if m.report.is_none() || std::env::var_os("STAMPEDE_FLEET_KEEP").is_some() {
            for line in m.log_tail.iter().rev().take(5).rev() {
                println!("  coordinator: {line}");
            }
            let log = fleet::agents_log(&f.out);
            let kept = log.with_extension(format!("run{run}.log"));
            let _ = std::fs::rename(&log, &kept);
            println!("  agents' logs kept in {}", kept.display());
            let report = f.out.join("report.json");
            let kept = log.with_extension(format!("run{run}.json"));
            if std::fs::copy(&report, &kept).is_ok() {
                println!("  report kept in {}", kept.display());
            }
        }
        clean(&f.out);
    }
    if minutes == 0 {
        return;
    }
    let secs_total = minutes * 60;
    // 100 agents, 10 connects a second each.
    let f = Fleet {
        agents: 100,
        per_agent: 10 * secs_total,
        pattern: format!("ramp:1000:{secs_total}s"),
        stampede,
        agent,
        out: out_dir("fleetb-long"),
        limit: Duration::from_secs(secs_total + 300),
    };
    let before = load();
    let m = fleet::run(&ns, &f);
    println!(
        "ramp run: 100 agents, {minutes} min at 1,000/s: total {:.1}s, peak RSS {} MiB, exit {:?}; load {before}",
        m.total.as_secs_f64(),
        m.peak_rss_kib / 1024,
        m.exit
    );
    println!("  {}", describe(&m));
    let step = (secs_total / 10).max(1);
    let mut line = String::from("  coordinator RSS (MiB) by minute of the run:");
    for t in (0..=secs_total).step_by(step as usize) {
        if let Some((_, kib)) = m.rss.iter().find(|(at, _)| at.as_secs() >= t) {
            line += &format!(" {t}s={}", kib / 1024);
        }
    }
    println!("{line}");
    clean(&f.out);
}
