//! CPU affinity for benches and tests that give each agent a core of its own:
//! [`pin_current_thread`] and [`current_affinity`] (sched_setaffinity(2) and
//! sched_getaffinity(2) on the calling thread). A thread the pinned thread creates
//! afterwards inherits its mask (clone(2) copies it), so pinning a runtime's threads as they
//! start pins the threads they spawn too: an agent's firing workers, for one. Pinning does
//! not keep other processes off that CPU (`chrt -f` does, in the real-time class).

use std::io;
use std::mem::{size_of, zeroed};

/// CPUs this process may run on now (the calling thread's mask, as a process starts).
pub fn cpus() -> io::Result<Vec<usize>> {
    current_affinity()
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::other(format!("no CPU {cpu}")));
    }
    // SAFETY: all-zero is an empty cpu_set_t; CPU_SET writes inside it (cpu < CPU_SETSIZE);
    // sched_setaffinity(0, ..) reads it for the calling thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The CPUs the calling thread may run on.
pub fn current_affinity() -> io::Result<Vec<usize>> {
    // SAFETY: sched_getaffinity writes at most the stated size into `set`; CPU_ISSET reads
    // inside it.
    unsafe {
        let mut set: libc::cpu_set_t = zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_thread_and_the_threads_it_starts_run_on_that_cpu_only() {
        let all = cpus().unwrap();
        assert!(!all.is_empty());
        let cpu = *all.last().unwrap();
        let (mine, child) = std::thread::spawn(move || {
            pin_current_thread(cpu).unwrap();
            let child = std::thread::spawn(|| current_affinity().unwrap())
                .join()
                .unwrap();
            (current_affinity().unwrap(), child)
        })
        .join()
        .unwrap();
        assert_eq!((mine, child), (vec![cpu], vec![cpu]));
        // The test's own thread kept its mask.
        assert_eq!(current_affinity().unwrap(), all);
        assert!(pin_current_thread(libc::CPU_SETSIZE as usize).is_err());
    }
}
