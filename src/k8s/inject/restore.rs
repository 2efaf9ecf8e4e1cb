//! The record of what injection changed, and `podns uninject`, which puts it back.
//!
//! Injection in dns-policy mode replaces the pod's `dnsPolicy` and `dnsConfig` and may add or
//! lower the port sysctl; none of that can be inferred back from the injected pod. So before
//! changing anything, the originals are written as JSON into the pod's annotation
//! `podns.io/original` (Istio's injector keeps its own record the same way, in the
//! `sidecar.istio.io/status` annotation, for `istioctl x uninject`). The containers podns added
//! are recognised by name, the label by key.

use serde_json::{Value, json};

use super::InjectError;
use super::json::{from_json, to_json};
use super::pod::{CAPTURE_INIT_NAME, LABEL, NAMESERVER, PORT_SYSCTL, SIDECAR_NAME, has_sidecar};
use super::yaml::Node;
use crate::k8s::annotations::ORIGINAL;

/// The pod settings injection may change, as they are now: `dnsPolicy` and `dnsConfig` (absent
/// when unset) and the port sysctl's value (null when unset).
pub fn record(spec: &Node) -> Value {
    let mut out = serde_json::Map::new();
    for key in ["dnsPolicy", "dnsConfig"] {
        if let Some(v) = spec.get(key).filter(|v| !v.is_null()) {
            out.insert(key.to_owned(), to_json(v));
        }
    }
    let sysctl = sysctls(spec)
        .and_then(|items| items.iter().find(|s| s.get_str("name") == Some(PORT_SYSCTL)))
        .and_then(|s| s.get_str("value"))
        .map_or(Value::Null, |v| json!(v));
    out.insert("sysctl".to_owned(), sysctl);
    Value::Object(out)
}

/// Writes `original` into the [`ORIGINAL`] annotation of `metadata`.
pub fn save(metadata: &mut Node, original: &Value, what: &str) -> Result<(), InjectError> {
    let annotations = metadata
        .map_entry("annotations", None)
        .ok_or_else(|| InjectError::input(format!("{what}: metadata.annotations is not a mapping")))?;
    annotations.set(ORIGINAL, Node::str(original.to_string()), None);
    Ok(())
}

fn sysctls(spec: &Node) -> Option<&Vec<Node>> {
    match spec.path(&["securityContext", "sysctls"]) {
        Some(Node::Seq(items)) => Some(items),
        _ => None,
    }
}

/// Removes podns from one pod spec and restores what injection changed; false when the pod has
/// no podns container (nothing to do). Refuses a dns-policy pod without the record: its DNS
/// would point at a 127.0.0.1 where nothing answers any more.
pub fn uninject(spec: &mut Node, metadata: &mut Node, what: &str) -> Result<bool, InjectError> {
    if !has_sidecar(spec) {
        return Ok(false);
    }
    let record = match metadata.path(&["annotations", ORIGINAL]).and_then(Node::as_str) {
        Some(text) => Some(serde_json::from_str::<Value>(text).map_err(|e| {
            InjectError::input(format!("{what}: annotation {ORIGINAL} is not the JSON podns wrote: {e}"))
        })?),
        None => None,
    };
    let points_at_podns = spec.get_str("dnsPolicy") == Some("None")
        && matches!(spec.path(&["dnsConfig", "nameservers"]), Some(Node::Seq(ns)) if ns.iter().any(|n| n.as_str() == Some(NAMESERVER)));
    let Some(record) = record else {
        if points_at_podns {
            return Err(InjectError::input(format!(
                "{what}: its DNS points at podns (dnsPolicy: None, nameserver {NAMESERVER}) but it has no \
                 {ORIGINAL} annotation recording the settings before injection; set dnsPolicy and dnsConfig \
                 back by hand"
            )));
        }
        remove_podns(spec, metadata);
        return Ok(true);
    };
    for key in ["dnsPolicy", "dnsConfig"] {
        match record.get(key) {
            Some(v) => spec.set(key, from_json(v), Some("containers")),
            None => {
                spec.remove(key);
            }
        }
    }
    if let Some(Node::Seq(items)) = spec.path_mut(&["securityContext", "sysctls"]) {
        match record.get("sysctl").and_then(Value::as_str) {
            Some(v) => {
                if let Some(s) = items.iter_mut().find(|s| s.get_str("name") == Some(PORT_SYSCTL)) {
                    s.set("value", Node::str(v), None);
                }
            }
            None => items.retain(|s| s.get_str("name") != Some(PORT_SYSCTL)),
        }
    }
    prune(spec, &["securityContext", "sysctls"]);
    prune(spec, &["securityContext"]);
    remove_podns(spec, metadata);
    Ok(true)
}

/// Removes podns's containers, label and record.
fn remove_podns(spec: &mut Node, metadata: &mut Node) {
    for list in ["initContainers", "containers"] {
        if let Some(Node::Seq(items)) = spec.get_mut(list) {
            items.retain(|c| !matches!(c.get_str("name"), Some(SIDECAR_NAME | CAPTURE_INIT_NAME)));
        }
    }
    prune(spec, &["initContainers"]);
    if let Some(labels) = metadata.get_mut("labels") {
        labels.remove(LABEL);
    }
    if let Some(annotations) = metadata.get_mut("annotations") {
        annotations.remove(ORIGINAL);
    }
    prune(metadata, &["labels"]);
    prune(metadata, &["annotations"]);
}

/// Removes the value at `path` when it is an empty mapping or sequence: podns created it.
fn prune(node: &mut Node, path: &[&str]) {
    let (parent, key) = path.split_at(path.len() - 1);
    if let Some(p) = node.path_mut(parent)
        && p.get(key[0]).is_some_and(Node::is_empty_collection)
    {
        p.remove(key[0]);
    }
}
