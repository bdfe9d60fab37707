//! The setting-up commands as a user meets them, in all three binaries: `stampede token new`
//! (a 0600 file, exit 64 and one line rather than overwrite, `--force`), `completions SHELL`,
//! `man DIR` and `--version` naming the commit.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::sibling_bin;

mod support;

const BINARIES: [&str; 3] = ["stampede", "stampede-agent", "stampede-target"];

fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stampede-setup-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn token_new_writes_0600_and_never_overwrites_without_force() {
    let bin = sibling_bin("stampede");
    let dir = scratch("token");
    let file = dir.join("token");
    let path = file.to_str().unwrap();
    let out = run(&bin, &["token", "new", path]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let first = std::fs::read_to_string(&file).unwrap();
    assert_eq!(first.len(), 65, "64 hex digits and a newline: {first:?}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // What it prints names the file, never the token.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(path) && !stdout.contains(first.trim()),
        "{stdout}"
    );

    let again = run(&bin, &["token", "new", path]);
    assert_eq!(again.status.code(), Some(64), "{again:?}");
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), first);

    let forced = run(&bin, &["token", "new", path, "--force"]);
    assert_eq!(forced.status.code(), Some(0), "{forced:?}");
    assert_ne!(std::fs::read_to_string(&file).unwrap(), first);

    // Without FILE: the token itself on stdout, and nothing written.
    let printed = run(&bin, &["token", "new"]);
    assert_eq!(printed.status.code(), Some(0));
    let token = String::from_utf8(printed.stdout).unwrap();
    assert!(token.trim().len() == 64 && token.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_binary_has_completions_man_pages_and_a_versioned_version() {
    let dir = scratch("man");
    for name in BINARIES {
        let bin = sibling_bin(name);
        for shell in ["bash", "zsh", "fish"] {
            let out = run(&bin, &["completions", shell]);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{name} completions {shell}: {out:?}"
            );
            let script = String::from_utf8_lossy(&out.stdout);
            assert!(
                script.contains(name) && script.contains("--help"),
                "{name} {shell}"
            );
        }
        let bad = run(&bin, &["completions", "tcsh"]);
        assert_eq!(bad.status.code(), Some(64), "{name}: {bad:?}");

        let out = run(&bin, &["man", dir.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{name} man: {out:?}");
        let page = std::fs::read_to_string(dir.join(format!("{name}.1"))).unwrap();
        assert!(
            page.starts_with(".ie \\n(.g .ds Aq"),
            "{name}.1 is no man page"
        );
        // A page for a subcommand, named after its path.
        let sub = match name {
            "stampede" => "stampede-run.1",
            "stampede-agent" => "stampede-agent-fire.1",
            _ => "stampede-target-observe.1",
        };
        assert!(dir.join(sub).is_file(), "{sub} missing");

        let version = run(&bin, &["--version"]);
        let text = String::from_utf8_lossy(&version.stdout);
        assert!(
            text.starts_with(&format!("{name} 0."))
                && (text.contains("(commit ") || text.contains("(no commit: ")),
            "{name} --version: {text}"
        );
    }
    let pages = std::fs::read_dir(&dir).unwrap().count();
    assert!(pages >= 12, "only {pages} man pages");
    std::fs::remove_dir_all(&dir).unwrap();
}
