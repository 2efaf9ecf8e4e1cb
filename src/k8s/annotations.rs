//! The per-pod annotations, defined once: [`ANNOTATIONS`] drives the validation here, the
//! README's table (`tests/e2e/docs.rs` checks that the README shows [`markdown_table`]), and the
//! sidecar arguments the webhook and `podns inject` derive from them.
//!
//! A bad value rejects the pod (the webhook answers `allowed: false` naming the annotation;
//! `podns inject` exits 2) rather than being ignored with a warning: an ignored
//! `podns.io/aaaa: nodta` leaves the pod running with a behaviour its owner believes they turned
//! off, and AdmissionReview warnings are only shown to a human running `kubectl apply` on the
//! Pod itself, never for pods a Deployment's ReplicaSet creates. A rejection is visible in the
//! ReplicaSet's events (`FailedCreate`) with the same message. Unknown `podns.io/` annotations
//! are rejected for the same reason (a typo in a name is a typo in a value). Istio does the
//! same for its `sidecar.istio.io/*` annotations (the injector's `validateAnnotations`).
//!
//! Values for proxy flags are checked by the proxy's own command-line parser
//! ([`crate::cli::ProxyFlags`]), so an annotation accepts exactly what the flag accepts.

use std::net::SocketAddr;

use clap::Parser;

use super::inject::yaml::Node;
use super::inject::{InjectError, Mode};

/// Prefix of every podns annotation (and of the namespace label `podns.io/inject`).
pub const PREFIX: &str = "podns.io/";
/// `podns.io/inject`.
pub const INJECT: &str = "podns.io/inject";
/// `podns.io/mode`.
pub const MODE: &str = "podns.io/mode";
/// `podns.io/upstream`.
pub const UPSTREAM: &str = "podns.io/upstream";
/// Written by podns: the pod's DNS settings before injection, for `podns uninject`.
pub const ORIGINAL: &str = "podns.io/original";

/// One annotation: its name, the values it takes, the proxy flag it sets (if any), and what it does.
#[derive(Debug, Clone, Copy)]
pub struct Annotation {
    pub name: &'static str,
    pub values: &'static str,
    /// The podns flag the value is passed to, `--flag=value`, in the sidecar's arguments.
    pub flag: Option<&'static str>,
    pub meaning: &'static str,
}

/// Every annotation podns reads or writes.
pub const ANNOTATIONS: &[Annotation] = &[
    Annotation {
        name: INJECT,
        values: "`enabled`, `disabled`",
        flag: None,
        meaning: "webhook: inject this pod (`enabled`, also in namespaces without the label) or never (`disabled`, \
                  wins over the namespace label); `podns inject` skips `disabled` pods",
    },
    Annotation {
        name: MODE,
        values: "`dns-policy`, `capture`",
        flag: None,
        meaning: "how the pod's DNS reaches podns, as `--mode`",
    },
    Annotation {
        name: UPSTREAM,
        values: "`IP[:PORT]`, comma-separated",
        flag: None,
        meaning: "podns's upstreams for this pod instead of `--upstream` (and instead of the pod's own nameservers)",
    },
    Annotation {
        name: "podns.io/aaaa",
        values: "`fix`, `nodata`, `auto`, `forward`",
        flag: Some("--aaaa"),
        meaning: "the sidecar's `--aaaa`",
    },
    Annotation {
        name: "podns.io/collapse",
        values: "`on`, `aggressive`, `off`",
        flag: Some("--collapse"),
        meaning: "the sidecar's `--collapse`",
    },
    Annotation {
        name: "podns.io/cache-size",
        values: "a size: `8MiB`, `512KiB`, `0`",
        flag: Some("--cache-size"),
        meaning: "the sidecar's `--cache-size`",
    },
    Annotation {
        name: "podns.io/log-level",
        values: "`error`, `warn`, `info`, `debug`, `trace`",
        flag: Some("--log-level"),
        meaning: "the sidecar's `--log-level`",
    },
    Annotation {
        name: ORIGINAL,
        values: "(written by podns)",
        flag: None,
        meaning: "the pod's `dnsPolicy`, `dnsConfig` and port sysctl before injection, as JSON; \
                  `podns uninject` and `podns inject --update` restore them from it. Do not edit",
    },
];

/// What a pod's annotations ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `podns.io/inject`: Some(true) enabled, Some(false) disabled.
    pub inject: Option<bool>,
    pub mode: Option<Mode>,
    pub upstream: Option<Vec<SocketAddr>>,
    /// `--flag=value` for the sidecar, in table order.
    pub sidecar_args: Vec<String>,
}

/// Reads and checks the `podns.io/` annotations of a pod's metadata. `what` names the pod.
pub fn read(metadata: &Node, what: &str) -> Result<Overrides, InjectError> {
    let mut out = Overrides::default();
    let Some(Node::Map(entries)) = metadata.get("annotations") else { return Ok(out) };
    let bad =
        |name: &str, value: &str, why: &str| InjectError::input(format!("{what}: annotation {name}: `{value}` {why}"));
    for (k, v) in entries {
        let Some(name) = k.as_str().filter(|n| n.starts_with(PREFIX)) else { continue };
        let Some(def) = ANNOTATIONS.iter().find(|a| a.name == name) else {
            let known: Vec<&str> = ANNOTATIONS.iter().map(|a| a.name).collect();
            return Err(InjectError::input(format!(
                "{what}: unknown annotation {name}; podns knows {}",
                known.join(", ")
            )));
        };
        let value = v.as_str().unwrap_or_default().trim();
        match name {
            INJECT => {
                out.inject = Some(match value {
                    "enabled" => true,
                    "disabled" => false,
                    _ => return Err(bad(name, value, "is not one of: enabled, disabled")),
                })
            }
            MODE => {
                out.mode = Some(match value {
                    "dns-policy" => Mode::DnsPolicy,
                    "capture" => Mode::Capture,
                    _ => return Err(bad(name, value, "is not one of: dns-policy, capture")),
                })
            }
            UPSTREAM => {
                let ups = value
                    .split(',')
                    .map(|u| crate::cli::parse_upstream(u.trim()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(name, value, &format!("is not a list of IP[:PORT]: {e}")))?;
                out.upstream = Some(ups);
            }
            ORIGINAL => {
                serde_json::from_str::<serde_json::Value>(value)
                    .map_err(|e| bad(name, value, &format!("is not the JSON podns wrote: {e}")))?;
            }
            _ => {
                let flag = def.flag.expect("every other annotation sets a flag");
                let arg = format!("{flag}={value}");
                if let Err(e) = crate::cli::ProxyFlags::try_parse_from(["podns", arg.as_str()]) {
                    let msg = e.to_string();
                    let first = msg.lines().next().unwrap_or_default().trim_start_matches("error: ");
                    return Err(bad(name, value, &format!("is not a valid value of {flag} ({first})")));
                }
                out.sidecar_args.push(arg);
            }
        }
    }
    out.sidecar_args.sort_by_key(|a| ANNOTATIONS.iter().position(|d| d.flag.is_some_and(|f| a.starts_with(f))));
    Ok(out)
}

/// The README's annotation table, generated from [`ANNOTATIONS`].
pub fn markdown_table() -> String {
    let mut out = String::from("| annotation | values | |\n| --- | --- | --- |\n");
    for a in ANNOTATIONS {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            a.name,
            a.values,
            a.meaning.split_whitespace().collect::<Vec<_>>().join(" ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> Node {
        Node::map([("annotations", Node::map(pairs.iter().map(|(k, v)| (*k, Node::str(*v)))))])
    }

    #[test]
    fn good_values_become_sidecar_flags() {
        let o =
            read(&meta(&[("podns.io/cache-size", "1MiB"), ("podns.io/aaaa", "nodata"), ("other.io/x", "y")]), "pod")
                .unwrap();
        assert_eq!(o.sidecar_args, ["--aaaa=nodata", "--cache-size=1MiB"]);
        let o = read(&meta(&[(INJECT, "disabled"), (UPSTREAM, "10.0.0.10, 10.0.0.11:5353")]), "pod").unwrap();
        assert_eq!(o.inject, Some(false));
        assert_eq!(o.upstream.unwrap().len(), 2);
    }

    #[test]
    fn bad_values_and_names_are_named() {
        for (k, v) in [
            ("podns.io/aaaa", "nodta"),
            ("podns.io/cache-size", "lots"),
            (INJECT, "yes"),
            (MODE, "sidecar"),
            (UPSTREAM, "dns.example"),
            ("podns.io/aaa", "fix"),
        ] {
            let e = read(&meta(&[(k, v)]), "Pod shop/a").unwrap_err();
            assert_eq!(e.status, 2);
            assert!(e.message.contains(k) && e.message.contains("Pod shop/a"), "{}", e.message);
        }
    }

    #[test]
    fn every_flag_annotation_names_a_real_flag() {
        for a in ANNOTATIONS.iter().filter(|a| a.flag.is_some()) {
            let help = crate::cli::ProxyFlags::try_parse_from(["podns", "--help"]).unwrap_err().to_string();
            assert!(help.contains(a.flag.unwrap()), "{} sets {:?}, which podns does not have", a.name, a.flag);
            assert!(a.name.starts_with(PREFIX));
        }
    }
}
