//! Several "hosts" on one machine: network namespaces joined by a bridge, each with an
//! address from 198.18.0.0/24 (the benchmarking range, RFC 2544). The bridge lives in a hub
//! namespace of its own, so the machine's own namespace gains no interface, route or address;
//! dropping the [`Lab`] deletes every namespace and with them every link.

use std::io;
use std::net::Ipv4Addr;

use crate::{Netns, run_ip};

/// Hosts on a bridge; host `i` has 198.18.0.(i+1)/24 on its `eth0`.
#[derive(Debug)]
pub struct Lab {
    // Field order is drop order: hosts first, then the hub.
    hosts: Vec<Netns>,
    hub: Netns,
}

impl Lab {
    /// The bridge's name in the hub namespace.
    pub const BRIDGE: &'static str = "br0";

    /// Creates `n` hosts (at most 250) and the hub, all uniquely named after `tag`.
    pub fn new(tag: &str, n: usize) -> io::Result<Lab> {
        if n == 0 || n > 250 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a lab has 1 to 250 hosts, not {n}"),
            ));
        }
        let hub = Netns::new(&format!("{tag}hub"))?;
        let mut lab = Lab {
            hosts: Vec::with_capacity(n),
            hub,
        };
        let hub = lab.hub.name().to_owned();
        run_ip(&["-n", &hub, "link", "add", Lab::BRIDGE, "type", "bridge"])?;
        run_ip(&["-n", &hub, "link", "set", Lab::BRIDGE, "up"])?;
        for i in 0..n {
            let host = Netns::new(&format!("{tag}h{i}"))?;
            let port = format!("vh{i}"); // Lab::port
            // Both ends are created in the hub and the peer is moved straight into the host
            // namespace: interface names only need to be unique per namespace.
            run_ip(&[
                "-n",
                &hub,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                host.name(),
            ])?;
            run_ip(&[
                "-n",
                &hub,
                "link",
                "set",
                &port,
                "master",
                Lab::BRIDGE,
                "up",
            ])?;
            let addr = format!("{}/24", Lab::addr_of(i));
            run_ip(&["-n", host.name(), "addr", "add", &addr, "dev", "eth0"])?;
            run_ip(&["-n", host.name(), "link", "set", "eth0", "up"])?;
            lab.hosts.push(host);
        }
        Ok(lab)
    }

    fn addr_of(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, (i + 1) as u8)
    }

    /// Host `i`'s namespace.
    pub fn host(&self, i: usize) -> &Netns {
        &self.hosts[i]
    }

    /// The hub: the namespace that holds the bridge ([`Lab::BRIDGE`]) and one port per host
    /// (`vh{i}`, the other end of host `i`'s `eth0`). A capture on the bridge sees every
    /// frame between hosts (`Capture`).
    pub fn hub(&self) -> &Netns {
        &self.hub
    }

    /// Host `i`'s port on the bridge, in the hub: its frames arrive there the moment the host
    /// sends them.
    pub fn port(&self, i: usize) -> String {
        assert!(
            i < self.hosts.len(),
            "no host {i} in a lab of {}",
            self.hosts.len()
        );
        format!("vh{i}")
    }

    /// Host `i`'s address.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        assert!(
            i < self.hosts.len(),
            "no host {i} in a lab of {}",
            self.hosts.len()
        );
        Lab::addr_of(i)
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// True for a lab without hosts (never: `new` refuses it).
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel_tests_enabled;
    use std::io::{Read, Write};
    use std::process::Command;

    fn root_links() -> String {
        String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-o", "link"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    }

    #[test]
    fn hosts_reach_each_other_and_leave_nothing_behind() {
        if !kernel_tests_enabled("hosts_reach_each_other_and_leave_nothing_behind") {
            return;
        }
        let before = root_links();
        let names: Vec<String>;
        {
            let lab = Lab::new("br", 3).unwrap();
            names = (0..3).map(|i| lab.host(i).name().to_owned()).collect();
            assert_eq!(lab.addr(2), Ipv4Addr::new(198, 18, 0, 3));
            // Per-host sysctls.
            lab.host(2).sysctl("net.core.somaxconn", "7").unwrap();
            let smc = |i: usize| {
                lab.host(i)
                    .run(|| stampede_proto::sysctl::read_u64("net.core.somaxconn").unwrap())
            };
            assert_eq!(smc(2), 7);
            assert_ne!(smc(0), 7);
            // Host 0 talks TCP to host 2 across the bridge.
            let listener = lab
                .host(2)
                .run(|| std::net::TcpListener::bind((lab.addr(2), 0)).unwrap());
            let port = listener.local_addr().unwrap().port();
            let dst = (lab.addr(2), port);
            let mut client = lab
                .host(0)
                .run(|| std::net::TcpStream::connect(dst).unwrap());
            let (mut server, peer) = listener.accept().unwrap();
            assert_eq!(peer.ip(), std::net::IpAddr::V4(lab.addr(0)));
            client.write_all(b"ping").unwrap();
            let mut buf = [0u8; 4];
            server.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"ping");
            assert_eq!(root_links(), before, "the lab touched the root namespace");
        }
        let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let listed = String::from_utf8_lossy(&listed.stdout);
        for n in names {
            assert!(!listed.contains(&n), "{n} left behind");
        }
        assert_eq!(root_links(), before);
    }
}
