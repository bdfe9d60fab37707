//! Bearer-token authentication of agents. The token travels in the `authorization` metadata
//! of every call (`Bearer <token>`); the coordinator compares it in constant time, so the
//! comparison leaks nothing about how much of a guess was right. Tokens are never logged.

use std::path::Path;

use tonic::Status;
use tonic::metadata::MetadataMap;

/// A shared secret between the coordinator and its agents.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Reads a token file (surrounding whitespace ignored); refuses an empty one.
    pub fn from_file(path: &Path) -> anyhow::Result<Token> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading token file {}: {e}", path.display()))?;
        Token::new(text.trim())
            .ok_or_else(|| anyhow::anyhow!("token file {} is empty", path.display()))
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
        if constant_time_eq(presented.as_bytes(), self.0.as_bytes()) {
            Ok(())
        } else {
            Err(Status::unauthenticated("invalid token"))
        }
    }
}

/// Equality whose running time depends only on the lengths, not on where bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
}
