//! On-call tools (issue 14): `podns explain NAME` shows what a pod's stub walks for a name and
//! what podns does with each candidate, and why; `podns check` is a pre-flight for a pod.
//!
//! The explanation is a pure function ([`explain()`]) rendered as text or JSON
//! ([`render_text`], [`render_json`]), so the running proxy can serve it too. The I/O (the live
//! walks, the probes) lives in [`walk`] and the `run_*` functions here.

pub mod check;
pub mod demo;
pub mod explain;
pub mod manifests;
pub mod render;
pub mod walk;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

pub use explain::{Explanation, Input, LiveInput, ProbeFact, explain};
pub use render::{render_check_json, render_check_text, render_json, render_text};

use crate::cli::{parse_duration, parse_upstream, resolv_conf_nameservers};
use crate::policy::search::SearchConfig;
use crate::policy::stubs::Stub;
use crate::wire::rtype;

/// Flags of `podns explain`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExplainArgs {
    /// The name, as an application would pass it to getaddrinfo (a trailing dot makes it absolute).
    pub name: String,

    /// Query type the per-candidate decisions are explained for (A, AAAA, HTTPS, MX, TYPEnnn).
    #[arg(long = "type", default_value = "A", value_parser = parse_type)]
    pub qtype: u16,

    /// resolv.conf of the pod (search list, ndots, nameserver).
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,

    /// Cluster domain of the Kubernetes cluster.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,

    /// Where podns answers, IP or IP:PORT.
    #[arg(long, default_value = "127.0.0.1:53", value_parser = parse_upstream)]
    pub via: SocketAddr,

    /// The upstream podns uses, for the direct path and the probes. Default: the upstream the
    /// running podns reports on --metrics, else the resolv.conf nameserver that is not --via.
    #[arg(long, value_parser = parse_upstream)]
    pub upstream: Option<SocketAddr>,

    /// podns's metrics address, asked for its upstream when --upstream is not given.
    #[arg(long, default_value = "127.0.0.1:9153")]
    pub metrics: SocketAddr,

    /// Walk the name for real, directly and through podns (default when podns answers at --via).
    #[arg(long, conflicts_with = "no_live")]
    pub live: bool,

    /// Explain from the resolv.conf alone; send no query.
    #[arg(long)]
    pub no_live: bool,

    /// Print a JSON document instead of text.
    #[arg(long)]
    pub json: bool,

    /// Leave latencies out (output that compares from run to run).
    #[arg(long)]
    pub no_timing: bool,

    /// Longest wait for one reply.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Flags of `podns check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// resolv.conf of the pod (search list, ndots, nameserver).
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,

    /// The upstream to check (the cluster DNS), IP or IP:PORT. Default: the resolv.conf
    /// nameserver that is not --listen.
    #[arg(long, value_parser = parse_upstream)]
    pub upstream: Option<SocketAddr>,

    /// The address podns would listen on (checked for UDP and TCP port conflicts).
    #[arg(long, default_value = "127.0.0.1:53")]
    pub listen: SocketAddr,

    /// Cluster domain of the Kubernetes cluster.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,

    /// Print a JSON document instead of text.
    #[arg(long)]
    pub json: bool,

    /// Longest wait for one reply.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Lint the pods of these manifests instead (multi-document YAML; `-` for standard input):
    /// dnsPolicy, hostNetwork, ports 53/9153 and mesh conflicts as `podns inject` judges them,
    /// and ndots (repeatable).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Where the IPv6 addresses are listed (tests point it at a file).
    #[arg(long, default_value = "/proc/net/if_inet6", hide = true)]
    pub if_inet6: PathBuf,
}

/// `--type`: A as well as the types `--synthesize-types` takes.
fn parse_type(s: &str) -> Result<u16, String> {
    if s.trim().eq_ignore_ascii_case("A") {
        return Ok(rtype::A);
    }
    crate::cli::parse_qtype(s)
}

/// Reads and parses a resolv.conf; the error names the file.
fn load_resolv(path: &Path, cluster_domain: &str) -> Result<(SearchConfig, String), String> {
    // A bad cluster domain is the flag's fault, not the file's.
    SearchConfig::new(&[], 1, cluster_domain).map_err(|e| format!("invalid value for --cluster-domain: {e}"))?;
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read --resolv-conf {}: {e}", path.display()))?;
    let cfg = SearchConfig::from_resolv_conf(&text, cluster_domain)
        .map_err(|e| format!("cannot use --resolv-conf {}: {e}", path.display()))?;
    Ok((cfg, text))
}

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(code)
}

/// How long a podns at --via gets to answer before it counts as absent.
const VIA_PROBE: Duration = Duration::from_millis(500);

/// `podns explain`.
pub fn run_explain(args: ExplainArgs) -> ExitCode {
    let (cfg, text) = match load_resolv(&args.resolv_conf, &args.cluster_domain) {
        Ok(v) => v,
        Err(e) => return fail(2, &e),
    };
    let zone = cfg.cluster_domain().to_dotted();
    let live = if args.no_live {
        false
    } else {
        let up = walk::answers(args.via, &zone, VIA_PROBE.min(args.timeout));
        if !up && args.live {
            return fail(
                1,
                &format!(
                    "--live: no DNS server answers at --via {} (UDP, {} ms); start podns there or pass --no-live",
                    args.via,
                    VIA_PROBE.min(args.timeout).as_millis()
                ),
            );
        }
        if !up {
            eprintln!("note: no podns answers at {}: static explanation only (--live to insist)", args.via);
        }
        up
    };
    let walk = if live {
        let upstream = args
            .upstream
            .or_else(|| walk::podns_upstreams(args.metrics, args.timeout).into_iter().next())
            .or_else(|| resolv_conf_nameservers(&text).into_iter().find(|a| *a != args.via));
        let Some(upstream) = upstream else {
            return fail(
                1,
                &format!(
                    "no upstream to walk directly: podns at {} reports none on --metrics {} and {} names no other nameserver; pass --upstream",
                    args.via,
                    args.metrics,
                    args.resolv_conf.display()
                ),
            );
        };
        Some(LiveArgs { via: args.via, upstream, metrics: args.metrics, timeout: args.timeout })
    } else {
        None
    };
    let mut e = explain_name(&cfg, &args.name, args.qtype, false, BTreeMap::new(), walk);
    if args.no_timing {
        explain::strip_timing(&mut e);
    }
    print!("{}", if args.json { render_json(&e) } else { render_text(&e) });
    ExitCode::SUCCESS
}

/// Where a live walk goes: podns at `via` (its metrics at `metrics`), and `upstream` directly.
#[derive(Debug, Clone, Copy)]
pub struct LiveArgs {
    pub via: SocketAddr,
    pub upstream: SocketAddr,
    pub metrics: SocketAddr,
    /// Longest wait for one reply.
    pub timeout: Duration,
}

/// Probe facts from what a running podns's probes found (lower-case label → whether a cluster
/// name can end in it); the individual probe answers are not kept, only the verdict.
pub fn known_probes(known: &[(String, bool)]) -> BTreeMap<String, explain::ProbeFact> {
    known
        .iter()
        .map(|(label, exists)| {
            let verdict = if *exists { explain::ProbeVerdict::Exists } else { explain::ProbeVerdict::Absent };
            (label.clone(), explain::ProbeFact { verdict, probes: Vec::new() })
        })
        .collect()
}

/// Explains `name` (`qtype`) under `cfg`, with the probe facts known so far (by lower-case
/// label); with `live`, after probing the labels podns would probe and walking the name as
/// glibc does, directly and through podns. Blocking: the live walk sends real queries, each
/// bounded by `live.timeout`. `podns explain` and the running proxy's `/debug/explain` share it.
pub fn explain_name(
    cfg: &SearchConfig,
    name: &str,
    qtype: u16,
    aggressive: bool,
    mut probes: BTreeMap<String, explain::ProbeFact>,
    live: Option<LiveArgs>,
) -> explain::Explanation {
    let mut live_input = None;
    if let Some(l) = live {
        for (label, names) in explain::probes_needed(cfg, name) {
            let results: Vec<_> = names
                .iter()
                .map(|n| (n.clone(), walk::query(l.upstream, n, rtype::A, false, l.timeout).map(|a| a.rcode)))
                .collect();
            probes.insert(label, explain::probe_fact(&results));
        }
        let conf = explain::stub_conf(cfg, 1);
        let direct = walk::live_walk(Stub::Glibc, name, &conf, l.upstream, l.timeout);
        let before = walk::podns_upstream_requests(l.metrics, l.timeout);
        let podns = walk::live_walk(Stub::Glibc, name, &conf, l.via, l.timeout);
        let after = walk::podns_upstream_requests(l.metrics, l.timeout);
        let podns_upstream = before.zip(after).map(|(b, a)| a.saturating_sub(b));
        live_input = Some(LiveInput { direct, podns, podns_upstream });
    }
    explain(&Input { cfg, name, qtype, aggressive, probes: &probes, live: live_input.as_ref() })
}

/// `podns check -f`: the manifests' pods.
fn run_check_files(args: &CheckArgs) -> ExitCode {
    let mut findings = Vec::new();
    for f in &args.files {
        let (name, text) = if f.as_os_str() == "-" {
            let mut t = String::new();
            if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut t) {
                return fail(1, &format!("cannot read standard input: {e}"));
            }
            ("standard input".to_string(), t)
        } else {
            match std::fs::read_to_string(f) {
                Ok(t) => (f.display().to_string(), t),
                Err(e) => return fail(1, &format!("cannot read --file {}: {e}", f.display())),
            }
        };
        findings.extend(manifests::lint(&text, &name, &args.cluster_domain));
    }
    let report = check::Report { blocking: findings.iter().any(|f| f.severity == check::Severity::Block), findings };
    print!("{}", if args.json { render_check_json(&report) } else { render_check_text(&report) });
    if report.blocking { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

/// `podns check`.
pub fn run_check(args: CheckArgs) -> ExitCode {
    if !args.files.is_empty() {
        return run_check_files(&args);
    }
    let (cfg, text) = match load_resolv(&args.resolv_conf, &args.cluster_domain) {
        Ok(v) => v,
        Err(e) => return fail(2, &e),
    };
    let (upstream, source) = match args.upstream {
        Some(u) => (Some(u), "--upstream".to_string()),
        None => {
            let own = |a: &SocketAddr| {
                a.port() == args.listen.port() && (a.ip() == args.listen.ip() || args.listen.ip().is_unspecified())
            };
            let ns = resolv_conf_nameservers(&text);
            match ns.iter().find(|a| !own(a)) {
                Some(u) => (Some(*u), args.resolv_conf.display().to_string()),
                None => (
                    None,
                    format!("{} has no nameserver other than --listen {}", args.resolv_conf.display(), args.listen),
                ),
            }
        }
    };
    let facts = check::gather(cfg, upstream, source, args.listen, &args.if_inet6, args.timeout);
    let report = check::findings(&facts);
    print!("{}", if args.json { render_check_json(&report) } else { render_check_text(&report) });
    if report.blocking { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::search::{SearchClass, classify, impossible_rule};
    use crate::wire::Name;

    fn k8s() -> SearchConfig {
        SearchConfig::from_resolv_conf(
            "search default.svc.cluster.local svc.cluster.local cluster.local ec2.internal\noptions ndots:5\n",
            "cluster.local",
        )
        .unwrap()
    }

    fn ex(name: &str) -> Explanation {
        explain(&Input { cfg: &k8s(), name, qtype: rtype::A, aggressive: false, probes: &BTreeMap::new(), live: None })
    }

    #[test]
    fn impossible_rule_agrees_with_classify() {
        let cfg = k8s();
        for n in [
            "pypi.org.cluster.local",
            "a.b.c.d.e.default.svc.cluster.local",
            "x.under_score.svc.cluster.local",
            "a.dns.cluster.local",
            "redis.default.svc.cluster.local",
            "web.dev.svc.cluster.local",
            "pypi.org.ec2.internal",
        ] {
            let w = Name::from_dotted(n).unwrap();
            let impossible = matches!(classify(w.wire(), &cfg), SearchClass::Impossible { .. });
            assert_eq!(impossible, impossible_rule(w.wire(), &cfg).is_some(), "{n}");
        }
        let rule = |n: &str| impossible_rule(Name::from_dotted(n).unwrap().wire(), &cfg).map(|r| r.number());
        assert_eq!(rule("pypi.org.cluster.local"), Some(3));
        assert_eq!(rule("a.b.c.d.e.default.svc.cluster.local"), Some(8));
        assert_eq!(rule("x.dns-version.cluster.local"), Some(5));
        assert_eq!(rule("a.dns.cluster.local"), Some(7));
        assert_eq!(rule("x.under_score.svc.cluster.local"), Some(9));
        assert_eq!(rule("under_score.default.svc.cluster.local"), Some(10));
        assert_eq!(rule("x.nope.pod.cluster.local"), Some(11));
    }

    #[test]
    fn pypi_walk_and_actions() {
        let e = ex("pypi.org");
        let glibc = &e.walks[0].candidates;
        assert_eq!(
            glibc,
            &[
                "pypi.org.default.svc.cluster.local.",
                "pypi.org.svc.cluster.local.",
                "pypi.org.cluster.local.",
                "pypi.org.ec2.internal.",
                "pypi.org."
            ]
        );
        let kinds: Vec<&str> = e.candidates.iter().map(|c| c.class).collect();
        assert_eq!(kinds, ["fqdn-like", "fqdn-like", "impossible", "fqdn-like", "not-search"]);
        assert_eq!(e.candidates[2].action, explain::Action::NxdomainLocally);
        assert!(matches!(
            &e.candidates[0].action,
            explain::Action::CollapsedIfProbesAllow { to } if to == &["pypi.org.ec2.internal.", "pypi.org."]
        ));
    }

    #[test]
    fn trailing_dot_and_many_dots() {
        let e = ex("pypi.org.");
        assert!(e.rooted);
        assert_eq!(e.walks[0].candidates, ["pypi.org."]);
        assert_eq!(e.walks[1].candidates, ["pypi.org."]);
        let e = ex("a.b.c.d.e.f");
        assert_eq!(e.walks[0].candidates[0], "a.b.c.d.e.f.", "glibc asks as is first");
        assert_eq!(e.walks[1].candidates, ["a.b.c.d.e.f."], "musl asks as is only");
        assert!(e.differences[0].starts_with("only glibc asks"));
    }

    #[test]
    fn no_panics_on_odd_names() {
        for n in ["", ".", "..", "a..b", "1.2.3.4", "::1", &"a".repeat(300), &"a.".repeat(200), "é.com", "*", "\0"] {
            let e = ex(n);
            let _ = render_text(&e);
            let _ = render_json(&e);
        }
    }
}
