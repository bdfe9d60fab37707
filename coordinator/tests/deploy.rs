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
    // Build-time variables are read by proto's build script (the image's commit for --version).
    let build_rs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/build.rs");
    known.extend(names(&std::fs::read_to_string(build_rs).unwrap()));
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

/// The image and what runs it agree: its numeric user is the one the manifests run as (so
/// `runAsNonRoot` can verify it), its HEALTHCHECK probes the coordinator's default listener,
/// and every manifest names the image's one pinned tag.
#[test]
fn the_image_and_the_manifests_agree() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let dockerfile = std::fs::read_to_string(deploy.join("container/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("\nUSER 10001:10001\n"),
        "a numeric non-root USER"
    );
    assert!(
        dockerfile.contains("CMD [\"stampede\", \"health\""),
        "HEALTHCHECK by stampede health"
    );
    let help = Command::new(sibling_bin("stampede"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let default_listen = help
        .split("--listen <ADDR>")
        .nth(1)
        .and_then(|rest| rest.split("[default: ").nth(1))
        .and_then(|rest| rest.split(']').next())
        .expect("--listen's default in run --help");
    assert!(
        dockerfile.contains(&format!(
            "ENV STAMPEDE_HEALTH_URL=http://{default_listen}\n"
        )),
        "the HEALTHCHECK probes {default_listen}"
    );
    for file in [
        "kubernetes/stampede.yaml",
        "kubernetes/schedule.yaml",
        "compose/compose.yaml",
    ] {
        let text = std::fs::read_to_string(deploy.join(file)).unwrap();
        let images: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("image: "))
            .collect();
        assert!(!images.is_empty(), "{file}");
        assert!(
            images.iter().all(|i| *i == "stampede:0.1.0"),
            "{file}: {images:?}"
        );
        for user in text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("runAsUser: "))
        {
            assert!(user == "10001" || user == "0", "{file}: runAsUser {user}");
        }
    }
}
