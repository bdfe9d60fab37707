//! `kubectl apply -f deploy/kubernetes/stampede.yaml` (and schedule.yaml), as processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use stampede_lab::{ChildGuard, Lab, Netns, kernel_tests_enabled};

use crate::kube::{self, Container, Manifests, Template, Volume};
use crate::runtime::{self, HostsFile, Mounts, Proc};
use crate::{Scratch, deploy_dir, logs, outcome_sum, read_report};

/// One pod of a template, placed on a lab host.
struct Pod<'a> {
    name: String,
    template: &'a Template,
    host: usize,
    ip: String,
}

/// The pods of `m`, their hosts, and what the kubelet would give them.
struct Cluster<'a> {
    m: &'a Manifests,
    lab: Lab,
    pods: Vec<Pod<'a>>,
    links: Vec<(String, String)>,
    dir: &'a Path,
    _hosts: Vec<HostsFile>,
}

impl<'a> Cluster<'a> {
    fn new(m: &'a Manifests, dir: &'a Path) -> Cluster<'a> {
        let total: usize = m.templates.iter().map(|t| t.replicas).sum();
        let lab = Lab::new("kube", total).unwrap();
        let mut pods = Vec::new();
        for t in &m.templates {
            for i in 0..t.replicas {
                let host = pods.len();
                pods.push(Pod {
                    name: format!("{}-{i}", t.owner),
                    template: t,
                    host,
                    ip: lab.addr(host).to_string(),
                });
            }
        }
        // Each Service's name (short, and qualified) is its one selected pod's address.
        let mut addrs = BTreeMap::new();
        let mut names = BTreeMap::new();
        for s in &m.services {
            let selected: Vec<&Pod<'_>> = pods
                .iter()
                .filter(|p| {
                    s.selector
                        .iter()
                        .all(|(k, v)| p.template.labels.get(k) == Some(v))
                })
                .collect();
            assert_eq!(
                selected.len(),
                1,
                "Service {} selects {} pods",
                s.name,
                selected.len()
            );
            let ip = lab.addr(selected[0].host);
            addrs.insert(s.name.clone(), ip.to_string());
            for name in [
                s.name.clone(),
                format!("{}.{}", s.name, m.namespace),
                format!("{}.{}.svc", s.name, m.namespace),
                format!("{}.{}.svc.cluster.local", s.name, m.namespace),
            ] {
                names.insert(name, ip);
            }
        }
        let hosts = (0..total)
            .map(|h| HostsFile::new(lab.host(h), &names))
            .collect();
        Cluster {
            m,
            lab,
            pods,
            links: kube::service_env(&m.services, &addrs),
            dir,
            _hosts: hosts,
        }
    }

    /// A claim's directory, shared by the pods that mount it.
    fn claim(&self, name: &str, fs_group: Option<u32>) -> PathBuf {
        let path = self.dir.join(format!("pvc-{name}"));
        if !path.exists() {
            std::fs::create_dir(&path).unwrap();
            // fsGroup: the volume's group, setgid, group-writable (the kubelet's chown).
            match fs_group {
                Some(g) => runtime::own(&path, 0, g, 0o2775),
                None => runtime::own(&path, 0, 0, 0o755),
            }
        }
        path
    }

    /// The pod's volumes as directories, and where its containers see them.
    fn volumes(&self, pod: &Pod<'_>) -> BTreeMap<String, PathBuf> {
        let t = pod.template;
        let group = t.fs_group.unwrap_or(0);
        let mut out = BTreeMap::new();
        for (name, v) in &t.volumes {
            let path = self.dir.join(format!("{}-{name}", pod.name));
            let path = match v {
                Volume::ConfigMap(cm) => {
                    std::fs::create_dir(&path).unwrap();
                    for (file, text) in &self.m.config_maps[cm] {
                        std::fs::write(path.join(file), text).unwrap();
                        runtime::own(&path.join(file), 0, 0, 0o644);
                    }
                    path
                }
                Volume::Secret(secret, mode) => {
                    // `kubectl create secret generic stampede-token --from-literal=token=...`
                    assert_eq!(secret, "stampede-token");
                    std::fs::create_dir(&path).unwrap();
                    let file = path.join("token");
                    std::fs::write(&file, format!("kube-token-{}\n", std::process::id())).unwrap();
                    runtime::own(&file, 0, group, *mode);
                    path
                }
                Volume::Claim(claim) => self.claim(claim, t.fs_group),
                Volume::EmptyDir => {
                    std::fs::create_dir(&path).unwrap();
                    runtime::own(&path, 0, 0, 0o777);
                    path
                }
            };
            out.insert(name.clone(), path);
        }
        out
    }

    fn process(&self, pod: &Pod<'_>, c: &Container) -> Proc {
        let (env, argv) = kube::resolve(c, &pod.name, &self.m.namespace, &pod.ip, &self.links);
        let (uid, gid) = c.user;
        let groups = pod.template.fs_group.into_iter().collect();
        Proc {
            name: format!("{}-{}", pod.name, c.name),
            argv,
            env,
            user: (uid != 0).then_some((uid, gid, groups)),
            nofile: None,
        }
    }

    fn ns(&self, pod: &Pod<'_>) -> &Netns {
        self.lab.host(pod.host)
    }

    /// Starts a pod: its init containers one by one to success, then its containers; waits
    /// for the readiness probes (gRPC health on the port, asked from the pod's network).
    fn start(&self, pod: &Pod<'_>, logs_dir: &Path) -> Vec<(String, ChildGuard)> {
        let dirs = self.volumes(pod);
        let mounts = |c: &Container| {
            let mut m = Mounts::default();
            for (path, volume) in &c.mounts {
                m.add(path, dirs[volume].clone());
            }
            m
        };
        for c in &pod.template.init {
            let (ok, out) =
                self.process(pod, c)
                    .run(self.ns(pod), &mounts(c), Duration::from_secs(30));
            assert!(ok, "init container {} of {}: {out}", c.name, pod.name);
        }
        let mut running = Vec::new();
        for c in &pod.template.containers {
            let p = self.process(pod, c);
            running.push((p.name.clone(), p.spawn(self.ns(pod), &mounts(c), logs_dir)));
        }
        for c in &pod.template.containers {
            if let Some(port) = c.ready_grpc {
                let probe = Proc {
                    name: format!("{}-probe", pod.name),
                    argv: vec![
                        "stampede".into(),
                        "health".into(),
                        format!("http://{}:{port}", pod.ip),
                    ],
                    env: Vec::new(),
                    user: None,
                    nofile: None,
                };
                let ns = self.ns(pod);
                runtime::wait_healthy(&pod.name, 60, Duration::from_millis(500), || {
                    probe.run(ns, &Mounts::default(), Duration::from_secs(10))
                });
            }
        }
        running
    }

    /// Every pod, those with readiness probes first (in file order, each ready before the
    /// next), then the rest: what a cluster converges to, in an order that needs no retries.
    fn start_all(&self, logs_dir: &Path) -> BTreeMap<String, ChildGuard> {
        let probed = |p: &&Pod<'_>| p.template.containers.iter().any(|c| c.ready_grpc.is_some());
        let mut all = BTreeMap::new();
        let first: Vec<&Pod<'_>> = self.pods.iter().filter(probed).collect();
        let rest: Vec<&Pod<'_>> = self.pods.iter().filter(|p| !probed(p)).collect();
        for pod in first.into_iter().chain(rest) {
            all.extend(self.start(pod, logs_dir));
        }
        all
    }
}

#[test]
fn kubernetes_runs_a_whole_burst_as_shipped() {
    if !kernel_tests_enabled("kubernetes_runs_a_whole_burst_as_shipped") {
        return;
    }
    let _one_burst_at_a_time = crate::BURST.lock().unwrap_or_else(|e| e.into_inner());
    let m = kube::load(&[&deploy_dir().join("kubernetes/stampede.yaml")]);
    let dir = Scratch::new("kube");
    let logs_dir = dir.0.join("logs");
    std::fs::create_dir(&logs_dir).unwrap();
    let cluster = Cluster::new(&m, &dir.0);
    let mut running = cluster.start_all(&logs_dir);

    let job = running
        .get_mut("stampede-burst-0-coordinator")
        .expect("the burst Job's coordinator");
    let status = job.wait_exit(Duration::from_secs(300));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "the Job did not succeed:\n{}",
        logs(&logs_dir)
    );

    let report = read_report(&dir.0.join("pvc-stampede-reports"));
    let scenario: toml::Value =
        toml::from_str(&m.config_maps["stampede-scenarios"]["burst.toml"]).unwrap();
    let want = scenario["connections"].as_integer().unwrap() as u64;
    assert_eq!(report["partial"], false, "{report}");
    assert_eq!(outcome_sum(&report), want, "{report}");
    // Each agent named after its pod (STAMPEDE_ID from metadata.name).
    let mut ids: Vec<String> = report["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        ["stampede-agent-0", "stampede-agent-1", "stampede-agent-2"],
        "{report}"
    );
    // The init container raised somaxconn in the target pod's own namespace, so listen()
    // took the scenario's backlog above the 4096 a new namespace starts with.
    let target_pod = cluster
        .pods
        .iter()
        .find(|p| p.template.owner == "stampede-target")
        .unwrap();
    let seen = cluster
        .ns(target_pod)
        .run(|| stampede_proto::sysctl::read_u64("net.core.somaxconn").unwrap());
    assert_eq!(report["target"]["somaxconn"], seen, "{report}");
    let backlog = scenario["backlog"].as_integer().unwrap() as u64;
    assert!(seen > 4096 && seen >= backlog, "somaxconn {seen}");
    assert_eq!(report["target"]["backlog_effective"], backlog, "{report}");
}

/// schedule.yaml beside stampede.yaml, as applied together: the schedule Deployment becomes
/// ready (its gRPC probe), serves /metrics and creates its history on the claim.
#[test]
fn kubernetes_schedule_runs_as_shipped() {
    if !kernel_tests_enabled("kubernetes_schedule_runs_as_shipped") {
        return;
    }
    let _one_burst_at_a_time = crate::BURST.lock().unwrap_or_else(|e| e.into_inner());
    let help = std::process::Command::new(crate::support::sibling_bin("stampede"))
        .args(["schedule", "--help"])
        .output()
        .unwrap();
    assert!(
        help.status.success(),
        "no `stampede schedule` in this build"
    );
    let k = deploy_dir().join("kubernetes");
    let m = kube::load(&[&k.join("stampede.yaml"), &k.join("schedule.yaml")]);
    let dir = Scratch::new("kubesched");
    let logs_dir = dir.0.join("logs");
    std::fs::create_dir(&logs_dir).unwrap();
    let cluster = Cluster::new(&m, &dir.0);
    let _running = cluster.start_all(&logs_dir);
    let pod = cluster
        .pods
        .iter()
        .find(|p| p.template.owner == "stampede-schedule")
        .unwrap();
    let addr: std::net::SocketAddr = format!("{}:9090", pod.ip).parse().unwrap();
    // The scheduler has the token, so a scrape must carry it (as Prometheus's
    // `authorization: {credentials_file: ...}` does): without it 401, with it the metrics.
    let scrape = |auth: &str| {
        cluster.ns(pod).run(|| {
            use std::io::{Read, Write};
            let mut s =
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: x\r\n{auth}\r\n").as_bytes())
                .unwrap();
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            text
        })
    };
    let refused = scrape("");
    assert!(refused.contains(" 401"), "{refused}");
    let token = format!("kube-token-{}", std::process::id());
    let answer = scrape(&format!("Authorization: Bearer {token}\r\n"));
    assert!(
        answer.starts_with("HTTP/1.") && answer.contains(" 200"),
        "{answer}\n{}",
        logs(&logs_dir)
    );
    assert!(answer.contains("stampede_agents_attached"), "{answer}");
    let db = dir.0.join("pvc-stampede-history/stampede.db");
    assert!(
        db.is_file(),
        "no history at {}:\n{}",
        db.display(),
        logs(&logs_dir)
    );
}
