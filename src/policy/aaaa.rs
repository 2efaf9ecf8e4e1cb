//! AAAA handling: never let an AAAA failure break an address lookup.
//!
//! `getaddrinfo(AF_UNSPEC)` asks A and AAAA. When the upstream fails the AAAA query (SERVFAIL,
//! REFUSED, silence) although the A record exists, c-ares fails the whole lookup and musl
//! retries until its timeout. podns answers such an AAAA from what the A query for the same
//! name says: A exists → NODATA (cacheable, via a synthesized SOA); A is NXDOMAIN → NXDOMAIN (a
//! NODATA would end musl's search walk early and hide the name under a later search domain);
//! A failed too → SERVFAIL, honestly, except for the bare form of a cluster name that the
//! upstream refuses (an air-gapped cluster): a short NODATA there keeps c-ares before 1.16
//! walking instead of failing (see [`AaaaPolicy::verdict`]). The same machinery serves every type in
//! `--synthesize-types` (HTTPS and SVCB are the natural candidates).
//!
//! Pure decisions only: the handler does the lookups and passes in their outcomes.

use std::time::Duration;

use regex::Regex;

use crate::wire::{labels, rcode};

/// `--aaaa`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AaaaMode {
    /// Forward; answer from the A outcome when the upstream fails the query.
    Fix,
    /// Answer NODATA (NXDOMAIN where the name does not exist) without asking for the type.
    Nodata,
    /// `nodata` while the pod has no global IPv6 address or route, else `fix`.
    Auto,
    /// Plain forwarding.
    Forward,
}

impl AaaaMode {
    /// The flag values with their help, in the order of [`AaaaMode::ALL`].
    pub const NAMES: [(&'static str, &'static str); 4] = [
        ("fix", "Forward; answer from the A outcome when the upstream fails the query"),
        ("nodata", "Answer NODATA (NXDOMAIN where the name does not exist) without asking for the type"),
        ("auto", "`nodata` while the pod has no global IPv6 address or route, else `fix`"),
        ("forward", "Plain forwarding"),
    ];
    pub const ALL: [AaaaMode; 4] = [AaaaMode::Fix, AaaaMode::Nodata, AaaaMode::Auto, AaaaMode::Forward];
}

crate::labelled! {
    /// Why podns synthesized an answer (`reason` label of `podns_synthesized_total`).
    pub enum Reason {
        Servfail => "servfail",
        Refused => "refused",
        Timeout => "timeout",
        /// `--aaaa-nodata-for` matched the name.
        Rule => "rule",
        /// `--aaaa nodata`, or `auto` without global IPv6.
        NoIpv6 => "no_ipv6",
        /// Every upstream failed a single-label name: the root zone's answer
        /// ([`crate::policy::root`]).
        RootZone => "root_zone",
    }
}

/// What to do with a query before asking upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Not a type this policy handles, or mode `forward`.
    Forward,
    /// Forward, and fall back on the A outcome if the upstream fails.
    Fix,
    /// Do not ask for this type; answer from the A outcome.
    FromA(Reason),
}

/// What the A query for the same name gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AOutcome {
    /// NOERROR (with or without addresses: the name exists).
    Exists,
    NxDomain,
    /// The upstream answered with SERVFAIL, REFUSED or another error, for the bare form of a
    /// cluster name (`kubernetes.default.`: its last label is a namespace), the last candidate
    /// of a stub's walk: the upstream is up and does not serve such names (an air-gapped
    /// cluster, systemd-resolved), and the name itself has been found, or not, under a search
    /// domain already.
    Remnant,
    /// Any other failure: no answer (the upstream may be down), or a failure for a name that may
    /// exist outside the cluster.
    Failed,
}

impl AOutcome {
    /// Classifies an A reply by its rcode.
    pub fn from_rcode(rc: u16) -> AOutcome {
        match rc {
            rcode::NOERROR => AOutcome::Exists,
            rcode::NXDOMAIN => AOutcome::NxDomain,
            _ => AOutcome::Failed,
        }
    }
}

/// The answer to give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// NOERROR, no answers, SOA with this TTL.
    NoData {
        ttl: u32,
    },
    /// NXDOMAIN, SOA with this TTL.
    NxDomain {
        ttl: u32,
    },
    ServFail,
}

/// A `--aaaa-nodata-for` pattern: a domain suffix, or a regex over the dotted lower-case name
/// without the trailing dot.
#[derive(Debug, Clone)]
pub enum NamePattern {
    Suffix(String),
    Regex(Regex),
}

impl NamePattern {
    /// A pattern that starts with `^` or holds a regex metacharacter is a regex; anything else
    /// is a domain suffix (`example.com` matches `example.com` and `db.example.com`).
    pub fn parse(s: &str) -> Result<NamePattern, String> {
        if s.starts_with('^') || s.contains(['\\', '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '$']) {
            Regex::new(s).map(NamePattern::Regex).map_err(|e| format!("`{s}` is not a valid regex: {e}"))
        } else {
            let t = s.trim_matches('.').to_ascii_lowercase();
            if t.is_empty() {
                return Err("an empty suffix would match every name".into());
            }
            Ok(NamePattern::Suffix(t))
        }
    }

    fn matches(&self, dotted: &str) -> bool {
        match self {
            NamePattern::Suffix(s) => {
                dotted == s
                    || (dotted.len() > s.len()
                        && dotted.ends_with(s.as_str())
                        && dotted.as_bytes()[dotted.len() - s.len() - 1] == b'.')
            }
            NamePattern::Regex(r) => r.is_match(dotted),
        }
    }
}

/// The configured policy.
#[derive(Debug, Clone)]
pub struct AaaaPolicy {
    pub mode: AaaaMode,
    /// Query types handled (AAAA by default).
    pub types: Vec<u16>,
    pub nodata_for: Vec<NamePattern>,
    /// TTL of synthesized denials.
    pub synth_ttl: Duration,
    /// How long to wait for the upstream's answer once the A query for the name is known to
    /// have succeeded.
    pub timeout: Duration,
}

/// TTL of denials synthesized because the upstream was silent: short, since it may recover.
pub const TIMEOUT_TTL: u32 = 5;

impl AaaaPolicy {
    /// What to do with a query for `qname` (uncompressed wire) and `qtype`, given whether the
    /// pod has global IPv6 connectivity.
    pub fn plan(&self, qname: &[u8], qtype: u16, has_global_ipv6: bool) -> Plan {
        if !self.types.contains(&qtype) {
            return Plan::Forward;
        }
        if !self.nodata_for.is_empty() {
            let dotted = dotted_lower(qname);
            if self.nodata_for.iter().any(|p| p.matches(&dotted)) {
                return Plan::FromA(Reason::Rule);
            }
        }
        match self.mode {
            AaaaMode::Forward => Plan::Forward,
            AaaaMode::Fix => Plan::Fix,
            AaaaMode::Nodata => Plan::FromA(Reason::NoIpv6),
            AaaaMode::Auto if has_global_ipv6 => Plan::Fix,
            AaaaMode::Auto => Plan::FromA(Reason::NoIpv6),
        }
    }

    /// The answer for a handled query, from the A outcome and why the type's own answer is not
    /// used.
    pub fn verdict(&self, a: AOutcome, reason: Reason) -> Verdict {
        let ttl = match reason {
            Reason::Timeout => TIMEOUT_TTL.min(self.synth_ttl.as_secs() as u32),
            _ => self.synth_ttl.as_secs().min(u64::from(u32::MAX)) as u32,
        };
        match (a, reason) {
            (AOutcome::Exists, _) => Verdict::NoData { ttl },
            (AOutcome::NxDomain, _) => Verdict::NxDomain { ttl },
            // The bare form of a cluster name that the upstream refuses: a short NODATA, not
            // SERVFAIL. For every stub an AAAA NODATA
            // leaves the lookup to its A answer, which is what it makes of an AAAA timeout too;
            // but c-ares before 1.16 walks the whole search list for AAAA first, and a SERVFAIL
            // ends that walk in failure (it retries, then reports ECONNREFUSED), where a NODATA
            // lets it go on and fall back to its A walk (`host_callback` and `search_callback`,
            // ares_gethostbyname.c and ares_search.c 1.13). glibc, musl, c-ares ≥ 1.16, Go and
            // hickory fail or go on on the A query's own failure whatever AAAA says. Short, so
            // that a name whose upstream recovers gets its AAAA back soon.
            (AOutcome::Remnant, _) => Verdict::NoData { ttl: TIMEOUT_TTL.min(ttl) },
            // Any other failure of A too (cluster DNS or its upstream may be down): SERVFAIL,
            // honestly. A NODATA would turn glibc's "try again" (EAI_AGAIN) into "no such name"
            // (its `got_nodata`), which applications and caches keep. (c-ares before 1.16 alone
            // would fall back to A on an AAAA timeout; through podns it fails on this SERVFAIL:
            // the price of telling every other stub the truth about an outage.)
            (AOutcome::Failed, _) => Verdict::ServFail,
        }
    }
}

/// The name in dotted lower case without the trailing dot.
fn dotted_lower(wire: &[u8]) -> String {
    let mut s = String::with_capacity(wire.len());
    for l in labels(wire) {
        if !s.is_empty() {
            s.push('.');
        }
        s.extend(l.iter().map(|c| c.to_ascii_lowercase() as char));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Name, rtype};

    fn policy(mode: AaaaMode, rules: &[&str]) -> AaaaPolicy {
        AaaaPolicy {
            mode,
            types: vec![rtype::AAAA],
            nodata_for: rules.iter().map(|r| NamePattern::parse(r).unwrap()).collect(),
            synth_ttl: Duration::from_secs(30),
            timeout: Duration::from_millis(400),
        }
    }

    fn wire(n: &str) -> Vec<u8> {
        Name::from_dotted(n).unwrap().wire().to_vec()
    }

    #[test]
    fn plan_by_mode_and_type() {
        let n = wire("pypi.org");
        for (mode, v6, want) in [
            (AaaaMode::Fix, false, Plan::Fix),
            (AaaaMode::Forward, false, Plan::Forward),
            (AaaaMode::Nodata, true, Plan::FromA(Reason::NoIpv6)),
            (AaaaMode::Auto, false, Plan::FromA(Reason::NoIpv6)),
            (AaaaMode::Auto, true, Plan::Fix),
        ] {
            assert_eq!(policy(mode, &[]).plan(&n, rtype::AAAA, v6), want, "{mode:?} v6={v6}");
            assert_eq!(policy(mode, &[]).plan(&n, rtype::A, v6), Plan::Forward, "A is never handled");
        }
        let mut p = policy(AaaaMode::Fix, &[]);
        p.types.push(rtype::HTTPS);
        assert_eq!(p.plan(&n, rtype::HTTPS, true), Plan::Fix);
        assert_eq!(p.plan(&n, rtype::MX, true), Plan::Forward);
    }

    #[test]
    fn rules_match_suffixes_and_regexes() {
        let p = policy(AaaaMode::Forward, &["example.com", r"^postgresql-primary\."]);
        assert_eq!(p.plan(&wire("DB.Example.COM"), rtype::AAAA, true), Plan::FromA(Reason::Rule));
        assert_eq!(p.plan(&wire("example.com"), rtype::AAAA, true), Plan::FromA(Reason::Rule));
        assert_eq!(p.plan(&wire("notexample.com"), rtype::AAAA, true), Plan::Forward);
        assert_eq!(
            p.plan(&wire("postgresql-primary.db.svc.cluster.local"), rtype::AAAA, true),
            Plan::FromA(Reason::Rule)
        );
        assert_eq!(p.plan(&wire("my-postgresql-primary.db"), rtype::AAAA, true), Plan::Forward);
        assert!(NamePattern::parse("^(unclosed").is_err());
        assert!(NamePattern::parse(".").is_err());
    }

    #[test]
    fn decision_table() {
        let p = policy(AaaaMode::Fix, &[]);
        for (a, reason, want) in [
            (AOutcome::Exists, Reason::Servfail, Verdict::NoData { ttl: 30 }),
            (AOutcome::Exists, Reason::Refused, Verdict::NoData { ttl: 30 }),
            (AOutcome::Exists, Reason::Timeout, Verdict::NoData { ttl: TIMEOUT_TTL }),
            (AOutcome::Exists, Reason::Rule, Verdict::NoData { ttl: 30 }),
            (AOutcome::Exists, Reason::NoIpv6, Verdict::NoData { ttl: 30 }),
            (AOutcome::NxDomain, Reason::Servfail, Verdict::NxDomain { ttl: 30 }),
            (AOutcome::NxDomain, Reason::NoIpv6, Verdict::NxDomain { ttl: 30 }),
            (AOutcome::NxDomain, Reason::Timeout, Verdict::NxDomain { ttl: TIMEOUT_TTL }),
            (AOutcome::Remnant, Reason::Servfail, Verdict::NoData { ttl: TIMEOUT_TTL }),
            (AOutcome::Remnant, Reason::Timeout, Verdict::NoData { ttl: TIMEOUT_TTL }),
            (AOutcome::Remnant, Reason::Rule, Verdict::NoData { ttl: TIMEOUT_TTL }),
            (AOutcome::Failed, Reason::Servfail, Verdict::ServFail),
            (AOutcome::Failed, Reason::Timeout, Verdict::ServFail),
        ] {
            assert_eq!(p.verdict(a, reason), want, "{a:?} {reason:?}");
        }
        assert_eq!(AOutcome::from_rcode(rcode::NOERROR), AOutcome::Exists);
        assert_eq!(AOutcome::from_rcode(rcode::NXDOMAIN), AOutcome::NxDomain);
        assert_eq!(AOutcome::from_rcode(rcode::SERVFAIL), AOutcome::Failed);
        assert_eq!(AOutcome::from_rcode(rcode::REFUSED), AOutcome::Failed);
    }
}
