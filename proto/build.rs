//! Compiles `proto/stampede/v1/*.proto` with protox (pure Rust, so no `protoc` binary is
//! needed on any machine) and hands the descriptors to tonic-prost-build; and finds the git
//! commit being built, for every binary's `--version` (`install::VERSION`).

use std::path::Path;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/stampede/v1/target.proto",
        "proto/stampede/v1/coordinator.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    println!("cargo:rustc-env=STAMPEDE_BUILD_COMMIT={}", build_commit());
    Ok(())
}

/// `commit 2afbc1e4f3a1, 2026-11-27` for a build inside a git work tree; what
/// `STAMPEDE_COMMIT` says when set (a container build has no `.git`); otherwise a plain note.
/// Never fails the build: a missing git or history is only a note in `--version`.
fn build_commit() -> String {
    println!("cargo:rerun-if-env-changed=STAMPEDE_COMMIT");
    if let Ok(commit) = std::env::var("STAMPEDE_COMMIT")
        && !commit.trim().is_empty()
    {
        return format!("commit {}", commit.trim());
    }
    let Some(line) = git(&["log", "-1", "--format=%h %cs", "--abbrev=12"]) else {
        return "no commit: built from a source tree without git history".to_owned();
    };
    // Rebuilt when HEAD moves: HEAD itself (a checkout), the branch it names (a commit), and
    // HEAD's reflog, which every move appends to (even when the branch ref was packed, as in a
    // fresh clone, and its loose file appears only with the next commit). All of them belong
    // to this work tree alone, so other work trees' commits rebuild nothing here.
    let mut watched = vec![
        "HEAD".to_owned(),
        "logs/HEAD".to_owned(),
        "packed-refs".to_owned(),
    ];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name])
            && Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    match line.split_once(' ') {
        Some((hash, date)) => format!("commit {hash}, {date}"),
        None => format!("commit {line}"),
    }
}

/// One line of git's output, run in this crate's directory; `None` if git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let line = text.trim();
    (out.status.success() && !line.is_empty()).then(|| line.to_owned())
}
