//! `podns check -f FILE`: lints the pods of a namespace's manifests before podns is injected
//! into them. The verdicts on dnsPolicy, hostNetwork and ports 53/9153 (and the Istio and
//! Linkerd caveats) are `podns inject`'s own, run on each document in isolation
//! ([`crate::inject::inject_stream`] with its conflict checks); what podns makes of the pod's
//! `ndots` is added here.

use super::check::{Finding, Severity};
use crate::inject::yaml::{self, Node};
use crate::inject::{DEFAULT_IMAGE, Mode, Options, inject_stream};

/// Where an object keeps its PodSpec, for the kinds `podns inject` handles.
fn pod_spec(doc: &Node) -> Option<&Node> {
    fn spec_of(t: Option<&Node>) -> Option<&Node> {
        t.and_then(|t| t.get("spec")).filter(|s| matches!(s.get("containers"), Some(Node::Seq(_))))
    }
    match doc.get_str("kind").unwrap_or_default() {
        "Pod" => doc.get("spec"),
        "PodTemplate" => spec_of(doc.get("template")),
        "CronJob" => spec_of(doc.path(&["spec", "jobTemplate", "spec", "template"])),
        _ => spec_of(doc.path(&["spec", "template"])),
    }
}

/// The documents of a multi-document YAML stream: (1-based index, text), empty ones left out.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<(usize, String)>| {
        if !cur.trim().is_empty() && cur.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')) {
            out.push((out.len() + 1, std::mem::take(cur)));
        }
        cur.clear();
    };
    for line in text.strip_prefix('\u{feff}').unwrap_or(text).split_inclusive('\n') {
        let rest = line.strip_prefix("---").map(str::trim);
        if rest.is_some_and(|r| r.is_empty() || r.starts_with('#')) {
            flush(&mut cur, &mut out);
        } else {
            cur.push_str(line);
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// What `podns inject` would be given: dns-policy mode, a placeholder cluster DNS address (the
/// lint judges the pods, not the flags), the pods' namespace taken as given.
fn options(cluster_domain: &str) -> Options {
    Options {
        mode: Mode::DnsPolicy,
        upstream: vec![std::net::SocketAddr::from(([10, 96, 0, 10], 53))],
        image: DEFAULT_IMAGE.to_string(),
        cluster_domain: cluster_domain.trim_end_matches('.').to_string(),
        namespace: Some("default".into()),
        update: false,
        sidecar_args: Vec::new(),
        capture_image: String::new(),
        capture_ipv6: false,
    }
}

/// The findings for every pod of the manifests `text` (named `name` in messages).
pub fn lint(text: &str, name: &str, cluster_domain: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let opts = options(cluster_domain);
    let mut pods = 0;
    for (i, doc_text) in documents(text) {
        let where_ = format!("document {i} of {name}");
        let docs = match yaml::parse(&doc_text) {
            Ok(d) => d,
            Err(e) => {
                out.push(Finding {
                    check: "manifest",
                    severity: Severity::Block,
                    summary: format!("{where_}: line {}: not valid YAML: {}", e.line, e.message),
                    details: Vec::new(),
                    podns: Some("podns inject refuses the stream".into()),
                });
                continue;
            }
        };
        for doc in &docs {
            let items: Vec<&Node> = match (doc.get_str("kind"), doc.get("items")) {
                (Some(k), Some(Node::Seq(items))) if k.ends_with("List") => items.iter().collect(),
                _ => vec![doc],
            };
            for obj in items {
                let Some(spec) = pod_spec(obj) else { continue };
                pods += 1;
                let what = format!(
                    "{}/{} ({where_})",
                    obj.get_str("kind").unwrap_or("?"),
                    obj.path(&["metadata", "name"]).and_then(Node::as_str).unwrap_or("?")
                );
                out.extend(lint_pod(&what, (name, &where_), obj, spec, &opts));
            }
        }
    }
    if pods == 0 {
        out.push(Finding {
            check: "manifest",
            severity: Severity::Info,
            summary: format!("{name}: no pod in these manifests"),
            details: Vec::new(),
            podns: None,
        });
    }
    out
}

/// One pod: `podns inject`'s verdict on its object alone (its messages say where the object
/// is: `(file, "document N of file")`), and its ndots.
fn lint_pod(what: &str, (file, where_): (&str, &str), obj: &Node, spec: &Node, opts: &Options) -> Vec<Finding> {
    let mut out = Vec::new();
    let one = format!("---\n{}", yaml::emit(obj));
    let place = |m: String| m.replace(&format!("document 1 of {file}"), where_);
    match inject_stream(&one, file, opts) {
        Err(e) => out.push(Finding {
            check: "pod",
            severity: Severity::Block,
            summary: format!("{what}: podns cannot serve this pod"),
            details: vec![place(e.message)],
            podns: Some("podns inject and the webhook refuse it until it changes".into()),
        }),
        Ok(r) => {
            let notes: Vec<String> = r.notes.into_iter().filter(|n| !n.contains("left unchanged")).map(place).collect();
            out.push(Finding {
                check: "pod",
                severity: if notes.is_empty() { Severity::Ok } else { Severity::Warn },
                summary: format!(
                    "{what}: dnsPolicy {}, podns can be injected",
                    spec.get_str("dnsPolicy").unwrap_or("ClusterFirst (default)")
                ),
                details: notes,
                podns: None,
            });
        }
    }
    // ndots: what a name walks before itself.
    let ndots = match spec.path(&["dnsConfig", "options"]) {
        Some(Node::Seq(o)) => {
            o.iter().find(|x| x.get_str("name") == Some("ndots")).and_then(|x| x.get_str("value")).map(str::to_string)
        }
        _ => None,
    };
    let (sev, summary, podns) = match ndots.as_deref().map(|v| v.trim().parse::<u8>()) {
        None => (
            Severity::Info,
            format!("{what}: ndots 5 (kubelet's default)"),
            "names with fewer than 5 dots walk the search list first; podns answers impossible candidates locally and collapses FQDN-like ones (pypi.org)",
        ),
        Some(Ok(n)) if n <= 1 => (
            Severity::Info,
            format!("{what}: dnsConfig ndots {n}"),
            "names with a dot are asked as they are: little for the collapse to do (short names still walk the search list)",
        ),
        Some(Ok(n)) => (
            Severity::Info,
            format!("{what}: dnsConfig ndots {n}"),
            "names with fewer dots walk the search list first; podns answers impossible candidates locally and collapses FQDN-like ones",
        ),
        Some(Err(_)) => (
            Severity::Warn,
            format!("{what}: dnsConfig ndots `{}` is not a number", ndots.unwrap_or_default()),
            "the kubelet rejects the pod, or glibc reads it as atoi (0)",
        ),
    };
    out.push(Finding { check: "ndots", severity: sev, summary, details: Vec::new(), podns: Some(podns.into()) });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_at_markers() {
        let d = documents("a: 1\n---\n# only a comment\n--- # c\nb: 2\n---\n");
        assert_eq!(d, [(1, "a: 1\n".to_string()), (2, "b: 2\n".to_string())]);
    }

    #[test]
    fn pods_are_judged() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n  - name: web\n    image: x\n    ports: [{containerPort: 53}]\n\
                    ---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec:\n  template:\n    spec:\n      dnsConfig:\n        options: [{name: ndots, value: \"2\"}]\n      containers: [{name: api, image: y}]\n\
                    ---\nkind: ConfigMap\nmetadata: {name: c}\n---\na: [unclosed\n";
        let f = lint(text, "m.yaml", "cluster.local");
        let sev: Vec<(&str, Severity)> = f.iter().map(|x| (x.check, x.severity)).collect();
        assert_eq!(
            sev,
            [
                ("pod", Severity::Block),
                ("ndots", Severity::Info),
                ("pod", Severity::Ok),
                ("ndots", Severity::Info),
                ("manifest", Severity::Block)
            ],
            "{f:#?}"
        );
        assert!(f[0].details[0].contains("port 53"), "{f:#?}");
        assert!(f[3].summary.contains("ndots 2"));
        assert_eq!(lint("", "e.yaml", "cluster.local")[0].severity, Severity::Info);
    }
}
