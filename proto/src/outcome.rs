//! Outcome classes of a connect attempt (docs/design.md "Outcome classes", docs/kernel.md §4).
//!
//! Classification uses only what the kernel says about the attempt: `SO_ERROR` when the
//! connect completed, `TCP_INFO` (`tcpi_total_retrans` = k, the exact number of SYN
//! retransmits, never a time bucket) and, for admission, whether the server's first byte came
//! before the attempt's deadline. The agent records [`Outcome`] values; counters are kept per
//! [`OutcomeClass`] and per k, and errors per errno number (names only when printing).

use serde::{Deserialize, Serialize};

/// What happened to one connect attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Connected with no SYN retransmit (and admitted, if admission was checked).
    Established,
    /// Connected after `k` ≥ 1 SYN retransmits (and admitted, if admission was checked).
    SynRetransmitted {
        /// SYN retransmits (`tcpi_total_retrans` at completion), ≥ 1.
        k: u32,
    },
    /// `ECONNREFUSED`: no listener. A full accept queue never causes it (docs/kernel.md §2).
    Refused,
    /// `ECONNRESET` at connect or before the first byte.
    Reset,
    /// The kernel gave up: `ETIMEDOUT` after tcp_syn_retries.
    Timeout,
    /// Our own deadline hit while still in SYN_SENT, after `k` SYN retransmits so far.
    Pending {
        /// SYN retransmits so far.
        k: u32,
    },
    /// Another errno (e.g. `EADDRNOTAVAIL` when ephemeral ports ran out).
    Error {
        /// The errno value.
        errno: i32,
    },
    /// connect() succeeded after `k` SYN retransmits but the server never admitted it: no
    /// greeting by the deadline (a cookie/ACK-drop phantom, docs/kernel.md §3).
    Ghost {
        /// SYN retransmits before connect() succeeded.
        k: u32,
    },
}

/// The class of an [`Outcome`], without its details; the keys of `outcomes{}` in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeClass {
    /// See [`Outcome::Established`].
    Established,
    /// See [`Outcome::SynRetransmitted`].
    SynRetransmitted,
    /// See [`Outcome::Refused`].
    Refused,
    /// See [`Outcome::Reset`].
    Reset,
    /// See [`Outcome::Timeout`].
    Timeout,
    /// See [`Outcome::Pending`].
    Pending,
    /// See [`Outcome::Error`].
    Error,
    /// See [`Outcome::Ghost`].
    Ghost,
}

impl OutcomeClass {
    /// Every class, in report order.
    pub const ALL: [OutcomeClass; 8] = [
        OutcomeClass::Established,
        OutcomeClass::SynRetransmitted,
        OutcomeClass::Refused,
        OutcomeClass::Reset,
        OutcomeClass::Timeout,
        OutcomeClass::Pending,
        OutcomeClass::Error,
        OutcomeClass::Ghost,
    ];

    /// The report key (`established`, `syn_retransmitted`, ...).
    pub fn name(self) -> &'static str {
        match self {
            OutcomeClass::Established => "established",
            OutcomeClass::SynRetransmitted => "syn_retransmitted",
            OutcomeClass::Refused => "refused",
            OutcomeClass::Reset => "reset",
            OutcomeClass::Timeout => "timeout",
            OutcomeClass::Pending => "pending",
            OutcomeClass::Error => "error",
            OutcomeClass::Ghost => "ghost",
        }
    }
}

impl std::fmt::Display for OutcomeClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Outcome {
    /// The class of this outcome.
    pub fn class(self) -> OutcomeClass {
        match self {
            Outcome::Established => OutcomeClass::Established,
            Outcome::SynRetransmitted { .. } => OutcomeClass::SynRetransmitted,
            Outcome::Refused => OutcomeClass::Refused,
            Outcome::Reset => OutcomeClass::Reset,
            Outcome::Timeout => OutcomeClass::Timeout,
            Outcome::Pending { .. } => OutcomeClass::Pending,
            Outcome::Error { .. } => OutcomeClass::Error,
            Outcome::Ghost { .. } => OutcomeClass::Ghost,
        }
    }

    /// A connect that completed: `so_error` is `SO_ERROR` (0 = connected) and `k` the
    /// `tcpi_total_retrans` read at completion. A connected attempt is classified as
    /// admitted here; a later missing greeting turns it into [`Outcome::ghost`].
    pub fn from_completion(so_error: i32, k: u32) -> Outcome {
        match so_error {
            0 if k == 0 => Outcome::Established,
            0 => Outcome::SynRetransmitted { k },
            libc::ECONNREFUSED => Outcome::Refused,
            libc::ECONNRESET => Outcome::Reset,
            libc::ETIMEDOUT => Outcome::Timeout,
            errno => Outcome::Error { errno },
        }
    }

    /// A connected attempt (after `k` SYN retransmits) whose greeting never came.
    pub fn ghost(k: u32) -> Outcome {
        Outcome::Ghost { k }
    }

    /// SYN retransmits of this attempt, when known.
    pub fn syn_retransmits(self) -> Option<u32> {
        match self {
            Outcome::Established => Some(0),
            Outcome::SynRetransmitted { k } | Outcome::Pending { k } | Outcome::Ghost { k } => {
                Some(k)
            }
            _ => None,
        }
    }
}

/// An errno as a counter key: ordered by number, shown and serialized by its symbolic name
/// (`EADDRNOTAVAIL`, or `errno N` for ones stampede does not expect), parsed back from either
/// form, so `errors{}` reads the same in report.json, on the wire and on the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Errno(pub i32);

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&errno_name(self.0))
    }
}

/// A name that is neither a known errno nor `errno N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown errno name \"{0}\"")]
pub struct UnknownErrno(pub String);

impl std::str::FromStr for Errno {
    type Err = UnknownErrno;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(n) = s.strip_prefix("errno ").and_then(|n| n.parse().ok()) {
            return Ok(Errno(n));
        }
        KNOWN_ERRNOS
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(n, _)| Errno(*n))
            .ok_or_else(|| UnknownErrno(s.to_owned()))
    }
}

serde_via_str!(Errno);

/// The errnos a connect attempt is expected to meet, with their symbolic names.
const KNOWN_ERRNOS: [(i32, &str); 20] = [
    (libc::EADDRNOTAVAIL, "EADDRNOTAVAIL"),
    (libc::EADDRINUSE, "EADDRINUSE"),
    (libc::ECONNREFUSED, "ECONNREFUSED"),
    (libc::ECONNRESET, "ECONNRESET"),
    (libc::ECONNABORTED, "ECONNABORTED"),
    (libc::ETIMEDOUT, "ETIMEDOUT"),
    (libc::EHOSTUNREACH, "EHOSTUNREACH"),
    (libc::ENETUNREACH, "ENETUNREACH"),
    (libc::ENETDOWN, "ENETDOWN"),
    (libc::EPIPE, "EPIPE"),
    (libc::EMFILE, "EMFILE"),
    (libc::ENFILE, "ENFILE"),
    (libc::ENOBUFS, "ENOBUFS"),
    (libc::ENOMEM, "ENOMEM"),
    (libc::EPERM, "EPERM"),
    (libc::EACCES, "EACCES"),
    (libc::EAGAIN, "EAGAIN"),
    (libc::EINVAL, "EINVAL"),
    (libc::EAFNOSUPPORT, "EAFNOSUPPORT"),
    (libc::EPROTO, "EPROTO"),
];

/// The symbolic name of an errno (`EADDRNOTAVAIL`), or `errno N` for ones stampede does not
/// expect to meet.
pub fn errno_name(errno: i32) -> String {
    match KNOWN_ERRNOS.iter().find(|(n, _)| *n == errno) {
        Some((_, name)) => (*name).to_owned(),
        None => format!("errno {errno}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_follows_kernel_md_section_4() {
        assert_eq!(Outcome::from_completion(0, 0), Outcome::Established);
        assert_eq!(
            Outcome::from_completion(0, 3),
            Outcome::SynRetransmitted { k: 3 }
        );
        assert_eq!(
            Outcome::from_completion(libc::ECONNREFUSED, 0),
            Outcome::Refused
        );
        assert_eq!(
            Outcome::from_completion(libc::ECONNRESET, 1),
            Outcome::Reset
        );
        assert_eq!(
            Outcome::from_completion(libc::ETIMEDOUT, 6),
            Outcome::Timeout
        );
        assert_eq!(
            Outcome::from_completion(libc::EADDRNOTAVAIL, 0),
            Outcome::Error {
                errno: libc::EADDRNOTAVAIL
            }
        );
        assert_eq!(Outcome::ghost(3).class(), OutcomeClass::Ghost);
        assert_eq!(Outcome::ghost(3).syn_retransmits(), Some(3));
        assert_eq!(Outcome::Refused.syn_retransmits(), None);
    }

    #[test]
    fn classes_have_the_report_keys() {
        let names: Vec<_> = OutcomeClass::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            [
                "established",
                "syn_retransmitted",
                "refused",
                "reset",
                "timeout",
                "pending",
                "error",
                "ghost"
            ]
        );
        assert_eq!(errno_name(libc::EADDRNOTAVAIL), "EADDRNOTAVAIL");
        assert_eq!(errno_name(9999), "errno 9999");
        for e in [Errno(libc::EADDRNOTAVAIL), Errno(9999)] {
            assert_eq!(e.to_string().parse::<Errno>(), Ok(e));
        }
        assert!("EWHAT".parse::<Errno>().is_err());
    }
}
