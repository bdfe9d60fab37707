//! The workspace's other binaries, for whole-system tests and benchmarks: `stampede-agent`
//! and `stampede-target` in the calling test's (or bench's) own target directory and
//! profile.
//!
//! `cargo test -p stampede` and `cargo bench -p stampede` build only that package's
//! binaries; a sibling left from an older tree would then run (and be measured) silently in
//! place of the current one. So the first call in a process builds both (`cargo build`, a
//! no-op when they are fresh) with the caller's profile, and every later call reuses them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The path of workspace binary `name` (`stampede-agent`, `stampede-target`) beside the
/// running test or bench binary, built first if it is missing or stale.
///
/// # Panics
/// When the build fails or the binary is not there afterwards (a test cannot go on).
pub fn sibling_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().expect("this binary's path");
        // target/PROFILE/deps/THIS → target/PROFILE.
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("a target directory")
            .to_owned();
        let mut build = Command::new(env!("CARGO"));
        build.args([
            "build",
            "--quiet",
            "-p",
            "stampede-agent",
            "-p",
            "stampede-target",
            "--bins",
        ]);
        if dir.ends_with("release") {
            build.arg("--release");
        }
        assert!(
            build.status().is_ok_and(|s| s.success()),
            "building stampede-agent and stampede-target"
        );
        dir
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing", path.display());
    path
}
