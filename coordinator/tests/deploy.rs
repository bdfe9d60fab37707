//! deploy/ stays true to the binaries: every `STAMPEDE_*` variable that the container,
//! compose, Kubernetes and systemd files set is one that some binary reads (clap lists each
//! flag's variable in --help as `[env: STAMPEDE_...]`). The one exception is what the
//! kubelet sets for a Service named `stampede-*` (`STAMPEDE_TARGET_SERVICE_HOST`), which the
//! manifests read in `$(...)`, never a binary.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use support::sibling_bin;

fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("STAMPEDE_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        // "STAMPEDE_<FLAG>" in a comment is a placeholder, not a variable.
        if end > "STAMPEDE_".len() {
            out.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn every_variable_deploy_sets_is_read_by_a_binary() {
    let mut known = BTreeSet::new();
    for (bin, args) in [
        ("stampede", &["run", "--help"][..]),
        ("stampede", &["health", "--help"][..]),
        ("stampede-agent", &["--help"][..]),
        ("stampede-agent", &["fire", "--help"][..]),
        ("stampede-target", &["--help"][..]),
    ] {
        let out = Command::new(sibling_bin(bin)).args(args).output().unwrap();
        assert!(out.status.success(), "{bin} {args:?}");
        known.extend(names(&String::from_utf8_lossy(&out.stdout)));
    }
    assert!(known.contains("STAMPEDE_COORDINATOR"), "{known:?}");
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut all = Vec::new();
    files(&deploy, &mut all);
    let mut used = 0;
    // The configuration files; prose (README) talks about the variables in general.
    for path in all
        .into_iter()
        .filter(|p| p.extension().is_none_or(|e| e != "md"))
    {
        let text = std::fs::read_to_string(&path).unwrap();
        for name in names(&text) {
            // Kubernetes' service links: set by the kubelet, read by the manifests.
            if name.ends_with("_SERVICE_HOST") || name.ends_with("_SERVICE_PORT") {
                continue;
            }
            used += 1;
            assert!(
                known.contains(&name),
                "{} sets {name}, which no binary reads",
                path.display()
            );
        }
    }
    assert!(
        used > 10,
        "deploy/ should configure the binaries through STAMPEDE_* variables"
    );
}
