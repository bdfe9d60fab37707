//! What a container engine or the kubelet does for these tests, with processes: each pod or
//! service replica is a lab host (its own network namespace); a container is a process in
//! it, started by `ip netns exec` with exactly the argv and environment the manifest gives,
//! under the manifest's user (setpriv) and fd limit (prlimit).
//!
//! Two things are mapped, and only these:
//! - names: each namespace gets `/etc/netns/NAME/hosts`, which `ip netns exec` mounts over
//!   /etc/hosts, so a service name resolves through getaddrinfo (nsswitch `files`) to the
//!   address the engine's DNS would give; nothing in a command is rewritten for it;
//! - volumes: a value (an argument, an environment value) naming a path under a mount point
//!   (`/run/secrets/token`, `/out`) names the test's directory for that volume instead,
//!   since the processes share the machine's file system.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use stampede_lab::{ChildGuard, Netns};

use crate::support::sibling_bin;

/// `/etc/netns/NAME/hosts` for one namespace; removed on drop.
#[derive(Debug)]
pub struct HostsFile {
    dir: PathBuf,
}

impl HostsFile {
    /// Maps each name to its address inside `ns` (and localhost, as every /etc/hosts does).
    pub fn new(ns: &Netns, names: &BTreeMap<String, Ipv4Addr>) -> HostsFile {
        let dir = Path::new("/etc/netns").join(ns.name());
        fs::create_dir_all(&dir).unwrap();
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (name, ip) in names {
            text.push_str(&format!("{ip} {name}\n"));
        }
        fs::write(dir.join("hosts"), text).unwrap();
        HostsFile { dir }
    }
}

impl Drop for HostsFile {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Container paths and the test's directories standing in for them.
#[derive(Debug, Default, Clone)]
pub struct Mounts(Vec<(String, PathBuf)>);

impl Mounts {
    /// `container` (a mount point or a single file) is `host` here.
    pub fn add(&mut self, container: &str, host: PathBuf) {
        self.0
            .push((container.trim_end_matches('/').to_owned(), host));
        // The longest mount point wins, as in a mount table.
        self.0.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
    }

    /// `value` with a leading mounted path replaced by the host's.
    pub fn map(&self, value: &str) -> String {
        for (container, host) in &self.0 {
            if value == container {
                return host.display().to_string();
            }
            if let Some(rest) = value.strip_prefix(&format!("{container}/")) {
                return host.join(rest).display().to_string();
            }
        }
        value.to_owned()
    }
}

/// One container's process, as the manifest gives it.
#[derive(Debug, Clone)]
pub struct Proc {
    /// For logs and messages.
    pub name: String,
    /// The command line (the image's binaries are found on PATH, as in the image).
    pub argv: Vec<String>,
    /// The environment, in order (nothing else is inherited).
    pub env: Vec<(String, String)>,
    /// uid, gid and supplementary groups; `None`: root.
    pub user: Option<(u32, u32, Vec<u32>)>,
    /// RLIMIT_NOFILE, soft and hard.
    pub nofile: Option<(u64, u64)>,
}

/// The directory holding the three binaries, as /usr/local/bin does in the image.
pub fn bin_dir() -> PathBuf {
    for b in ["stampede-agent", "stampede-target"] {
        sibling_bin(b);
    }
    sibling_bin("stampede").parent().unwrap().to_owned()
}

impl Proc {
    /// The command that runs this container in `ns`, its volumes mapped by `mounts`.
    pub fn command(&self, ns: &Netns, mounts: &Mounts) -> Command {
        // `ip netns exec` passes its environment on: this one, and nothing of the test's.
        let mut cmd = match self.nofile {
            Some((soft, hard)) => {
                // The engine may raise the hard limit; a test without CAP_SYS_RESOURCE
                // cannot, so its own hard limit caps both (stated in the log).
                let cap = nofile_hard();
                if hard > cap {
                    eprintln!(
                        "{}: nofile {soft}:{hard} capped at this test's hard limit {cap}",
                        self.name
                    );
                }
                let (soft, hard) = (soft.min(cap), hard.min(cap));
                let mut cmd = ns.command("prlimit");
                cmd.args([&format!("--nofile={soft}:{hard}"), "--"]);
                cmd
            }
            None => ns.command("env"),
        };
        cmd.env_clear();
        let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin_dir().display());
        cmd.env("PATH", path);
        for (k, v) in &self.env {
            cmd.env(k, mounts.map(v));
        }
        if let Some((uid, gid, groups)) = &self.user {
            let groups = if groups.is_empty() {
                "--clear-groups".to_owned()
            } else {
                let list: Vec<String> = groups.iter().map(u32::to_string).collect();
                format!("--groups={}", list.join(","))
            };
            cmd.args([
                "setpriv",
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                &groups,
                "--",
            ]);
        }
        cmd.args(self.argv.iter().map(|a| mounts.map(a)));
        cmd
    }

    /// Starts it in `ns`, stdout and stderr to `log_dir/NAME.log`.
    pub fn spawn(&self, ns: &Netns, mounts: &Mounts, log_dir: &Path) -> ChildGuard {
        let log = fs::File::create(log_dir.join(format!("{}.log", self.name))).unwrap();
        let mut cmd = self.command(ns, mounts);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        ChildGuard::spawn(&mut cmd).unwrap_or_else(|e| panic!("starting {}: {e}", self.name))
    }

    /// Runs it to completion (an init container, a health check), at most `within`.
    pub fn run(&self, ns: &Netns, mounts: &Mounts, within: Duration) -> (bool, String) {
        let mut child = ChildGuard::spawn(
            self.command(ns, mounts)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .unwrap();
        let status = child.wait_exit(within);
        let mut text = String::new();
        use std::io::Read;
        for pipe in [
            child.0.stdout.take().map(|p| Box::new(p) as Box<dyn Read>),
            child.0.stderr.take().map(|p| Box::new(p) as Box<dyn Read>),
        ]
        .into_iter()
        .flatten()
        {
            let mut pipe = pipe;
            let _ = pipe.read_to_string(&mut text);
        }
        (status.is_some_and(|s| s.success()), text)
    }
}

/// Runs `check` every `interval` until it passes, at most `attempts` times, as compose's
/// healthcheck and the kubelet's probes do; panics with the last output if it never does.
pub fn wait_healthy(
    what: &str,
    attempts: u32,
    interval: Duration,
    mut check: impl FnMut() -> (bool, String),
) {
    let mut last = String::new();
    for _ in 0..attempts {
        let (ok, out) = check();
        if ok {
            return;
        }
        last = out;
        std::thread::sleep(interval);
    }
    panic!("{what} never became healthy in {attempts} checks; last: {last}");
}

/// Adds `ip/prefix` to the host's eth0 (the manifest's network, beside the lab's address).
pub fn add_address(ns: &Netns, ip: Ipv4Addr, prefix: u8) {
    let out = Command::new("ip")
        .args([
            "-n",
            ns.name(),
            "addr",
            "add",
            &format!("{ip}/{prefix}"),
            "dev",
            "eth0",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `path` owned by `uid:gid` with `mode`, as a volume's owner would leave it.
pub fn own(path: &Path, uid: u32, gid: u32, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// This process's hard RLIMIT_NOFILE, from /proc/self/limits.
fn nofile_hard() -> u64 {
    let limits = fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    // "Max open files  SOFT  HARD  files"
    fields[fields.len() - 2].parse().unwrap_or(u64::MAX)
}
