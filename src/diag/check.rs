//! `podns check`: a pre-flight for a pod. Each finding has a severity and says what podns will
//! do about it. The probes are I/O ([`gather`]); turning their results into findings is pure
//! ([`findings`]), so the judgement can be tested without a network.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use serde::Serialize;

use super::walk::{Answer, QueryError, query};
use crate::policy::search::SearchConfig;
use crate::wire::{rcode, rcode_label, rtype};

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Ok,
    Info,
    /// Works, with podns working around it (or something to look at).
    Warn,
    /// podns cannot run, or cannot resolve anything, as configured.
    Block,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub severity: Severity,
    pub summary: String,
    pub details: Vec<String>,
    /// What podns does about it.
    pub podns: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// A finding blocks (exit status 1).
    pub blocking: bool,
}

/// The result of one query, as check uses it.
pub type Probe = Result<Answer, QueryError>;

/// Whether an address could be bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Free,
    InUse,
    Denied,
    Other(String),
}

/// Everything [`findings`] judges.
#[derive(Debug, Clone)]
pub struct Facts {
    pub cfg: SearchConfig,
    pub upstream: Option<SocketAddr>,
    /// Where the upstream came from (`--upstream`, the resolv.conf).
    pub upstream_source: String,
    /// SOA of the cluster domain.
    pub soa: Option<Probe>,
    /// For each non-cluster search domain: the random name asked and its A answer.
    pub node_domains: Vec<(String, Probe)>,
    /// AAAA of `kubernetes.default.svc.<cd>`, and the A for comparison.
    pub aaaa: Option<(String, Probe, Probe)>,
    /// A random single-label name, A.
    pub single_label: Option<(String, Probe)>,
    pub listen: SocketAddr,
    pub bind_udp: Bind,
    pub bind_tcp: Bind,
    /// `Some(true)` when a global IPv6 address is present; `None` when unreadable.
    pub global_ipv6: Option<bool>,
}

fn status(p: &Probe) -> String {
    match p {
        Ok(a) if a.rcode == rcode::NOERROR && a.records.is_empty() => "NODATA".into(),
        Ok(a) => rcode_label(a.rcode).to_ascii_uppercase(),
        Err(e) => e.to_string(),
    }
}

/// A short random label: `podns-check-<10 hex digits>`.
pub fn random_label() -> String {
    format!("podns-check-{:010x}", rand::random::<u64>() & 0xff_ffff_ffff)
}

/// Tries to bind `addr` over UDP and TCP.
pub fn try_bind(addr: SocketAddr) -> (Bind, Bind) {
    let judge = |r: std::io::Result<()>| match r {
        Ok(()) => Bind::Free,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Bind::InUse,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Bind::Denied,
        Err(e) => Bind::Other(e.to_string()),
    };
    (judge(UdpSocket::bind(addr).map(drop)), judge(TcpListener::bind(addr).map(drop)))
}

pub use crate::pipeline::has_global_ipv6;

/// Runs the probes against `upstream` (each query waits at most `timeout`).
pub fn gather(
    cfg: SearchConfig,
    upstream: Option<SocketAddr>,
    upstream_source: String,
    listen: SocketAddr,
    if_inet6: &std::path::Path,
    timeout: Duration,
) -> Facts {
    let cd = cfg.cluster_domain().to_dotted();
    let (bind_udp, bind_tcp) = try_bind(listen);
    let global_ipv6 = std::fs::read_to_string(if_inet6).ok().map(|t| has_global_ipv6(&t));
    let mut f = Facts {
        cfg,
        upstream,
        upstream_source,
        soa: None,
        node_domains: Vec::new(),
        aaaa: None,
        single_label: None,
        listen,
        bind_udp,
        bind_tcp,
        global_ipv6,
    };
    let Some(up) = upstream else { return f };
    let soa = query(up, &cd, rtype::SOA, false, timeout);
    let down = matches!(soa, Err(QueryError::Timeout | QueryError::Refused));
    f.soa = Some(soa);
    if down {
        return f; // every other probe would wait for its timeout too
    }
    for (i, d) in f.cfg.search().iter().enumerate() {
        if f.cfg.is_cluster_search(i) {
            continue;
        }
        let name = format!("{}.{}", random_label(), d.to_dotted());
        let r = query(up, &name, rtype::A, false, timeout);
        f.node_domains.push((name, r));
    }
    let k8s = format!("kubernetes.default.svc.{cd}");
    let aaaa = query(up, &k8s, rtype::AAAA, false, timeout);
    let a = query(up, &k8s, rtype::A, false, timeout);
    f.aaaa = Some((k8s, aaaa, a));
    let single = format!("{}.", random_label());
    let r = query(up, &single, rtype::A, false, timeout);
    f.single_label = Some((single, r));
    f
}

fn finding(check: &'static str, severity: Severity, summary: impl Into<String>) -> Finding {
    Finding { check, severity, summary: summary.into(), details: Vec::new(), podns: None }
}

/// The findings from the facts.
pub fn findings(f: &Facts) -> Report {
    let mut out = Vec::new();
    let cd = f.cfg.cluster_domain().to_dotted();

    // Search list and ndots.
    let search: Vec<String> = f.cfg.search().iter().map(|n| n.to_dotted()).collect();
    let cluster = (0..search.len()).filter(|&i| f.cfg.is_cluster_search(i)).count();
    let mut s = finding(
        "search",
        Severity::Info,
        format!(
            "search list {} (ndots {})",
            if search.is_empty() { "(none)".to_string() } else { search.join(" ") },
            f.cfg.ndots()
        ),
    );
    s.details.push(format!(
        "{} cluster search domain(s), {} node search domain(s); namespace {}",
        cluster,
        search.len() - cluster,
        f.cfg.namespace().map(|n| n.to_dotted().trim_end_matches('.').to_string()).unwrap_or_else(|| "unknown".into())
    ));
    if search.is_empty() || f.cfg.ndots() <= 1 {
        s.podns = Some("little to collapse: names with a dot are asked as they are".into());
    } else {
        s.podns = Some(format!(
            "a name with fewer than {} dots walks {} candidates before itself; podns answers impossible cluster candidates locally and collapses FQDN-like ones (pypi.org) into one CNAME",
            f.cfg.ndots(),
            search.len()
        ));
    }
    out.push(s);

    // Upstream.
    let Some(up) = f.upstream else {
        let mut x = finding("upstream", Severity::Block, "no upstream nameserver");
        x.details.push(f.upstream_source.clone());
        x.podns =
            Some("podns refuses to start without one: pass --upstream IP[:PORT] (the cluster DNS Service IP)".into());
        out.push(x);
        return finish(out, f);
    };
    let mut x = finding("upstream", Severity::Info, format!("upstream {up} (from {})", f.upstream_source));
    x.podns = Some("podns forwards to it and asks its TLD probes there".into());
    out.push(x);

    // Cluster DNS reachable.
    let cluster_dns = match &f.soa {
        None => None,
        Some(Ok(a)) if a.rcode == rcode::NOERROR && a.has(rtype::SOA) => {
            let mut x = finding("cluster-dns", Severity::Ok, format!("SOA {cd} answered: cluster DNS is reachable"));
            x.podns = Some("/ready asks the same SOA; podns reports ready".into());
            Some(x)
        }
        Some(Ok(a)) => {
            let mut x = finding(
                "cluster-dns",
                Severity::Warn,
                format!(
                    "SOA {cd}: {} — the upstream answers, but not as the cluster DNS of {cd}",
                    status(&Ok(a.clone()))
                ),
            );
            x.podns = Some(format!(
                "forwards anyway; /ready asks this SOA and stays unready while it fails; check --cluster-domain ({cd})"
            ));
            Some(x)
        }
        Some(Err(e)) => {
            let mut x = finding("cluster-dns", Severity::Block, format!("SOA {cd}: {e} — nothing answers at {up}"));
            x.podns = Some("every lookup would fail with SERVFAIL (serve-stale aside); /ready stays 503".into());
            Some(x)
        }
    };
    let down = cluster_dns.as_ref().is_some_and(|x| x.severity == Severity::Block);
    out.extend(cluster_dns);

    if !down {
        // Node search domains.
        for (name, p) in &f.node_domains {
            let dom = name.split_once('.').map_or(name.as_str(), |(_, d)| d);
            let x = match p {
                Ok(a) if a.rcode == rcode::NXDOMAIN => {
                    finding("node-domain", Severity::Ok, format!("{dom} answers NXDOMAIN for a name it lacks"))
                }
                Ok(a) if a.rcode == rcode::NOERROR && a.addrs().is_empty() => {
                    let mut x = finding(
                        "node-domain",
                        Severity::Warn,
                        format!("{dom} answers NODATA for names it lacks ({name} A)"),
                    );
                    x.details.push("musl stops its search walk at a NODATA: short names fail without podns".into());
                    x.podns = Some(
                        "skips NODATA candidates as glibc does (SEARCH_RULES.md §6), so collapsed lookups go on to the name itself"
                            .into(),
                    );
                    x
                }
                Ok(a) if a.rcode == rcode::NOERROR => {
                    let mut x = finding(
                        "node-domain",
                        Severity::Warn,
                        format!(
                            "{dom} has a wildcard: {name} A gives {}",
                            a.addrs().iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
                        ),
                    );
                    x.podns = Some("nothing to fix: every walk that reaches this domain ends there, with or without podns (use --collapse aggressive to skip node search domains)".into());
                    x
                }
                other => {
                    let mut x =
                        finding("node-domain", Severity::Warn, format!("{dom}: {} for {name} A", status(other)));
                    x.podns = Some(
                        "passes a failed candidate as glibc does; the answer is SERVFAIL only when no later candidate has data"
                            .into(),
                    );
                    x
                }
            };
            out.push(x);
        }
        // AAAA.
        if let Some((name, aaaa, a)) = &f.aaaa {
            let x = match aaaa {
                Ok(r) if r.rcode == rcode::NOERROR => {
                    finding("aaaa", Severity::Ok, format!("{name} AAAA: {}", status(aaaa)))
                }
                Ok(r) if r.rcode == rcode::NXDOMAIN => {
                    let mut x = finding("aaaa", Severity::Warn, format!("{name} AAAA: NXDOMAIN (A: {})", status(a)));
                    x.details.push("the default kubernetes service should exist: check --cluster-domain".into());
                    x
                }
                _ => {
                    let a_ok = matches!(a, Ok(r) if r.rcode == rcode::NOERROR);
                    let mut x =
                        finding("aaaa", Severity::Warn, format!("{name} AAAA: {} (A: {})", status(aaaa), status(a)));
                    x.details.push("c-ares fails the whole lookup on it and musl retries until its timeout".into());
                    x.podns = Some(if a_ok {
                        "answers NODATA when A exists (--aaaa fix, the default): the lookup gets its IPv4 address at once".into()
                    } else {
                        "answers from the A outcome (--aaaa fix): NODATA when A exists, NXDOMAIN when it does not, SERVFAIL when A fails too".into()
                    });
                    x
                }
            };
            out.push(x);
        }
        // Single-label names.
        if let Some((name, p)) = &f.single_label {
            let x = match p {
                Ok(r) if r.rcode == rcode::NXDOMAIN || r.rcode == rcode::NOERROR => {
                    finding("single-label", Severity::Ok, format!("{name} A: {}", status(p)))
                }
                Ok(_) => {
                    let mut x = finding(
                        "single-label",
                        Severity::Warn,
                        format!("{name} A: {} (systemd-resolved does this)", status(p)),
                    );
                    x.details.push(
                        "the last step of every short-name walk fails: c-ares before 1.16 and musl fail the lookup"
                            .into(),
                    );
                    x.podns = Some("answers as the root zone would: NXDOMAIN (NODATA for a TLD), root.rs".into());
                    x
                }
                Err(e) => {
                    let mut x = finding("single-label", Severity::Warn, format!("{name} A: {e}"));
                    x.podns = Some(
                        "a silent upstream is not answered for: the lookup fails as \"try again\" (SERVFAIL)".into(),
                    );
                    x
                }
            };
            out.push(x);
        }
    }
    finish(out, f)
}

fn finish(mut out: Vec<Finding>, f: &Facts) -> Report {
    // Port conflicts.
    let bind = |b: &Bind, proto: &str| -> Option<String> {
        match b {
            Bind::Free => None,
            Bind::InUse => Some(format!("{proto} {} is in use", f.listen)),
            Bind::Denied => {
                Some(format!("{proto} {}: permission denied (needs root or CAP_NET_BIND_SERVICE)", f.listen))
            }
            Bind::Other(e) => Some(format!("{proto} {}: {e}", f.listen)),
        }
    };
    let problems: Vec<String> = [bind(&f.bind_udp, "UDP"), bind(&f.bind_tcp, "TCP")].into_iter().flatten().collect();
    if problems.is_empty() {
        out.push(finding("listen", Severity::Ok, format!("{} is free over UDP and TCP", f.listen)));
    } else {
        let mut x = finding("listen", Severity::Block, format!("cannot bind {}", f.listen));
        x.details = problems;
        x.details.push("another DNS server (a running podns, NodeLocal DNSCache, dnsmasq) holds it?".into());
        x.podns = Some("exits at start-up; pick another --listen (capture mode: --listen 127.0.0.1:15053)".into());
        out.push(x);
    }
    // IPv6.
    out.push(match f.global_ipv6 {
        Some(true) => {
            let mut x = finding("ipv6", Severity::Info, "a global IPv6 address is present");
            x.podns = Some("--aaaa auto behaves as fix: AAAA is forwarded, failures are answered from A".into());
            x
        }
        Some(false) => {
            let mut x = finding("ipv6", Severity::Info, "no global IPv6 address: the pod is IPv4-only");
            x.podns = Some(
                "--aaaa auto would answer AAAA with NODATA without asking (fix, the default, forwards and repairs failures)".into(),
            );
            x
        }
        None => finding("ipv6", Severity::Info, "IPv6 state unknown (/proc/net/if_inet6 unreadable: IPv6 disabled?)"),
    });
    let blocking = out.iter().any(|x| x.severity == Severity::Block);
    Report { findings: out, blocking }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_labels_are_labels() {
        let l = random_label();
        assert!(crate::policy::search::is_dns1123_label(l.as_bytes()), "{l}");
        assert_ne!(random_label(), random_label());
    }
}
