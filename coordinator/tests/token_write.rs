//! `stampede token new FILE` where FILE cannot be written (its directory is missing): one
//! line naming the file and the cause once, exit 64 (the FILE given is bad usage, as an
//! unwritable `--out` is), and nothing written; `man DIR` alike in every binary.

use std::process::Command;

use support::sibling_bin;

mod support;

#[test]
fn a_token_file_in_a_missing_directory_is_usage_said_once() {
    let dir = std::env::temp_dir().join(format!("stampede-token-write-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let file = dir.join("missing/tok");
    let out = Command::new(env!("CARGO_BIN_EXE_stampede"))
        .args(["token", "new"])
        .arg(&file)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "stampede: error: writing token file {}: ",
            file.display()
        )),
        "{err}"
    );
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(!file.exists() && !dir.exists());
}

/// `man DIR` where DIR cannot be made (under a regular file), in every binary: one line
/// naming DIR, exit 64, like the token file above.
#[test]
fn a_man_dir_that_cannot_be_made_is_usage_in_every_binary() {
    let dir = std::env::temp_dir().join(format!("stampede-man-unwritable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    let pages = file.join("man1");
    for bin in ["stampede", "stampede-agent", "stampede-target"] {
        let out = Command::new(sibling_bin(bin))
            .arg("man")
            .arg(&pages)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{bin}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{bin}: {err}");
        assert!(
            err.contains(&format!("writing man pages to {}", pages.display())),
            "{bin}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
