//! What `podns inject` does to one pod spec: the sidecar, the DNS settings, the sysctl; or, in
//! capture mode, the sidecar and the capture-init container.

use std::net::SocketAddr;

use super::yaml::Node;
use super::{InjectError, Mode, Options};
use crate::k8s::annotations;

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
/// Name of the init container that installs the capture rules.
pub const CAPTURE_INIT_NAME: &str = "podns-capture-init";
/// Port podns listens on in capture mode (on 127.0.0.1, and [::1] with --capture-ipv6).
pub const CAPTURE_PORT: u16 = crate::k8s::capture::DEFAULT_PORT;
/// UID and GID of the sidecar in capture mode: the UID whose DNS traffic is not redirected.
/// Not [`UID`]: applications built on distroless "nonroot" images run as 65532 too, and their
/// DNS would bypass podns. This one belongs to podns alone.
pub const CAPTURE_UID: u32 = crate::k8s::capture::DEFAULT_UID;

/// What became of one pod spec.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    /// It already has a container named [`SIDECAR_NAME`] (and `--update` was not given).
    AlreadyInjected,
    /// It was injected, and has been re-rendered with the current settings (`--update`).
    Updated,
    /// Its annotation `podns.io/inject: disabled` says never.
    Disabled,
}

/// Adds the sidecar to `spec` (a PodSpec) and points the pod's DNS at it (capture mode: adds the
/// capture-init container instead and leaves the DNS settings alone). `metadata` is the
/// pod's (or pod template's) metadata: its `podns.io/` annotations override `opts` for this pod
/// ([`crate::k8s::annotations`]), and the [`LABEL`] and the record of the original DNS settings
/// ([`super::restore`]) go there. `what` names the object in messages; `notes` collects
/// remarks (standard error for the CLI, AdmissionReview warnings for the webhook).
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
    if !matches!(metadata, Node::Map(_)) {
        return Err(InjectError::input(format!("{what}: the pod metadata is not a mapping")));
    }
    let overrides = annotations::read(metadata, what)?;
    if overrides.inject == Some(false) {
        return Ok(Outcome::Disabled);
    }
    let mut updated = false;
    if has_sidecar(spec) {
        if !opts.update {
            return Ok(Outcome::AlreadyInjected);
        }
        super::restore::uninject(spec, metadata, what)?;
        updated = true;
    }
    let mut opts = opts.clone();
    if let Some(mode) = overrides.mode {
        if mode == Mode::Capture && opts.mode != Mode::Capture {
            // Switched to capture by the annotation: the run's --upstream (cluster DNS, for
            // dns-policy pods) must not replace what the pod's own resolv.conf says, which is
            // what capture mode forwards to. podns.io/upstream still overrides it below.
            opts.upstream.clear();
        }
        opts.mode = mode;
        if mode == Mode::Capture && opts.capture_image.is_empty() {
            opts.capture_image = super::capture_image_for(&opts.image)?;
        }
    }
    let pinned_upstream = overrides.upstream.is_some();
    if let Some(up) = overrides.upstream {
        opts.upstream = up;
    }
    opts.sidecar_args = overrides.sidecar_args;
    super::conflicts::check(spec, metadata, opts.mode, what, notes)?;
    let original = super::restore::record(spec);
    if opts.mode == Mode::Capture {
        inject_capture(spec, metadata, &opts, what)?;
    } else {
        inject_dns_policy(spec, metadata, namespace, &mut opts, pinned_upstream, what, notes)?;
    }
    super::restore::save(metadata, &original, what)?;
    Ok(if updated { Outcome::Updated } else { Outcome::Injected })
}

fn inject_dns_policy(
    spec: &mut Node,
    metadata: &mut Node,
    namespace: &str,
    opts: &mut Options,
    pinned_upstream: bool,
    what: &str,
    notes: &mut Vec<String>,
) -> Result<(), InjectError> {
    if spec.get("hostNetwork").is_some_and(Node::is_true) {
        return Err(InjectError::input(format!(
            "{what} uses hostNetwork: true; a hostNetwork pod shares the node's network namespace, where \
             127.0.0.1:53 belongs to the node (and to every other hostNetwork pod), so podns cannot \
             serve it. Leave this workload out (annotation podns.io/inject: disabled)."
        )));
    }
    let policy = spec.get_str("dnsPolicy").unwrap_or("ClusterFirst").to_owned();
    // The pod's own nameservers: they stay on the resolution path as podns's upstreams instead
    // of silently dropping out of it (a resolver only falls back to a second nameserver when
    // the first fails, and podns at 127.0.0.1 does not fail).
    let own = match policy.as_str() {
        "ClusterFirst" | "ClusterFirstWithHostNet" => dns_cluster_first(spec, namespace, opts, what)?,
        "None" => dns_none(spec, what)?,
        "Default" => {
            return Err(InjectError::input(format!(
                "{what} sets dnsPolicy: Default, so it resolves with the node's resolv.conf, not with \
                 cluster DNS; podns forwards to cluster DNS and would change what its names resolve to. \
                 Remove dnsPolicy: Default or leave this workload out (annotation podns.io/inject: disabled)."
            )));
        }
        other => {
            return Err(InjectError::input(format!("{what}: unknown dnsPolicy `{other}`")));
        }
    };
    if !own.is_empty() {
        let list = own.iter().map(upstream_arg).collect::<Vec<_>>().join(", ");
        if pinned_upstream {
            notes.push(format!("{what}: its nameservers {list} are replaced by podns.io/upstream"));
        } else if policy == "None" {
            notes.push(format!("{what}: dnsPolicy None: its nameservers {list} become podns's upstreams"));
            opts.upstream = own;
        } else {
            notes.push(format!("{what}: its extra nameservers {list} become podns's upstreams after cluster DNS"));
            for up in own {
                if !opts.upstream.contains(&up) {
                    opts.upstream.push(up);
                }
            }
        }
    }
    if opts.upstream.is_empty() {
        return Err(InjectError::input(format!(
            "{what}: no upstream for podns: give --upstream (the cluster DNS service IP) or annotation podns.io/upstream"
        )));
    }
    spec.set("dnsPolicy", Node::str("None"), Some("dnsConfig"));
    add_sysctl(spec, what, notes)?;
    let init = spec
        .seq_entry("initContainers", Some("containers"))
        .ok_or_else(|| InjectError::input(format!("{what}: spec.initContainers is not a sequence")))?;
    let Node::Seq(items) = init else { unreachable!("seq_entry returns a sequence") };
    // First, so that every other init container already resolves through it.
    items.insert(0, sidecar(opts));
    set_label(metadata, what)
}

fn set_label(metadata: &mut Node, what: &str) -> Result<(), InjectError> {
    let labels = metadata
        .map_entry("labels", None)
        .ok_or_else(|| InjectError::input(format!("{what}: metadata.labels is not a mapping")))?;
    labels.set(LABEL, Node::str("true"), None);
    Ok(())
}

/// Capture mode: the pod keeps its DNS settings (kubelet's resolv.conf: cluster DNS, search
/// list, ndots); the capture-init container redirects its port-53 traffic to the sidecar,
/// which reads its upstream, search list and ndots from that resolv.conf.
fn inject_capture(spec: &mut Node, metadata: &mut Node, opts: &Options, what: &str) -> Result<(), InjectError> {
    if spec.get("hostNetwork").is_some_and(Node::is_true) {
        return Err(InjectError::input(format!(
            "{what} uses hostNetwork: true; its network namespace is the node's, so capture-init would \
             redirect the DNS traffic of the whole node. Leave this workload out of podns inject."
        )));
    }
    // A container running as podns's UID would have its DNS exempted from the redirection.
    let pod_uid = spec.path(&["securityContext", "runAsUser"]).and_then(Node::as_str).map(str::to_owned);
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        let Some(Node::Seq(items)) = spec.get(list) else { continue };
        for c in items {
            let uid = c.path(&["securityContext", "runAsUser"]).and_then(Node::as_str).or(pod_uid.as_deref());
            if uid.is_some_and(|u| u.trim() == CAPTURE_UID.to_string()) {
                return Err(InjectError::input(format!(
                    "{what}: container `{}` runs as UID {CAPTURE_UID}, the UID whose DNS traffic capture mode \
                     does not redirect (podns's own); its DNS would bypass podns. Run it as another UID.",
                    c.get_str("name").unwrap_or("?")
                )));
            }
        }
    }
    let init = spec
        .seq_entry("initContainers", Some("containers"))
        .ok_or_else(|| InjectError::input(format!("{what}: spec.initContainers is not a sequence")))?;
    let Node::Seq(items) = init else { unreachable!("seq_entry returns a sequence") };
    // The rules first (they must be in place before anything resolves), then podns, then the
    // pod's own init containers, which already resolve through podns.
    items.insert(0, sidecar(opts));
    items.insert(0, capture_init(opts));
    set_label(metadata, what)
}

/// The capture-init container: `podns capture-init` from the capture image, which has the
/// iptables tools. It runs as root because Kubernetes gives the capabilities a container adds
/// to a non-root process only in its bounding set, not its effective one: iptables would get
/// "Permission denied". It needs NET_ADMIN for the nat table (NET_RAW for the legacy iptables
/// backend), nothing else, and exits in milliseconds, before the application starts.
pub fn capture_init(opts: &Options) -> Node {
    let args = vec![
        Node::str("capture-init"),
        Node::str(format!("--port={CAPTURE_PORT}")),
        Node::str(format!("--uid={CAPTURE_UID}")),
        Node::str(format!("--ipv6={}", if opts.capture_ipv6 { "on" } else { "off" })),
    ];
    Node::map([
        ("name", Node::str(CAPTURE_INIT_NAME)),
        ("image", Node::str(opts.capture_image.clone())),
        ("args", Node::Seq(args)),
        (
            "resources",
            Node::map([
                ("requests", Node::map([("cpu", Node::str("10m")), ("memory", Node::str("16Mi"))])),
                ("limits", Node::map([("cpu", Node::str("100m")), ("memory", Node::str("64Mi"))])),
            ]),
        ),
        (
            "securityContext",
            Node::map([
                ("runAsNonRoot", Node::raw("false")),
                ("runAsUser", Node::raw("0")),
                ("runAsGroup", Node::raw("0")),
                ("allowPrivilegeEscalation", Node::raw("false")),
                ("readOnlyRootFilesystem", Node::raw("true")),
                (
                    "capabilities",
                    Node::map([
                        ("add", Node::Seq(vec![Node::str("NET_ADMIN"), Node::str("NET_RAW")])),
                        ("drop", Node::Seq(vec![Node::str("ALL")])),
                    ]),
                ),
                ("seccompProfile", Node::map([("type", Node::str("RuntimeDefault"))])),
            ]),
        ),
    ])
}

pub fn has_sidecar(spec: &Node) -> bool {
    ["initContainers", "containers"].iter().any(|list| match spec.get(list) {
        Some(Node::Seq(items)) => items.iter().any(|c| c.get_str("name") == Some(SIDECAR_NAME)),
        _ => false,
    })
}

/// What kubelet gives a ClusterFirst pod, with the nameserver replaced by podns: the cluster
/// search list first (`<ns>.svc.<cd> svc.<cd> <cd>`), then the pod's own extra searches;
/// `ndots:5` unless the pod sets ndots; the pod's other options. The pod's extra nameservers
/// (kubelet put them after cluster DNS) are returned to become podns's upstreams. Kubelet also appends the node's own search
/// domains, which are not known here; a pod that needs them lists them in its dnsConfig.
fn dns_cluster_first(
    spec: &mut Node,
    namespace: &str,
    opts: &Options,
    what: &str,
) -> Result<Vec<SocketAddr>, InjectError> {
    let cd = opts.cluster_domain.trim_end_matches('.');
    let config = spec
        .map_entry("dnsConfig", None)
        .ok_or_else(|| InjectError::input(format!("{what}: spec.dnsConfig is not a mapping")))?;
    let own = own_nameservers(config, what)?;

    let mut searches: Vec<Node> =
        [format!("{namespace}.svc.{cd}"), format!("svc.{cd}"), cd.to_owned()].into_iter().map(Node::str).collect();
    for (text, node) in entries(config.get("searches"), what, "dnsConfig.searches")? {
        if !searches.iter().any(|n| n.as_str() == Some(&text)) {
            searches.push(node);
        }
    }

    config.set("nameservers", Node::Seq(vec![Node::str(NAMESERVER)]), None);
    config.set("searches", Node::Seq(searches), None);
    let options = config
        .seq_entry("options", None)
        .ok_or_else(|| InjectError::input(format!("{what}: dnsConfig.options is not a sequence")))?;
    let Node::Seq(items) = options else { unreachable!("seq_entry returns a sequence") };
    if !items.iter().any(|o| o.get_str("name") == Some("ndots")) {
        items.insert(0, Node::map([("name", Node::str("ndots")), ("value", Node::str("5"))]));
    }
    Ok(own)
}

/// A dnsPolicy: None pod already says all of its DNS configuration: only the nameservers are
/// replaced by podns, which forwards to them.
fn dns_none(spec: &mut Node, what: &str) -> Result<Vec<SocketAddr>, InjectError> {
    let config = spec
        .map_entry("dnsConfig", None)
        .ok_or_else(|| InjectError::input(format!("{what}: spec.dnsConfig is not a mapping")))?;
    let own = own_nameservers(config, what)?;
    config.set("nameservers", Node::Seq(vec![Node::str(NAMESERVER)]), Some("searches"));
    Ok(own)
}

/// The nameservers of a dnsConfig other than podns's own, as upstream addresses.
fn own_nameservers(config: &Node, what: &str) -> Result<Vec<SocketAddr>, InjectError> {
    let mut out = Vec::new();
    for (text, _) in entries(config.get("nameservers"), what, "dnsConfig.nameservers")? {
        if text == NAMESERVER {
            continue;
        }
        let ip: std::net::IpAddr = text.trim().parse().map_err(|_| {
            InjectError::input(format!("{what}: dnsConfig.nameservers entry `{text}` is not an IP address"))
        })?;
        let addr = SocketAddr::new(ip, 53);
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    Ok(out)
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
    let capture = opts.mode == Mode::Capture;
    let mut args: Vec<Node> =
        opts.upstream.iter().map(|u| Node::str(format!("--upstream={}", upstream_arg(u)))).collect();
    if capture {
        // No --upstream needed: podns reads cluster DNS from the pod's unchanged resolv.conf.
        args.push(Node::str(format!("--listen=127.0.0.1:{CAPTURE_PORT}")));
        if opts.capture_ipv6 {
            args.push(Node::str(format!("--listen=[::1]:{CAPTURE_PORT}")));
        }
    }
    args.push(Node::str(format!("--cluster-domain={}", opts.cluster_domain)));
    args.extend(opts.sidecar_args.iter().map(|a| Node::str(a.clone())));
    let (dns_port, uid) = if capture { (CAPTURE_PORT, CAPTURE_UID) } else { (53, UID) };
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
                port("podns-dns", dns_port, "UDP"),
                port("podns-dns-tcp", dns_port, "TCP"),
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
                ("runAsUser", Node::raw(uid.to_string())),
                ("runAsGroup", Node::raw(uid.to_string())),
                ("allowPrivilegeEscalation", Node::raw("false")),
                ("readOnlyRootFilesystem", Node::raw("true")),
                ("capabilities", Node::map([("drop", Node::Seq(vec![Node::str("ALL")]))])),
                ("seccompProfile", Node::map([("type", Node::str("RuntimeDefault"))])),
            ]),
        ),
    ])
}
