//! Which objects hold a pod, where, and which of them `podns inject` must leave alone.

use super::yaml::Node;
use super::{Action, InjectError, pod, restore};

/// Where an object keeps its pod: (path to the PodSpec, path to the pod's metadata).
///
/// Generic by design: besides Pods, CronJobs (`spec.jobTemplate.spec.template`) and
/// PodTemplates (`template`), every kind whose `spec.template` is a PodTemplateSpec (a mapping
/// whose `spec.containers` is a sequence) holds a pod: Deployments and the other built-in
/// workloads, but also Argo Rollouts, OpenShift DeploymentConfigs, Knative Services and any
/// custom resource following the convention. Kubernetes's own `kubectl set image` and
/// `kubectl rollout` find pods the same way (polymorphic helpers keyed on the pod template).
fn pod_paths(doc: &Node) -> Option<(Vec<&'static str>, Vec<&'static str>)> {
    let kind = doc.get_str("kind").unwrap_or_default();
    let api_version = doc.get_str("apiVersion").unwrap_or_default();
    let is_pod_template =
        |t: Option<&Node>| matches!(t.and_then(|t| t.path(&["spec", "containers"])), Some(Node::Seq(_)));
    match (api_version, kind) {
        ("v1", "Pod") => Some((vec!["spec"], vec!["metadata"])),
        ("v1", "PodTemplate") if is_pod_template(doc.get("template")) => {
            Some((vec!["template", "spec"], vec!["template", "metadata"]))
        }
        (_, "CronJob") if is_pod_template(doc.path(&["spec", "jobTemplate", "spec", "template"])) => Some((
            vec!["spec", "jobTemplate", "spec", "template", "spec"],
            vec!["spec", "jobTemplate", "spec", "template", "metadata"],
        )),
        _ if is_pod_template(doc.path(&["spec", "template"])) => {
            Some((vec!["spec", "template", "spec"], vec!["spec", "template", "metadata"]))
        }
        _ => None,
    }
}

/// Built-in kinds that never hold a pod (ConfigMap, Service, RBAC, ...): skipped without a note,
/// which is kept for what a user might expect to be injected (workload kinds without a pod
/// template, custom kinds).
fn is_known_podless(api_version: &str, kind: &str) -> bool {
    const POD_KINDS: [&str; 9] = [
        "Pod",
        "PodTemplate",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "Job",
        "CronJob",
        "ReplicationController",
    ];
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let builtin = group.is_empty() || !group.contains('.') || group.ends_with(".k8s.io");
    builtin && !POD_KINDS.contains(&kind)
}

/// Why an object is left alone although it holds a pod, if it is.
fn skip_reason(doc: &Node) -> Option<String> {
    if let Some(Node::Seq(owners)) = doc.path(&["metadata", "ownerReferences"])
        && let Some(owner) = owners.iter().find(|o| o.get("controller").is_some_and(Node::is_true))
    {
        let kind = owner.get_str("kind").unwrap_or("controller");
        let name = owner.get_str("name").unwrap_or("?");
        return Some(format!(
            "is managed by {kind} {name} (a controller ownerReference), which would revert the change or \
             replace the pod: inject the {kind} instead"
        ));
    }
    let is_pod = doc.get_str("kind") == Some("Pod");
    let running = doc.get("status").is_some_and(|s| !s.is_null()) || doc.path(&["spec", "nodeName"]).is_some();
    if is_pod && running {
        return Some(
            "is a pod that already exists (it has status or spec.nodeName) and a pod's containers cannot be \
             changed after creation: inject its workload, or delete the pod and create the injected one"
                .to_owned(),
        );
    }
    None
}

/// Applies `action` to one object (or the items of a List); true when it changed.
pub fn transform(doc: &mut Node, where_: &str, action: &Action, notes: &mut Vec<String>) -> Result<bool, InjectError> {
    if !matches!(doc, Node::Map(_)) {
        notes.push(format!("{where_}: not a Kubernetes object (not a mapping); copied unchanged"));
        return Ok(false);
    }
    let kind = doc.get_str("kind").unwrap_or_default().to_owned();
    let api_version = doc.get_str("apiVersion").unwrap_or_default().to_owned();
    if kind.ends_with("List") && matches!(doc.get("items"), Some(Node::Seq(_))) {
        let Some(Node::Seq(items)) = doc.get_mut("items") else { unreachable!("checked above") };
        let mut changed = false;
        for (i, item) in items.iter_mut().enumerate() {
            changed |= transform(item, &format!("item {} of {where_}", i + 1), action, notes)?;
        }
        return Ok(changed);
    }
    let explicit_ns = doc.path(&["metadata", "namespace"]).and_then(Node::as_str).map(str::to_owned);
    let name = doc
        .path(&["metadata", "name"])
        .or_else(|| doc.path(&["metadata", "generateName"]))
        .and_then(Node::as_str)
        .unwrap_or("(unnamed)")
        .to_owned();
    let shown_ns = explicit_ns.clone().unwrap_or_else(|| "?".to_owned());
    let what = format!("{kind} {shown_ns}/{name} ({where_})");
    let Some((spec_path, meta_path)) = pod_paths(doc) else {
        if !is_known_podless(&api_version, &kind) {
            let kind = if kind.is_empty() { "object without kind".to_owned() } else { format!("{api_version} {kind}") };
            notes.push(format!("{what}: {kind} has no pod template (spec.template.spec.containers); copied unchanged"));
        }
        return Ok(false);
    };
    if let Some(why) = skip_reason(doc) {
        notes.push(format!("{what} {why}; copied unchanged"));
        return Ok(false);
    }
    let namespace = match (&explicit_ns, action) {
        (Some(ns), Action::Inject(opts)) if opts.namespace.as_ref().is_some_and(|flag| flag != ns) => {
            // kubectl apply -n X refuses an object whose metadata.namespace is another one, so
            // the object's own namespace is where it will run.
            notes.push(format!(
                "{what}: metadata.namespace `{ns}` differs from --namespace `{}`; the search list uses `{ns}`",
                opts.namespace.as_deref().unwrap_or_default()
            ));
            ns.clone()
        }
        (Some(ns), _) => ns.clone(),
        (None, Action::Inject(opts)) => match &opts.namespace {
            Some(ns) => ns.clone(),
            None => {
                notes.push(format!(
                    "WARNING: {what} has no metadata.namespace and --namespace was not given: its search list \
                     assumes namespace `default`, so short names resolve in `default`; pass --namespace NS \
                     for the namespace it will run in"
                ));
                "default".to_owned()
            }
        },
        (None, Action::Uninject) => String::new(),
    };
    let what = format!("{kind} {namespace}/{name} ({where_})");
    if api_version.starts_with("serving.knative.dev/") && matches!(action, Action::Inject(_)) {
        notes.push(format!(
            "{what}: Knative accepts init containers, dnsPolicy/dnsConfig and pod sysctls only with its \
             features kubernetes.podspec-init-containers, kubernetes.podspec-dnspolicy, \
             kubernetes.podspec-dnsconfig and kubernetes.podspec-securitycontext enabled (config-features)"
        ));
    }
    // The metadata mapping of the pod template, created when missing.
    let (meta_parent, meta_key) = meta_path.split_at(meta_path.len() - 1);
    let parent = doc
        .path_mut(meta_parent)
        .ok_or_else(|| InjectError::input(format!("{what} has no {}", meta_parent.join("."))))?;
    let mut metadata = match parent.get(meta_key[0]) {
        Some(m) if !m.is_null() => m.clone(),
        _ => Node::Map(Vec::new()),
    };
    let mut spec = doc.path(&spec_path).cloned().unwrap_or(Node::Map(Vec::new()));
    let changed = match action {
        Action::Inject(opts) => match pod::inject(&mut spec, &mut metadata, &namespace, opts, &what, notes)? {
            pod::Outcome::AlreadyInjected => {
                notes.push(format!(
                    "{what} already has a `{}` container; left unchanged (--update re-renders it)",
                    pod::SIDECAR_NAME
                ));
                false
            }
            pod::Outcome::Disabled => {
                notes.push(format!("{what}: annotation podns.io/inject: disabled; left unchanged"));
                false
            }
            pod::Outcome::Injected | pod::Outcome::Updated => true,
        },
        Action::Uninject => {
            let changed = restore::uninject(&mut spec, &mut metadata, &what)?;
            if !changed {
                notes.push(format!("{what} has no `{}` container; left unchanged", pod::SIDECAR_NAME));
            }
            changed
        }
    };
    if !changed {
        return Ok(false);
    }
    let (spec_parent, spec_key) = spec_path.split_at(spec_path.len() - 1);
    if let Some(p) = doc.path_mut(spec_parent) {
        p.set(spec_key[0], spec, None);
    }
    if let Some(p) = doc.path_mut(meta_parent) {
        // A pod template's metadata goes before its spec; a Pod's is already there.
        if metadata.is_empty_collection() {
            p.remove(meta_key[0]);
        } else {
            p.set(meta_key[0], metadata, Some("spec"));
        }
    }
    Ok(true)
}
