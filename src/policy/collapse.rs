//! The pure half of the search-domain collapse: which candidates a client's walk still has
//! ahead of it, and how each candidate's lookup counts. The rules and their reasons are in
//! `SEARCH_RULES.md` §6; the I/O half is `pipeline/collapse.rs`.
//!
//! The choice follows the most forgiving stub, glibc (`__res_context_search` in
//! `resolv/res_query.c`, 2.36): its walk goes on past NXDOMAIN (`HOST_NOT_FOUND`), past NODATA
//! (`NO_DATA`, counted in `got_nodata`) and past SERVFAIL (`got_servfail`), and stops at the
//! first candidate whose answer has records. So podns counts a candidate as *found* only when it
//! has data; a NODATA candidate is skipped like an NXDOMAIN one. Answering its CNAME instead
//! (ANCOUNT > 0) would end glibc's walk on a name without addresses: the regression of issue 10.
//!
//! For A and AAAA, "has data" means "has A or AAAA records": getaddrinfo asks both for each
//! candidate (glibc sends them together; musl too) and stops where either has an answer, so the
//! owner of a name's addresses is the same candidate for both types, and a name with only IPv4
//! addresses still gets its NODATA for AAAA from the right owner. The sibling type is asked only
//! when the question's own type says NODATA, so a client that asks one type (c-ares before 1.16
//! walks the whole list for AAAA first) never costs more queries than its own walk.

use super::search::SearchConfig;
use crate::wire::{rcode, rtype};

/// How one lookup of a candidate came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// NOERROR with records of the asked type in the answer.
    Data,
    /// NOERROR without them (NODATA, or a CNAME chain that ends without data).
    NoData,
    NxDomain,
    /// SERVFAIL, REFUSED, no answer, truncated without records, anything else.
    Failed,
}

impl Found {
    /// Classifies a reply by its rcode and whether its answer holds records of the asked type;
    /// `None` for a lookup that failed.
    pub fn of(reply: Option<(u16, bool)>) -> Found {
        match reply {
            Some((rcode::NOERROR, true)) => Found::Data,
            Some((rcode::NOERROR, false)) => Found::NoData,
            Some((rcode::NXDOMAIN, _)) => Found::NxDomain,
            _ => Found::Failed,
        }
    }
}

/// The other address type, asked when a candidate has no data of the asked one.
pub fn sibling(qtype: u16) -> Option<u16> {
    match qtype {
        rtype::A => Some(rtype::AAAA),
        rtype::AAAA => Some(rtype::A),
        _ => None,
    }
}

/// Whether a candidate owns the name, from its lookup for the asked type and, when that was
/// NODATA for an address type, the sibling type's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The walk ends here: data for the asked type, or for its sibling (then the answer for the
    /// asked type is this candidate's NODATA, behind the CNAME).
    Owner,
    /// The client's walk would go on past it.
    Skip,
    /// The lookup failed: skipped too (glibc goes on past SERVFAIL), but remembered, since a
    /// failed candidate might have held the name.
    Failed,
}

/// The verdict on one candidate. `sibling` is the sibling type's outcome, when it was asked
/// (only after a NODATA for an address type).
pub fn verdict(own: Found, sibling: Option<Found>) -> Verdict {
    match (own, sibling) {
        (Found::Data, _) | (Found::NoData | Found::Failed, Some(Found::Data)) => Verdict::Owner,
        (Found::Failed, _) => Verdict::Failed,
        _ => Verdict::Skip,
    }
}

/// Whether, after `own` for an address type, the sibling type must be asked to judge the
/// candidate: after a NODATA, and after a failure (a name whose other type has addresses owns
/// the lookup even when this type cannot be had: getaddrinfo keeps the addresses it got).
pub fn needs_sibling(qtype: u16, own: Found) -> bool {
    matches!(own, Found::NoData | Found::Failed) && sibling(qtype).is_some()
}

/// The answer to the client's query once the candidates are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// CNAME to candidate `i` (or its own answer when `i` is the query's own name).
    Owner(usize),
    /// No candidate exists: NXDOMAIN, and the client's later candidates come from the cache.
    NxDomain,
    /// No candidate owns the name but one failed: SERVFAIL, honestly (an NXDOMAIN would claim a
    /// name missing that the failed candidate may hold). The client's walk goes on, and its
    /// later queries meet the failure memo instead of the upstream.
    Failed,
}

/// Folds verdicts, in candidate order, into the answer: the first owner wins.
pub fn outcome(verdicts: impl IntoIterator<Item = Verdict>) -> Outcome {
    let mut failed = false;
    for (i, v) in verdicts.into_iter().enumerate() {
        match v {
            Verdict::Owner => return Outcome::Owner(i),
            Verdict::Failed => failed = true,
            Verdict::Skip => {}
        }
    }
    if failed { Outcome::Failed } else { Outcome::NxDomain }
}

/// `--collapse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollapseMode {
    /// Forward every query unchanged.
    Off,
    /// Collapse FQDN-like names; ask non-cluster search domains too.
    On,
    /// Collapse FQDN-like names and skip non-cluster search domains.
    Aggressive,
}

impl CollapseMode {
    /// The flag values with their help, in the order of [`CollapseMode::ALL`].
    pub const NAMES: [(&'static str, &'static str); 3] = [
        ("off", "Forward every query unchanged"),
        ("on", "Collapse FQDN-like names; ask non-cluster search domains too"),
        ("aggressive", "Collapse FQDN-like names and skip non-cluster search domains"),
    ];
    pub const ALL: [CollapseMode; 3] = [CollapseMode::Off, CollapseMode::On, CollapseMode::Aggressive];
}

/// What the client's answer is made of, once the candidates are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// Candidate `i`'s own reply: the candidate is the query's own name (a search domain
    /// outside the cluster), which keeps its own answer, NODATA included.
    Own(usize),
    /// A CNAME from the query's name to candidate `i`, followed by its records.
    Cname(usize),
    /// NXDOMAIN for the query's name: every candidate is NXDOMAIN or NODATA, and the name
    /// (impossible in the cluster) does not exist.
    NxDomain,
    /// SERVFAIL.
    Failed,
}

/// How to answer, given the outcome, whether candidate 0 is the query's own name
/// (`first_is_own`: the query's search domain `S` is outside the cluster) and whether the
/// owner is the query's own name.
pub fn reply_kind(outcome: Outcome, first_is_own: bool, owner_is_own: bool) -> ReplyKind {
    match outcome {
        Outcome::Owner(i) if owner_is_own => ReplyKind::Own(i),
        Outcome::Owner(i) => ReplyKind::Cname(i),
        Outcome::NxDomain if first_is_own => ReplyKind::Own(0),
        Outcome::NxDomain => ReplyKind::NxDomain,
        Outcome::Failed => ReplyKind::Failed,
    }
}

/// Upstream queries the collapse saved the client's walk, given what it spent: the client
/// would have asked this candidate and, when a name exists (its walk ends), every later search
/// candidate and `P.` itself too (`search_len` search domains, the query at `search_index`).
pub fn saved_queries(search_len: usize, search_index: usize, outcome: Outcome, spent: u64) -> u64 {
    let avoided = if matches!(outcome, Outcome::Owner(_)) { (search_len - search_index + 1) as u64 } else { 1 };
    avoided.saturating_sub(spent)
}

/// The candidates a client still tries after `P.S` (`prefix` = `P.` in wire form without the
/// root octet, `search_index` = the index of `S`), in its order: the non-cluster search
/// domains from `S` on — `S` itself when it is outside the cluster, in every mode; the later
/// ones unless `aggressive` — then `P.` itself.
pub fn candidates(prefix: &[u8], search_index: usize, cfg: &SearchConfig, aggressive: bool) -> Vec<Vec<u8>> {
    let search = cfg.search();
    let mut out: Vec<Vec<u8>> = (search_index..search.len())
        .filter(|&j| !cfg.is_cluster_search(j) && (j == search_index || !aggressive))
        .map(|j| [prefix, search[j].wire()].concat())
        .collect();
    out.push([prefix, &[0u8][..]].concat());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Name;

    #[test]
    fn nodata_is_skipped_like_nxdomain() {
        let v = [verdict(Found::NoData, Some(Found::NoData)), verdict(Found::Data, None)];
        assert_eq!(outcome(v), Outcome::Owner(1));
        assert_eq!(outcome([verdict(Found::NxDomain, None), verdict(Found::NxDomain, None)]), Outcome::NxDomain);
    }

    #[test]
    fn sibling_data_makes_the_owner() {
        assert!(needs_sibling(rtype::AAAA, Found::NoData));
        assert!(!needs_sibling(rtype::AAAA, Found::Data));
        assert!(!needs_sibling(rtype::MX, Found::NoData), "only address types have a sibling");
        assert_eq!(verdict(Found::NoData, Some(Found::Data)), Verdict::Owner);
        assert_eq!(outcome([verdict(Found::NoData, Some(Found::Data)), verdict(Found::Data, None)]), Outcome::Owner(0));
    }

    #[test]
    fn a_failed_type_with_addresses_of_the_other_owns_the_name() {
        assert!(needs_sibling(rtype::AAAA, Found::Failed));
        assert_eq!(verdict(Found::Failed, Some(Found::Data)), Verdict::Owner);
        assert_eq!(verdict(Found::Failed, Some(Found::NoData)), Verdict::Failed);
    }

    #[test]
    fn a_failed_candidate_is_passed_but_never_turns_into_nxdomain() {
        assert_eq!(outcome([Verdict::Failed, Verdict::Owner]), Outcome::Owner(1));
        assert_eq!(outcome([Verdict::Failed, Verdict::Skip]), Outcome::Failed);
        assert_eq!(Found::of(None), Found::Failed);
        assert_eq!(Found::of(Some((rcode::SERVFAIL, false))), Found::Failed);
        assert_eq!(Found::of(Some((rcode::NOERROR, false))), Found::NoData);
    }

    #[test]
    fn reply_kinds() {
        assert_eq!(reply_kind(Outcome::Owner(1), false, false), ReplyKind::Cname(1));
        assert_eq!(reply_kind(Outcome::Owner(0), true, true), ReplyKind::Own(0));
        assert_eq!(reply_kind(Outcome::NxDomain, true, false), ReplyKind::Own(0), "own NODATA kept");
        assert_eq!(reply_kind(Outcome::NxDomain, false, false), ReplyKind::NxDomain);
        assert_eq!(reply_kind(Outcome::Failed, true, false), ReplyKind::Failed);
    }

    #[test]
    fn savings_count_the_walk_the_client_skips() {
        // search of 5, query at 0: found → the client skips 5 search candidates and P. (6).
        assert_eq!(saved_queries(5, 0, Outcome::Owner(2), 2), 4);
        assert_eq!(saved_queries(5, 0, Outcome::NxDomain, 0), 1);
        assert_eq!(saved_queries(5, 4, Outcome::Owner(0), 9), 0, "never negative");
    }

    #[test]
    fn candidates_in_client_order() {
        let cfg = SearchConfig::new(
            &[
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
                "cluster.local".into(),
                "corp.example".into(),
                "lab.example".into(),
            ],
            5,
            "cluster.local",
        )
        .unwrap();
        let pypi = Name::from_dotted("pypi.org").unwrap();
        let p = &pypi.wire()[..9];
        let dotted = |v: Vec<Vec<u8>>| v.iter().map(|c| crate::wire::to_dotted(c)).collect::<Vec<_>>();
        assert_eq!(
            dotted(candidates(p, 0, &cfg, false)),
            ["pypi.org.corp.example.", "pypi.org.lab.example.", "pypi.org."]
        );
        assert_eq!(dotted(candidates(p, 0, &cfg, true)), ["pypi.org."]);
        assert_eq!(dotted(candidates(p, 3, &cfg, true)), ["pypi.org.corp.example.", "pypi.org."], "its own name stays");
    }
}
