//! The `stampede` binary as a user meets it: usage errors are one line and exit 64, a
//! scenario error names file, line and key, and waiting for agents ends with a clear error.

use std::process::Command;

use support::sibling_bin;

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_stampede");

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn last_line(s: &str) -> &str {
    s.trim().lines().last().unwrap_or("")
}

#[test]
fn usage_errors_exit_64_with_one_line() {
    for (args, needle) in [
        (&["run", "--connections", "many"][..], "many"),
        (
            &["run", "--listen", "127.0.0.1:0", "--connections", "5"][..],
            "no target",
        ),
        (
            &[
                "run",
                "--listen",
                "127.0.0.1:0",
                "--target",
                "127.0.0.1:9",
                "--pattern",
                "spray",
            ][..],
            "spray",
        ),
        (
            &[
                "run",
                "--listen",
                "127.0.0.1:0",
                "--target",
                "127.0.0.1:9",
                "--backlog",
                "8",
            ][..],
            "--target-control",
        ),
        (
            &["run", "--listen", "0.0.0.0:0", "--target", "127.0.0.1:9"][..],
            "token",
        ),
        (
            &[
                "run",
                "--listen",
                "127.0.0.1:0",
                "--target",
                "127.0.0.1:9",
                "--token-file",
                "/no/such/token",
            ][..],
            "/no/such/token",
        ),
        (&["demo", "--agents", "0"][..], "agents"),
        (&["sweep", "--target", "127.0.0.1:9"][..], "--backlogs"),
        (
            &["sweep", "--target", "127.0.0.1:9", "--backlogs", "8,x"][..],
            "\"x\"",
        ),
        (
            &[
                "sweep",
                "--target",
                "127.0.0.1:9",
                "--backlogs",
                "8",
                "--accept-rates",
                "-3",
            ][..],
            "-3",
        ),
        (
            &[
                "sweep",
                "--listen",
                "127.0.0.1:0",
                "--target",
                "127.0.0.1:9",
                "--backlogs",
                "8",
            ][..],
            "--target-control",
        ),
        (&["fly"][..], "fly"),
    ] {
        let (code, stderr) = run(args);
        assert_eq!(code, 64, "{args:?}: {stderr}");
        assert!(last_line(&stderr).contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn scenario_errors_name_file_line_and_key() {
    let dir = std::env::temp_dir().join(format!("stampede-scn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "agents = 2\ntarget = \"127.0.0.1:9\"\nconections = 10\n",
    )
    .unwrap();
    let (code, stderr) = run(&["run", path.to_str().unwrap()]);
    assert_eq!(code, 64, "{stderr}");
    let line = last_line(&stderr);
    assert!(line.contains(&format!("{}:3", path.display())), "{line}");
    assert!(line.contains("conections"), "{line}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_agents_time_out_with_a_clear_error() {
    let (code, stderr) = run(&[
        "run",
        "--listen",
        "127.0.0.1:0",
        "--target",
        "127.0.0.1:9",
        "--agents",
        "2",
        "--agent-wait",
        "300ms",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        last_line(&stderr).contains("for 2 agents, 0 attached"),
        "{stderr}"
    );
}

/// The README's demo, in a network namespace of its own so the kernel's counters in its report
/// are the demo's alone: assert what the kernel must do with 60 connects at backlog 8.
#[test]
fn demo_runs_a_real_burst_from_the_readme_command() {
    if !stampede_lab::kernel_tests_enabled("demo_runs_a_real_burst_from_the_readme_command") {
        return;
    }
    let ns = stampede_lab::Netns::new("demo").unwrap();
    let dir = std::env::temp_dir().join(format!("stampede-demo-{}", std::process::id()));
    let out = ns
        .command(BIN)
        .args(["demo", "--out", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("attempts 60"), "{stdout}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["partial"], false);
    assert_eq!(r["agents"].as_array().unwrap().len(), 3);
    let o = &r["outcomes"];
    let n = |k: &str| o[k].as_u64().unwrap();
    let total: u64 = o
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 60);
    // Loopback, a listener that exists and accepts: nothing is refused, reset or lost.
    for k in ["refused", "reset", "timeout", "pending", "error"] {
        assert_eq!(n(k), 0, "{k}: {o}");
    }
    let t = &r["target"];
    let tn = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("target.{k}: {t}"));
    assert_eq!(tn("backlog_effective"), 8);
    // Backlog 8 admits A+1 = 9 at once, or A+2 = 10 when two handshakes complete on two CPUs
    // at the same moment (docs/kernel.md §1); never more, never fewer with 60 connects.
    assert!(
        (9..=10).contains(&tn("accept_queue_max")),
        "accept queue peak at backlog 8: {t}"
    );
    // The rest overflow: each of the 60 not admitted at once overflowed at least once, and
    // in this namespace every overflow is the demo's and is also counted as a drop.
    assert!(tn("listen_overflows") >= 60 - tn("accept_queue_max"), "{t}");
    assert_eq!(tn("listen_overflows"), tn("listen_drops"), "{t}");
    // Agents and target agree: every attempt that got the target's greeting (at once or
    // after a SYN retransmit) was accepted exactly once, and the ghosts never were.
    assert_eq!(
        tn("accepted"),
        n("established") + n("syn_retransmitted"),
        "target accepted vs agents greeted: {r}"
    );
    // The queue admits 9 or 10 at once; the target accepting at 50/s during the burst can
    // make room for a few more, never for all.
    assert!(n("established") >= 9, "{o}");
    assert!(n("syn_retransmitted") + n("ghost") >= 1, "{o}");
    // Ghosts travel with the k their connect() took, and every one is counted by k.
    let by_k = |key: &str| -> u64 {
        r[key]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum()
    };
    assert_eq!(by_k("ghost_syn_retransmits"), n("ghost"), "{r}");
    assert_eq!(by_k("syn_retransmits"), n("syn_retransmitted"), "{r}");
    // The same run as CSV (header, 3 agents, total) and as a page with its two plots.
    let text = std::fs::read_to_string(dir.join("report.csv")).unwrap();
    let mut csv = csv::Reader::from_reader(text.as_bytes());
    let header = csv.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    let kinds: Vec<&str> = rows.iter().map(|row| &row[col("row")]).collect();
    assert_eq!(kinds, ["agent", "agent", "agent", "total"], "{text}");
    for (row, a) in rows.iter().zip(r["agents"].as_array().unwrap()) {
        assert_eq!(&row[col("agent_id")], a["id"].as_str().unwrap(), "{text}");
    }
    let total = &rows[3];
    assert_eq!(
        &total[col("run_id")],
        r["run_id"].as_str().unwrap(),
        "{text}"
    );
    assert_eq!(&total[col("connections")], "60", "{text}");
    assert_eq!(&total[col("attempts")], "60", "{text}");
    // The page shows this run's figures, not just any page: its id, every outcome count,
    // each agent's attempts and the target's counters, as report.json has them.
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    for chart in ["completions", "percentiles"] {
        assert!(html.contains(&format!("data-chart=\"{chart}\"")), "{chart}");
    }
    let run_id = r["run_id"].as_str().unwrap();
    assert!(
        html.contains(&format!("<title>stampede run {run_id}</title>")),
        "{html}"
    );
    for (class, count) in o.as_object().unwrap() {
        let row = format!("<tr><td>{class}</td><td>{count}</td><td>");
        assert!(html.contains(&row), "missing {row} in {html}");
    }
    assert!(html.contains("<tr><th>total</th><th>60</th>"), "{html}");
    for a in r["agents"].as_array().unwrap() {
        let cell = format!("<tr><td>{}</td>", a["id"].as_str().unwrap());
        assert!(html.contains(&cell), "missing {cell} in {html}");
        assert_eq!(a["attempts"], 20, "{a}");
    }
    for key in [
        "accept_queue_max",
        "accepted",
        "listen_overflows",
        "listen_drops",
    ] {
        // Each row under its readable name, keyed by its report.json name.
        let at = html
            .find(&format!("<tr data-key=\"{key}\">"))
            .unwrap_or_else(|| panic!("no {key} row in {html}"));
        let row = &html[at..at + html[at..].find("</tr>").unwrap()];
        let cell = format!("<td class=\"text\">{}</td>", tn(key));
        assert!(row.contains(&cell), "{key}: {row} lacks {cell}");
    }
    // And second by second for HDR tooling: the retransmitted ones land in later seconds.
    let lines =
        stampede_proto::hlog::parse(&std::fs::read(dir.join("report.hlog")).unwrap()).unwrap();
    let untagged: Vec<_> = lines.iter().filter(|l| l.tag.is_none()).collect();
    assert_eq!(untagged.iter().map(|l| l.histogram.len()).sum::<u64>(), 60);
    assert!(
        untagged.len() >= 2,
        "the retransmit wave comes a second later"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn agent_with_a_wrong_token_exits_saying_it_was_refused() {
    let dir = std::env::temp_dir().join(format!("stampede-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("right"), "right-token\n").unwrap();
    std::fs::write(dir.join("wrong"), "wrong-token\n").unwrap();
    // Resolved (and, in a lone `cargo test -p stampede`, built) before the coordinator starts
    // its 20 s agent wait: a build inside that wait outlived the coordinator, and the agent
    // then retried an absent coordinator forever.
    let agent_bin = sibling_bin("stampede-agent");
    // A coordinator on a port of its own choosing; its log line tells the address.
    let mut coordinator = stampede_lab::ChildGuard::spawn(
        Command::new(BIN)
            .args(["run", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9"])
            .args(["--agent-wait", "20s", "--token-file"])
            .arg(dir.join("right"))
            .stderr(std::process::Stdio::piped()),
    )
    .unwrap();
    let stderr = coordinator.0.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let addr = loop {
        let line = lines.next().expect("coordinator exited").unwrap();
        if let Some(i) = line.find("addr=") {
            break line[i + 5..].split_whitespace().next().unwrap().to_owned();
        }
    };
    let agent = stampede_lab::ChildGuard::spawn(
        Command::new(agent_bin)
            .args(["--coordinator", &format!("http://{addr}"), "--token-file"])
            .arg(dir.join("wrong"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    )
    .unwrap();
    let (code, err) = exit_within(agent, std::time::Duration::from_secs(30));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        last_line(&err).contains("refused this agent (Unauthenticated)"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Waits for `child` to exit, at most `bound` (then it is killed and the test fails); returns
/// its exit code and stderr.
fn exit_within(
    mut child: stampede_lab::ChildGuard,
    bound: std::time::Duration,
) -> (Option<i32>, String) {
    let mut stderr = child.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = std::time::Instant::now() + bound;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running after {bound:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    (status.code(), reader.join().unwrap())
}
