//! What the root zone would say about a name podns could not resolve.
//!
//! A pod's stub resolver appends its search domains to a short name first and asks the bare
//! name last (glibc `res_nsearch`, musl `name_from_dns_search`, c-ares `ares_search`). The bare
//! single-label name is then forwarded by cluster DNS to the node's resolver, and
//! systemd-resolved answers SERVFAIL for every single-label name (it never sends them to unicast
//! DNS). That SERVFAIL ends the walk of c-ares before 1.16 — `ares_gethostbyname(AF_UNSPEC)`
//! walks the whole search list for AAAA and falls back to A only on ENODATA/ENOTFOUND — so a
//! short service name that exists in the pod's namespace fails (the pgbouncer failure). musl
//! turns it into EAI_AGAIN too.
//!
//! A single-label name is a name directly below the root: the root zone (RFC 1034 §4.3.2) holds
//! it only if it is a TLD, and a gTLD holds no address records at its apex (the new gTLD
//! Registry Agreement forbids "dotless" names; RFC 7085 found a handful of ccTLDs that had
//! them). So when every upstream fails for a single-label name, the answer the public DNS gives
//! is known in all but those few cases: NXDOMAIN when the label is not a TLD, NODATA when it
//! is. podns gives it (root SOA, short TTL), which ends the stub's walk the way a working DNS
//! would have, instead of failing the whole lookup. It is only ever given in place of a failure,
//! so no lookup that worked without podns can lose an answer to it.
//!
//! Only a failure an upstream *answered* (SERVFAIL, REFUSED) counts; the lookup layer checks
//! that. Silence cannot be told from an outage, and while cluster DNS is down a lookup must fail
//! as "try again" (glibc `EAI_AGAIN`), not as "no such name" (`EAI_NONAME`), which applications
//! and caches keep.
//!
//! **Names of two or more labels under a label that is not a TLD (`x.db.`, `api.corp.`) are
//! left alone**: they cannot exist in the public DNS either, but they are exactly the names
//! private zones serve (split-horizon corporate DNS, CoreDNS stub domains, `forward corp. …`),
//! and a failure there is usually that private server being down. Answering NXDOMAIN would turn
//! a temporary failure into a negative answer that clients and caches keep (RFC 2308) and stop
//! retrying; SERVFAIL keeps them retrying until the zone's server is back. The single-label case
//! has no such server: no zone but the root can hold it, and stubs never ask it first.

use super::search::is_public_tld;
use crate::wire::labels;

/// The denial the root zone would give, when every upstream failed a query for `name`
/// (uncompressed wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootDenial {
    /// Not a TLD: the root zone has no such name.
    NxDomain,
    /// A TLD: the name exists, with no address (or other data a stub asks for at a TLD).
    NoData,
}

/// `Some` for a single-label name (a denial the root zone would give), `None` for every other
/// name (the root itself included), whose failure stays a failure.
pub fn denial(name: &[u8]) -> Option<RootDenial> {
    let mut it = labels(name);
    let label = it.next()?;
    if it.next().is_some() {
        return None;
    }
    Some(if is_public_tld(label) { RootDenial::NoData } else { RootDenial::NxDomain })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Name;

    fn d(s: &str) -> Option<RootDenial> {
        denial(Name::from_dotted(s).unwrap().wire())
    }

    #[test]
    fn single_label_names_get_the_root_zones_answer() {
        assert_eq!(d("postgresql-primary"), Some(RootDenial::NxDomain));
        assert_eq!(d("DB"), Some(RootDenial::NxDomain));
        assert_eq!(d("local"), Some(RootDenial::NxDomain), "not delegated");
        assert_eq!(d("com"), Some(RootDenial::NoData));
        assert_eq!(d("Dev."), Some(RootDenial::NoData), "case-insensitive, trailing dot");
    }

    #[test]
    fn other_names_keep_their_failure() {
        assert_eq!(d("."), None, "the root itself");
        assert_eq!(d("x.db"), None, "private zones may hold it");
        assert_eq!(d("pypi.org"), None);
        assert_eq!(d("redis.default.svc.cluster.local"), None);
    }
}
