//! `deploy/netns/lab.sh`, the people's version of the lab: it builds hosts that can talk to
//! each other over the bridge, refuses bad input, and `down` removes everything.

use std::process::Command;

use stampede_lab::kernel_tests_enabled;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/netns/lab.sh");

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `lab.sh down` for the prefix even when the test fails half-way.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .args([SCRIPT, "down", "--prefix", &self.0])
            .status();
    }
}

#[test]
fn lab_script_up_exec_down() {
    if !kernel_tests_enabled("lab_script_up_exec_down") {
        return;
    }
    let prefix = format!("stpsh{}", std::process::id());
    let _down = Down(prefix.clone());
    let out = Command::new("bash")
        .args([SCRIPT, "up", "2", "--prefix", &prefix])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("198.18.0.1/24") && stdout.contains("198.18.0.2/24"),
        "{stdout}"
    );
    let listed = netns_list();
    for ns in ["0", "1", "hub"] {
        assert!(listed.contains(&format!("{prefix}{ns}")), "{listed}");
    }
    // Host 1 reaches host 0 across the bridge (bash's /dev/tcp against a listener on host 0).
    let listener = Command::new("bash")
        .args([SCRIPT, "exec", "0", "--prefix", &prefix])
        .args([
            "bash",
            "-c",
            "exec 3<>/dev/tcp/198.18.0.2/1 2>/dev/null; echo $?",
        ])
        .output()
        .unwrap();
    // Nothing listens on port 1 of host 1, so host 1's kernel answers with a reset: "refused"
    // proves the path exists (an unreachable host fails with "no route", not this).
    let err = String::from_utf8_lossy(&listener.stderr);
    assert!(err.contains("Connection refused"), "{err}");
    // A second `up` with the same prefix is refused.
    let again = Command::new("bash")
        .args([SCRIPT, "up", "2", "--prefix", &prefix])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    // Bad counts and prefixes are refused before anything is made.
    for bad in [
        &["up", "0"][..],
        &["up", "x"][..],
        &["up", "2", "--prefix", "a b"][..],
    ] {
        let out = Command::new("bash").arg(SCRIPT).args(bad).output().unwrap();
        assert!(!out.status.success(), "{bad:?}");
    }
    // down removes everything, and is safe to repeat.
    for _ in 0..2 {
        let out = Command::new("bash")
            .args([SCRIPT, "down", "--prefix", &prefix])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(!netns_list().contains(&prefix));
}

#[test]
fn lab_script_cleans_up_when_up_fails() {
    if !kernel_tests_enabled("lab_script_cleans_up_when_up_fails") {
        return;
    }
    let prefix = format!("stpsf{}", std::process::id());
    let _down = Down(prefix.clone());
    // A namespace already holding the hub's name makes `up` fail after it checked for an
    // existing lab: its ERR trap must remove everything with the prefix.
    let made = Command::new("ip")
        .args(["netns", "add", &format!("{prefix}hub")])
        .status()
        .unwrap();
    assert!(made.success());
    let out = Command::new("bash")
        .args([SCRIPT, "up", "2", "--prefix", &prefix])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("setup failed"), "{err}");
    assert!(!netns_list().contains(&prefix), "{}", netns_list());
}
