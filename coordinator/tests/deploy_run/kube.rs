//! deploy/kubernetes/*.yaml read as the API server and the kubelet would: Deployments and
//! Jobs become pods (replicas, pod names), each container's command line is `command` +
//! `args` and its environment the kubelet's (the Services' `NAME_SERVICE_HOST`/`_PORT`
//! links, then `env` with `$(VAR)` expanded in order, `fieldRef` of `metadata.name`,
//! `metadata.namespace` and `status.podIP`); users and groups from the securityContexts
//! (fsGroup as a supplementary group and as the owner of the volumes), volumes by kind, and
//! `grpc` readiness probes. Services select pods by label; with no kube-proxy here a
//! Service's name resolves to its one pod's address, so each port must equal its
//! targetPort (checked). Enforced elsewhere and not here: NetworkPolicy, resources,
//! capabilities, read-only root file systems, Pod Security admission.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::yaml::{scalar, strings};

#[derive(Debug, Clone)]
pub enum EnvSource {
    Value(String),
    Field(String),
}

#[derive(Debug, Clone)]
pub struct Container {
    pub name: String,
    pub command: Vec<String>,
    pub env: Vec<(String, EnvSource)>,
    /// uid and gid; 0 is root.
    pub user: (u32, u32),
    /// mountPath, volume name.
    pub mounts: Vec<(String, String)>,
    /// The port of a `grpc` readiness probe.
    pub ready_grpc: Option<u16>,
}

#[derive(Debug, Clone)]
pub enum Volume {
    ConfigMap(String),
    /// The Secret's name and its files' mode.
    Secret(String, u32),
    Claim(String),
    EmptyDir,
}

/// A pod template and how many pods it makes.
#[derive(Debug, Clone)]
pub struct Template {
    /// The Deployment's or Job's name.
    pub owner: String,
    pub replicas: usize,
    pub labels: BTreeMap<String, String>,
    pub init: Vec<Container>,
    pub containers: Vec<Container>,
    pub fs_group: Option<u32>,
    pub volumes: BTreeMap<String, Volume>,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub selector: BTreeMap<String, String>,
    /// port, name.
    pub ports: Vec<(u16, String)>,
}

#[derive(Debug, Default)]
pub struct Manifests {
    pub namespace: String,
    pub templates: Vec<Template>,
    pub services: Vec<Service>,
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect())
        .unwrap_or_default()
}

fn container(c: &Value, pod_sc: &Value) -> Container {
    let mut command = strings(&c["command"]);
    if !c["args"].is_null() {
        command.extend(strings(&c["args"]));
    }
    let env = c["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let name = scalar(&e["name"]);
                    let source = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
                        (Value::Null, Value::String(f)) => EnvSource::Field(f.clone()),
                        (v, Value::Null) => EnvSource::Value(scalar(v)),
                        other => panic!("{name}: unsupported env source {other:?}"),
                    };
                    (name, source)
                })
                .collect()
        })
        .unwrap_or_default();
    let sc = &c["securityContext"];
    let id = |key: &str| sc[key].as_u64().or(pod_sc[key].as_u64()).unwrap_or(0) as u32;
    let mounts = c["volumeMounts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| (scalar(&m["mountPath"]), scalar(&m["name"])))
                .collect()
        })
        .unwrap_or_default();
    Container {
        name: scalar(&c["name"]),
        command,
        env,
        user: (id("runAsUser"), id("runAsGroup")),
        mounts,
        ready_grpc: c["readinessProbe"]["grpc"]["port"]
            .as_u64()
            .map(|p| p as u16),
    }
}

fn template(owner: &str, replicas: usize, t: &Value) -> Template {
    let spec = &t["spec"];
    let sc = &spec["securityContext"];
    let list = |key: &str| -> Vec<Container> {
        spec[key]
            .as_array()
            .map(|a| a.iter().map(|c| container(c, sc)).collect())
            .unwrap_or_default()
    };
    let volumes = spec["volumes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| {
                    let kind = if let Some(n) = v["configMap"]["name"].as_str() {
                        Volume::ConfigMap(n.to_owned())
                    } else if let Some(n) = v["secret"]["secretName"].as_str() {
                        // Kubernetes' default mode is 0644.
                        Volume::Secret(
                            n.to_owned(),
                            v["secret"]["defaultMode"].as_u64().unwrap_or(0o644) as u32,
                        )
                    } else if let Some(n) = v["persistentVolumeClaim"]["claimName"].as_str() {
                        Volume::Claim(n.to_owned())
                    } else if v["emptyDir"].is_object() {
                        Volume::EmptyDir
                    } else {
                        panic!("unsupported volume {v}")
                    };
                    (scalar(&v["name"]), kind)
                })
                .collect()
        })
        .unwrap_or_default();
    Template {
        owner: owner.to_owned(),
        replicas,
        labels: labels(&t["metadata"]["labels"]),
        init: list("initContainers"),
        containers: list("containers"),
        fs_group: sc["fsGroup"].as_u64().map(|g| g as u32),
        volumes,
    }
}

/// Reads every document of `paths`, in order (as `kubectl apply -f A -f B` does).
pub fn load(paths: &[&Path]) -> Manifests {
    let mut m = Manifests::default();
    for path in paths {
        for doc in crate::yaml::load_all(path) {
            let name = scalar(&doc["metadata"]["name"]);
            match doc["kind"].as_str().unwrap() {
                "Namespace" => m.namespace = name,
                "ConfigMap" => {
                    m.config_maps.insert(name, labels(&doc["data"]));
                }
                "Service" => m.services.push(Service {
                    selector: labels(&doc["spec"]["selector"]),
                    ports: doc["spec"]["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| {
                            let port = p["port"].as_u64().unwrap() as u16;
                            let target = p["targetPort"].as_u64().map_or(port, |t| t as u16);
                            assert_eq!(port, target, "{name}: port and targetPort differ");
                            (port, p["name"].as_str().unwrap_or_default().to_owned())
                        })
                        .collect(),
                    name,
                }),
                "Deployment" => {
                    let replicas = doc["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
                    m.templates
                        .push(template(&name, replicas, &doc["spec"]["template"]));
                }
                "Job" => {
                    let n = doc["spec"]["parallelism"].as_u64().unwrap_or(1) as usize;
                    m.templates
                        .push(template(&name, n, &doc["spec"]["template"]));
                }
                "PersistentVolumeClaim" | "NetworkPolicy" => {}
                other => panic!("{}: a {other} this test does not know", path.display()),
            }
        }
    }
    m
}

/// The kubelet's service links for `services` at `addrs` (name to address).
pub fn service_env(
    services: &[Service],
    addrs: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for s in services {
        let base = s.name.to_uppercase().replace('-', "_");
        env.push((format!("{base}_SERVICE_HOST"), addrs[&s.name].clone()));
        env.push((format!("{base}_SERVICE_PORT"), s.ports[0].0.to_string()));
        for (port, name) in s.ports.iter().filter(|(_, n)| !n.is_empty()) {
            let name = name.to_uppercase().replace('-', "_");
            env.push((format!("{base}_SERVICE_PORT_{name}"), port.to_string()));
        }
    }
    env
}

/// `$(VAR)` expanded from `vars` as the kubelet does: `$$` is a `$`, an unknown name is
/// left as written.
pub fn expand(s: &str, vars: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(r) = rest.strip_prefix("$$") {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("$(")
            && let Some(end) = r.find(')')
            && let Some((_, v)) = vars.iter().rev().find(|(k, _)| k == &r[..end])
        {
            out.push_str(v);
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// A container's environment in `pod` at `ip`, and its command line expanded with it.
pub fn resolve(
    c: &Container,
    pod: &str,
    namespace: &str,
    ip: &str,
    links: &[(String, String)],
) -> (Vec<(String, String)>, Vec<String>) {
    let mut env: Vec<(String, String)> = links.to_vec();
    for (name, source) in &c.env {
        let value = match source {
            EnvSource::Value(v) => expand(v, &env),
            EnvSource::Field(f) => match f.as_str() {
                "metadata.name" => pod.to_owned(),
                "metadata.namespace" => namespace.to_owned(),
                "status.podIP" => ip.to_owned(),
                other => panic!("fieldRef {other} is not emulated"),
            },
        };
        env.retain(|(k, _)| k != name);
        env.push((name.clone(), value));
    }
    let argv = c.command.iter().map(|a| expand(a, &env)).collect();
    (env, argv)
}

#[test]
fn expansion_follows_the_kubelet() {
    let vars = vec![("A".to_owned(), "1".to_owned())];
    assert_eq!(expand("$(A):8001", &vars), "1:8001");
    assert_eq!(expand("$(B)/32", &vars), "$(B)/32");
    assert_eq!(expand("$$(A)", &vars), "$(A)");
}
