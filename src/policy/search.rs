//! Search-domain collapse: how a query name relates to the pod's resolv.conf search list, and
//! which names the Kubernetes DNS schema rules out.
//!
//! A stub resolving `pypi.org` in a pod with `search <ns>.svc.<cd> svc.<cd> <cd>` and
//! `ndots:5` first asks for `pypi.org.<ns>.svc.<cd>`, `pypi.org.svc.<cd>` and `pypi.org.<cd>`.
//! [`classify`] recognises such names. Every rule is written down, with the specification
//! sentence or the CoreDNS behaviour behind it, in `SEARCH_RULES.md` next to this file.
//!
//! Pure functions: no I/O, no clock. [`classify`] and [`is_public_tld`] run for every query and
//! never allocate; they compare ASCII case-insensitively and accept any bytes without panicking.

use std::cmp::Ordering;
use std::ops::Range;

use crate::wire::{Name, labels};

#[path = "tlds.rs"]
mod tlds;

pub use tlds::{MAX_TLD_LEN, TLDS};

/// Longest wire name, length octets and root included (RFC 1035 §3.1).
const MAX_NAME: usize = 255;

/// Most labels a wire name can have: every label takes at least two octets, the root one.
const MAX_LABELS: usize = (MAX_NAME - 1) / 2;

/// Longest cluster domain (wire octets) for which every probe name `<label>.svc.<cd>` with a
/// label of up to 63 octets still fits in [`MAX_NAME`].
const MAX_CLUSTER_DOMAIN: usize = MAX_NAME - 64 - 4;

/// Labels below `svc`/`pod` that CoreDNS parses at most: `_<port>._<proto>.<svc>.<ns>`,
/// `<endpoint>.<cluster-id>.<svc>.<ns>` (multicluster), `<zone>._zone.<svc>.<ns>` (zonal).
const MAX_SCHEMA_LABELS: usize = 4;

/// The search configuration of the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchConfig {
    search: Vec<Name>,
    /// `in_cluster[i]`: search domain `i` is the cluster domain or below it.
    in_cluster: Vec<bool>,
    ndots: u8,
    cluster_domain: Name,
    namespace: Option<Name>,
}

impl SearchConfig {
    /// A configuration from a search list (dotted names, trailing dot optional; entries that are
    /// the root, `.` or empty, are dropped since no stub appends them), the `ndots` option and
    /// the cluster domain. Fails on a search domain or cluster domain that is not a valid name,
    /// and on a cluster domain that is the root or too long to build probe names under.
    pub fn new(search: &[String], ndots: u8, cluster_domain: &str) -> Result<SearchConfig, String> {
        let cd =
            Name::from_dotted(cluster_domain).ok_or_else(|| format!("invalid cluster domain {cluster_domain:?}"))?;
        if cd.wire().len() <= 1 {
            return Err("the cluster domain cannot be the root".to_string());
        }
        if cd.wire().len() > MAX_CLUSTER_DOMAIN {
            return Err(format!("cluster domain {cluster_domain:?} is too long"));
        }
        let mut names = Vec::with_capacity(search.len());
        for s in search {
            let n = Name::from_dotted(s).ok_or_else(|| format!("invalid search domain {s:?}"))?;
            if n.wire().len() > 1 {
                names.push(n);
            }
        }
        let in_cluster = names.iter().map(|n| labels_above(n.wire(), cd.wire()).is_some()).collect();
        let namespace = names.iter().find_map(|n| {
            let mut l = labels(n.wire());
            let (ns, svc) = (l.next()?, l.next()?);
            let is_ns_svc = labels_above(n.wire(), cd.wire()) == Some(2) && svc == b"svc";
            // Labels of a `Name` are ASCII without dots, so this cannot fail.
            is_ns_svc.then(|| std::str::from_utf8(ns).ok().and_then(Name::from_dotted)).flatten()
        });
        Ok(SearchConfig { search: names, in_cluster, ndots, cluster_domain: cd, namespace })
    }

    /// The search list and ndots of a resolv.conf text, read as glibc does
    /// ([`crate::resolv_conf`]).
    pub fn from_resolv_conf(text: &str, cluster_domain: &str) -> Result<SearchConfig, String> {
        let rc = crate::resolv_conf::ResolvConf::parse(text);
        SearchConfig::new(&rc.search, rc.ndots, cluster_domain)
    }

    /// The namespace: first label of the first search domain of the form `<ns>.svc.<cd>`.
    pub fn namespace(&self) -> Option<&Name> {
        self.namespace.as_ref()
    }

    /// The search domains, in order (root entries dropped); `search_index` values index this.
    pub fn search(&self) -> &[Name] {
        &self.search
    }

    pub fn ndots(&self) -> u8 {
        self.ndots
    }

    pub fn cluster_domain(&self) -> &Name {
        &self.cluster_domain
    }

    /// True when search domain i is inside the cluster domain.
    pub fn is_cluster_search(&self, i: usize) -> bool {
        self.in_cluster.get(i).copied().unwrap_or(false)
    }
}

/// Number of labels of `name` above `suffix` when `suffix` is a label-aligned suffix of `name`
/// (both lower-case uncompressed wire names); `Some(0)` when they are equal.
fn labels_above(name: &[u8], suffix: &[u8]) -> Option<usize> {
    let mut at = 0usize;
    let mut n = 0usize;
    loop {
        if name.get(at..)? == suffix {
            return Some(n);
        }
        let l = *name.get(at)? as usize;
        if l == 0 {
            return None;
        }
        at += 1 + l;
        n += 1;
    }
}

/// How a query name relates to the search list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchClass {
    /// Not P.S for any search domain S with P having fewer than ndots dots: forward unchanged.
    NotSearch,
    /// P.S whose full name is in the cluster domain and which the Kubernetes DNS schema rules
    /// out: answer NXDOMAIN (with the cluster SOA) without asking upstream. (S is in the cluster
    /// domain too, except in the odd setup where a search domain is a parent of it.)
    Impossible { search_index: usize },
    /// P.S where P is FQDN-like: at least one dot and its last label is a public TLD.
    /// `prefix_len` is the wire length of P's labels (without the terminating root), so P's
    /// labels are `qname[..prefix_len]`; `tld` is the byte range of the last label of P (the TLD
    /// label content) within qname; `search_index` is which search domain S is.
    FqdnLike { search_index: usize, prefix_len: usize, tld: Range<usize> },
    /// P.S that could be a real cluster (or non-cluster-search-domain) name: forward unchanged.
    Other { search_index: usize },
}

/// Offsets of the labels of a well-formed uncompressed wire name, kept on the stack.
struct Split {
    /// `starts[i]`: offset of the length octet of label `i`; `starts[n]`: offset of the root.
    starts: [u8; MAX_LABELS + 1],
    n: usize,
}

impl Split {
    /// `None` unless `q` is exactly one uncompressed name: labels of at most 63 octets, the
    /// root octet last, at most 255 octets.
    fn new(q: &[u8]) -> Option<Split> {
        if q.len() > MAX_NAME {
            return None;
        }
        let mut s = Split { starts: [0; MAX_LABELS + 1], n: 0 };
        let mut at = 0usize;
        loop {
            let l = *q.get(at)?;
            if l & 0xc0 != 0 {
                return None;
            }
            if s.n > MAX_LABELS {
                return None;
            }
            // `at` < q.len() <= 255.
            s.starts[s.n] = at as u8;
            if l == 0 {
                return (at + 1 == q.len()).then_some(s);
            }
            s.n += 1;
            at += 1 + l as usize;
        }
    }

    /// Index of the label starting at offset `at` (`n` for the root), if one starts there.
    fn label_at(&self, at: usize) -> Option<usize> {
        let at = u8::try_from(at).ok()?;
        self.starts[..=self.n].binary_search(&at).ok()
    }

    /// Byte range of the content of label `i`.
    fn range(&self, i: usize) -> Range<usize> {
        self.starts[i] as usize + 1..self.starts[i + 1] as usize
    }
}

/// Classifies `qname` (one uncompressed wire name, any letter case) against the search list.
///
/// The search domain reported is the FIRST one, in search-list order, that is a proper suffix
/// of `qname` (label-aligned) and leaves a P with fewer than ndots dots. `Impossible` is decided
/// on the full name, whichever S produced it; then `FqdnLike`; else `Other`. Malformed input is
/// `NotSearch`.
pub fn classify(qname: &[u8], cfg: &SearchConfig) -> SearchClass {
    let Some(split) = Split::new(qname) else {
        return SearchClass::NotSearch;
    };
    for (i, s) in cfg.search.iter().enumerate() {
        let s = s.wire();
        if s.len() >= qname.len() {
            continue;
        }
        let start = qname.len() - s.len();
        let Some(p_labels) = split.label_at(start) else {
            continue;
        };
        // p_labels >= 1 because start > 0; P has p_labels - 1 dots.
        if p_labels > usize::from(cfg.ndots) || !qname[start..].eq_ignore_ascii_case(s) {
            continue;
        }
        if cluster_name_impossible(qname, &split, cfg.cluster_domain.wire()) {
            return SearchClass::Impossible { search_index: i };
        }
        if p_labels >= 2 {
            let tld = split.range(p_labels - 1);
            if is_public_tld(&qname[tld.clone()]) {
                return SearchClass::FqdnLike { search_index: i, prefix_len: start, tld };
            }
        }
        return SearchClass::Other { search_index: i };
    }
    SearchClass::NotSearch
}

/// Which rule of SEARCH_RULES.md §3 rules a cluster name out: the reason behind an
/// [`SearchClass::Impossible`], for explanations (`podns explain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImpossibleRule {
    /// Rule 3: the label right above the cluster domain is not `svc`, `pod`, `dns-version`, `dns`.
    NotSvcOrPod,
    /// Rule 5: below `dns-version.<cd>`.
    BelowDnsVersion,
    /// Rule 7: below `dns.<cd>`, other than `ns.dns.<cd>`.
    BelowDns,
    /// Rule 8: more than 4 labels below `svc`/`pod`.
    TooLong,
    /// Rule 9: the namespace label is not an RFC 1123 label.
    BadNamespace,
    /// Rule 10: the service label is not an RFC 1123 label.
    BadService,
    /// Rule 11: the pod label holds a character no address can hold.
    BadPodIp,
}

impl ImpossibleRule {
    /// The rule's number in SEARCH_RULES.md §3.
    pub fn number(self) -> u8 {
        match self {
            ImpossibleRule::NotSvcOrPod => 3,
            ImpossibleRule::BelowDnsVersion => 5,
            ImpossibleRule::BelowDns => 7,
            ImpossibleRule::TooLong => 8,
            ImpossibleRule::BadNamespace => 9,
            ImpossibleRule::BadService => 10,
            ImpossibleRule::BadPodIp => 11,
        }
    }

    /// One sentence: why cluster DNS answers NXDOMAIN for such a name.
    pub fn text(self) -> &'static str {
        match self {
            ImpossibleRule::NotSvcOrPod => {
                "the label above the cluster domain is not svc, pod, dns-version or dns: every record lives under svc.<cd> or pod.<cd>"
            }
            ImpossibleRule::BelowDnsVersion => "only dns-version.<cd> itself holds data (a TXT record)",
            ImpossibleRule::BelowDns => "below dns.<cd> only ns.dns.<cd> holds data (CoreDNS's own address)",
            ImpossibleRule::TooLong => "more than 4 labels below svc/pod: CoreDNS parses at most 4",
            ImpossibleRule::BadNamespace => {
                "the namespace label is not an RFC 1123 label, so no namespace has that name"
            }
            ImpossibleRule::BadService => "the service label is not an RFC 1123 label, so no service has that name",
            ImpossibleRule::BadPodIp => "the pod label holds a character no IP address can hold",
        }
    }
}

/// The rule of SEARCH_RULES.md §3 that rules `qname` (one uncompressed wire name, any letter
/// case) out of the cluster domain, if one does; `None` for a name that may exist, and for
/// malformed input. [`classify`] says `Impossible` exactly for search expansions with `Some`.
pub fn impossible_rule(qname: &[u8], cfg: &SearchConfig) -> Option<ImpossibleRule> {
    cluster_name_rule(qname, &Split::new(qname)?, cfg.cluster_domain.wire())
}

/// True when the full name `qname` is inside the cluster domain `cd` and no record of the
/// Kubernetes DNS schema (as CoreDNS's kubernetes plugin serves it) can exist there, so cluster
/// DNS answers NXDOMAIN. See SEARCH_RULES.md for each rule.
fn cluster_name_impossible(qname: &[u8], split: &Split, cd: &[u8]) -> bool {
    cluster_name_rule(qname, split, cd).is_some()
}

/// The rule behind [`cluster_name_impossible`].
fn cluster_name_rule(qname: &[u8], split: &Split, cd: &[u8]) -> Option<ImpossibleRule> {
    use ImpossibleRule::*;
    let cd_start = qname.len().checked_sub(cd.len())?;
    let m = split.label_at(cd_start)?;
    if m == 0 || !qname[cd_start..].eq_ignore_ascii_case(cd) {
        return None; // the cluster domain itself (NODATA), or not below it
    }
    let label = |j: usize| &qname[split.range(j)];
    // `*` and `any` are wildcards in kube-dns (SkyDNS) and CoreDNS before 1.9: never impossible.
    if (0..m).any(|j| is_wildcard(label(j))) {
        return None;
    }
    // Labels 0..m lie below the cluster domain; label m-1 is right above it.
    let top = label(m - 1);
    if top.eq_ignore_ascii_case(b"svc") || top.eq_ignore_ascii_case(b"pod") {
        let below = m - 1;
        if below == 0 {
            return None; // svc.<cd>, pod.<cd>: NODATA
        }
        if below > MAX_SCHEMA_LABELS {
            return Some(TooLong);
        }
        if !is_dns1123_label(label(m - 2)) {
            return Some(BadNamespace); // no namespace can have this name
        }
        if below >= 2 {
            let second = label(m - 3);
            return if top.eq_ignore_ascii_case(b"svc") {
                (!is_dns1123_label(second)).then_some(BadService)
            } else {
                (!could_be_pod_ip(second)).then_some(BadPodIp)
            };
        }
        return None;
    }
    if top.eq_ignore_ascii_case(b"dns-version") {
        return (m != 1).then_some(BelowDnsVersion); // dns-version.<cd> TXT
    }
    if top.eq_ignore_ascii_case(b"dns") {
        // ns.dns.<cd> A/AAAA (CoreDNS's own address), and dns.<cd> above it.
        return (!(m == 1 || (m == 2 && label(0).eq_ignore_ascii_case(b"ns")))).then_some(BelowDns);
    }
    Some(NotSvcOrPod)
}

fn is_wildcard(label: &[u8]) -> bool {
    label == b"*" || label.eq_ignore_ascii_case(b"any")
}

/// RFC 1123 label as Kubernetes validates namespace and service names (`IsDNS1123Label`), any
/// letter case: 1-63 of `[a-z0-9-]`, starting and ending with a letter or digit.
pub fn is_dns1123_label(l: &[u8]) -> bool {
    match (l.first(), l.last()) {
        (Some(f), Some(z)) => {
            l.len() <= 63
                && f.is_ascii_alphanumeric()
                && z.is_ascii_alphanumeric()
                && l.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        }
        _ => false,
    }
}

/// Whether a pod label could turn into an IP address the way CoreDNS reads it (dashes become
/// dots or colons, then `net.ParseIP`): a superset, so only characters no address can use rule
/// it out.
fn could_be_pod_ip(l: &[u8]) -> bool {
    !l.is_empty() && l.iter().all(|c| c.is_ascii_hexdigit() || matches!(c, b'-' | b':' | b'.'))
}

/// ASCII case-insensitive order of `a` against the lower-case `b`.
fn cmp_ignore_case(a: &[u8], b: &[u8]) -> Ordering {
    a.iter().map(u8::to_ascii_lowercase).cmp(b.iter().copied())
}

/// True when `label` (case-insensitive) is a top-level domain in the embedded list.
pub fn is_public_tld(label: &[u8]) -> bool {
    label.len() <= MAX_TLD_LEN && TLDS.binary_search_by(|t| cmp_ignore_case(label, t.as_bytes()).reverse()).is_ok()
}

/// The two probe names for TLD label L: `L.svc.<cd>` (is L a namespace?) and `L.<ns>.svc.<cd>`
/// (is L a service in our namespace?), as wire names. The second is `None` when the namespace
/// is unknown (no `<ns>.svc.<cd>` search domain) or the name would exceed 255 octets.
///
/// # Panics
/// If `tld` is not a label `Name` can hold (1-63 ASCII octets, no `.`). The `tld` range that
/// [`classify`] reports always qualifies: it is a public TLD.
pub fn probe_names(tld: &[u8], cfg: &SearchConfig) -> (Name, Option<Name>) {
    let label = std::str::from_utf8(tld)
        .ok()
        .filter(|l| !l.is_empty() && l.len() <= 63 && l.is_ascii() && !l.contains('.'))
        .expect("probe label must be 1-63 ASCII octets without a dot");
    // Cluster-domain labels are ASCII without dots (they came from `Name::from_dotted`).
    let mut cd = String::with_capacity(cfg.cluster_domain.wire().len());
    for l in labels(cfg.cluster_domain.wire()) {
        cd.push('.');
        cd.push_str(std::str::from_utf8(l).unwrap_or_default());
    }
    let namespace_probe = Name::from_dotted(&format!("{label}.svc{cd}"))
        .expect("SearchConfig::new bounds the cluster domain so that this fits");
    let service_probe = cfg.namespace.as_ref().and_then(|ns| {
        let ns = labels(ns.wire()).next().and_then(|l| std::str::from_utf8(l).ok())?;
        Name::from_dotted(&format!("{label}.{ns}.svc{cd}"))
    });
    (namespace_probe, service_probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wire form of a dotted name, letter case kept (unlike `Name`).
    fn qn(dotted: &str) -> Vec<u8> {
        let mut w = Vec::new();
        for l in dotted.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
            w.push(l.len() as u8);
            w.extend_from_slice(l.as_bytes());
        }
        w.push(0);
        w
    }

    fn cfg(search: &[&str], ndots: u8, cd: &str) -> SearchConfig {
        let search: Vec<String> = search.iter().map(|s| s.to_string()).collect();
        SearchConfig::new(&search, ndots, cd).unwrap()
    }

    fn k8s() -> SearchConfig {
        cfg(&["default.svc.cluster.local", "svc.cluster.local", "cluster.local", "ec2.internal"], 5, "cluster.local")
    }

    /// Expected class; `F` carries the dotted P as it appears in the query.
    #[derive(Debug)]
    enum E {
        N,
        I(usize),
        F(usize, &'static str),
        O(usize),
    }

    fn check(cfg: &SearchConfig, cases: &[(&str, E)]) {
        for (name, want) in cases {
            let q = qn(name);
            let got = classify(&q, cfg);
            let ok = match (want, &got) {
                (E::N, SearchClass::NotSearch) => true,
                (E::I(i), SearchClass::Impossible { search_index }) => i == search_index,
                (E::O(i), SearchClass::Other { search_index }) => i == search_index,
                (E::F(i, p), SearchClass::FqdnLike { search_index, prefix_len, tld }) => {
                    let p_wire = qn(p);
                    let last = p.rsplit('.').next().unwrap();
                    i == search_index
                        && q[..*prefix_len] == p_wire[..p_wire.len() - 1]
                        && &q[tld.clone()] == last.as_bytes()
                }
                _ => false,
            };
            assert!(ok, "{name}: want {want:?}, got {got:?}");
        }
    }

    #[test]
    fn kubernetes_search_list() {
        use E::*;
        check(
            &k8s(),
            &[
                // The motivating expansions of `pypi.org`.
                ("pypi.org.default.svc.cluster.local", F(0, "pypi.org")),
                ("pypi.org.svc.cluster.local", F(1, "pypi.org")),
                ("pypi.org.cluster.local", I(2)),
                ("pypi.org.ec2.internal", F(3, "pypi.org")),
                ("pypi.org", N),
                ("pypi.org.local", N),
                // Real cluster names.
                ("redis.default.svc.cluster.local", O(0)),
                ("redis.other.svc.cluster.local", O(1)),
                ("kubernetes.default.svc.cluster.local", O(0)),
                ("my-pet.headless.default.svc.cluster.local", O(0)),
                ("_https._tcp.kubernetes.default.svc.cluster.local", O(0)),
                ("1redis.default.svc.cluster.local", O(0)),
                // A namespace named like a TLD may exist: FqdnLike (the caller probes), never
                // Impossible.
                ("web.dev.svc.cluster.local", F(1, "web.dev")),
                ("web.app.default.svc.cluster.local", F(0, "web.app")),
                ("www.pypi.org.default.svc.cluster.local", F(0, "www.pypi.org")),
                // A one-label P is never FqdnLike, even when it is a TLD.
                ("com.default.svc.cluster.local", O(0)),
                // Apexes: NODATA in CoreDNS, not NXDOMAIN.
                ("default.svc.cluster.local", O(1)),
                ("svc.cluster.local", O(2)),
                ("pod.cluster.local", O(2)),
                ("cluster.local", N),
                ("dns-version.cluster.local", O(2)),
                ("dns.cluster.local", O(2)),
                ("ns.dns.cluster.local", O(2)),
                ("x.dns-version.cluster.local", I(2)),
                ("x.ns.dns.cluster.local", I(2)),
                ("foo.dns.cluster.local", I(2)),
                ("foo.cluster.local", I(2)),
                // Depth under svc: at most 4 labels before `svc`.
                ("a.www.pypi.org.default.svc.cluster.local", I(0)),
                ("_https._tcp.my-pet.headless.default.svc.cluster.local", I(0)),
                ("b.c.d.default.svc.cluster.local", O(0)),
                // Namespace and service labels must be RFC 1123 labels.
                ("redis.bad_ns.svc.cluster.local", I(1)),
                ("_tcp.svc.cluster.local", I(1)),
                ("-x.default.svc.cluster.local", I(0)),
                ("x-.default.svc.cluster.local", I(0)),
                // The endpoint label is free: ExternalName services answer any of them.
                ("x_y.ext.default.svc.cluster.local", O(0)),
                // Pods.
                ("1-2-3-4.default.pod.cluster.local", O(2)),
                ("2001-db8--1.default.pod.cluster.local", O(2)),
                ("x.1-2-3-4.default.pod.cluster.local", O(2)),
                ("a.b.1-2-3-4.default.pod.cluster.local", O(2)),
                ("foo.default.pod.cluster.local", I(2)),
                ("1-2-3-4.bad_ns.pod.cluster.local", I(2)),
                // Wildcards are never impossible.
                ("*.default.svc.cluster.local", O(0)),
                ("*.cluster.local", O(2)),
                ("any.cluster.local", O(2)),
                ("a.b.c.d.*.svc.cluster.local", O(1)),
                // Non-cluster search domain.
                ("foo.ec2.internal", O(3)),
                ("foo.svc1.ec2.internal", O(3)),
                ("pypi.internal.ec2.internal", O(3)),
                ("foo.bar.com.ec2.internal", F(3, "foo.bar.com")),
                ("yandex.xn--p1ai.default.svc.cluster.local", F(0, "yandex.xn--p1ai")),
                // ndots:5 boundary: P with 4 dots is a search expansion, with 5 it is not.
                ("a.b.c.d.com.ec2.internal", F(3, "a.b.c.d.com")),
                ("a.b.c.d.e.com.ec2.internal", N),
                ("a.b.c.1-2-3-4.default.pod.cluster.local", N),
                ("pypi.org.default.svc.cluster.local.ec2.internal", N),
                // Letter case is the client's.
                ("PyPI.ORG.Default.SVC.cluster.LOCAL", F(0, "PyPI.ORG")),
                ("Redis.Default.SVC.Cluster.Local", O(0)),
                ("PYPI.ORG.CLUSTER.LOCAL", I(2)),
                ("WEB.DEV.SVC.CLUSTER.LOCAL", F(1, "WEB.DEV")),
                ("yandex.XN--P1AI.EC2.Internal", F(3, "yandex.XN--P1AI")),
            ],
        );
    }

    #[test]
    fn first_search_domain_in_list_order_wins() {
        use E::*;
        // Nested search domains in an unusual order: the shorter one comes first, so P keeps
        // the namespace label and its last label is not a TLD.
        let c = cfg(&["svc.cluster.local", "default.svc.cluster.local", "cluster.local"], 5, "cluster.local");
        assert_eq!(c.namespace().map(Name::to_dotted).as_deref(), Some("default."));
        check(
            &c,
            &[
                ("pypi.org.default.svc.cluster.local", O(0)),
                ("redis.default.svc.cluster.local", O(0)),
                ("pypi.org.svc.cluster.local", F(0, "pypi.org")),
                ("default.svc.cluster.local", O(0)),
                ("pypi.org.cluster.local", I(2)),
            ],
        );
        // A search domain that is a parent of the cluster domain: the name is still judged whole.
        let c = cfg(&["default.svc.cluster.local", "local"], 5, "cluster.local");
        assert!(!c.is_cluster_search(1));
        check(&c, &[("x.cluster.local", I(1)), ("pypi.org.local", F(1, "pypi.org"))]);
    }

    #[test]
    fn ndots_boundaries() {
        use E::*;
        let search = ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"];
        let c = cfg(&search, 2, "cluster.local");
        check(
            &c,
            &[
                ("a.b.default.svc.cluster.local", O(0)),
                ("pypi.org.default.svc.cluster.local", F(0, "pypi.org")),
                ("a.b.c.default.svc.cluster.local", N),
                ("redis.svc.cluster.local", O(1)),
                ("redis.x.svc.cluster.local", O(1)),
            ],
        );
        let c = cfg(&search, 1, "cluster.local");
        check(&c, &[("redis.default.svc.cluster.local", O(0)), ("pypi.org.default.svc.cluster.local", N)]);
        let c = cfg(&search, 0, "cluster.local");
        check(&c, &[("redis.default.svc.cluster.local", N), ("pypi.org.cluster.local", N)]);
    }

    #[test]
    fn custom_cluster_domain() {
        use E::*;
        let c =
            cfg(&["team-a.svc.k8s.example.", "svc.k8s.example", "k8s.example", "corp.example.com"], 5, "k8s.example.");
        assert_eq!(c.namespace().map(Name::to_dotted).as_deref(), Some("team-a."));
        assert_eq!(c.cluster_domain().to_dotted(), "k8s.example.");
        let flags: Vec<bool> = (0..5).map(|i| c.is_cluster_search(i)).collect();
        assert_eq!(flags, [true, true, true, false, false]);
        check(
            &c,
            &[
                ("pypi.org.k8s.example", I(2)),
                ("pypi.org.team-a.svc.k8s.example", F(0, "pypi.org")),
                ("redis.team-a.svc.k8s.example", O(0)),
                ("pypi.org.svc.k8s.example", F(1, "pypi.org")),
                ("1-2-3-4.team-a.pod.k8s.example", O(2)),
                ("pypi.org.cluster.local", N),
                ("x.corp.example.com", O(3)),
                ("x.cluster.local.corp.example.com", O(3)),
            ],
        );
    }

    /// The schema predicate on full names, including shapes no ndots:5 search expansion reaches.
    #[test]
    fn schema_shapes() {
        let cd = Name::from_dotted("cluster.local").unwrap();
        let impossible = |name: &str| {
            let q = qn(name);
            cluster_name_impossible(&q, &Split::new(&q).unwrap(), cd.wire())
        };
        let possible = [
            // Kubernetes DNS specification 1.0.1, §2.2-2.6 examples.
            "dns-version.cluster.local",
            "kubernetes.default.svc.cluster.local",
            "_https._tcp.kubernetes.default.svc.cluster.local",
            "headless.default.svc.cluster.local",
            "my-pet.headless.default.svc.cluster.local",
            "_https._tcp.headless.default.svc.cluster.local",
            "438934893.headless.default.svc.cluster.local",
            "foo.default.svc.cluster.local",
            "1-2-3-4.default.pod.cluster.local",
            // CoreDNS parse_test.go shapes.
            "1-2-3-4.webs.mynamespace.svc.cluster.local",
            "1-2-3-4.cluster1.webs.mynamespace.svc.cluster.local",
            "us-west-2a._zone.webs.mynamespace.svc.cluster.local",
            "us-west-2a._zone.10-0-0-1.mynamespace.pod.cluster.local",
            // Federation (kube-dns): <svc>.<ns>.<federation>.svc.<cd>.
            "mysvc.myns.myfed.svc.cluster.local",
            // CoreDNS pods insecure ignores labels above the pod label.
            "_a._b.1-2-3-4.default.pod.cluster.local",
            "x.10-0-0-1.default.pod.cluster.local",
            "--ffff-10-0-0-1.default.pod.cluster.local",
            "any.any.any.any.pod.cluster.local",
            "cluster.local",
            "svc.cluster.local",
            "SVC.Cluster.Local",
            "default.pod.cluster.local",
            "not.below.the.cluster.domain",
            "local",
        ];
        for n in possible {
            assert!(!impossible(n), "{n} was called impossible");
        }
        let ruled_out = [
            // CoreDNS parse_test.go TestParseInvalidRequest.
            "webs.mynamespace.pood.cluster.local",
            "too.long.for.what.I.am.trying.to.pod.cluster.local",
            "a.b.c.d.e.default.svc.cluster.local",
            "a.b.c.1-2-3-4.default.pod.cluster.local",
            "pypi.org.cluster.local",
            "www.cluster.local",
            "svc.svc.x.cluster.local",
            "redis.default.svc.x.cluster.local",
            "dns-version.x.cluster.local",
            "a.dns.cluster.local",
            "a.b.dns.cluster.local",
            "x.nope.pod.cluster.local",
            // Parsed by CoreDNS (zonal shape) but `webs` is no pod address: NXDOMAIN.
            "us-west-2a._zone.webs.mynamespace.pod.cluster.local",
            "x.Under_Score.svc.cluster.local",
            "under_score.default.svc.cluster.local",
            "1-2-3-4.-x.pod.cluster.local",
        ];
        for n in ruled_out {
            assert!(impossible(n), "{n} was not called impossible");
        }
    }

    #[test]
    fn tld_list() {
        for t in ["com", "org", "io", "dev", "app", "xn--p1ai", "COM", "Xn--P1Ai", "ck", "arpa", "co", "uk"] {
            assert!(is_public_tld(t.as_bytes()), "{t} should be a TLD");
        }
        let not = [
            "local",
            "internal",
            "cluster",
            "svc",
            "pod",
            "lan",
            "onion",
            "home",
            "corp",
            "localhost",
            "example",
            "test",
            "invalid",
            "",
            "comm",
            "co\0",
            "c",
            "xn--",
            "xn--p1ai-",
        ];
        for t in not {
            assert!(!is_public_tld(t.as_bytes()), "{t:?} should not be a TLD");
        }
        assert!(!is_public_tld(&[0xff; 3]));
        assert!(TLDS.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
        assert!(TLDS.iter().all(|t| is_dns1123_label(t.as_bytes()) && !t.bytes().any(|c| c.is_ascii_uppercase())));
        assert_eq!(TLDS.iter().map(|t| t.len()).max(), Some(MAX_TLD_LEN));
        assert!(TLDS.len() > 1000, "{} entries", TLDS.len());
    }

    #[test]
    fn probes() {
        let (ns, svc) = probe_names(b"DEV", &k8s());
        assert_eq!(ns.wire(), b"\x03dev\x03svc\x07cluster\x05local\x00");
        assert_eq!(svc.unwrap().wire(), b"\x03dev\x07default\x03svc\x07cluster\x05local\x00");
        let c = cfg(&["svc.k8s.example", "k8s.example"], 5, "k8s.example");
        assert_eq!(c.namespace(), None);
        let (ns, svc) = probe_names(b"io", &c);
        assert_eq!(ns.to_dotted(), "io.svc.k8s.example.");
        assert_eq!(svc, None);
        // The tld range classify reports feeds probe_names directly.
        let q = qn("pypi.Org.default.svc.cluster.local");
        let SearchClass::FqdnLike { tld, .. } = classify(&q, &k8s()) else { panic!("not FqdnLike") };
        assert_eq!(probe_names(&q[tld], &k8s()).0.to_dotted(), "org.svc.cluster.local.");
    }

    #[test]
    fn config_validation() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(SearchConfig::new(&s(&["a..b"]), 5, "cluster.local").is_err());
        assert!(SearchConfig::new(&s(&["ünï.example"]), 5, "cluster.local").is_err());
        assert!(SearchConfig::new(&s(&[]), 5, "").is_err());
        assert!(SearchConfig::new(&s(&[]), 5, ".").is_err());
        assert!(SearchConfig::new(&s(&[]), 5, "a..b").is_err());
        let long = vec!["abcdefghi"; 19].join(".");
        assert!(SearchConfig::new(&s(&[]), 5, &long).is_err(), "no room for probe names");
        let c = SearchConfig::new(&s(&[".", "", "Default.SVC.cluster.local."]), 3, "Cluster.Local.").unwrap();
        assert_eq!(c.search().iter().map(Name::to_dotted).collect::<Vec<_>>(), ["default.svc.cluster.local."]);
        assert_eq!(c.ndots(), 3);
        assert_eq!(c.namespace().map(Name::to_dotted).as_deref(), Some("default."));
        assert!(c.is_cluster_search(0));
        assert!(!c.is_cluster_search(1));
        // `<x>.<y>.svc.<cd>` is not a namespace search domain.
        let c = SearchConfig::new(&s(&["a.b.svc.cluster.local", "svc.cluster.local"]), 5, "cluster.local").unwrap();
        assert_eq!(c.namespace(), None);
    }

    #[test]
    fn resolv_conf() {
        let text = "# generated by kubelet\n\
                    search default.svc.cluster.local svc.cluster.local cluster.local ec2.internal\n\
                    nameserver 10.96.0.10\n\
                    options ndots:5\n";
        let c = SearchConfig::from_resolv_conf(text, "cluster.local").unwrap();
        assert_eq!(c, k8s());
        let parse = |t: &str| SearchConfig::from_resolv_conf(t, "cluster.local").unwrap();
        let search = |t: &str| parse(t).search().iter().map(Name::to_dotted).collect::<Vec<_>>();
        assert_eq!(search("search a.b\ndomain c.d\n"), ["c.d."]);
        assert_eq!(search("domain c.d\nsearch x y\n"), ["x.", "y."]);
        assert_eq!(search("search a\nsearch   \ndomain\n"), ["a."], "empty lines are ignored");
        assert_eq!(search("search\ta\t b\n"), ["a.", "b."]);
        assert_eq!(search("domain c.d extra\n"), ["c.d."]);
        assert_eq!(search("#search a\n; search b\n search c\nsearchd e\n"), Vec::<String>::new());
        assert_eq!(search(""), Vec::<String>::new());
        assert_eq!(parse("").ndots(), 1);
        assert_eq!(parse("options ndots:20\n").ndots(), 15);
        assert_eq!(parse("options timeout:1 ndots:3 attempts:2\n").ndots(), 3);
        assert_eq!(parse("options ndots:3\noptions ndots:2\n").ndots(), 2);
        assert_eq!(parse("options ndots:abc\n").ndots(), 0);
        assert_eq!(parse("options ndots:4x\n").ndots(), 4);
        assert_eq!(parse("options ndots:-1\n").ndots(), 15);
        assert_eq!(parse("options ndots:99999999999999999999999\n").ndots(), 15);
        assert_eq!(parse("options\tndots:7 rotate\n").ndots(), 7);
        assert!(SearchConfig::from_resolv_conf("search a..b\n", "cluster.local").is_err());
    }

    /// xorshift64*, for reproducible pseudo-random inputs.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Properties every answer must have, whatever the input.
    fn assert_consistent(q: &[u8], c: &SearchConfig) -> SearchClass {
        let got = classify(q, c);
        let index = match &got {
            SearchClass::NotSearch => return got,
            SearchClass::Impossible { search_index } | SearchClass::Other { search_index } => *search_index,
            SearchClass::FqdnLike { search_index, prefix_len, tld } => {
                assert!(tld.start < tld.end && tld.end == *prefix_len && *prefix_len < q.len(), "{q:?}: {got:?}");
                assert_eq!(q[tld.start - 1] as usize, tld.len(), "{q:?}: tld is a whole label");
                assert!(is_public_tld(&q[tld.clone()]));
                assert!(q[*prefix_len..].eq_ignore_ascii_case(c.search()[*search_index].wire()));
                *search_index
            }
        };
        let s = c.search()[index].wire();
        assert!(s.len() < q.len() && q[q.len() - s.len()..].eq_ignore_ascii_case(s), "{q:?}: {got:?}");
        got
    }

    #[test]
    fn never_panics_on_random_or_truncated_names() {
        let c = k8s();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let seeds = [
            "pypi.org.default.svc.cluster.local",
            "_https._tcp.my-pet.headless.default.svc.cluster.local",
            "a.b.1-2-3-4.default.pod.cluster.local",
            "foo.bar.com.ec2.internal",
        ];
        let mut searches = 0;
        for seed in seeds {
            let q = qn(seed);
            // Every strict prefix is malformed (no final root octet).
            for end in 0..q.len() {
                assert_eq!(classify(&q[..end], &c), SearchClass::NotSearch, "{seed} cut at {end}");
            }
            // Trailing bytes after the root make it malformed too.
            assert_eq!(classify(&[&q[..], b"\x00"].concat(), &c), SearchClass::NotSearch);
            // Single-byte mutations: whatever comes out must be consistent.
            for _ in 0..2000 {
                let mut m = q.clone();
                let at = rng.below(m.len());
                m[at] = rng.next() as u8;
                if assert_consistent(&m, &c) != SearchClass::NotSearch {
                    searches += 1;
                }
            }
        }
        assert!(searches > 0, "mutations that keep the name valid still classify");
        // Random bytes, random lengths up to past the name limit, a bias towards small length
        // octets so that some inputs parse.
        for _ in 0..20_000 {
            let len = rng.below(300);
            let v: Vec<u8> =
                (0..len).map(|_| if rng.below(4) == 0 { rng.below(8) as u8 } else { rng.next() as u8 }).collect();
            assert_consistent(&v, &c);
        }
        // Longest and most-labelled names.
        let max_labels: Vec<u8> = [&b"\x01a".repeat(127)[..], b"\x00"].concat();
        assert_eq!(max_labels.len(), 255);
        assert_consistent(&max_labels, &c);
        let over: Vec<u8> = [&b"\x01a".repeat(127)[..], b"\x01b\x00"].concat();
        assert_eq!(classify(&over, &c), SearchClass::NotSearch);
        assert_eq!(classify(b"\x04pypi\xc0\x0c", &c), SearchClass::NotSearch);
        assert_eq!(classify(b"\x04pypi\x40org\x00", &c), SearchClass::NotSearch);
    }
}
