//! The manifests as JSON values: YAML read by python3 with PyYAML (`yaml.safe_load_all`,
//! YAML 1.1 like the Kubernetes and compose loaders: `0440` is octal, merge keys work).
//! serde_yaml is not a dependency of the workspace and is unmaintained; .ci/run installs
//! PyYAML beside the manifest validators it already needs. Missing, it fails the test.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const LOAD: &str = "import json, sys, yaml\n\
    docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
    json.dump(docs, sys.stdout)\n";

/// Every document of the YAML file at `path`.
pub fn load_all(path: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args(["-c", LOAD])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed to read {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "reading {} with python3 + PyYAML (pip install PyYAML; .ci/run does): {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(docs) => docs,
        other => panic!("expected a list of documents, got {other}"),
    }
}

/// A scalar as the string a container sees (compose and Kubernetes both take numbers and
/// booleans for string values; quoting them is the manifests' style, not required).
pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other}"),
    }
}

/// A list of strings (`command`, `args`, `entrypoint`, a healthcheck's `test`).
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected a list, got {v}"))
        .iter()
        .map(scalar)
        .collect()
}
