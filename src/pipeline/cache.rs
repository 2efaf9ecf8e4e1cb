//! The answer cache's layer, and its only writer. It sits twice in the chain ([`Role`]): at the
//! top, for the answers clients get (a hit is served from the receive loop, and what the
//! policies synthesize is stored there), and right above the lookup, for what upstreams answer
//! (podns's own questions hit there; a failure is answered from a stale entry, RFC 8767).
//! Both write the one store ([`crate::cache::Cache`]), under the key of the question asked.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::time::Instant;

use super::{Action, Reply, Request, Resolved, Service};
use crate::cache::{Cache, Entry, Key, KeyRef};
use crate::metrics::{CacheMetrics, Source};
use crate::wire::ParsedQuery;

/// Where in the chain a cache layer sits, which decides what it serves and stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Above the policies: fresh hits for clients ([`CacheLayer::hit`], from the receive loop),
    /// prefetch of popular entries, and storing what the policies synthesized.
    Answers,
    /// Above the lookup: fresh hits for podns's own questions, serve-stale, and storing what
    /// upstreams answered.
    Lookups,
}

/// The cache layer in front of `next`.
pub struct CacheLayer<N> {
    role: Role,
    store: Option<Arc<Cache>>,
    metrics: CacheMetrics,
    next: Arc<N>,
}

impl<N: Service> CacheLayer<N> {
    pub fn new(role: Role, store: Option<Arc<Cache>>, metrics: CacheMetrics, next: Arc<N>) -> CacheLayer<N> {
        CacheLayer { role, store, metrics, next }
    }

    /// Writes a live entry for the client query `q` in `msg` into `out` (TTLs lowered by its
    /// age; ID and question case not the client's yet), and starts a background refresh of an
    /// entry in the last tenth of its life. False on a miss.
    pub fn hit(&self, msg: &[u8], q: &ParsedQuery, out: &mut BytesMut) -> bool {
        let Some(store) = &self.store else { return false };
        let now = Instant::now();
        let key = KeyRef::of(msg, q);
        let Some((entry, due)) = store.get_fresh(&key, now) else { return false };
        if due && entry.claim_prefetch() {
            self.metrics.prefetch.increment(1);
            tokio::spawn(refresh(self.role, store.clone(), self.next.clone(), key.to_owned()));
        }
        entry.write_reply_at(now, false, out);
        true
    }

    /// A live entry for podns's own question (counted as a hit or a miss).
    fn own_hit(&self, req: &Request, now: Instant) -> Option<Arc<Entry>> {
        if self.role != Role::Lookups || req.refresh {
            return None;
        }
        let key = KeyRef::of(&req.msg, &req.q);
        let store = self.store.as_ref()?;
        if req.internal {
            store.get_fresh(&key, now).map(|(e, _)| e)
        } else {
            // A client query missed at the top a moment ago (and was counted there); this is
            // the same key, checked again in the step that joins or starts the exchange.
            store.peek_fresh(&key, now)
        }
    }
}

/// Whether a cache in `role` stores a reply that came from `source`.
fn stores(role: Role, source: Source) -> bool {
    match role {
        Role::Answers => source == Source::Synthesized,
        Role::Lookups => source == Source::Upstream,
    }
}

/// Stores `reply` to the query `q` in `msg` under its key: what both roles do with the replies
/// they keep, and what the UDP fast path does with the upstream answers it relays.
pub fn store_answer(store: &Cache, msg: &[u8], q: &ParsedQuery, reply: &[u8]) {
    store.insert(&KeyRef::of(msg, q), reply, Instant::now());
}

/// Stores `r` under the key of `req` when `role` keeps such replies.
fn store_reply(role: Role, store: &Cache, req: &Request, r: &Resolved) {
    if stores(role, r.source) {
        store_answer(store, &req.msg, &req.q, &r.reply);
    }
}

/// Refreshes a popular entry before it expires: the chain below runs again for its key, and
/// what comes back is stored by whichever cache layer keeps it.
async fn refresh<N: Service>(role: Role, store: Arc<Cache>, next: Arc<N>, key: Key) {
    let (name, qtype, flags) = key.parts();
    let mut req = Request::internal(name, qtype, flags);
    req.refresh = true;
    if let Ok(r) = next.call(&mut req).await {
        store_reply(role, &store, &req, &r);
    }
}

impl<N: Service> Service for CacheLayer<N> {
    fn passes(&self, name: &[u8], qtype: u16) -> bool {
        self.next.passes(name, qtype)
    }

    async fn call(&self, req: &mut Request) -> Reply {
        let now = Instant::now();
        if let Some(entry) = self.own_hit(req, now) {
            return Ok(Resolved { reply: entry.reply_at(now, false), source: Source::Cache, action: Action::Cached });
        }
        let result = self.next.call(req).await;
        let Some(store) = &self.store else { return result };
        match result {
            Ok(r) => {
                store_reply(self.role, store, req, &r);
                Ok(r)
            }
            Err(e) if self.role == Role::Lookups => {
                let now = Instant::now();
                match store.stale(&KeyRef::of(&req.msg, &req.q), now) {
                    Some(entry) => {
                        store.served_stale();
                        Ok(Resolved { reply: entry.reply_at(now, true), source: Source::Stale, action: Action::Stale })
                    }
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}
