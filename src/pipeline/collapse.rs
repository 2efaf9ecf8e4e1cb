//! The search-domain collapse ([`crate::policy::search`] and [`crate::policy::collapse`]
//! decide; `policy/SEARCH_RULES.md` has the rules and their sources).
//!
//! For `P.S` with an FQDN-like `P` whose TLD label `L` is neither a namespace nor a service in
//! the pod's namespace, no cluster candidate of the client's search walk can exist. The layer
//! then asks the remaining candidates (non-cluster search domains, then `P.`) in the client's
//! order, through `next`, and answers `P.S` with a CNAME to the first that has data, followed
//! by its records: the client's walk ends after one step instead of eight queries.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use super::{Action, CollapseConfig, Probes, Reply, Request, Resolved, Service, ask};
use crate::error::ResolveError;
use crate::metrics::{Metrics, SearchAction, Source};
use crate::policy::aaaa::TIMEOUT_TTL;
pub use crate::policy::collapse::CollapseMode;
use crate::policy::collapse::{
    self as policy, Found, ReplyKind, Verdict, needs_sibling, reply_kind, saved_queries, sibling, verdict,
};
use crate::policy::search::{SearchClass, classify};
use crate::wire::{
    Header, ParsedQuery, Soa, answers_type, cname_reply, min_ttl, negative_reply, parse_question, rcode,
};

/// The collapse in front of `next`; a pass-through without a search list.
pub struct Collapse<N> {
    /// Mode and synthesized TTL; `None` when off.
    on: Option<(CollapseMode, u32)>,
    probes: Option<Arc<Probes>>,
    /// How long one candidate lookup or the probes are waited for (half an attempt).
    wait: Duration,
    metrics: Arc<Metrics>,
    next: Arc<N>,
}

/// The minimum TTL of the answer records of `reply`.
fn reply_min_ttl(reply: &[u8]) -> Option<u32> {
    let h = Header::parse(reply).ok()?;
    let rq = parse_question(reply).ok()?;
    min_ttl(reply, &h, rq.end).ok().flatten()
}

impl<N: Service> Collapse<N> {
    pub fn new(
        cfg: Option<CollapseConfig>,
        probes: Option<Arc<Probes>>,
        wait: Duration,
        metrics: Arc<Metrics>,
        next: Arc<N>,
    ) -> Collapse<N> {
        let on = cfg.filter(|c| c.mode != CollapseMode::Off).map(|c| (c.mode, c.synth_ttl));
        Collapse { on, probes, wait, metrics, next }
    }

    /// Judges one candidate ([`policy::verdict`]): its lookup for `qtype`, and for an address
    /// type that says NODATA or failed, the sibling type's. Returns the verdict, the reply for
    /// `qtype` (what the client's answer is built from) and the upstream queries it cost.
    ///
    /// Each lookup is waited for at most half an attempt: a silent candidate counts as failed
    /// (and is passed, as glibc passes a SERVFAIL) instead of eating the client's budget before
    /// the later candidates are asked; its lookup finishes on its own and is remembered.
    async fn judge(&self, cand: &[u8], qtype: u16, flags: u8) -> (Verdict, Option<Resolved>, u64) {
        let own = ask(&self.next, cand, qtype, flags, Some(self.wait)).await.ok();
        let mut upstream = own.as_ref().is_some_and(|r| r.source == Source::Upstream) as u64;
        let own_found = Found::of(own.as_ref().and_then(|r| answers_type(&r.reply, qtype)));
        let sibling_found = match sibling(qtype) {
            Some(other) if needs_sibling(qtype, own_found) => {
                let r = ask(&self.next, cand, other, flags, Some(self.wait)).await.ok();
                upstream += r.as_ref().is_some_and(|r| r.source == Source::Upstream) as u64;
                Some(Found::of(r.as_ref().and_then(|r| answers_type(&r.reply, other))))
            }
            _ => None,
        };
        (verdict(own_found, sibling_found), own, upstream)
    }

    /// A synthesized negative answer to `q` in `msg`.
    fn denial(msg: &[u8], q: &ParsedQuery, rc: u16, ttl: u32, soa: Soa<'_>, action: Action) -> Resolved {
        let mut reply = BytesMut::with_capacity(q.question.end + 80);
        negative_reply(msg, q, rc, ttl, soa, &mut reply);
        Resolved { reply, source: Source::Synthesized, action }
    }
}

impl<N: Service> Service for Collapse<N> {
    /// Names outside the search walk, and search candidates that might exist, pass (the latter
    /// counted as forwarded, as [`Service::call`] counts them).
    fn passes(&self, name: &[u8], qtype: u16) -> bool {
        let (Some(_), Some(probes)) = (self.on, &self.probes) else { return self.next.passes(name, qtype) };
        match classify(name, &probes.cfg) {
            SearchClass::NotSearch => self.next.passes(name, qtype),
            SearchClass::Other { .. } => {
                let passes = self.next.passes(name, qtype);
                if passes {
                    self.metrics.search(SearchAction::Forwarded, 0);
                }
                passes
            }
            SearchClass::Impossible { .. } | SearchClass::FqdnLike { .. } => false,
        }
    }

    async fn call(&self, req: &mut Request) -> Reply {
        let (Some((mode, synth_ttl)), Some(probes)) = (self.on, &self.probes) else {
            return self.next.call(req).await;
        };
        let cfg = &probes.cfg;
        let (search_index, prefix_len, tld) = match classify(req.name(), cfg) {
            SearchClass::NotSearch => return self.next.call(req).await,
            SearchClass::Other { .. } => {
                self.metrics.search(SearchAction::Forwarded, 0);
                return self.next.call(req).await;
            }
            SearchClass::Impossible { .. } => {
                self.metrics.search(SearchAction::Impossible, 1);
                let soa = Soa::Cluster(cfg.cluster_domain().wire());
                return Ok(Self::denial(&req.msg, &req.q, rcode::NXDOMAIN, synth_ttl, soa, Action::Impossible));
            }
            SearchClass::FqdnLike { search_index, prefix_len, tld } => (search_index, prefix_len, tld),
        };
        // Probes that take longer than half an attempt leave this query uncollapsed rather than
        // eat its budget; they finish on their own and serve the next one.
        let probe = tokio::time::timeout(self.wait, probes.tld_may_exist(&self.next, &req.name()[tld]));
        let (may_exist, probe_queries) = probe.await.unwrap_or((None, 0));
        if may_exist != Some(false) {
            self.metrics.search(SearchAction::Forwarded, 0);
            return self.next.call(req).await;
        }
        let name = req.name();
        let candidates = policy::candidates(&name[..prefix_len], search_index, cfg, mode == CollapseMode::Aggressive);
        let (flags, qtype) = (req.q.key_flags(), req.q.question.qtype);
        // One candidate at a time, in the client's order, stopping at the owner: never more
        // queries than the client's own walk would send for the same candidates.
        let mut verdicts = Vec::with_capacity(candidates.len());
        let mut replies = Vec::with_capacity(candidates.len());
        let mut spent = probe_queries;
        for cand in &candidates {
            let (v, reply, cost) = self.judge(cand, qtype, flags).await;
            spent += cost;
            verdicts.push(v);
            replies.push(reply);
            if v == Verdict::Owner {
                break;
            }
        }
        let result = policy::outcome(verdicts);
        let saved = saved_queries(cfg.search().len(), search_index, result, spent);
        self.metrics.search(SearchAction::Collapsed, saved);
        let is_own = |i: usize| candidates[i].eq_ignore_ascii_case(name);
        let owner_is_own = matches!(result, policy::Outcome::Owner(i) if is_own(i));
        let (msg, q) = (&req.msg, &req.q);
        match reply_kind(result, !cfg.is_cluster_search(search_index), owner_is_own) {
            ReplyKind::Own(i) => match replies[i].take() {
                Some(r) => Ok(Resolved { reply: r.reply, source: Source::Upstream, action: Action::Forwarded }),
                // The own name owns the lookup through its other type, its own type silent:
                // NODATA, as the AAAA handling says for a name that exists.
                None => Ok(Self::denial(msg, q, rcode::NOERROR, TIMEOUT_TTL, Soa::Synthesized, Action::Forwarded)),
            },
            ReplyKind::Cname(i) => {
                let cand = &candidates[i];
                // An owner whose own type had no answer in time (its other type has addresses):
                // NODATA for this type, as the AAAA handling says for a name that exists.
                let reply = match replies[i].take() {
                    Some(r) => r.reply,
                    None => {
                        let (m, pq) = crate::wire::internal_query(0, cand, qtype, 0);
                        Self::denial(&m, &pq, rcode::NOERROR, TIMEOUT_TTL, Soa::Synthesized, Action::Collapsed).reply
                    }
                };
                let ttl = reply_min_ttl(&reply).unwrap_or(synth_ttl);
                let mut out = Vec::with_capacity(512);
                cname_reply(msg, q, cand, &reply, ttl, &mut out).map_err(|_| ResolveError::Internal)?;
                Ok(Resolved { reply: BytesMut::from(&out[..]), source: Source::Synthesized, action: Action::Collapsed })
            }
            ReplyKind::NxDomain => {
                // The client's later candidates are answered from the cache.
                let ttl = replies.iter().flatten().filter_map(|r| reply_min_ttl(&r.reply)).min().unwrap_or(synth_ttl);
                let soa = Soa::Cluster(cfg.cluster_domain().wire());
                Ok(Self::denial(msg, q, rcode::NXDOMAIN, ttl, soa, Action::Collapsed))
            }
            ReplyKind::Failed => Err(ResolveError::Declined),
        }
    }
}
