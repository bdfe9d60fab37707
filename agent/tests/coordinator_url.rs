//! A coordinator URL that cannot be dialled is a usage error: one line naming the URL and
//! what is wrong, exit 64, before any connection is tried.

use std::process::Command;

#[test]
fn a_bad_coordinator_url_exits_64_with_one_line() {
    for (url, needle) in [
        (
            "notaurl",
            "invalid coordinator URL \"notaurl\": expected http://HOST:PORT or https://HOST:PORT",
        ),
        (
            "https://127.0.0.1:9",
            "invalid coordinator URL \"https://127.0.0.1:9\": https:// needs --tls-ca",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_stampede-agent"))
            .args(["--coordinator", url])
            .env_remove("RUST_LOG")
            .output()
            .expect("running stampede-agent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{url}: {stderr}");
        assert!(stderr.contains(needle), "{url}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "one error line for {url}: {stderr}");
    }
}
