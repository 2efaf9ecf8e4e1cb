//! The query path as a chain of layers, one behaviour per file, in the spirit of CoreDNS's
//! plugin chain (`ServeDNS` + `Next`) and NLnet Labs `domain`'s middleware wrapping a
//! `Service`, without their generic streams: a layer is a [`Service`] that holds the next one
//! and decides whether, and how often, to call it.
//!
//! The order is written once, in [`build`]:
//!
//! ```text
//!  listener (server/udp.rs, server/tcp.rs)
//!    │ packet
//!    ▼
//!  admission   parse; drop, FORMERR/NOTIMP/BADVERS; in-flight limit and   admission.rs
//!    │          per-client shares
//!    ├─ cache (answers): a fresh entry is the answer, from the receive    cache.rs
//!    │          loop, without a task
//!    ▼ miss: a task
//!  shape       --query-timeout around everything below; the answer made   shape.rs
//!    │          the client's: ID, question case, OPT, TC
//!  cache (answers)   stores what the policies below synthesized; starts   cache.rs
//!    │          prefetches, which run this chain again from here
//!  collapse    FQDN-like search candidates: probes and candidates asked   collapse.rs
//!    │          through `next`; CNAME to the name that has data
//!  aaaa        AAAA (and --synthesize-types) failures judged by the name's aaaa.rs
//!    │          A outcome, asked through `next`
//!  root        single-label names an upstream refuses: the root zone's   root.rs
//!    │          denial
//!  cache (lookups)   fresh hit for podns's own questions; serve-stale on  cache.rs
//!    │          failure; stores what upstreams answered
//!  lookup      coalescing of identical questions, the failure memo, the   lookup.rs
//!               upstream attempts (upstream/)
//! ```
//!
//! Why this order: admission first, so nothing unparsed goes further; the answer cache above
//! every policy, because a policy's answer is final for its key (and so a hit needs no policy
//! work at all); the collapse above the AAAA handling, so that its candidates get the AAAA
//! handling a client's own query for them would; the root denial below the AAAA handling (an
//! AAAA for a TLD learns its A outcome from it) and above the lookup cache, so a stale answer
//! wins over a synthesized denial; the lookup cache right above the lookup, so that checking it
//! and joining an exchange in flight happen in one step (no answer can land in between).
//! Sub-queries (candidates, probes, A lookups) go *down* the chain from the layer that needs
//! them, so no layer imports another; the pure decisions live in [`crate::policy`].

mod aaaa;
mod admission;
mod cache;
mod collapse;
mod lookup;
mod probes;
mod query_log;
mod root;
mod shape;
mod shares;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

pub use aaaa::{Aaaa, Ipv6State, has_global_ipv6};
pub use admission::{Admission, Admitted, InflightGuard};
pub use cache::{CacheLayer, Role};
pub use collapse::{Collapse, CollapseMode};
pub use lookup::Lookup;
pub use probes::Probes;
pub use query_log::{QueryLog, Served};
pub use root::{ROOT_DENIAL_TTL, Root};
pub use shape::{Answer, shape};

use crate::cache::Cache;
use crate::error::ResolveError;
use crate::metrics::{CacheMetrics, Metrics, Proto, Source};
use crate::policy::aaaa::{AaaaPolicy, Reason};
use crate::policy::search::SearchConfig;
use crate::upstream::{FastKeys, Handoff, Upstreams};
use crate::wire::{Name, ParsedQuery, internal_query};

/// A query on its way down the chain: the message (its ID is overwritten on the way up
/// stream), where its parts lie, and how to ask for it.
pub struct Request {
    pub msg: BytesMut,
    pub q: ParsedQuery,
    /// Ask the upstream over TCP (the client came over TCP, RFC 7766 §5).
    pub tcp: bool,
    /// podns asks for itself (a candidate, a probe, an A lookup, a prefetch).
    pub internal: bool,
    /// A prefetch: the entry in the cache is still live and must be replaced, not served.
    pub refresh: bool,
    /// What the UDP fast path already did upstream for this query, when it handed it over.
    pub handoff: Option<Handoff>,
}

impl Request {
    /// A client's query, as admission parsed it.
    pub fn client(msg: BytesMut, q: ParsedQuery, proto: Proto) -> Request {
        Request { msg, q, tcp: proto == Proto::Tcp, internal: false, refresh: false, handoff: None }
    }

    /// A question podns asks for itself: `name` (uncompressed wire, any case), `qtype`, and the
    /// DO/CD `flags` of the client query it serves.
    pub fn internal(name: &[u8], qtype: u16, flags: u8) -> Request {
        let (msg, q) = internal_query(rand::random(), name, qtype, flags);
        Request { msg, q, tcp: false, internal: true, refresh: false, handoff: None }
    }

    /// The question name, in the sender's case.
    pub fn name(&self) -> &[u8] {
        self.q.name(&self.msg)
    }
}

/// What a layer did that decided the answer (the query log's `action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The upstream's answer, relayed.
    Forwarded,
    /// A live cache entry.
    Cached,
    /// An expired entry, because every upstream failed (RFC 8767).
    Stale,
    /// A search candidate answered with a CNAME to the name that has data.
    Collapsed,
    /// A search candidate that cannot exist, denied without asking.
    Impossible,
    /// A denial synthesized for this reason (the AAAA handling, the root zone).
    Synthesized(Reason),
}

/// A reply from a layer: its ID and question case are not the client's yet.
#[derive(Debug)]
pub struct Resolved {
    pub reply: BytesMut,
    pub source: Source,
    pub action: Action,
}

/// What a layer gives back: a reply, or why there is none (the client then gets SERVFAIL).
pub type Reply = Result<Resolved, ResolveError>;

/// One behaviour of the query path. `call` may change the request's message in place (the
/// lookup writes the upstream-side ID into it), nothing else.
pub trait Service: Send + Sync + 'static {
    fn call<'a>(&'a self, req: &'a mut Request) -> impl Future<Output = Reply> + Send + 'a;

    /// True when this layer, and every layer below it, would pass a client query for `name`
    /// (wire form) and `qtype` to the upstream unchanged and relay a plain answer as it is: such
    /// a query may take the UDP fast path (`server::fast`), which forwards it without a task.
    /// A layer that acts on the question says false; one that acts only on failures (which the
    /// fast path hands back to this chain) asks the next.
    fn passes(&self, name: &[u8], qtype: u16) -> bool;
}

/// Asks `next` for `name`/`qtype` in a task of its own, waiting for it at most `wait`.
///
/// A layer's sub-query runs detached so that when the client's budget, or the layer's own
/// wait, ends first, the exchange still finishes: its answer (or failure) is cached (or
/// remembered), and the client's next query for it does not ask the upstream again.
pub async fn ask<N: Service>(next: &Arc<N>, name: &[u8], qtype: u16, flags: u8, wait: Option<Duration>) -> Reply {
    let next = next.clone();
    let mut req = Request::internal(name, qtype, flags);
    let task = tokio::spawn(async move { next.call(&mut req).await });
    let joined = match wait {
        Some(w) => tokio::time::timeout(w, task).await.map_err(|_| ResolveError::Budget)?,
        None => task.await,
    };
    joined.unwrap_or(Err(ResolveError::Internal))
}

/// The chain below admission, in order.
pub type Chain = CacheLayer<Collapse<Aaaa<Root<CacheLayer<Lookup>>>>>;

/// Everything the chain is made of, as the configuration says.
pub struct Parts {
    pub upstreams: Upstreams,
    pub cache: Option<Cache>,
    pub cache_metrics: CacheMetrics,
    pub metrics: Arc<Metrics>,
    /// `--servfail-ttl`: how long a failure is remembered.
    pub servfail_ttl: Duration,
    pub aaaa: AaaaPolicy,
    /// The search collapse, when there is a search list and `--collapse` is not off.
    pub collapse: Option<CollapseConfig>,
    pub max_inflight: u32,
    pub max_per_client: u32,
    /// `--query-log-sample` when the query log is on.
    pub query_log: Option<u64>,
}

/// The search collapse's configuration.
pub struct CollapseConfig {
    pub search: SearchConfig,
    pub mode: CollapseMode,
    /// `--namespaces`: when given, replaces the namespace probe.
    pub namespaces: Option<Vec<Name>>,
    pub probe_ttl: Duration,
    /// TTL of synthesized denials.
    pub synth_ttl: u32,
}

/// What the collapse works with now ([`Pipeline::search_state`]).
pub struct SearchState<'a> {
    pub cfg: &'a SearchConfig,
    /// Lower-case label → whether a cluster name can end in it, as the probes found.
    pub known: Vec<(String, bool)>,
    pub aggressive: bool,
}

/// The assembled query path: admission and the chain.
pub struct Pipeline {
    admission: Arc<Admission>,
    chain: Arc<Chain>,
    budget: Duration,
    pub metrics: Arc<Metrics>,
    pub upstreams: Arc<Upstreams>,
    cache: Option<Arc<Cache>>,
    lookup: Arc<Lookup>,
    query_log: Option<QueryLog>,
    /// The search configuration and probe memo, and whether the collapse is aggressive, for
    /// `/debug/explain`.
    probes: Option<Arc<Probes>>,
    aggressive: bool,
    max_inflight: u32,
}

/// Builds the query path. The order of the layers is this function's body, read bottom-up.
pub fn build(parts: Parts) -> Arc<Pipeline> {
    let Parts {
        upstreams,
        cache,
        cache_metrics,
        metrics,
        servfail_ttl,
        aaaa,
        collapse,
        max_inflight,
        max_per_client,
        query_log,
    } = parts;
    let cache = cache.map(Arc::new);
    if let Some(c) = &cache {
        // A forged reply that got through the ID and question checks may be in the cache: when
        // the spoofing defence acts, nothing cached may be trusted any more.
        let weak = Arc::downgrade(c);
        upstreams.on_unwanted_replies(Box::new(move || {
            if let Some(c) = weak.upgrade() {
                c.clear();
            }
        }));
    }
    let upstreams = Arc::new(upstreams);
    let wait = upstreams.attempt_timeout() / 2;
    let aggressive = collapse.as_ref().is_some_and(|c| c.mode == CollapseMode::Aggressive);
    let probes = collapse
        .as_ref()
        .filter(|c| c.mode != CollapseMode::Off)
        .map(|c| Arc::new(Probes::new(c.search.clone(), c.namespaces.clone(), c.probe_ttl, wait)));
    let lookup = Arc::new(Lookup::new(upstreams.clone(), cache.clone(), servfail_ttl, cache_metrics.clone()));
    let lookups = Arc::new(CacheLayer::new(Role::Lookups, cache.clone(), cache_metrics.clone(), lookup.clone()));
    let root = Arc::new(Root::new(metrics.clone(), lookups));
    let aaaa = Arc::new(Aaaa::new(aaaa, probes.clone(), cache.clone(), metrics.clone(), root));
    let collapse = Arc::new(Collapse::new(collapse, probes.clone(), wait, metrics.clone(), aaaa));
    let chain = Arc::new(CacheLayer::new(Role::Answers, cache.clone(), cache_metrics, collapse));
    let admission = Arc::new(Admission::new(metrics.clone(), max_inflight, max_per_client));
    let query_log = query_log.map(QueryLog::new);
    Arc::new(Pipeline {
        admission,
        chain,
        budget: upstreams.query_timeout(),
        metrics,
        upstreams,
        cache,
        lookup,
        query_log,
        probes,
        aggressive,
        max_inflight,
    })
}

impl Pipeline {
    /// Admits the packet `msg` from a client at `peer`: immediate answers (errors, fresh cache
    /// entries) are written to `out`; anything else is handed back to be served in a task.
    pub fn admit(&self, msg: &[u8], proto: Proto, peer: IpAddr, out: &mut BytesMut) -> Admitted {
        let q = match self.admission.parse(msg, proto, peer, out) {
            Ok(q) => q,
            Err(done) => return done,
        };
        // A live cache entry is the final answer whatever the policies would do (their
        // answers are cached under the client's key too): answer from the receive loop.
        if self.chain.hit(msg, &q, out)
            && let Some(rcode) = shape(out, msg, &q, proto, &self.metrics)
        {
            return Admitted::Answered {
                rcode,
                source: Source::Cache,
                qtype: q.question.qtype,
                action: Some(Action::Cached),
            };
        }
        out.clear();
        self.admission.take(msg, q, peer, proto, out)
    }

    /// Serves an admitted query: the chain within `--query-timeout`, then the answer made the
    /// client's. SERVFAIL at worst, well inside the stubs' own 5 s.
    pub async fn serve(&self, msg: BytesMut, q: &ParsedQuery, proto: Proto) -> Answer {
        self.serve_within(msg, q, proto, self.budget, None).await
    }

    /// [`Pipeline::serve`] with what is left of the client's budget and what the UDP fast path
    /// already did upstream, for a query it hands over.
    pub async fn serve_within(
        &self,
        msg: BytesMut,
        q: &ParsedQuery,
        proto: Proto,
        budget: Duration,
        handoff: Option<Handoff>,
    ) -> Answer {
        let mut req = Request::client(msg, *q, proto);
        req.handoff = handoff;
        let result = tokio::time::timeout(budget, self.chain.call(&mut req)).await;
        let mut answer = match result {
            Ok(Ok(r)) => {
                let mut bytes = r.reply;
                match shape(&mut bytes, &req.msg, q, proto, &self.metrics) {
                    Some(rcode) => {
                        Answer { bytes, rcode, source: r.source, action: Some(r.action), query: BytesMut::new() }
                    }
                    // The question was checked on the way in; a reply that still does not fit
                    // it is an internal error, and a wrong answer is worse than an honest failure.
                    None => Answer::servfail(&req.msg, q),
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, name = %crate::wire::to_dotted(req.name()), "resolution failed");
                Answer::servfail(&req.msg, q)
            }
            Err(_) => Answer::servfail(&req.msg, q),
        };
        answer.query = req.msg;
        answer
    }

    /// True when the chain would pass the client query `q` in `msg` to the upstream unchanged
    /// and relay a plain answer as it is ([`Service::passes`]): the UDP fast path may forward it
    /// itself, unless [`Pipeline::is_engaged`].
    pub fn passes(&self, msg: &[u8], q: &ParsedQuery) -> bool {
        self.chain.passes(q.name(msg), q.qtype())
    }

    /// True when the lookup holds an exchange or a remembered failure for the key of `q` in
    /// `msg` ([`Lookup::is_engaged`]): the query must go through the chain, which follows it.
    pub fn is_engaged(&self, msg: &[u8], q: &ParsedQuery) -> bool {
        self.lookup.is_engaged(&crate::cache::KeyRef::of(msg, q))
    }

    /// The keys the UDP fast path is asking upstream ([`Lookup::fast_keys`]).
    pub fn fast_keys(&self) -> &Arc<FastKeys> {
        self.lookup.fast_keys()
    }

    /// Stores an upstream's reply to the client query `q` in `msg`, as the lookup cache layer
    /// does with the replies it relays (the UDP fast path's answers).
    pub fn store_upstream_reply(&self, msg: &[u8], q: &ParsedQuery, reply: &[u8]) {
        if let Some(store) = &self.cache {
            cache::store_answer(store, msg, q, reply);
        }
    }

    /// `--max-inflight`.
    pub fn max_inflight(&self) -> u32 {
        self.max_inflight
    }

    /// Records an answer sent to a client: its metrics, and its query-log line when logged.
    pub fn record(&self, s: &Served<'_>) {
        self.metrics.response(s.proto, s.source, s.rcode, s.qtype, s.reply.len(), s.elapsed);
        if let Some(log) = &self.query_log {
            log.record(s);
        }
    }

    /// Asks the chain for `name`/`qtype` as podns itself (the readiness probe).
    pub async fn ask(&self, name: &[u8], qtype: u16) -> Reply {
        ask(&self.chain, name, qtype, 0, None).await
    }

    /// The search configuration the collapse works with, what its probes found so far, and
    /// whether it is aggressive; `None` when the collapse is off.
    pub fn search_state(&self) -> Option<SearchState<'_>> {
        let p = self.probes.as_ref()?;
        Some(SearchState { cfg: &p.cfg, known: p.known(tokio::time::Instant::now()), aggressive: self.aggressive })
    }

    /// Queries in flight now.
    pub fn inflight(&self) -> u32 {
        self.admission.inflight()
    }

    /// Waits until no query is in flight.
    pub async fn wait_idle(&self) {
        self.admission.wait_idle().await
    }
}

#[cfg(test)]
mod tests;
