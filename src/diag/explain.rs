//! `podns explain`: what a pod's stub resolver walks for a name, and what podns does with each
//! candidate and why. [`explain`] is a pure function of the search configuration, the name,
//! the facts learnt from probes and the live walks (if any); the renderers in
//! [`super::render`] turn its [`Explanation`] into text or JSON. The running proxy can serve
//! the same function (`GET /debug/explain?name=…`).
//!
//! The decisions are those of the running proxy, taken from the pure policy functions
//! ([`crate::policy::search::classify`], [`crate::policy::collapse::candidates`],
//! [`crate::policy::root::denial`], the AAAA policy), never from the server.

use std::collections::BTreeMap;

use serde::Serialize;

use super::walk::{LiveWalk, QueryError};
use crate::policy::collapse::candidates;
use crate::policy::root::{self, RootDenial};
use crate::policy::search::{SearchClass, SearchConfig, classify, impossible_rule, probe_names};
use crate::policy::stubs::{self, Conf, Outcome, Reply, Stub};
use crate::wire::{Name, rcode, rtype, to_dotted, type_label};

/// What the TLD probes said about a label: can a cluster name end in `.<label>`?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeVerdict {
    /// A namespace or a service of ours has that name: the candidate is forwarded.
    Exists,
    /// Neither exists: the candidate is collapsed.
    Absent,
    /// The probes failed: podns assumes nothing and forwards.
    Failed,
}

/// One probe query and its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeResult {
    pub name: String,
    /// `NOERROR`, `NXDOMAIN`, `timeout`, ...
    pub status: String,
}

/// What is known about one TLD label's probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeFact {
    pub verdict: ProbeVerdict,
    pub probes: Vec<ProbeResult>,
}

/// Everything [`explain`] needs.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub cfg: &'a SearchConfig,
    /// The name as the application passes it (a trailing dot allowed).
    pub name: &'a str,
    pub qtype: u16,
    /// `--collapse aggressive`: later non-cluster search domains are not asked.
    pub aggressive: bool,
    /// Probe facts by lower-case TLD label, when known.
    pub probes: &'a BTreeMap<String, ProbeFact>,
    /// The live walks, when performed.
    pub live: Option<&'a LiveInput>,
}

/// The live walks: directly against the upstream and through podns.
#[derive(Debug, Clone)]
pub struct LiveInput {
    pub direct: LiveWalk,
    pub podns: LiveWalk,
    /// Queries podns sent upstream during its walk (its probes included), from its metrics.
    pub podns_upstream: Option<u64>,
}

/// The search configuration, as explained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolv {
    pub search: Vec<String>,
    pub ndots: u8,
    pub cluster_domain: String,
    pub namespace: Option<String>,
}

/// The candidates one stub asks, in order, for an A+AAAA lookup that finds nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StubWalk {
    pub stub: &'static str,
    pub candidates: Vec<String>,
    /// When the walk stops before the end of the list.
    pub stops: &'static str,
}

/// What podns does with one candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    /// NXDOMAIN (with the cluster SOA), without asking the upstream.
    NxdomainLocally,
    /// CNAME to the first of `to` that has data (asked one at a time, in this order).
    Collapsed { to: Vec<String> },
    /// Collapsed when the probes find the TLD label is no cluster name; forwarded otherwise.
    CollapsedIfProbesAllow { to: Vec<String> },
    /// Asked upstream unchanged.
    Forwarded,
    /// Not asked at all: the stub asks the name as given (an IP address, a malformed name).
    NotAsked,
}

/// One candidate of the walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub name: String,
    /// `impossible`, `fqdn-like`, `other`, `not-search`.
    pub class: &'static str,
    /// The search domain that produced it, if it is a search expansion.
    pub search_domain: Option<String>,
    pub action: Action,
    /// The rules behind the action (SEARCH_RULES.md section and why).
    pub why: Vec<String>,
    /// The TLD probes deciding a collapse (names, and results when known).
    pub probes: Option<ProbeFact>,
    pub probe_names: Vec<String>,
    /// What podns does for AAAA (and the other synthesized types) on top of the action.
    pub aaaa: Option<String>,
}

/// One exchange of a live path, rendered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveExchange {
    pub name: String,
    pub qtype: &'static str,
    pub tcp: bool,
    /// `NOERROR`, `NXDOMAIN`, `NODATA`, `SERVFAIL`, `timeout`, ...
    pub status: String,
    /// Addresses in the answer.
    pub addresses: Vec<String>,
    /// CNAME target in the answer, if any.
    pub cname: Option<String>,
    /// Milliseconds (None with `--no-timing`).
    pub ms: Option<f64>,
}

/// One path (direct or through podns) of the live walk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LivePath {
    pub path: &'static str,
    pub server: String,
    pub exchanges: Vec<LiveExchange>,
    pub queries: usize,
    /// Queries that reached the upstream: the walk's own on the direct path; on the podns path
    /// what podns's metrics counted meanwhile (None when they cannot be read).
    pub upstream_queries: Option<u64>,
    pub wall_ms: Option<f64>,
    /// `found`, `not-found`, `failed`.
    pub outcome: &'static str,
    pub addresses: Vec<String>,
}

/// Both live paths.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Live {
    pub stub: &'static str,
    pub direct: LivePath,
    pub podns: LivePath,
    /// The same outcome and addresses on both paths.
    pub same_result: bool,
    /// Queries saved through podns (direct minus podns; negative when podns asked more).
    pub queries_saved: i64,
}

/// The explanation of a name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub name: String,
    pub qtype: &'static str,
    pub rooted: bool,
    pub dots: usize,
    pub resolv: Resolv,
    /// Why the search list is, or is not, tried first.
    pub order: String,
    pub walks: Vec<StubWalk>,
    /// Where glibc's and musl's walks differ.
    pub differences: Vec<String>,
    pub candidates: Vec<Candidate>,
    /// The walk through podns, in one sentence.
    pub through_podns: String,
    pub live: Option<Live>,
}

/// The stub models' configuration for this search configuration.
pub fn stub_conf(cfg: &SearchConfig, attempts: u8) -> Conf {
    Conf {
        search: cfg.search().iter().map(|n| n.to_dotted().trim_end_matches('.').to_string()).collect(),
        ndots: cfg.ndots(),
        attempts,
    }
}

/// The candidate names (in order, each once) a stub asks when every answer is NXDOMAIN.
fn stub_candidates(stub: Stub, name: &str, conf: &Conf) -> Vec<String> {
    let walk = stubs::walk(stub, name, conf, &mut |_| Reply::rcode(rcode::NXDOMAIN));
    let mut out: Vec<String> = Vec::new();
    for q in walk.queries {
        if !out.contains(&q.name) {
            out.push(q.name);
        }
    }
    out
}

fn dotted(n: &Name) -> String {
    n.to_dotted()
}

/// The explanation of `input.name` (see the module doc).
pub fn explain(input: &Input) -> Explanation {
    let cfg = input.cfg;
    let conf = stub_conf(cfg, 1);
    let lower = input.name.to_ascii_lowercase();
    let rooted = lower.ends_with('.') && lower.len() > 1;
    let base = lower.trim_end_matches('.');
    let dots = base.matches('.').count();
    let ndots = cfg.ndots();
    let order = if lower.parse::<std::net::IpAddr>().is_ok() {
        "an IP address: no DNS query at all".to_string()
    } else if rooted {
        "a trailing dot: the name is absolute, asked once as is, no search list".to_string()
    } else if cfg.search().is_empty() {
        "no search list: the name is asked as is".to_string()
    } else if dots >= usize::from(ndots) {
        format!(
            "{dots} dot(s) >= ndots {ndots}: glibc asks the name as is first, then the search list; musl asks it as is only"
        )
    } else {
        format!("{dots} dot(s) < ndots {ndots}: the search list comes first, the name as is last")
    };
    let glibc = stub_candidates(Stub::Glibc, input.name, &conf);
    let musl = stub_candidates(Stub::Musl, input.name, &conf);
    let walks = vec![
        StubWalk {
            stub: "glibc",
            candidates: glibc.clone(),
            stops: "at the first candidate with records; NXDOMAIN, NODATA and SERVFAIL go on to the next",
        },
        StubWalk {
            stub: "musl",
            candidates: musl.clone(),
            stops: "at the first candidate that is not NXDOMAIN: a NODATA or a SERVFAIL ends the lookup there",
        },
    ];
    let mut differences = Vec::new();
    if glibc != musl {
        let only_glibc: Vec<&str> = glibc.iter().filter(|c| !musl.contains(c)).map(String::as_str).collect();
        let only_musl: Vec<&str> = musl.iter().filter(|c| !glibc.contains(c)).map(String::as_str).collect();
        if !only_glibc.is_empty() {
            differences.push(format!("only glibc asks {}", only_glibc.join(", ")));
        }
        if !only_musl.is_empty() {
            differences.push(format!("only musl asks {}", only_musl.join(", ")));
        }
        if only_glibc.is_empty() && only_musl.is_empty() {
            differences.push("glibc and musl ask the same candidates in a different order".into());
        }
    }
    if glibc.len() > 1 {
        differences.push(
            "a candidate answering NODATA ends musl's walk (it fails), glibc goes on; podns skips NODATA candidates like glibc (SEARCH_RULES.md §6)"
                .into(),
        );
    }
    let mut all = glibc.clone();
    all.extend(musl.iter().filter(|c| !glibc.contains(c)).cloned());
    let candidates: Vec<Candidate> = all.iter().map(|c| explain_candidate(input, c)).collect();
    let through_podns = summarize(&candidates, glibc.len());
    Explanation {
        name: input.name.to_string(),
        qtype: type_label(input.qtype),
        rooted,
        dots,
        resolv: Resolv {
            search: cfg.search().iter().map(dotted).collect(),
            ndots,
            cluster_domain: dotted(cfg.cluster_domain()),
            namespace: cfg.namespace().map(|n| n.to_dotted().trim_end_matches('.').to_string()),
        },
        order,
        walks,
        differences,
        candidates,
        through_podns,
        live: input.live.map(live_report),
    }
}

/// The walk through podns in one sentence: where a collapse ends it, or how many candidates
/// podns answers itself.
fn summarize(candidates: &[Candidate], walked: usize) -> String {
    let collapsed = candidates
        .iter()
        .position(|c| matches!(c.action, Action::Collapsed { .. } | Action::CollapsedIfProbesAllow { .. }));
    if let Some(i) = collapsed {
        let c = &candidates[i];
        let cond = if matches!(c.action, Action::CollapsedIfProbesAllow { .. }) { ", if the probes allow" } else { "" };
        return format!(
            "the client's walk ends at candidate {} ({}) with podns's CNAME when the name exists{cond}: {} queries (A and AAAA) instead of up to {} for a name found last; the later candidates are never asked",
            i + 1,
            c.name,
            2 * (i + 1),
            2 * walked
        );
    }
    let local = candidates.iter().filter(|c| c.action == Action::NxdomainLocally).count();
    match local {
        0 => "every candidate is forwarded as the client asks it (answers cached)".to_string(),
        n => format!(
            "the client asks the same candidates; podns answers {n} of them itself (NXDOMAIN, no upstream query) and forwards the rest"
        ),
    }
}

/// What the AAAA handling (`--aaaa fix`, the default) adds for a candidate that is asked
/// upstream.
fn aaaa_note(wire: &[u8]) -> String {
    let mut s = "AAAA (--aaaa fix): an upstream AAAA failure is answered from A: NODATA if A exists, NXDOMAIN if not, SERVFAIL if A fails too".to_string();
    if let Some(d) = root::denial(wire) {
        let what = match d {
            RootDenial::NxDomain => "NXDOMAIN (not a TLD)",
            RootDenial::NoData => "NODATA (a TLD)",
        };
        s.push_str(&format!("; if every upstream fails this single label: the root zone's {what}"));
    }
    s
}

fn explain_candidate(input: &Input, cand: &str) -> Candidate {
    let cfg = input.cfg;
    let Some(n) = Name::from_dotted(cand) else {
        return Candidate {
            name: cand.to_string(),
            class: "not-search",
            search_domain: None,
            action: Action::NotAsked,
            why: vec!["not a valid DNS name".into()],
            probes: None,
            probe_names: Vec::new(),
            aaaa: None,
        };
    };
    let wire = n.wire();
    let search_dom = |i: usize| cfg.search().get(i).map(dotted);
    let mut c = Candidate {
        name: cand.to_string(),
        class: "not-search",
        search_domain: None,
        action: Action::Forwarded,
        why: Vec::new(),
        probes: None,
        probe_names: Vec::new(),
        aaaa: Some(aaaa_note(wire)),
    };
    match classify(wire, cfg) {
        SearchClass::NotSearch => {
            c.why.push(format!(
                "§2: not a search expansion (no search domain S with P.S and P under ndots {} dots): forwarded unchanged",
                cfg.ndots()
            ));
            if let Some(d) = root::denial(wire) {
                c.why.push(format!(
                    "root.rs: a single-label name; when every upstream answers SERVFAIL/REFUSED podns answers as the root zone would ({})",
                    match d {
                        RootDenial::NxDomain => "NXDOMAIN",
                        RootDenial::NoData => "NODATA",
                    }
                ));
            }
        }
        SearchClass::Other { search_index } => {
            c.class = "other";
            c.search_domain = search_dom(search_index);
            c.why.push("§5: a search expansion that may be a real name (a service, a pod, a name in a node search domain): forwarded unchanged".into());
        }
        SearchClass::Impossible { search_index } => {
            c.class = "impossible";
            c.search_domain = search_dom(search_index);
            c.action = Action::NxdomainLocally;
            c.aaaa = None;
            match impossible_rule(wire, cfg) {
                Some(r) => c.why.push(format!(
                    "§3 rule {}: {}; cluster DNS would answer NXDOMAIN, so podns does without asking",
                    r.number(),
                    r.text()
                )),
                None => c.why.push("§3: no record of the Kubernetes DNS schema can exist there".into()),
            }
        }
        SearchClass::FqdnLike { search_index, prefix_len, tld } => {
            c.class = "fqdn-like";
            c.search_domain = search_dom(search_index);
            let tld_label = String::from_utf8_lossy(&wire[tld.clone()]).to_ascii_lowercase();
            let p = to_dotted(&[&wire[..prefix_len], &[0u8][..]].concat());
            let to: Vec<String> = candidates(&wire[..prefix_len], search_index, cfg, input.aggressive)
                .iter()
                .map(|w| to_dotted(w))
                .collect();
            let (ns_probe, svc_probe) = probe_names(tld_label.as_bytes(), cfg);
            c.probe_names.push(dotted(&ns_probe));
            if let Some(s) = &svc_probe {
                c.probe_names.push(dotted(s));
            }
            c.why.push(format!(
                "§4: P = {p} has a dot and its last label `{tld_label}` is a top-level domain: the name looks like {p} under search domain {}",
                dotted(&cfg.search()[search_index])
            ));
            let ns_name = cfg.namespace().map(|n| n.to_dotted().trim_end_matches('.').to_string());
            let fact = input.probes.get(&tld_label).cloned();
            let said = |i: usize| {
                fact.as_ref().and_then(|f| f.probes.get(i)).map(|p| format!(": {}", p.status)).unwrap_or_default()
            };
            let mut asked = format!("a namespace (probe {} A{})", dotted(&ns_probe), said(0));
            if let (Some(s), Some(ns)) = (&svc_probe, &ns_name) {
                asked.push_str(&format!(" or a service in namespace {ns} (probe {} A{})", dotted(s), said(1)));
            }
            c.action = match fact.as_ref().map(|f| f.verdict) {
                None => {
                    c.why.push(format!(
                        "§6: a cluster name can end in .{tld_label} only if `{tld_label}` is {asked}; podns asks these probes once per label and keeps the answer --probe-ttl"
                    ));
                    Action::CollapsedIfProbesAllow { to: to.clone() }
                }
                Some(ProbeVerdict::Absent) => {
                    c.why.push(format!(
                        "§6: no cluster name can end in .{tld_label}: `{tld_label}` is neither {}",
                        asked.replacen(" or a service", " nor a service", 1)
                    ));
                    Action::Collapsed { to: to.clone() }
                }
                Some(ProbeVerdict::Exists) => {
                    c.why.push(format!("§6: `{tld_label}` may be {asked}: the name may be real, forwarded"));
                    Action::Forwarded
                }
                Some(ProbeVerdict::Failed) => {
                    c.why.push(format!(
                        "§6: the probes failed (is `{tld_label}` {asked}?): podns assumes nothing and forwards"
                    ));
                    Action::Forwarded
                }
            };
            if matches!(c.action, Action::Collapsed { .. } | Action::CollapsedIfProbesAllow { .. }) {
                c.why.push(
                    "§6: candidates asked one at a time in the client's order; the first with data (either address type) owns the name; NODATA and NXDOMAIN are skipped, a failure is passed but makes the answer SERVFAIL if no owner follows"
                        .into(),
                );
            }
            c.probes = fact;
        }
    }
    if input.qtype != rtype::AAAA && input.qtype != rtype::A {
        c.aaaa = None;
    }
    c
}

fn ms(d: std::time::Duration) -> Option<f64> {
    Some((d.as_secs_f64() * 10_000.0).round() / 10.0)
}

fn live_path(path: &'static str, w: &LiveWalk, upstream_queries: Option<u64>) -> LivePath {
    let exchanges = w
        .exchanges
        .iter()
        .map(|e| {
            let (addresses, cname) = match &e.result {
                Ok(a) => (a.addrs().iter().map(ToString::to_string).collect(), a.cname()),
                Err(_) => (Vec::new(), None),
            };
            LiveExchange {
                name: e.name.clone(),
                qtype: type_label(e.qtype),
                tcp: e.tcp,
                status: e.status(),
                addresses,
                cname,
                ms: ms(e.elapsed),
            }
        })
        .collect();
    let (outcome, addresses) = match &w.outcome {
        Outcome::Found(a) => ("found", a.iter().map(ToString::to_string).collect()),
        Outcome::NotFound => ("not-found", Vec::new()),
        Outcome::Failed => ("failed", Vec::new()),
    };
    LivePath {
        path,
        server: w.server.to_string(),
        queries: w.exchanges.len(),
        upstream_queries,
        exchanges,
        wall_ms: ms(w.wall),
        outcome,
        addresses,
    }
}

fn live_report(l: &LiveInput) -> Live {
    let direct = live_path("direct", &l.direct, Some(l.direct.exchanges.len() as u64));
    let podns = live_path("podns", &l.podns, l.podns_upstream);
    Live {
        stub: "glibc",
        same_result: direct.outcome == podns.outcome && direct.addresses == podns.addresses,
        queries_saved: direct.queries as i64 - podns.queries as i64,
        direct,
        podns,
    }
}

/// Removes every latency from an explanation (`--no-timing`), for output that compares.
pub fn strip_timing(e: &mut Explanation) {
    if let Some(l) = &mut e.live {
        for p in [&mut l.direct, &mut l.podns] {
            p.wall_ms = None;
            for x in &mut p.exchanges {
                x.ms = None;
            }
        }
    }
}

/// The probe fact for one TLD label from the results of its probes (A queries): one probe
/// answering NOERROR finds it; both NXDOMAIN rule it out; anything else is a failure. Mirrors
/// `tld_may_exist` of the running proxy.
pub fn probe_fact(results: &[(String, Result<u16, QueryError>)]) -> ProbeFact {
    let found = |r: &Result<u16, QueryError>| match r {
        Ok(rcode::NOERROR) => Some(true),
        Ok(rcode::NXDOMAIN) => Some(false),
        _ => None,
    };
    let verdicts: Vec<Option<bool>> = results.iter().map(|(_, r)| found(r)).collect();
    let verdict = if verdicts.contains(&Some(true)) {
        ProbeVerdict::Exists
    } else if verdicts.iter().all(|v| *v == Some(false)) {
        ProbeVerdict::Absent
    } else {
        ProbeVerdict::Failed
    };
    let probes = results
        .iter()
        .map(|(n, r)| ProbeResult {
            name: n.clone(),
            status: match r {
                Ok(rc) => crate::wire::rcode_label(*rc).to_ascii_uppercase(),
                Err(e) => e.to_string(),
            },
        })
        .collect();
    ProbeFact { verdict, probes }
}

/// The TLD labels whose probes decide a candidate of `name`'s walk, with their probe names.
pub fn probes_needed(cfg: &SearchConfig, name: &str) -> Vec<(String, Vec<String>)> {
    let conf = stub_conf(cfg, 1);
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for cand in stub_candidates(Stub::Glibc, name, &conf) {
        let Some(n) = Name::from_dotted(&cand) else { continue };
        if let SearchClass::FqdnLike { tld, .. } = classify(n.wire(), cfg) {
            let label = String::from_utf8_lossy(&n.wire()[tld.clone()]).to_ascii_lowercase();
            if out.iter().any(|(l, _)| *l == label) {
                continue;
            }
            let (ns, svc) = probe_names(label.as_bytes(), cfg);
            let mut names = vec![dotted(&ns)];
            names.extend(svc.as_ref().map(dotted));
            out.push((label, names));
        }
    }
    out
}
