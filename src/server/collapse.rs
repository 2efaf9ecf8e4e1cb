//! The I/O half of the search-domain collapse ([`crate::policy::search`] holds the rules).
//!
//! For `P.S` with an FQDN-like `P` whose TLD label `L` is neither a namespace nor a service in
//! the pod's namespace, no cluster candidate of the client's search walk can exist. podns then
//! asks the remaining candidates (non-cluster search domains, then `P.`) in the client's order
//! and answers `P.S` with a CNAME to the first that has data ([`crate::policy::collapse`]),
//! followed by its records: the client's walk ends after one step instead of eight queries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

use super::handler::{Answer, Handler};
use crate::cache::key_flags;
use crate::metrics::{Proto, Source};
use crate::policy::aaaa::{Plan, TIMEOUT_TTL};
use crate::policy::collapse::{Found, Outcome, Verdict, needs_sibling, sibling, verdict};
use crate::policy::search::{SearchClass, SearchConfig, classify, probe_names};
use crate::policy::{self, Admission, ParsedQuery, admit};
use crate::resolver::{Resolved, Resolver, key_of};
use crate::wire::{
    Header, Name, Soa, answers_type, cname_reply, min_ttl, negative_reply, parse_question, rcode, write_query,
};

/// `--collapse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CollapseMode {
    /// Forward every query unchanged.
    Off,
    /// Collapse FQDN-like names; ask non-cluster search domains too.
    On,
    /// Collapse FQDN-like names and skip non-cluster search domains.
    Aggressive,
}

/// TLD label (lower case) → (may a cluster candidate exist, when that was learnt).
type ProbeMemo = HashMap<Box<[u8]>, (bool, Instant)>;

/// Configuration and state of the collapse.
pub struct Collapse {
    pub cfg: SearchConfig,
    pub mode: CollapseMode,
    /// `--namespaces`: when given, replaces the namespace probe.
    pub namespaces: Option<Vec<Name>>,
    pub probe_ttl: Duration,
    /// TTL of NXDOMAIN answers for impossible names.
    pub synth_ttl: u32,
    /// TLD label (lower case) → whether it may name a cluster candidate, and when that was
    /// learnt. Bounded by the number of TLDs.
    probes: Mutex<ProbeMemo>,
}

/// What the collapse did (`action` label of `podns_search_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Impossible = 0,
    Collapsed = 1,
    Forwarded = 2,
}

impl Collapse {
    pub fn new(
        cfg: SearchConfig,
        mode: CollapseMode,
        namespaces: Option<Vec<Name>>,
        probe_ttl: Duration,
        synth_ttl: u32,
    ) -> Collapse {
        Collapse { cfg, mode, namespaces, probe_ttl, synth_ttl, probes: Mutex::new(HashMap::new()) }
    }

    /// Whether a cluster name ending in `.<tld>` could exist: `tld` is a namespace, or a service
    /// in our namespace. `None` when the probes failed (then nothing is assumed). Also returns
    /// how many probe queries went upstream.
    pub(super) async fn tld_may_exist(&self, resolver: &Arc<Resolver>, tld: &[u8]) -> (Option<bool>, u64) {
        let lower: Box<[u8]> = tld.to_ascii_lowercase().into_boxed_slice();
        let now = Instant::now();
        if let Some(&(v, at)) = self.probes.lock().unwrap_or_else(|p| p.into_inner()).get(&lower)
            && now.saturating_duration_since(at) < self.probe_ttl
        {
            return (Some(v), 0);
        }
        let (ns_probe, svc_probe) = probe_names(&lower, &self.cfg);
        // (exists?, went upstream?) of one probe.
        let exists = |r: Result<Resolved, _>| {
            let upstream = r.as_ref().is_ok_and(|r: &Resolved| r.source == Source::Upstream);
            let v = match r.ok().and_then(|r| Header::parse(&r.reply).ok()).map(|h| h.rcode()) {
                Some(rcode::NOERROR) => Some(true),
                Some(rcode::NXDOMAIN) => Some(false),
                _ => None,
            };
            (v, upstream as u64)
        };
        let listed = self.namespaces.as_ref().map(|ns| {
            ns.iter().any(|n| crate::wire::labels(n.wire()).next() == Some(&lower[..]) && n.label_count() == 1)
        });
        let ns_fut = async {
            match listed {
                Some(v) => (Some(v), 0),
                None => exists(resolver.lookup(ns_probe.wire(), crate::wire::rtype::A, 0).await),
            }
        };
        let svc_fut = async {
            match &svc_probe {
                Some(p) => exists(resolver.lookup(p.wire(), crate::wire::rtype::A, 0).await),
                None => (Some(false), 0),
            }
        };
        let ((ns, ns_up), (svc, svc_up)) = tokio::join!(ns_fut, svc_fut);
        // One probe that finds the label is enough; both must rule it out.
        let v = match (ns, svc) {
            (Some(true), _) | (_, Some(true)) => true,
            (Some(false), Some(false)) => false,
            _ => return (None, ns_up + svc_up),
        };
        self.probes.lock().unwrap_or_else(|p| p.into_inner()).insert(lower, (v, now));
        (Some(v), ns_up + svc_up)
    }
}

/// A synthesized denial (`rc`: NODATA as NOERROR, or NXDOMAIN) for `qtype` at `name`, as a
/// reply the collapse can build its answer from.
fn denial_for(name: &[u8], qtype: u16, rc: u16, ttl: u32) -> Option<Resolved> {
    let mut query = BytesMut::with_capacity(name.len() + 16);
    write_query(0, name, qtype, &mut query);
    let Admission::Query(pq) = admit(&query) else {
        return None;
    };
    let mut reply = BytesMut::with_capacity(query.len() + 80);
    negative_reply(&query, &pq.header, &pq.question, rc, ttl, Soa::Synthesized, None, &mut reply);
    Some(Resolved { reply, source: Source::Synthesized })
}

impl Handler {
    /// Looks a candidate name up for `qtype`. For a type the AAAA handling covers, a failed
    /// lookup is judged by the candidate's A outcome, as the client's own query would be.
    async fn candidate(&self, cand: &[u8], qtype: u16, flags: u8) -> Option<Resolved> {
        let reason = match self.aaaa_plan(cand, qtype) {
            Plan::Forward => return self.resolver.lookup(cand, qtype, flags).await.ok(),
            Plan::FromA(reason) => reason,
            Plan::Fix => match self.resolver.lookup(cand, qtype, flags).await {
                Ok(r) => return Some(r),
                Err(e) => super::aaaa::reason_of(&e),
            },
        };
        let (rc, ttl) = self.denial_from_a(cand, qtype, flags, reason).await?;
        denial_for(cand, qtype, rc, ttl)
    }

    /// Judges one candidate ([`policy::collapse::verdict`]): its lookup for `qtype`, and for an
    /// address type that says NODATA, the sibling type's. Returns the verdict, the reply for
    /// `qtype` (what the client's answer is built from) and the upstream queries it cost.
    ///
    /// Each lookup is waited for at most half an attempt: a silent candidate counts as failed
    /// (and is passed, as glibc passes a SERVFAIL) instead of eating the client's budget before
    /// the later candidates are asked; its lookup finishes on its own and is remembered.
    async fn judge(&self, cand: &[u8], qtype: u16, flags: u8) -> (Verdict, Option<Resolved>, u64) {
        let wait = self.resolver.upstreams.attempt_timeout() / 2;
        let candidate =
            |t| async move { tokio::time::timeout(wait, self.candidate(cand, t, flags)).await.ok().flatten() };
        let own = candidate(qtype).await;
        let mut upstream = own.as_ref().is_some_and(|r| r.source == Source::Upstream) as u64;
        let own_found = Found::of(own.as_ref().and_then(|r| answers_type(&r.reply, qtype)));
        let sibling_found = match sibling(qtype) {
            Some(other) if needs_sibling(qtype, own_found) => {
                let r = candidate(other).await;
                upstream += r.as_ref().is_some_and(|r| r.source == Source::Upstream) as u64;
                Some(Found::of(r.as_ref().and_then(|r| answers_type(&r.reply, other))))
            }
            _ => None,
        };
        (verdict(own_found, sibling_found), own, upstream)
    }

    /// Applies the collapse to a query; `None` means forward it unchanged.
    pub(super) async fn collapse(&self, c: &Collapse, msg: &[u8], q: &ParsedQuery, proto: Proto) -> Option<Answer> {
        let name = q.question.name(msg);
        let (search_index, prefix_len, tld) = match classify(name, &c.cfg) {
            SearchClass::NotSearch => return None,
            SearchClass::Other { .. } => {
                self.metrics.search(Action::Forwarded as usize, 0);
                return None;
            }
            SearchClass::Impossible { .. } => {
                self.metrics.search(Action::Impossible as usize, 1);
                let mut out = BytesMut::with_capacity(q.question.end + 80);
                negative_reply(
                    msg,
                    &q.header,
                    &q.question,
                    rcode::NXDOMAIN,
                    c.synth_ttl,
                    Soa::Cluster(c.cfg.cluster_domain().wire()),
                    q.opt.as_ref(),
                    &mut out,
                );
                return Some(Answer { bytes: out, rcode: rcode::NXDOMAIN, source: Source::Synthesized });
            }
            SearchClass::FqdnLike { search_index, prefix_len, tld } => (search_index, prefix_len, tld),
        };
        // Probes that take longer than half an attempt leave this query uncollapsed rather than
        // eat its budget; they finish on their own (`Resolver::lookup`) and serve the next one.
        let wait = self.resolver.upstreams.attempt_timeout() / 2;
        let (may_exist, probe_queries) =
            tokio::time::timeout(wait, c.tld_may_exist(&self.resolver, &name[tld])).await.unwrap_or((None, 0));
        if may_exist != Some(false) {
            self.metrics.search(Action::Forwarded as usize, 0);
            return None;
        }
        let candidates =
            policy::collapse::candidates(&name[..prefix_len], search_index, &c.cfg, c.mode == CollapseMode::Aggressive);
        let flags = key_flags(q.opt.is_some_and(|o| o.dnssec_ok), q.header.cd());
        let qtype = q.question.qtype;
        // One candidate at a time, in the client's order, stopping at the owner: never more
        // queries than the client's own walk would send for the same candidates.
        let mut verdicts = Vec::with_capacity(candidates.len());
        let mut replies = Vec::with_capacity(candidates.len());
        let mut upstream_queries = probe_queries;
        for cand in &candidates {
            let (v, reply, cost) = self.judge(cand, qtype, flags).await;
            upstream_queries += cost;
            verdicts.push(v);
            replies.push(reply);
            if v == Verdict::Owner {
                break;
            }
        }
        let result = policy::collapse::outcome(verdicts);
        // What the client would have sent upstream for this step: this candidate, and when the
        // answer ends its walk (a name exists), the later candidates and P itself too.
        let search = c.cfg.search();
        let avoided = if matches!(result, Outcome::Owner(_)) { (search.len() - search_index + 1) as u64 } else { 1 };
        self.metrics.search(Action::Collapsed as usize, avoided.saturating_sub(upstream_queries));
        let mut out = Vec::with_capacity(512);
        let rc = match result {
            Outcome::Owner(i) => {
                let cand = &candidates[i];
                // An owner whose own type had no answer in time (its other type has addresses):
                // NODATA for this type, as the AAAA handling says for a name that exists.
                let reply = match replies[i].take() {
                    Some(r) => r.reply,
                    None => denial_for(cand, qtype, rcode::NOERROR, TIMEOUT_TTL)?.reply,
                };
                if cand.len() == name.len() && cand.eq_ignore_ascii_case(name) {
                    // The client's own name (a non-cluster search domain): its own answer.
                    return Some(self.answer(Resolved { reply, source: Source::Upstream }, msg, q, proto));
                }
                let h = Header::parse(&reply).ok()?;
                let ttl = parse_question(&reply)
                    .ok()
                    .and_then(|rq| min_ttl(&reply, &h, rq.end).ok().flatten())
                    .unwrap_or(c.synth_ttl);
                cname_reply(msg, &q.header, &q.question, cand, &reply, ttl, q.opt.as_ref(), &mut out).ok()?;
                h.rcode()
            }
            Outcome::NxDomain if !c.cfg.is_cluster_search(search_index) => {
                // The query's own name is the first candidate (a search domain outside the
                // cluster): it keeps its own answer, NODATA included.
                let own = replies.first_mut()?.take()?;
                return Some(self.answer(own, msg, q, proto));
            }
            Outcome::NxDomain => {
                // Every candidate is NXDOMAIN or NODATA: the name P.S (impossible in the cluster)
                // does not exist, and the client's later candidates are answered from the cache.
                let ttl = replies
                    .iter()
                    .flatten()
                    .filter_map(|r| {
                        let h = Header::parse(&r.reply).ok()?;
                        let rq = parse_question(&r.reply).ok()?;
                        min_ttl(&r.reply, &h, rq.end).ok().flatten()
                    })
                    .min()
                    .unwrap_or(c.synth_ttl);
                let soa = Soa::Cluster(c.cfg.cluster_domain().wire());
                negative_reply(msg, &q.header, &q.question, rcode::NXDOMAIN, ttl, soa, q.opt.as_ref(), &mut out);
                rcode::NXDOMAIN
            }
            Outcome::Failed => return Some(self.servfail(msg, q)),
        };
        if let Some(cache) = self.resolver.cache() {
            cache.insert(&key_of(msg, q), &out, Instant::now());
        }
        let mut bytes = BytesMut::from(&out[..]);
        let rc = self.shape(&mut bytes, msg, q, proto).unwrap_or(rc);
        Some(Answer { bytes, rcode: rc, source: Source::Synthesized })
    }
}
