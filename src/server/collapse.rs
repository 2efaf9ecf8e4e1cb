//! The I/O half of the search-domain collapse ([`crate::policy::search`] holds the rules).
//!
//! For `P.S` with an FQDN-like `P` whose TLD label `L` is neither a namespace nor a service in
//! the pod's namespace, no cluster candidate of the client's search walk can exist. podns then
//! asks the remaining candidates (non-cluster search domains, then `P.`) at once and answers
//! `P.S` with a CNAME to the first that exists, followed by its records: the client's walk ends
//! after one round trip instead of eight queries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

use super::handler::{Answer, Handler};
use crate::cache::key_flags;
use crate::metrics::{Proto, Source};
use crate::policy::aaaa::Plan;
use crate::policy::search::{SearchClass, SearchConfig, classify, probe_names};
use crate::policy::{Admission, ParsedQuery, admit};
use crate::resolver::{Resolved, Resolver, key_of};
use crate::wire::{Header, Name, cname_reply, min_ttl, negative_reply, parse_question, rcode, write_query};

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
    async fn tld_may_exist(&self, resolver: &Arc<Resolver>, tld: &[u8]) -> (Option<bool>, u64) {
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
        let Some(v) = ns.zip(svc).map(|(ns, svc)| ns || svc) else { return (None, ns_up + svc_up) };
        self.probes.lock().unwrap_or_else(|p| p.into_inner()).insert(lower, (v, now));
        (Some(v), ns_up + svc_up)
    }
}

impl Handler {
    /// Looks a candidate name up for the client's type. For a type the AAAA handling covers, a
    /// failed lookup is judged by the candidate's A outcome, as the client's own query would be.
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
        let mut query = BytesMut::with_capacity(cand.len() + 16);
        write_query(0, cand, qtype, &mut query);
        let Admission::Query(pq) = admit(&query) else {
            return None;
        };
        let mut reply = BytesMut::with_capacity(query.len() + 80);
        negative_reply(&query, &pq.header, &pq.question, rc, ttl, None, None, &mut reply);
        Some(Resolved { reply, source: Source::Synthesized })
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
                    Some(c.cfg.cluster_domain().wire()),
                    q.opt.as_ref(),
                    &mut out,
                );
                return Some(Answer { bytes: out, rcode: rcode::NXDOMAIN, source: Source::Synthesized });
            }
            SearchClass::FqdnLike { search_index, prefix_len, tld } => (search_index, prefix_len, tld),
        };
        let (may_exist, probe_queries) = c.tld_may_exist(&self.resolver, &name[tld]).await;
        if may_exist != Some(false) {
            self.metrics.search(Action::Forwarded as usize, 0);
            return None;
        }
        // The candidates the client would still try, in its order: the non-cluster search
        // domains from this one on (unless aggressive), then P itself.
        let prefix = &name[..prefix_len];
        let search = c.cfg.search();
        // The query's own name is a candidate when its search domain is outside the cluster,
        // in every mode: aggressive skips only the later ones.
        let mut candidates: Vec<Vec<u8>> = (search_index..search.len())
            .filter(|&j| !c.cfg.is_cluster_search(j) && (j == search_index || c.mode != CollapseMode::Aggressive))
            .map(|j| [prefix, search[j].wire()].concat())
            .collect();
        candidates.push([prefix, &[0u8][..]].concat());
        let flags = key_flags(q.opt.is_some_and(|o| o.dnssec_ok), q.header.cd());
        let qtype = q.question.qtype;
        let outcomes =
            futures_util::future::join_all(candidates.iter().map(|cand| self.candidate(cand, qtype, flags))).await;
        let mut chosen: Option<(usize, BytesMut)> = None;
        let mut upstream_queries = probe_queries;
        let mut last_nx: Option<BytesMut> = None;
        for (i, outcome) in outcomes.into_iter().enumerate() {
            let r = match outcome {
                Some(r) => r,
                // An unknown outcome before any existing candidate: the walk cannot be
                // predicted, so let the client walk.
                _ => {
                    self.metrics.search(Action::Forwarded as usize, 0);
                    return None;
                }
            };
            upstream_queries += u64::from(r.source == Source::Upstream);
            match Header::parse(&r.reply).map(|h| h.rcode()) {
                Ok(rcode::NOERROR) => {
                    chosen = Some((i, r.reply));
                    break;
                }
                Ok(rcode::NXDOMAIN) => last_nx = Some(r.reply),
                _ => {
                    self.metrics.search(Action::Forwarded as usize, 0);
                    return None;
                }
            }
        }
        // What the client would have sent upstream for this step: this candidate, and when the
        // answer ends its walk (a name exists), the later candidates and P itself too.
        let avoided = if chosen.is_some() { (search.len() - search_index + 1) as u64 } else { 1 };
        self.metrics.search(Action::Collapsed as usize, avoided.saturating_sub(upstream_queries));
        let mut out = Vec::with_capacity(512);
        let rc = match chosen {
            Some((i, reply)) if candidates[i].len() == name.len() && candidates[i].eq_ignore_ascii_case(name) => {
                // The client's own name exists (a non-cluster search domain): its own answer.
                return Some(self.answer(Resolved { reply, source: Source::Upstream }, msg, q, proto));
            }
            Some((i, reply)) => {
                let h = Header::parse(&reply).ok()?;
                let ttl = parse_question(&reply)
                    .ok()
                    .and_then(|rq| min_ttl(&reply, &h, rq.end).ok().flatten())
                    .unwrap_or(c.synth_ttl);
                cname_reply(msg, &q.header, &q.question, &candidates[i], &reply, ttl, q.opt.as_ref(), &mut out).ok()?;
                rcode::NOERROR
            }
            None => {
                // Every candidate is NXDOMAIN: so is this name, and the client's later
                // candidates are answered from the cache.
                let ttl = last_nx
                    .and_then(|r| {
                        let h = Header::parse(&r).ok()?;
                        let rq = parse_question(&r).ok()?;
                        min_ttl(&r, &h, rq.end).ok().flatten()
                    })
                    .unwrap_or(c.synth_ttl);
                let zone = c.cfg.is_cluster_search(search_index).then(|| c.cfg.cluster_domain().wire());
                negative_reply(msg, &q.header, &q.question, rcode::NXDOMAIN, ttl, zone, q.opt.as_ref(), &mut out);
                rcode::NXDOMAIN
            }
        };
        if let Some(cache) = self.resolver.cache() {
            cache.insert(&key_of(msg, q), &out, Instant::now());
        }
        let mut bytes = BytesMut::from(&out[..]);
        let rc = self.shape(&mut bytes, msg, q, proto).unwrap_or(rc);
        Some(Answer { bytes, rcode: rc, source: Source::Synthesized })
    }
}
