//! The listen() backlog as a person or a caller gives it: a whole number, 0 or more. One rule
//! for every path: `stampede run`, `sweep` and `demo` (flags and scenario keys),
//! `stampede-target --backlog` and its `Configure` call. Linux reads a negative backlog as the
//! largest one (it compares it as unsigned and caps it at somaxconn, docs/kernel.md §1), so
//! `--backlog -5` would silently run at the kernel's maximum; 0 is valid (it admits one).

use crate::usage::cut;

/// What a backlog must be, as error messages say it.
pub const EXPECTED: &str = "expected a whole number, 0 or more";

/// A backlog that is not a whole number, 0 or more; the message names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid backlog \"{value}\": {EXPECTED}")]
pub struct BacklogError {
    /// The value as given (cut if long).
    pub value: String,
}

/// `backlog` if it is 0 or more.
pub fn check(backlog: i32) -> Result<i32, BacklogError> {
    if backlog >= 0 {
        Ok(backlog)
    } else {
        Err(BacklogError {
            value: backlog.to_string(),
        })
    }
}

/// A backlog from text (a flag, an environment variable, a list item), checked.
pub fn parse(s: &str) -> Result<i32, BacklogError> {
    s.trim()
        .parse::<i32>()
        .ok()
        .and_then(|b| check(b).ok())
        .ok_or_else(|| BacklogError {
            value: cut(s).into_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_or_more_only() {
        assert_eq!(check(0), Ok(0));
        assert_eq!(parse(" 511 "), Ok(511));
        assert_eq!(parse("2147483647"), Ok(i32::MAX));
        for bad in ["-5", "-1", "x", "", "1.5", "2147483648"] {
            let e = parse(bad).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("invalid backlog \"{bad}\": expected a whole number, 0 or more")
            );
        }
        assert_eq!(check(i32::MIN).unwrap_err().value, i32::MIN.to_string());
        let long = parse(&"9".repeat(10_000)).unwrap_err().to_string();
        assert!(long.len() < 200, "{long}");
    }
}
