//! The workspace's other binaries, for whole-system tests and benchmarks: `stampede-agent`
//! and `stampede-target` in the calling test's (or bench's) own target directory and
//! profile.
//!
//! `cargo bench -p stampede` builds only that package's binaries, so a release agent left
//! from an older tree would be measured silently in place of the current one: a release
//! (bench) caller builds both once per process (`cargo build --release`, a no-op when they
//! are fresh). A debug (test) caller builds them only when missing: the README's `cargo test
//! --workspace` has just built them, with the test build's features (dev-dependencies turn on
//! tokio's `test-util`), and building them again without those features would relink them
//! under tests running beside this one; a lone `cargo test -p stampede` after a change to the
//! agent should be preceded by `cargo build --workspace --bins`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The path of workspace binary `name` (`stampede-agent`, `stampede-target`) beside the
/// running test or bench binary: built first when missing, and, for a release caller, when
/// stale.
///
/// # Panics
/// When the build fails or the binary is not there afterwards (a test cannot go on).
pub fn sibling_bin(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("this binary's path");
        // TARGET_DIR/PROFILE/deps/THIS → TARGET_DIR/PROFILE.
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("a target directory")
            .to_owned();
        let release = dir.ends_with("release");
        let missing = ["stampede-agent", "stampede-target"]
            .iter()
            .any(|b| !dir.join(b).exists());
        if release || missing {
            build(&dir, release);
        }
        dir
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// Builds the agent and target binaries into `dir` (a profile directory of a target
/// directory), from the workspace this crate belongs to.
fn build(dir: &Path, release: bool) {
    // The cargo running this build, else the one this crate was built with.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("lab/ is in the workspace");
    let mut build = Command::new(cargo);
    build.current_dir(workspace).args([
        "build",
        "-p",
        "stampede-agent",
        "-p",
        "stampede-target",
        "--bins",
    ]);
    if let Some(target_dir) = dir.parent() {
        build.arg("--target-dir").arg(target_dir);
    }
    if release {
        build.arg("--release");
    }
    assert!(
        build.status().is_ok_and(|s| s.success()),
        "building stampede-agent and stampede-target into {}",
        dir.display()
    );
}
