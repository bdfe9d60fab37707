//! deploy/ as shipped, run: compose.yaml and the Kubernetes manifests are read, and each
//! service or pod becomes a lab host (a network namespace on a bridge) running its
//! containers' commands, arguments and environment exactly as the files write them
//! (`runtime` says what is mapped: names through an /etc/hosts of the namespace's own,
//! volume paths to the test's directories). A whole burst must then run end to end and
//! write its report where the files say. If a file and this test disagree, the file is
//! wrong. Kernel tests: they need root (namespaces, setpriv) and skip loudly without it,
//! except in CI where they must run.

// A test binary: its `pub` items are shared between its modules, never exported.
#![allow(unreachable_pub, missing_docs)]

#[path = "../support/mod.rs"]
mod support;

mod compose;
mod kube;
mod runtime;
mod yaml;

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Held by each whole-burst test: two bursts at once on a small CI machine could starve
/// agents into a partial run, and neither test is about the other.
pub static BURST: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A directory of the test's own; removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("stampede-deploy-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        runtime::own(&dir, 0, 0, 0o755);
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

pub fn read_report(dir: &Path) -> Value {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn outcome_sum(report: &Value) -> u64 {
    report["outcomes"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum()
}

/// The log files of a failed run, for the panic message.
pub fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- {}\n", path.display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

mod run_compose;
mod run_kube;
