//! A real server end to end: nginx under `stampede-target supervise`, swept by `stampede
//! sweep` with a `stampede-agent`, all three binaries in a network namespace this test
//! creates (so fixed ports collide with nothing and the namespace's counters are this test's
//! alone). nginx gets its configuration from a template (`listen ... backlog={backlog}`, one
//! worker, every path in a temporary directory, `daemon off`).
//!
//! It checks what a user relies on: every step's effective backlog is the requested one,
//! nginx is restarted at every step (its pid changes), the burst overflows backlog 8 and the
//! overflows agree with `nstat` in the namespace, the sweep writes its files and exits 0; and
//! a sweep with `--accept-rates` is refused up front, saying why.
//!
//! nginx must be installed (`.ci/run` installs it): without it this test fails, never passes.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use stampede_lab::{ChildGuard, Netns, SIGTERM, kernel_tests_enabled, run_within};
use support::sibling_bin;

const BIN: &str = env!("CARGO_BIN_EXE_stampede");
/// Connects per step: far more than backlog 8 holds, well under what 512 does.
const CONNECTIONS: &str = "200";

/// A temporary directory removed at the end.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// supervise, stopped with SIGTERM (so it stops nginx) however the test ends, and nginx
/// killed by its pid file if it outlived it.
struct Supervise {
    child: ChildGuard,
    pid_file: PathBuf,
}

impl Drop for Supervise {
    fn drop(&mut self) {
        let _ = self.child.signal(SIGTERM);
        let _ = self.child.wait_exit(Duration::from_secs(20));
        if let Some(pid) = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            // Only this test's own nginx writes this pid file.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

fn find_nginx() -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
        .expect("nginx is not installed: apt-get install nginx-light (or nginx); .ci/run does")
}

/// The nginx.conf template: everything nginx writes goes to `dir`.
fn template(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log stderr notice;\nevents {{ worker_connections 1024; }}\nhttp {{\n  \
         access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         server {{\n    listen 127.0.0.1:8080 backlog={{backlog}};\n    \
         location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
    )
}

/// TcpExtListenOverflows of the namespace as nstat reads it (absolute, history untouched).
fn nstat_overflows(ns: &Netns) -> u64 {
    let out = ns
        .command("nstat")
        .args(["-a", "-z", "-s", "TcpExtListenOverflows"])
        .output()
        .expect("running nstat");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("TcpExtListenOverflows")).then(|| w.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no TcpExtListenOverflows in nstat's output: {text}"))
}

#[test]
fn nginx_is_sized_under_supervise() {
    if !kernel_tests_enabled("nginx_is_sized_under_supervise") {
        return;
    }
    let nginx = find_nginx();
    let dir = TempDir(std::env::temp_dir().join(format!("stampede-nginx-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();
    let tpl = dir.0.join("nginx.conf.tpl");
    let conf = dir.0.join("nginx.conf");
    std::fs::write(&tpl, template(&dir.0)).unwrap();
    let ns = Netns::new("ngx").unwrap();
    assert_eq!(nstat_overflows(&ns), 0, "a fresh namespace");

    // Ready once it says it supervises (nginx listens with its backlog by then).
    let child = ChildGuard::spawn_until_logged(
        ns.command(sibling_bin("stampede-target"))
            .args(["supervise", "--port", "8080", "--control", "127.0.0.1:9000"])
            .arg("--template")
            .arg(format!("{}:{}", tpl.display(), conf.display()))
            .args(["--backlog", "16", "--"])
            .arg(&nginx)
            .arg("-p")
            .arg(&dir.0)
            .args(["-e", "stderr", "-c"])
            .arg(&conf),
        "supervising",
        Duration::from_secs(60),
    );
    let _supervise = Supervise {
        child,
        pid_file: dir.0.join("nginx.pid"),
    };
    let _agent = ChildGuard::spawn(
        ns.command(sibling_bin("stampede-agent"))
            .args(["--coordinator", "http://127.0.0.1:7700", "--id", "a1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let sweep = |extra: &[&str]| {
        let out = dir.0.join("out");
        let mut cmd = ns.command(BIN);
        cmd.args(["sweep", "--listen", "127.0.0.1:7700", "--agent-wait", "60s"])
            .args(["--target", "127.0.0.1:8080"])
            .args(["--target-control", "http://127.0.0.1:9000"])
            .args(["--connections", CONNECTIONS, "--timeout", "2s"])
            .args(extra)
            .arg("--out")
            .arg(&out);
        (run_within(&mut cmd, Duration::from_secs(240)), out)
    };

    // A real server's accept rate is its own: refused before any step runs, as bad usage.
    let (refused, _) = sweep(&["--backlogs", "8", "--accept-rates", "100"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(64), "{err}");
    assert!(
        err.contains("--accept-rates cannot be swept here")
            && err.contains("stampede-target supervise"),
        "{err}"
    );

    let (done, out) = sweep(&["--backlogs", "8,64,512"]);
    let err = String::from_utf8_lossy(&done.stderr);
    let table = String::from_utf8_lossy(&done.stdout);
    assert_eq!(done.status.code(), Some(0), "{table}{err}");
    for f in ["sweep.json", "sweep.csv", "sweep.html"] {
        assert!(out.join(f).is_file(), "{f} missing: {err}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    let steps = json["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "{table}");
    let mut pids = Vec::new();
    let mut overflows = 0;
    for (i, (st, backlog)) in steps.iter().zip([8, 64, 512]).enumerate() {
        assert_eq!(st["backlog"], backlog, "{table}");
        assert_eq!(st["backlog_effective"], backlog, "step {i}: {table}");
        assert_eq!(st["partial"], false, "step {i}: {table}");
        let target = &json["reports"][i]["target"];
        assert_eq!(target["kind"], "supervise", "step {i}");
        assert_eq!(target["backlog_requested"], backlog, "step {i}");
        assert!(
            target["timeline"]["points"].as_array().is_some(),
            "step {i}: the accept queue over time is in the report"
        );
        pids.push(
            st["server_pid"]
                .as_u64()
                .expect("a supervised step names its pid"),
        );
        overflows += st["listen_overflows"].as_u64().unwrap();
    }
    pids.dedup();
    assert_eq!(pids.len(), 3, "nginx restarted at every step: {pids:?}");
    let at_8 = steps[0]["listen_overflows"].as_u64().unwrap();
    assert!(
        at_8 > 0,
        "{CONNECTIONS} connects overflow backlog 8: {table}"
    );
    // Every overflow in this namespace happened during a step's measurement: the steps'
    // counts add up to what nstat, an independent reader, sees.
    assert_eq!(nstat_overflows(&ns), overflows, "{table}");
    assert!(table.contains("backlog effective"), "{table}");
}
