//! Arming: everything that can be done before the start instant is done here, so that at the
//! instant only connect() calls remain (docs/design.md "A run, step by step", step 4).
//!
//! [`arm`] raises the fd limit, checks the plan against it and against the ephemeral-port
//! budget (docs/kernel.md §8), then creates and configures every socket and each worker's epoll
//! instance. A plan that cannot fit is refused here, before anything is sent.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use stampede_proto::netstat::Netstat;
use stampede_proto::report::Kernel;
use stampede_proto::sysctl;

use crate::plan::{CloseMode, Plan};

/// One copy for the agent and the coordinator: `stampede_proto::rlimit`.
pub use stampede_proto::rlimit::{FdLimit, raise_fd_limit};

/// File descriptors kept free for everything that is not an armed socket (epoll instances,
/// stdio, the report file, a runtime's own descriptors).
pub const FD_RESERVE: u64 = 64;

/// Why a plan could not be armed.
#[derive(Debug, thiserror::Error)]
pub enum ArmError {
    /// More sockets than the fd limit allows.
    #[error(
        "plan needs {needed} file descriptors ({connections} sockets + {FD_RESERVE} reserve) but RLIMIT_NOFILE is {soft} (hard limit {hard}): lower --connections or raise the hard limit (ulimit -Hn, LimitNOFILE=)"
    )]
    FdLimit {
        /// Sockets in the plan.
        connections: u64,
        /// Sockets plus reserve.
        needed: u64,
        /// Soft limit after raising it.
        soft: u64,
        /// Hard limit.
        hard: u64,
    },
    /// More connections per (source IP, destination) than there are ephemeral ports.
    #[error(
        "port budget exceeded: {per_source} connections from {from} to {target} need {per_source} ephemeral ports, but net.ipv4.ip_local_port_range {low}-{high} has {ports}; add --source-ip addresses, lower --connections, or widen the range"
    )]
    PortBudget {
        /// Connections per source address.
        per_source: u64,
        /// The source (an IP, or "the kernel's source address").
        from: String,
        /// The destination.
        target: SocketAddr,
        /// Range start.
        low: u16,
        /// Range end.
        high: u16,
        /// Ports in the range.
        ports: u64,
    },
    /// A system call failed while arming.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ArmError {
    let what = what.into();
    move |source| ArmError::Io { what, source }
}

/// Refuses `connections` sockets if they do not fit under `limit` with the reserve.
pub fn check_fd_budget(connections: u64, limit: FdLimit) -> Result<(), ArmError> {
    let needed = connections + FD_RESERVE;
    if needed > limit.soft {
        return Err(ArmError::FdLimit {
            connections,
            needed,
            soft: limit.soft,
            hard: limit.hard,
        });
    }
    Ok(())
}

/// Refuses a plan that needs more ephemeral ports per (source, destination) than the range
/// `(low, high)` holds. Connections are spread round-robin over `sources` (none: one source,
/// the kernel's).
pub fn check_port_budget(
    connections: u64,
    sources: &[IpAddr],
    target: SocketAddr,
    (low, high): (u16, u16),
) -> Result<(), ArmError> {
    let ports = u64::from(high) - u64::from(low) + 1;
    let per_source = connections.div_ceil(sources.len().max(1) as u64);
    if per_source > ports {
        return Err(ArmError::PortBudget {
            per_source,
            from: match sources {
                [] => "the kernel's source address".to_owned(),
                [one] => one.to_string(),
                many => format!("each of {} source IPs", many.len()),
            },
            target,
            low,
            high,
            ports,
        });
    }
    Ok(())
}

/// One armed attempt.
#[derive(Debug)]
pub(crate) struct ArmedSocket {
    pub(crate) socket: Socket,
    /// Intended send time, ns after the start instant.
    pub(crate) offset_ns: u64,
}

/// One worker's share: its sockets in schedule order and its epoll instance.
#[derive(Debug)]
pub(crate) struct WorkerArms {
    pub(crate) sockets: Vec<ArmedSocket>,
    pub(crate) epoll: OwnedFd,
}

/// A plan with every socket created and configured, ready to [`Armed::fire`].
#[derive(Debug)]
pub struct Armed {
    pub(crate) plan: Plan,
    pub(crate) workers: Vec<WorkerArms>,
    pub(crate) target: SockAddr,
    pub(crate) netstat: Option<Netstat>,
    pub(crate) kernel: Kernel,
}

impl Armed {
    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Sockets armed.
    pub fn sockets(&self) -> u64 {
        self.workers.iter().map(|w| w.sockets.len() as u64).sum()
    }
}

/// Kernel settings of the calling thread's namespace that shape the outcome.
fn kernel_settings(fd_limit: u64) -> Kernel {
    Kernel {
        tcp_syn_retries: sysctl::read_u64(sysctl::TCP_SYN_RETRIES).ok(),
        tcp_syn_linear_timeouts: sysctl::read_u64(sysctl::TCP_SYN_LINEAR_TIMEOUTS).ok(),
        ip_local_port_range: sysctl::local_port_range()
            .ok()
            .map(|(lo, hi)| format!("{lo} {hi}")),
        fd_limit,
        retrans_fail: 0,
        syn_retrans: 0,
    }
}

/// Checks the plan against this host and creates its sockets, in the calling thread's
/// network namespace.
pub fn arm(plan: &Plan) -> Result<Armed, ArmError> {
    let config = plan.config();
    let limit = raise_fd_limit().map_err(io_err("reading RLIMIT_NOFILE"))?;
    check_fd_budget(config.load.connections, limit)?;
    let range = sysctl::local_port_range().map_err(io_err("reading the ephemeral port range"))?;
    check_port_budget(
        config.load.connections,
        &config.source_ips,
        config.load.target,
        range,
    )?;

    let workers_n = plan.workers();
    let mut workers = Vec::with_capacity(workers_n);
    for w in 0..workers_n {
        // SAFETY: epoll_create1 has no memory preconditions; the result is checked below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io_err(format!("creating epoll instance {w}"))(
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let share = (config.load.connections as usize).div_ceil(workers_n);
        workers.push(WorkerArms {
            sockets: Vec::with_capacity(share),
            epoll,
        });
    }

    let domain = Domain::for_address(config.load.target);
    for i in 0..config.load.connections {
        let socket = Socket::new(domain, Type::STREAM.nonblocking(), Some(Protocol::TCP)).map_err(
            io_err(format!(
                "creating socket {i} of {}",
                config.load.connections
            )),
        )?;
        if config.load.close == CloseMode::Rst {
            // Zero linger: close() sends RST, so no TIME_WAIT piles up on the agent and its
            // ports are free for the next run at once (docs/kernel.md §8).
            socket
                .set_linger(Some(std::time::Duration::ZERO))
                .map_err(io_err("setting SO_LINGER 0"))?;
        }
        if !config.source_ips.is_empty() {
            let ip = config.source_ips[(i % config.source_ips.len() as u64) as usize];
            // IP_BIND_ADDRESS_NO_PORT: bind fixes only the source address and leaves the
            // port to connect(), so ports are budgeted per 4-tuple, not per source address.
            set_bind_address_no_port(&socket).map_err(io_err("setting IP_BIND_ADDRESS_NO_PORT"))?;
            socket
                .bind(&SocketAddr::new(ip, 0).into())
                .map_err(io_err(format!("binding source IP {ip}")))?;
        }
        let worker = (i % workers_n as u64) as usize;
        workers[worker].sockets.push(ArmedSocket {
            socket,
            offset_ns: plan.schedule().offset(i).as_nanos() as u64,
        });
    }

    Ok(Armed {
        plan: plan.clone(),
        workers,
        target: config.load.target.into(),
        // Opened here so it reads this thread's namespace, whichever thread fires.
        netstat: Netstat::open().ok(),
        kernel: kernel_settings(limit.soft),
    })
}

fn set_bind_address_no_port(socket: &Socket) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `one` is a c_int that outlives the call and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_budget_has_numbers() {
        let limit = FdLimit {
            soft: 20_000,
            hard: 20_000,
        };
        assert!(check_fd_budget(19_936, limit).is_ok());
        let e = check_fd_budget(25_000, limit).unwrap_err().to_string();
        assert!(e.contains("25064") && e.contains("20000"), "{e}");
    }

    #[test]
    fn port_budget_counts_per_source() {
        let t: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert!(check_port_budget(10, &[], t, (40000, 40009)).is_ok());
        let e = check_port_budget(20, &[], t, (40000, 40009)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("40000-40009 has 10"), "{msg}");
        assert!(msg.contains("--source-ip"), "{msg}");
        let two: Vec<IpAddr> = vec!["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()];
        assert!(check_port_budget(20, &two, t, (40000, 40009)).is_ok());
        assert!(check_port_budget(21, &two, t, (40000, 40009)).is_err());
    }
}
