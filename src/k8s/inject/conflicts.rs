//! What else in a pod would fight podns for its ports or its DNS traffic. Found before
//! anything changes; refused (exit 2, or a rejected pod in the webhook) when podns cannot work
//! beside it, a note when it works with a caveat. Every message names the fix.
//!
//! Sources: Istio's DNS proxying listens on 15053 and redirects the pod's port-53 traffic to it
//! when `ISTIO_META_DNS_CAPTURE` is true (istio.io, "DNS Proxying"); it is switched per pod with
//! the `proxy.istio.io/config` annotation. Linkerd's proxy-init redirects all outbound TCP to
//! the proxy and leaves UDP alone; `config.linkerd.io/skip-outbound-ports` exempts ports
//! (linkerd.io, "Protocol Detection" and "Proxy Configuration").

use super::pod::{CAPTURE_INIT_NAME, CAPTURE_PORT, METRICS_PORT, SIDECAR_NAME};
use super::yaml::Node;
use super::{InjectError, Mode};

/// Refuses pods podns cannot serve beside what they already run; notes the caveats. podns's
/// own containers are not counted, so an injected pod can be checked again (the webhook does
/// when a later webhook changed the pod: reinvocation).
pub fn check(spec: &Node, metadata: &Node, mode: Mode, what: &str, notes: &mut Vec<String>) -> Result<(), InjectError> {
    let containers: Vec<&Node> = ["initContainers", "containers"]
        .iter()
        .filter_map(|l| match spec.get(l) {
            Some(Node::Seq(items)) => Some(items.iter()),
            _ => None,
        })
        .flatten()
        .filter(|c| !matches!(c.get_str("name"), Some(SIDECAR_NAME | CAPTURE_INIT_NAME)))
        .collect();
    let capture = mode == Mode::Capture;
    for c in &containers {
        let name = c.get_str("name").unwrap_or("?");
        let Some(Node::Seq(ports)) = c.get("ports") else { continue };
        for p in ports {
            let port = p.get_str("containerPort").and_then(|v| v.trim().parse::<u16>().ok());
            let why = match port {
                Some(53) if !capture => format!(
                    "podns answers the pod's DNS on 127.0.0.1:53 in dns-policy mode; use capture mode \
                     (annotation podns.io/mode: capture, podns listens on {CAPTURE_PORT})"
                ),
                Some(METRICS_PORT) => "podns serves /metrics, /health and /ready there; move the application's \
                                       port or leave the pod out (annotation podns.io/inject: disabled)"
                    .to_owned(),
                Some(CAPTURE_PORT) if capture => {
                    "podns listens there in capture mode (Istio's DNS agent uses it too); use dns-policy mode \
                     (annotation podns.io/mode: dns-policy)"
                        .to_owned()
                }
                _ => continue,
            };
            return Err(InjectError::input(format!(
                "{what}: container `{name}` uses port {}, which podns needs: {why}",
                port.unwrap_or_default()
            )));
        }
    }

    let annotation = |k: &str| metadata.path(&["annotations", k]).and_then(Node::as_str);
    let label = |k: &str| metadata.path(&["labels", k]).and_then(Node::as_str);
    let istio_proxy = containers.iter().find(|c| c.get_str("name") == Some("istio-proxy"));
    let istio = istio_proxy.is_some()
        || annotation("sidecar.istio.io/status").is_some()
        || [annotation("sidecar.istio.io/inject"), label("sidecar.istio.io/inject")].contains(&Some("true"));
    let env_capture = istio_proxy
        .and_then(|c| match c.get("env") {
            Some(Node::Seq(env)) => env.iter().find(|e| e.get_str("name") == Some("ISTIO_META_DNS_CAPTURE")),
            _ => None,
        })
        .and_then(|e| e.get_str("value"))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let config_capture = annotation("proxy.istio.io/config").is_some_and(|c| {
        let c: String = c.chars().filter(|ch| !ch.is_whitespace() && *ch != '"' && *ch != '\'').collect();
        c.contains("ISTIO_META_DNS_CAPTURE:true")
    });
    if env_capture || config_capture {
        return Err(InjectError::input(format!(
            "{what}: Istio DNS proxying (ISTIO_META_DNS_CAPTURE) already captures this pod's DNS on port \
             {CAPTURE_PORT}; two DNS proxies would fight over its port-53 traffic. Turn Istio's off for this \
             pod (annotation proxy.istio.io/config: '{{\"proxyMetadata\": {{\"ISTIO_META_DNS_CAPTURE\": \"false\"}}}}') \
             or leave it out of podns (annotation podns.io/inject: disabled)"
        )));
    }
    if istio && capture {
        notes.push(format!(
            "{what}: Istio's sidecar is in this pod: if the mesh turns on DNS proxying \
             (ISTIO_META_DNS_CAPTURE) it takes port {CAPTURE_PORT} and podns's capture stops working; \
             use dns-policy mode or keep Istio's DNS proxying off"
        ));
    }
    let linkerd = containers.iter().any(|c| c.get_str("name") == Some("linkerd-proxy"))
        || annotation("linkerd.io/inject").is_some_and(|v| v == "enabled" || v == "ingress");
    let skipped =
        annotation("config.linkerd.io/skip-outbound-ports").is_some_and(|v| v.split(',').any(|p| p.trim() == "53"));
    if linkerd && !skipped {
        notes.push(format!(
            "{what}: Linkerd's proxy-init sends the pod's outbound TCP, DNS over TCP included, through \
             linkerd-proxy; add annotation config.linkerd.io/skip-outbound-ports: \"53\" so podns reaches \
             cluster DNS directly"
        ));
    }
    Ok(())
}
