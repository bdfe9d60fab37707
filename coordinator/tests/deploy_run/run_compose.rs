//! `docker compose up --exit-code-from coordinator` in deploy/compose/, as processes.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use stampede_lab::{ChildGuard, Lab, kernel_tests_enabled};

use crate::compose::{self, Service};
use crate::runtime::{self, HostsFile, Mounts, Proc};
use crate::{Scratch, deploy_dir, logs, outcome_sum, read_report};

/// The operator of the setup lines at the top of compose.yaml: not root.
const UID: u32 = 10001;
const GID: u32 = 10001;

fn vars() -> BTreeMap<String, String> {
    [
        ("HOST_UID".to_owned(), UID.to_string()),
        ("HOST_GID".to_owned(), GID.to_string()),
    ]
    .into()
}

#[test]
fn compose_refuses_to_start_without_the_setup() {
    let err =
        compose::load(&deploy_dir().join("compose/compose.yaml"), &BTreeMap::new()).unwrap_err();
    assert!(err.contains("HOST_UID"), "{err}");
    assert!(err.contains("setup lines"), "{err}");
}

fn process(s: &Service, argv: Vec<String>, name: String) -> Proc {
    Proc {
        name,
        argv,
        env: s.env.clone(),
        user: s.user.map(|(u, g)| (u, g, Vec::new())),
        nofile: s.nofile,
    }
}

#[test]
fn compose_runs_a_whole_burst_as_shipped() {
    if !kernel_tests_enabled("compose_runs_a_whole_burst_as_shipped") {
        return;
    }
    let _one_burst_at_a_time = crate::BURST.lock().unwrap_or_else(|e| e.into_inner());
    let file = deploy_dir().join("compose/compose.yaml");
    let project = compose::load(&file, &vars()).unwrap();
    // The project directory after the setup lines: the token and ./out, made by the user.
    let dir = Scratch::new("compose");
    let token = dir.0.join("token");
    std::fs::write(&token, format!("compose-token-{}\n", std::process::id())).unwrap();
    runtime::own(&token, UID, GID, 0o600);
    let out = dir.0.join("out");
    std::fs::create_dir(&out).unwrap();
    runtime::own(&out, UID, GID, 0o700);
    let logs_dir = dir.0.join("logs");
    std::fs::create_dir(&logs_dir).unwrap();

    // One host per replica, each with its address on the compose network: the fixed one,
    // or the next free one from .2 (the engine's gateway is .1).
    let total: usize = project.services.iter().map(|s| s.replicas).sum();
    let lab = Lab::new("compose", total).unwrap();
    let (net, prefix) = project.subnet;
    let fixed: Vec<Ipv4Addr> = project.services.iter().filter_map(|s| s.ipv4).collect();
    let mut next = u32::from(net) + 2;
    let mut placed = Vec::new(); // (service index, replica, host, ip)
    for (si, s) in project.services.iter().enumerate() {
        for r in 0..s.replicas {
            let ip = s.ipv4.unwrap_or_else(|| {
                while fixed.contains(&Ipv4Addr::from(next)) {
                    next += 1;
                }
                next += 1;
                Ipv4Addr::from(next - 1)
            });
            let host = placed.len();
            runtime::add_address(lab.host(host), ip, prefix);
            placed.push((si, r, host, ip));
        }
    }
    // Service names resolve to their (first) replica, as the engine's DNS does.
    let names: BTreeMap<String, Ipv4Addr> = placed
        .iter()
        .filter(|(_, r, _, _)| *r == 0)
        .map(|(si, _, _, ip)| (project.services[*si].name.clone(), *ip))
        .collect();
    let _hosts: Vec<HostsFile> = (0..total)
        .map(|h| HostsFile::new(lab.host(h), &names))
        .collect();

    let mut children: BTreeMap<String, ChildGuard> = BTreeMap::new();
    for (si, s) in project.services.iter().enumerate() {
        let mut mounts = Mounts::default();
        for secret in &s.secrets {
            mounts.add(
                &format!("/run/secrets/{secret}"),
                dir.0.join(&project.secrets[secret]),
            );
        }
        for (host, container) in &s.volumes {
            mounts.add(container, dir.0.join(host));
        }
        for (_, r, h, _) in placed.iter().filter(|(i, ..)| *i == si) {
            let ns = lab.host(*h);
            for (key, value) in &s.sysctls {
                ns.sysctl(key, value).unwrap();
            }
            let name = format!("{}-{}", s.name, r + 1);
            let p = process(s, s.argv.clone(), name.clone());
            children.insert(name.clone(), p.spawn(ns, &mounts, &logs_dir));
            // A dependent waits on `service_healthy`: the healthcheck as written, in the
            // container (its user and environment), every interval, up to its retries.
            let awaited = project.services.iter().any(|d| {
                d.depends_on
                    .iter()
                    .any(|(n, c)| n == &s.name && c == "service_healthy")
            });
            if let (true, Some((test, interval, retries))) = (awaited, &s.healthcheck) {
                let check = process(s, test.clone(), format!("{name}-health"));
                runtime::wait_healthy(&name, *retries, *interval, || {
                    check.run(ns, &mounts, Duration::from_secs(10))
                });
            }
        }
    }

    // --exit-code-from coordinator: its exit is the burst's.
    let coordinator = children
        .get_mut("coordinator-1")
        .expect("a coordinator service");
    let status = coordinator.wait_exit(Duration::from_secs(300));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "the coordinator did not finish cleanly:\n{}",
        logs(&logs_dir)
    );

    let report = read_report(&out);
    let coordinator_env = &project
        .services
        .iter()
        .find(|s| s.name == "coordinator")
        .unwrap()
        .env;
    let want: u64 = coordinator_env
        .iter()
        .find(|(k, _)| k == "STAMPEDE_CONNECTIONS")
        .unwrap()
        .1
        .parse()
        .unwrap();
    assert_eq!(report["partial"], false, "{report}");
    assert_eq!(outcome_sum(&report), want, "{report}");
    let agents = report["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 3, "{report}");
    // The target, reached by its service name, reported its side.
    let target = project
        .services
        .iter()
        .find(|s| s.name == "target")
        .unwrap();
    let somaxconn: u64 = target
        .sysctls
        .iter()
        .find(|(k, _)| k == "net.core.somaxconn")
        .unwrap()
        .1
        .parse()
        .unwrap();
    assert_eq!(report["target"]["somaxconn"], somaxconn, "{report}");
    let accepted = report["target"]["accepted"].as_u64().unwrap();
    assert!(accepted > 0 && accepted <= want, "{report}");
    // Written by the containers' user into the folder the operator made.
    let meta = std::fs::metadata(out.join("report.json")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (UID, GID));
}
