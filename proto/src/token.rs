//! The bearer token that authenticates agents to the coordinator: read once, the same way,
//! by every binary; compared in constant time (`subtle`), so the comparison leaks nothing
//! about how much of a guess was right; never printed (its `Debug` is redacted).
//!
//! Format: one line of printable ASCII without spaces (what an HTTP `authorization` header
//! can carry), surrounding whitespace ignored, at most [`MAX_TOKEN_BYTES`], in a regular file.
//! A token file that others than its owner may read or write is used, with a warning: the
//! token is only as secret as the file.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::input::{ReadError, read_bounded};

/// Longest token file read (a token is a few dozen bytes; this bounds a wrong path).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// A shared secret between the coordinator and its agents.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why a token (file) is unusable; the message names the file, never the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("reading token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A directory, device, FIFO or socket.
    #[error("token file {path} is {kind}, not a regular file")]
    NotAFile {
        /// The file.
        path: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// Larger than [`MAX_TOKEN_BYTES`].
    #[error("token file {path} is larger than {MAX_TOKEN_BYTES} bytes: not a token")]
    TooLarge {
        /// The file.
        path: String,
    },
    /// Empty after trimming.
    #[error("token file {path} is empty")]
    Empty {
        /// The file.
        path: String,
    },
    /// Holds a character an `authorization` header cannot carry.
    #[error("token file {path} holds characters a bearer token cannot carry")]
    BadCharacters {
        /// The file.
        path: String,
    },
}

/// True when a file with this mode lets group or others read or write it (a token file
/// should be 0600 or 0400).
pub fn loose_mode(mode: u32) -> bool {
    mode & 0o066 != 0
}

impl Token {
    /// Reads a token file (surrounding whitespace ignored); refuses an empty, oversized or
    /// unprintable one, or anything but a regular file. Warns (the log names the file and its
    /// mode, never the token) when group or others may read or write it.
    pub fn from_file(path: &Path) -> Result<Token, TokenError> {
        let name = path.display().to_string();
        let file = read_bounded(path, MAX_TOKEN_BYTES as u64).map_err(|e| match e {
            ReadError::Io(source) => TokenError::Read {
                path: name.clone(),
                source,
            },
            ReadError::NotAFile(kind) => TokenError::NotAFile {
                path: name.clone(),
                kind,
            },
            ReadError::TooLarge { .. } => TokenError::TooLarge { path: name.clone() },
        })?;
        let mode = file.metadata.permissions().mode();
        if loose_mode(mode) {
            tracing::warn!(
                path = %name,
                mode = format_args!("{:04o}", mode & 0o7777),
                "token file is readable or writable by group or others: chmod 600 it"
            );
        }
        let bytes = file.bytes;
        let text = String::from_utf8_lossy(&bytes);
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenError::Empty { path: name });
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::BadCharacters { path: name });
        }
        Ok(Token(token.to_owned()))
    }

    /// A token from a string; `None` if empty.
    pub fn new(token: &str) -> Option<Token> {
        (!token.is_empty()).then(|| Token(token.to_owned()))
    }

    /// The `authorization` metadata value carrying this token.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Checks a request's metadata: `Unauthenticated` unless it carries this token.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let presented = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
        // Constant time in the contents; only the length can differ observably.
        if bool::from(presented.as_bytes().ct_eq(self.0.as_bytes())) {
            Ok(())
        } else {
            Err(Status::unauthenticated("invalid token"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    #[test]
    fn accepts_only_the_exact_token() {
        let t = Token::new("s3cret").unwrap();
        assert!(t.check(&metadata("Bearer s3cret")).is_ok());
        for bad in [
            "Bearer s3creT",
            "Bearer s3cre",
            "Bearer s3crett",
            "s3cret",
            "Basic s3cret",
        ] {
            let err = t.check(&metadata(bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad}");
        }
        let err = t.check(&MetadataMap::new()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(Token::new("").is_none());
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn files_are_read_with_bounds_and_checked() {
        let dir = std::env::temp_dir().join(format!("stampede-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, body: &[u8]| {
            let p = dir.join(name);
            std::fs::write(&p, body).unwrap();
            p
        };
        let t = Token::from_file(&file("ok", b"  s3cret\n")).unwrap();
        assert!(t.check(&metadata("Bearer s3cret")).is_ok());
        for (name, body, needle) in [
            ("empty", &b" \n"[..], "is empty"),
            ("space", b"two words", "cannot carry"),
            ("big", &[b'a'; MAX_TOKEN_BYTES + 1], "larger than"),
        ] {
            let e = Token::from_file(&file(name, body)).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains(name), "{e}");
            assert!(!e.contains("two words"), "{e}");
        }
        let e = Token::from_file(&dir.join("missing")).unwrap_err();
        assert!(e.to_string().contains("reading token file"), "{e}");
        for (path, kind) in [("/dev/zero", "a character device"), ("/tmp", "a directory")] {
            let e = Token::from_file(Path::new(path)).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("token file {path} is {kind}, not a regular file")
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn loose_modes_are_those_others_can_read_or_write() {
        for tight in [0o600, 0o400, 0o700, 0o100600] {
            assert!(!loose_mode(tight), "{tight:o}");
        }
        for loose in [0o644, 0o640, 0o604, 0o660, 0o602, 0o100644] {
            assert!(loose_mode(loose), "{loose:o}");
        }
    }
}
