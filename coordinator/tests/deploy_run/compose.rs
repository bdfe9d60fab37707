//! deploy/compose/compose.yaml read as `docker compose up` reads it: variables interpolated
//! (`${VAR}`, `${VAR:-default}`, `${VAR:?error}`, `$$`), merge keys resolved (by the YAML
//! loader), and per service the command line (`entrypoint` + `command`), `environment`,
//! `user`, `ulimits.nofile`, `secrets` (at /run/secrets/NAME), bind `volumes`, `sysctls`,
//! the address on the network, `healthcheck` and `depends_on`, replicas. What a process
//! cannot take is left to the engine and not checked here: `read_only`, `cap_drop`,
//! `security_opt`, `tmpfs`, `build`, `image`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::yaml::{scalar, strings};

/// One service, with everything the test runs it with.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub user: Option<(u32, u32)>,
    pub nofile: Option<(u64, u64)>,
    pub replicas: usize,
    /// A fixed address on the network, if the file gives one.
    pub ipv4: Option<Ipv4Addr>,
    pub sysctls: Vec<(String, String)>,
    /// Secret names, each mounted at /run/secrets/NAME.
    pub secrets: Vec<String>,
    /// Bind mounts: host path (relative to the project directory), container path.
    pub volumes: Vec<(String, String)>,
    /// The healthcheck's command (after "CMD"), its interval and retries; `None`: disabled.
    pub healthcheck: Option<(Vec<String>, Duration, u32)>,
    /// Services this one waits for, and on what condition.
    pub depends_on: Vec<(String, String)>,
}

/// The file: its services in start order, the network's subnet, and each secret's file.
#[derive(Debug)]
pub struct Project {
    pub services: Vec<Service>,
    pub subnet: (Ipv4Addr, u8),
    pub secrets: BTreeMap<String, String>,
}

/// Compose's interpolation of one string with `vars`; an `${X:?msg}` of an unset X is an
/// error, as compose refuses to start then.
pub fn interpolate(s: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(r) = rest.strip_prefix("$$") {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("${") {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            let (expr, after) = (&r[..end], &r[end + 1..]);
            let value = if let Some((name, msg)) = expr.split_once(":?") {
                match vars.get(name).filter(|v| !v.is_empty()) {
                    Some(v) => v.clone(),
                    None => {
                        return Err(format!(
                            "required variable {name} is missing a value: {msg}"
                        ));
                    }
                }
            } else if let Some((name, default)) = expr.split_once(":-") {
                vars.get(name)
                    .filter(|v| !v.is_empty())
                    .cloned()
                    .unwrap_or_else(|| default.to_owned())
            } else {
                vars.get(expr).cloned().unwrap_or_default()
            };
            out.push_str(&value);
            rest = after;
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn interpolate_all(v: &Value, vars: &BTreeMap<String, String>) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(interpolate(s, vars)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| interpolate_all(x, vars))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), interpolate_all(x, vars)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

fn duration(v: &Value) -> Duration {
    let s = scalar(v);
    stampede_proto::duration::parse_duration(&s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn service(name: &str, s: &Value) -> Service {
    let mut argv = strings(&s["entrypoint"]);
    assert!(
        !argv.is_empty(),
        "{name}: the image's entrypoint is `stampede --help`"
    );
    if !s["command"].is_null() {
        argv.extend(strings(&s["command"]));
    }
    let env = match &s["environment"] {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
        Value::Array(a) => a
            .iter()
            .map(|e| {
                let e = scalar(e);
                let (k, v) = e.split_once('=').expect("KEY=VALUE");
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        Value::Null => Vec::new(),
        other => panic!("{name}: environment {other}"),
    };
    let user = s["user"].as_str().map(|u| {
        let (uid, gid) = u.split_once(':').unwrap_or((u, u));
        (uid.parse().unwrap(), gid.parse().unwrap())
    });
    let nofile = s["ulimits"]["nofile"]
        .as_object()
        .map(|n| (n["soft"].as_u64().unwrap(), n["hard"].as_u64().unwrap()));
    let ipv4 = s["networks"]
        .as_object()
        .and_then(|n| n.values().find_map(|net| net["ipv4_address"].as_str()))
        .map(|ip| ip.parse().unwrap());
    let pairs = |v: &Value| -> Vec<(String, String)> {
        v.as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect())
            .unwrap_or_default()
    };
    let volumes = s["volumes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| {
                    let v = scalar(v);
                    let (host, container) = v.split_once(':').expect("HOST:CONTAINER");
                    (host.to_owned(), container.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let hc = &s["healthcheck"];
    let healthcheck = (!hc.is_null() && hc["disable"] != Value::Bool(true)).then(|| {
        let test = strings(&hc["test"]);
        assert_eq!(
            test[0], "CMD",
            "{name}: exec-form healthcheck (the image has no shell to rely on)"
        );
        (
            test[1..].to_vec(),
            duration(&hc["interval"]),
            hc["retries"].as_u64().unwrap() as u32,
        )
    });
    let depends_on = match &s["depends_on"] {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| (k.clone(), scalar(&v["condition"])))
            .collect(),
        Value::Array(a) => a
            .iter()
            .map(|k| (scalar(k), "service_started".into()))
            .collect(),
        _ => Vec::new(),
    };
    Service {
        name: name.to_owned(),
        argv,
        env,
        user,
        nofile,
        replicas: s["deploy"]["replicas"].as_u64().unwrap_or(1) as usize,
        ipv4,
        sysctls: pairs(&s["sysctls"]),
        secrets: s["secrets"]
            .as_array()
            .map(|a| a.iter().map(scalar).collect())
            .unwrap_or_default(),
        volumes,
        healthcheck,
        depends_on,
    }
}

/// Reads the compose file with `vars` as its environment (`.env` and the shell).
pub fn load(path: &Path, vars: &BTreeMap<String, String>) -> Result<Project, String> {
    let mut docs = crate::yaml::load_all(path);
    assert_eq!(docs.len(), 1, "one document");
    let doc = interpolate_all(&docs.remove(0), vars)?;
    let mut pending: Vec<Service> = doc["services"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, s)| service(name, s))
        .collect();
    // Start order: a service after everything it depends on.
    let mut services: Vec<Service> = Vec::new();
    while !pending.is_empty() {
        let ready = pending
            .iter()
            .position(|s| {
                s.depends_on
                    .iter()
                    .all(|(d, _)| services.iter().any(|done| &done.name == d))
            })
            .expect("depends_on has no cycle and names only services of the file");
        services.push(pending.remove(ready));
    }
    let networks = doc["networks"].as_object().expect("one network");
    assert_eq!(networks.len(), 1, "one network");
    let subnet = scalar(&networks.values().next().unwrap()["ipam"]["config"][0]["subnet"]);
    let (ip, prefix) = subnet.split_once('/').unwrap();
    let secrets = doc["secrets"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), scalar(&v["file"])))
                .collect()
        })
        .unwrap_or_default();
    Ok(Project {
        services,
        subnet: (ip.parse().unwrap(), prefix.parse().unwrap()),
        secrets,
    })
}

#[test]
fn interpolation_follows_compose() {
    let vars: BTreeMap<String, String> = [("A".to_owned(), "1".to_owned())].into();
    assert_eq!(interpolate("x${A}y$$z", &vars).unwrap(), "x1y$z");
    assert_eq!(interpolate("${B:-9}", &vars).unwrap(), "9");
    assert_eq!(interpolate("${A:?no}", &vars).unwrap(), "1");
    assert!(
        interpolate("${B:?set B}", &vars)
            .unwrap_err()
            .contains("set B")
    );
}
