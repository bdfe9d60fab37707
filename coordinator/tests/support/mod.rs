//! Helpers for the coordinator's whole-system tests.

#![allow(dead_code, unreachable_pub)]

pub mod grpc;

use std::path::PathBuf;
use std::process::Command;

/// A binary of another workspace package, in this test binary's target directory.
/// `cargo test --workspace` builds every package's binaries before running any test; a
/// lone `cargo test -p stampede` may not, so build them then.
pub fn sibling_bin(name: &str) -> PathBuf {
    if name == "stampede" {
        return PathBuf::from(env!("CARGO_BIN_EXE_stampede"));
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "stampede-agent",
                "-p",
                "stampede-target",
                "--bins",
            ])
            .status()
            .unwrap();
        assert!(status.success(), "building {name}");
    }
    assert!(path.exists(), "{} is missing", path.display());
    path
}
