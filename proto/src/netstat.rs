//! The kernel's TCP counters (`TcpExt` in `/proc/net/netstat`, `Tcp` in `/proc/net/snmp`) of
//! the caller's network namespace, and their difference over a run (docs/kernel.md §4 says what
//! each one means for a burst).
//!
//! Counters are per network namespace, and `/proc/net` follows the *process's* first thread,
//! so a thread that entered another namespace with setns(2) must read
//! `/proc/thread-self/net/...`; that is what [`Netstat::open`] does. The files stay open: a
//! reader made in a namespace keeps reading that namespace from any thread.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

/// The counters stampede reports, by their kernel names.
pub const LISTEN_OVERFLOWS: &str = "TcpExt.ListenOverflows";
/// SYNs and ACKs dropped by a listener for any reason (≥ ListenOverflows).
pub const LISTEN_DROPS: &str = "TcpExt.ListenDrops";
/// SYNs dropped by the SYN-queue limit (tcp_syncookies=0).
pub const REQ_QFULL_DROP: &str = "TcpExt.TCPReqQFullDrop";
/// Cookie SYN-ACKs sent because the SYN queue was full: each a potential phantom.
pub const REQ_QFULL_DO_COOKIES: &str = "TcpExt.TCPReqQFullDoCookies";
/// Syncookies sent.
pub const SYNCOOKIES_SENT: &str = "TcpExt.SyncookiesSent";
/// Resets sent because of tcp_abort_on_overflow.
pub const EMBRYONIC_RSTS: &str = "TcpExt.EmbryonicRsts";
/// Retransmits that failed locally (the sender's own queue was full).
pub const RETRANS_FAIL: &str = "TcpExt.TCPRetransFail";
/// SYN or SYN-ACK retransmissions.
pub const SYN_RETRANS: &str = "TcpExt.TCPSynRetrans";

/// A snapshot of counters, keyed `Section.Name` (e.g. `TcpExt.ListenOverflows`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters(BTreeMap<String, u64>);

impl Counters {
    /// The value of a counter, 0 if this kernel does not have it.
    pub fn get(&self, key: &str) -> u64 {
        self.0.get(key).copied().unwrap_or(0)
    }

    /// `self - earlier`, counter by counter (saturating: counters only grow, but a reset
    /// namespace must not produce a huge wrapped number).
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(earlier.get(k))))
                .collect(),
        )
    }

    /// Parses the two-line-per-section format of `/proc/net/netstat` and `/proc/net/snmp`
    /// (a header line of names, then a line of values, both starting with `Section:`).
    pub fn parse_into(&mut self, text: &str) {
        let mut lines = text.lines();
        while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
            let mut names = names.split_whitespace();
            let mut values = values.split_whitespace();
            let (Some(section), Some(section2)) = (names.next(), values.next()) else {
                continue;
            };
            if section != section2 {
                // Out of step (should not happen); stop rather than mislabel counters.
                return;
            }
            let section = section.trim_end_matches(':');
            for (name, value) in names.zip(values) {
                // Tcp.MaxConn is -1; signed fields are of no interest here.
                if let Ok(v) = value.parse::<u64>() {
                    self.0.insert(format!("{section}.{name}"), v);
                }
            }
        }
    }
}

/// Open handles on the namespace's counter files.
#[derive(Debug)]
pub struct Netstat {
    files: Vec<File>,
}

impl Netstat {
    /// Opens the counter files of the calling thread's network namespace.
    pub fn open() -> io::Result<Netstat> {
        let base = if std::path::Path::new("/proc/thread-self/net").exists() {
            "/proc/thread-self/net"
        } else {
            "/proc/self/net"
        };
        let files = ["netstat", "snmp"]
            .iter()
            .map(|f| File::open(format!("{base}/{f}")))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Netstat { files })
    }

    /// Reads all counters now.
    pub fn read(&mut self) -> io::Result<Counters> {
        let mut counters = Counters::default();
        let mut text = String::with_capacity(8192);
        for f in &mut self.files {
            text.clear();
            f.seek(SeekFrom::Start(0))?;
            f.read_to_string(&mut text)?;
            counters.parse_into(&text);
        }
        Ok(counters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n\
                          TcpExt: 14 91 91\n\
                          IpExt: InNoRoutes\n\
                          IpExt: 0\n";

    #[test]
    fn parses_sections_and_diffs() {
        let mut before = Counters::default();
        before.parse_into(SAMPLE);
        assert_eq!(before.get(LISTEN_OVERFLOWS), 91);
        assert_eq!(before.get(SYNCOOKIES_SENT), 14);
        assert_eq!(before.get("IpExt.InNoRoutes"), 0);
        assert_eq!(before.get("TcpExt.NoSuchCounter"), 0);
        let mut after = Counters::default();
        after.parse_into(&SAMPLE.replace("14 91 91", "20 100 101"));
        let d = after.since(&before);
        assert_eq!(d.get(SYNCOOKIES_SENT), 6);
        assert_eq!(d.get(LISTEN_OVERFLOWS), 9);
        assert_eq!(d.get(LISTEN_DROPS), 10);
        assert_eq!(before.since(&after).get(LISTEN_DROPS), 0, "saturates");
    }

    #[test]
    fn reads_this_kernel() {
        let mut n = Netstat::open().unwrap();
        let c = n.read().unwrap();
        // Every Linux since 2.6 has these two; a parser that lost them would read zeros.
        assert!(c.0.contains_key(LISTEN_OVERFLOWS), "{c:?}");
        assert!(c.0.contains_key("Tcp.ActiveOpens"), "{c:?}");
        let again = n.read().unwrap();
        assert!(again.get("Tcp.ActiveOpens") >= c.get("Tcp.ActiveOpens"));
    }
}
