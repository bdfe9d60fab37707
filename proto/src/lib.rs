//! stampede's wire contract and shared vocabulary.
//!
//! - [`pb`]: the `stampede.v1` gRPC services and messages, generated from `proto/` at build time.
//! - [`duration`]: the duration syntax every binary accepts (`500ms`, `2s`, `1m`).
//! - [`tcp_info`]: `TCP_INFO` on a socket: SYN retransmits of a client, queue length and
//!   effective backlog of a listener (docs/kernel.md §2, §5).
//! - [`netstat`]: the kernel's TcpExt counters of the caller's network namespace.
//! - [`sysctl`]: the sysctls that shape a burst's outcome.
//! - [`clock`]: NTP-style offset math for synchronized starts.
//! - [`pattern`]: `burst`, `ramp:RATE:DUR`, `waves:K:PERIOD`.
//! - [`outcome`], [`histogram`], [`hlog`], [`report`]: outcome classes, the histogram codec, the
//!   HdrHistogram interval log and the report types shared by `stampede-agent fire` and the
//!   coordinator.
//! - [`tls`]: rustls configuration of the agent-coordinator channel from PEM files.
//! - [`signal`], [`usage`], [`logging`]: SIGINT/SIGTERM handling, usage errors (exit 64),
//!   command-line parsing and the log set-up, the same in every binary; [`install`]: the
//!   `completions` and `man` subcommands and the `--version` text (with the git commit);
//!   [`live_line`]: the live status line of the binaries without a progress bar library.
//! - [`input`], [`backlog`]: files a person names (regular, size-bounded) and the one
//!   backlog rule (0 or more) every binary applies.
//!
//! Agents, the target server and the coordinator all depend on this crate and on nothing of
//! each other, so anything two of them must agree on lives here.

/// Serializes a type as its `Display` text and deserializes it with its `FromStr`, so a
/// value reads the same in a flag, a scenario file and report.json (`"500ms"`, `"ramp:500:2s"`).
macro_rules! serde_via_str {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub mod backlog;
pub mod clock;
pub mod duration;
pub mod histogram;
pub mod hlog;
pub mod input;
pub mod install;
pub mod live_line;
pub mod logging;
pub mod netstat;
pub mod outcome;
pub mod output;
pub mod pattern;
pub mod plan;
pub mod report;
pub mod rlimit;
pub mod signal;
pub mod sysctl;
pub mod tally;
pub mod target;
pub mod tcp_info;
pub mod timeline;
pub mod tls;
pub mod token;
pub mod usage;

/// The `stampede.v1` protocol version agents and the coordinator must share; raise it on
/// any change that an older peer would misread.
pub const PROTOCOL_VERSION: u32 = 1;

/// Generated `stampede.v1` types and services. Never edit: change `proto/` instead.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    tonic::include_proto!("stampede.v1");
}
