//! The `stampede` binary as a user meets it: usage errors are one line and exit 64, a
//! scenario error names file, line and key, and waiting for agents ends with a clear error.

use std::process::Command;

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
