//! Sysctls that shape a burst's outcome (docs/kernel.md §1, §2, §8), read from the calling
//! thread's network namespace (`/proc/sys/net` follows the reading thread).

use std::io;
use std::path::PathBuf;

/// `net.core.somaxconn`: the ceiling on any listen() backlog in this namespace.
pub const SOMAXCONN: &str = "net.core.somaxconn";
/// `net.ipv4.tcp_syn_retries`: SYN retransmits before ETIMEDOUT.
pub const TCP_SYN_RETRIES: &str = "net.ipv4.tcp_syn_retries";
/// `net.ipv4.tcp_syn_linear_timeouts`: how many SYN retransmits use a fixed 1 s RTO (6.5+).
pub const TCP_SYN_LINEAR_TIMEOUTS: &str = "net.ipv4.tcp_syn_linear_timeouts";
/// `net.ipv4.tcp_syncookies`.
pub const TCP_SYNCOOKIES: &str = "net.ipv4.tcp_syncookies";
/// `net.ipv4.tcp_abort_on_overflow`.
pub const TCP_ABORT_ON_OVERFLOW: &str = "net.ipv4.tcp_abort_on_overflow";
/// `net.ipv4.tcp_max_syn_backlog`.
pub const TCP_MAX_SYN_BACKLOG: &str = "net.ipv4.tcp_max_syn_backlog";
/// `net.ipv4.ip_local_port_range`: two numbers, the ephemeral port range.
pub const IP_LOCAL_PORT_RANGE: &str = "net.ipv4.ip_local_port_range";

fn path(name: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(name.replace('.', "/"))
}

/// Reads a sysctl as text (trimmed); an error names the sysctl.
pub fn read(name: &str) -> io::Result<String> {
    std::fs::read_to_string(path(name))
        .map(|s| s.trim().to_owned())
        .map_err(|e| io::Error::new(e.kind(), format!("reading sysctl {name}: {e}")))
}

/// Reads a sysctl holding one integer.
pub fn read_u64(name: &str) -> io::Result<u64> {
    let text = read(name)?;
    text.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("sysctl {name} is {text:?}, not an integer"),
        )
    })
}

/// Writes a sysctl (needs root, in the calling thread's namespace).
pub fn write(name: &str, value: &str) -> io::Result<()> {
    std::fs::write(path(name), value)
        .map_err(|e| io::Error::new(e.kind(), format!("writing sysctl {name}={value}: {e}")))
}

/// The ephemeral port range `(low, high)`, both inclusive.
pub fn local_port_range() -> io::Result<(u16, u16)> {
    let text = read(IP_LOCAL_PORT_RANGE)?;
    let mut parts = text.split_whitespace().map(str::parse::<u16>);
    match (parts.next(), parts.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) if lo <= hi => Ok((lo, hi)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("sysctl {IP_LOCAL_PORT_RANGE} is {text:?}, not two ports"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_somaxconn_and_port_range() {
        assert!(read_u64(SOMAXCONN).unwrap() > 0);
        let (lo, hi) = local_port_range().unwrap();
        assert!(lo <= hi);
        let err = read("net.core.no_such_sysctl").unwrap_err();
        assert!(err.to_string().contains("net.core.no_such_sysctl"));
    }
}
