//! `getsockopt(TCP_INFO)`, the one kernel view both ends of stampede rely on.
//!
//! On a client socket, `tcpi_total_retrans` at connect completion is the exact number k of
//! SYN retransmits it took (docs/kernel.md §2), and `tcpi_unacked` after sending tells a phantom
//! from an admitted connection (§3). On a listening socket, `tcpi_unacked` is the accept-queue
//! length and `tcpi_sacked` the effective backlog A (§5); a call costs ~200 ns, so sampling a
//! listener at 1 kHz is free.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `tcpi_state` of a listening socket.
pub const TCP_LISTEN: u8 = 10;
/// `tcpi_state` of an established connection.
pub const TCP_ESTABLISHED: u8 = 1;
/// `tcpi_state` of a client still waiting for a SYN-ACK.
pub const TCP_SYN_SENT: u8 = 2;
/// `tcpi_state` after the peer's FIN (the server accepted, then closed).
pub const TCP_CLOSE_WAIT: u8 = 8;

/// The fields of `struct tcp_info` stampede uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpInfo {
    /// TCP state (`TCP_ESTABLISHED` = 1, `TCP_SYN_SENT` = 2, `TCP_LISTEN` = 10, ...).
    pub state: u8,
    /// Retransmits of the segment now at the head of the retransmit queue.
    pub retransmits: u8,
    /// Unacknowledged segments; on a listener: accept-queue length.
    pub unacked: u32,
    /// SACKed segments; on a listener: the effective backlog.
    pub sacked: u32,
    /// All retransmissions of the connection; at connect completion: SYN retransmits.
    pub total_retrans: u32,
    /// Smoothed RTT in microseconds.
    pub rtt_us: u32,
    /// Milliseconds since the last ACK was received (jiffy resolution); on a connection just
    /// accepted and never used, how long ago its handshake completed.
    pub last_ack_recv_ms: u32,
}

/// Reads `TCP_INFO` of a TCP socket.
pub fn tcp_info(fd: BorrowedFd<'_>) -> io::Result<TcpInfo> {
    // SAFETY: tcp_info is a plain C struct of integers, for which all-zero bytes are valid.
    let mut raw: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `raw` is a writable buffer of `len` bytes that outlives the call, and the
    // kernel writes at most `len` bytes into it; `fd` is a valid open descriptor (borrowed).
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut raw as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpInfo {
        state: raw.tcpi_state,
        retransmits: raw.tcpi_retransmits,
        unacked: raw.tcpi_unacked,
        sacked: raw.tcpi_sacked,
        total_retrans: raw.tcpi_total_retrans,
        rtt_us: raw.tcpi_rtt,
        last_ack_recv_ms: raw.tcpi_last_ack_recv,
    })
}

/// Accept-queue state of a listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListenerQueue {
    /// Connections waiting to be accepted.
    pub len: u32,
    /// Effective backlog A = min(backlog, somaxconn); the queue holds A+1.
    pub backlog: u32,
}

/// Reads the accept queue of a listening socket; an error if the socket is not listening.
pub fn listener_queue(fd: BorrowedFd<'_>) -> io::Result<ListenerQueue> {
    let info = tcp_info(fd)?;
    if info.state != TCP_LISTEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket is not listening (tcp state {})", info.state),
        ));
    }
    Ok(ListenerQueue {
        len: info.unacked,
        backlog: info.sacked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn listener_reports_its_backlog_and_queue() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let q = listener_queue(listener.as_fd()).unwrap();
        // std's bind hard-codes backlog 128 (docs/kernel.md §1); somaxconn is 4096 by default, but a
        // host may have set it lower, so the effective value is min(128, somaxconn).
        assert!(q.backlog <= 128 && q.backlog > 0, "{q:?}");
        assert_eq!(q.len, 0);
        let _c1 = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _c2 = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        // The loopback handshake runs inside connect(), so both are queued on return.
        assert_eq!(listener_queue(listener.as_fd()).unwrap().len, 2);
        let (_a, _) = listener.accept().unwrap();
        assert_eq!(listener_queue(listener.as_fd()).unwrap().len, 1);
    }

    #[test]
    fn client_socket_is_not_a_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let info = tcp_info(c.as_fd()).unwrap();
        assert_eq!(info.state, TCP_ESTABLISHED);
        assert_eq!(info.total_retrans, 0);
        assert!(listener_queue(c.as_fd()).is_err());
    }
}
