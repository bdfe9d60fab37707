//! The file descriptor limit (RLIMIT_NOFILE): every socket an agent arms and every agent
//! session a coordinator holds is one descriptor, so both raise the soft limit to the hard
//! one at start ([`raise_fd_limit`]) and refuse work that cannot fit under it.

use std::io;

/// RLIMIT_NOFILE as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// Soft limit (what applies).
    pub soft: u64,
    /// Hard limit (how far the soft one may be raised).
    pub hard: u64,
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns both.
pub fn raise_fd_limit() -> io::Result<FdLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; raising soft up to hard needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    Ok(FdLimit {
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After the call the soft limit is the hard one (raising needs no privilege; the kernel
    /// refuses only a hard limit above fs.nr_open), and a second call changes nothing.
    #[test]
    fn soft_is_raised_to_hard() {
        let limit = raise_fd_limit().unwrap();
        let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            limit.soft == limit.hard || limit.hard > nr_open,
            "{limit:?}"
        );
        assert_eq!(raise_fd_limit().unwrap(), limit);
    }
}
