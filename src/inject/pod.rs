//! What `podns inject` does to one pod spec: the sidecar, the DNS settings, the sysctl.

use std::net::SocketAddr;

use super::yaml::Node;
use super::{InjectError, Options};

/// Name of the sidecar container; its presence marks a pod as injected.
pub const SIDECAR_NAME: &str = "podns";
/// Label set on injected pods, for the PodMonitor in k8s/monitoring.
pub const LABEL: &str = "podns/injected";
/// The sysctl that lets a non-root process bind port 53 (a "safe" sysctl, allowed by the
/// baseline Pod Security Standard since Kubernetes 1.22). It is per network namespace, so it
/// affects this pod only.
pub const PORT_SYSCTL: &str = "net.ipv4.ip_unprivileged_port_start";
/// The address the pod's resolver is pointed at.
pub const NAMESERVER: &str = "127.0.0.1";
/// Metrics, /health and /ready.
pub const METRICS_PORT: u16 = 9153;
/// UID and GID of the image's user (distroless "nonroot").
pub const UID: u32 = 65532;

/// What became of one pod spec.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    /// It already has a container named [`SIDECAR_NAME`].
    AlreadyInjected,
}

/// Adds the sidecar to `spec` (a PodSpec) and points the pod's DNS at it. `metadata` is the
/// pod's (or pod template's) metadata, where the [`LABEL`] goes. `what` names the object in
/// messages; `notes` collects remarks for standard error.
pub fn inject(
    spec: &mut Node,
    metadata: &mut Node,
    namespace: &str,
    opts: &Options,
    what: &str,
    notes: &mut Vec<String>,
) -> Result<Outcome, InjectError> {
    if !matches!(spec, Node::Map(_)) {
        return Err(InjectError::input(format!("{what}: the pod spec is not a mapping")));
    }
    if has_sidecar(spec) {
        return Ok(Outcome::AlreadyInjected);
    }
    if spec.get("hostNetwork").is_some_and(Node::is_true) {
        return Err(InjectError::input(format!(
            "{what} uses hostNetwork: true; a hostNetwork pod shares the node's network namespace, where \
             127.0.0.1:53 belongs to the node (and to every other hostNetwork pod), so podns cannot \
             serve it. Leave this workload out of podns inject."
        )));
    }
    let policy = spec.get_str("dnsPolicy").unwrap_or("ClusterFirst").to_owned();
    match policy.as_str() {
        "ClusterFirst" | "ClusterFirstWithHostNet" => dns_cluster_first(spec, namespace, opts, what)?,
        "None" => dns_none(spec, what, notes)?,
        "Default" => {
            return Err(InjectError::input(format!(
                "{what} sets dnsPolicy: Default, so it resolves with the node's resolv.conf, not with \
                 cluster DNS; podns forwards to cluster DNS and would change what its names resolve to. \
                 Remove dnsPolicy: Default or leave this workload out of podns inject."
            )));
        }
        other => {
            return Err(InjectError::input(format!("{what}: unknown dnsPolicy `{other}`")));
        }
    }
    spec.set("dnsPolicy", Node::str("None"), Some("dnsConfig"));
    add_sysctl(spec, what, notes)?;
    let init = spec
        .seq_entry("initContainers", Some("containers"))
        .ok_or_else(|| InjectError::input(format!("{what}: spec.initContainers is not a sequence")))?;
    let Node::Seq(items) = init else { unreachable!("seq_entry returns a sequence") };
    // First, so that every other init container already resolves through it.
    items.insert(0, sidecar(opts));
    let labels = metadata
        .map_entry("labels", None)
        .ok_or_else(|| InjectError::input(format!("{what}: metadata.labels is not a mapping")))?;
    labels.set(LABEL, Node::str("true"), None);
    Ok(Outcome::Injected)
}

fn has_sidecar(spec: &Node) -> bool {
    ["initContainers", "containers"].iter().any(|list| match spec.get(list) {
        Some(Node::Seq(items)) => items.iter().any(|c| c.get_str("name") == Some(SIDECAR_NAME)),
        _ => false,
    })
}

/// What kubelet gives a ClusterFirst pod, with the nameserver replaced by podns: the cluster
/// search list first (`<ns>.svc.<cd> svc.<cd> <cd>`), then the pod's own extra searches;
/// `ndots:5` unless the pod sets ndots; the pod's other options; the pod's extra nameservers
/// after podns (kubelet put them after cluster DNS). Kubelet also appends the node's own search
/// domains, which are not known here; a pod that needs them lists them in its dnsConfig.
fn dns_cluster_first(spec: &mut Node, namespace: &str, opts: &Options, what: &str) -> Result<(), InjectError> {
    let cd = opts.cluster_domain.trim_end_matches('.');
    let config = spec
        .map_entry("dnsConfig", None)
        .ok_or_else(|| InjectError::input(format!("{what}: spec.dnsConfig is not a mapping")))?;

    // New entries first; the pod's own entries keep their nodes (and so their YAML style).
    let mut nameservers = vec![Node::str(NAMESERVER)];
    for (text, node) in entries(config.get("nameservers"), what, "dnsConfig.nameservers")? {
        if !nameservers.iter().any(|n| n.as_str() == Some(&text)) {
            nameservers.push(node);
        }
    }
    if nameservers.len() > 3 {
        return Err(InjectError::input(format!(
            "{what}: dnsConfig.nameservers has {} entries; with podns's {NAMESERVER} in front that is more \
             than the 3 Kubernetes allows",
            nameservers.len() - 1
        )));
    }

    let mut searches: Vec<Node> =
        [format!("{namespace}.svc.{cd}"), format!("svc.{cd}"), cd.to_owned()].into_iter().map(Node::str).collect();
    for (text, node) in entries(config.get("searches"), what, "dnsConfig.searches")? {
        if !searches.iter().any(|n| n.as_str() == Some(&text)) {
            searches.push(node);
        }
    }

    config.set("nameservers", Node::Seq(nameservers), None);
    config.set("searches", Node::Seq(searches), None);
    let options = config
        .seq_entry("options", None)
        .ok_or_else(|| InjectError::input(format!("{what}: dnsConfig.options is not a sequence")))?;
    let Node::Seq(items) = options else { unreachable!("seq_entry returns a sequence") };
    if !items.iter().any(|o| o.get_str("name") == Some("ndots")) {
        items.insert(0, Node::map([("name", Node::str("ndots")), ("value", Node::str("5"))]));
    }
    Ok(())
}

/// A dnsPolicy: None pod already says all of its DNS configuration: only the nameservers are
/// replaced (podns forwards to --upstream instead).
fn dns_none(spec: &mut Node, what: &str, notes: &mut Vec<String>) -> Result<(), InjectError> {
    let config = spec
        .map_entry("dnsConfig", None)
        .ok_or_else(|| InjectError::input(format!("{what}: spec.dnsConfig is not a mapping")))?;
    let old = entries(config.get("nameservers"), what, "dnsConfig.nameservers")?;
    let replaced: Vec<&String> = old.iter().map(|(text, _)| text).filter(|ns| *ns != NAMESERVER).collect();
    if !replaced.is_empty() {
        notes.push(format!(
            "{what}: dnsPolicy None: nameservers {} replaced by {NAMESERVER}; podns forwards to --upstream",
            replaced.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    config.set("nameservers", Node::Seq(vec![Node::str(NAMESERVER)]), Some("searches"));
    Ok(())
}

/// The entries of an optional sequence of scalars, with their text.
fn entries(node: Option<&Node>, what: &str, field: &str) -> Result<Vec<(String, Node)>, InjectError> {
    match node {
        None => Ok(Vec::new()),
        Some(n) if n.is_null() => Ok(Vec::new()),
        Some(Node::Seq(items)) => items
            .iter()
            .map(|i| i.as_str().map(|text| (text.to_owned(), i.clone())))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| InjectError::input(format!("{what}: {field} must be a list of strings"))),
        Some(_) => Err(InjectError::input(format!("{what}: {field} must be a list"))),
    }
}

/// Sets net.ipv4.ip_unprivileged_port_start to 53 in the pod's securityContext, or keeps a
/// lower value the pod already has.
fn add_sysctl(spec: &mut Node, what: &str, notes: &mut Vec<String>) -> Result<(), InjectError> {
    let sc = spec
        .map_entry("securityContext", None)
        .ok_or_else(|| InjectError::input(format!("{what}: spec.securityContext is not a mapping")))?;
    let sysctls = sc
        .seq_entry("sysctls", None)
        .ok_or_else(|| InjectError::input(format!("{what}: securityContext.sysctls is not a sequence")))?;
    let Node::Seq(items) = sysctls else { unreachable!("seq_entry returns a sequence") };
    let want = Node::map([("name", Node::str(PORT_SYSCTL)), ("value", Node::str("53"))]);
    match items.iter_mut().find(|s| s.get_str("name") == Some(PORT_SYSCTL)) {
        None => items.push(want),
        Some(existing) => {
            let value = existing.get_str("value").unwrap_or("");
            match value.trim().parse::<u32>() {
                Ok(v) if v <= 53 => {}
                Ok(v) => {
                    notes.push(format!("{what}: {PORT_SYSCTL} lowered from {v} to 53 so podns can bind port 53"));
                    *existing = want;
                }
                Err(_) => {
                    return Err(InjectError::input(format!(
                        "{what}: sysctl {PORT_SYSCTL} has value `{value}`, not a port"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// `IP` for port 53, else `IP:PORT` / `[IPv6]:PORT`: what `podns --upstream` reads.
fn upstream_arg(addr: &SocketAddr) -> String {
    if addr.port() == 53 { addr.ip().to_string() } else { addr.to_string() }
}

/// The podns container: a native sidecar (an init container with restartPolicy: Always,
/// Kubernetes ≥ 1.29), started and probed ready before the next init container and the
/// application containers start, and stopped after them.
pub fn sidecar(opts: &Options) -> Node {
    let mut args: Vec<Node> =
        opts.upstream.iter().map(|u| Node::str(format!("--upstream={}", upstream_arg(u)))).collect();
    args.push(Node::str(format!("--cluster-domain={}", opts.cluster_domain)));
    let port = |name: &str, number: u16, proto: &str| {
        Node::map([
            ("name", Node::str(name)),
            ("containerPort", Node::raw(number.to_string())),
            ("protocol", Node::str(proto)),
        ])
    };
    let probe = |path: &str, period: u32, failures: u32| {
        Node::map([
            ("httpGet", Node::map([("path", Node::str(path)), ("port", Node::str("podns-metrics"))])),
            ("periodSeconds", Node::raw(period.to_string())),
            ("failureThreshold", Node::raw(failures.to_string())),
        ])
    };
    Node::map([
        ("name", Node::str(SIDECAR_NAME)),
        ("image", Node::str(opts.image.clone())),
        ("restartPolicy", Node::str("Always")),
        ("args", Node::Seq(args)),
        (
            "ports",
            Node::Seq(vec![
                port("podns-dns", 53, "UDP"),
                port("podns-dns-tcp", 53, "TCP"),
                port("podns-metrics", METRICS_PORT, "TCP"),
            ]),
        ),
        // Up to 30 s for the listeners to bind and cluster DNS to answer the SOA probe; the
        // application does not start before.
        ("startupProbe", probe("/ready", 1, 30)),
        ("readinessProbe", probe("/ready", 10, 3)),
        ("livenessProbe", probe("/health", 10, 3)),
        (
            "resources",
            Node::map([
                ("requests", Node::map([("cpu", Node::str("20m")), ("memory", Node::str("32Mi"))])),
                ("limits", Node::map([("cpu", Node::str("500m")), ("memory", Node::str("128Mi"))])),
            ]),
        ),
        (
            "securityContext",
            Node::map([
                ("runAsNonRoot", Node::raw("true")),
                ("runAsUser", Node::raw(UID.to_string())),
                ("runAsGroup", Node::raw(UID.to_string())),
                ("allowPrivilegeEscalation", Node::raw("false")),
                ("readOnlyRootFilesystem", Node::raw("true")),
                ("capabilities", Node::map([("drop", Node::Seq(vec![Node::str("ALL")]))])),
                ("seccompProfile", Node::map([("type", Node::str("RuntimeDefault"))])),
            ]),
        ),
    ])
}
