//! Helpers for the coordinator's whole-system tests.

#![allow(dead_code, unreachable_pub)]

pub mod grpc;

use std::path::PathBuf;

/// A binary of another workspace package, in this test binary's target directory: the
/// coordinator's own from cargo, the others built first as [`stampede_lab::sibling_bin`]
/// says.
pub fn sibling_bin(name: &str) -> PathBuf {
    if name == "stampede" {
        return PathBuf::from(env!("CARGO_BIN_EXE_stampede"));
    }
    stampede_lab::sibling_bin(name)
}
