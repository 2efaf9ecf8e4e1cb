//! The lookup layer between the policies and the upstreams: cache, then coalescing of identical
//! queries in flight, then the upstream exchange; with serve-stale when upstreams fail and a
//! background refresh of popular entries before they expire.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cache::{Cache, Key, KeyRef, Kind, Lookup, key_flags};
use crate::error::ResolveError;
use crate::metrics::{CacheMetrics, Source};
use crate::policy::{Admission, ParsedQuery, admit};
use crate::upstream::Upstreams;
use crate::wire::{OUR_UDP_SIZE, error_reply, rcode, write_opt, write_query};

/// A reply for a query: its ID and question case are not the client's yet.
#[derive(Debug)]
pub struct Resolved {
    pub reply: BytesMut,
    pub source: Source,
}

type Shared = Result<Bytes, ResolveError>;

/// Upstream exchanges in flight, by key and transport, each with the receiver its followers wait on.
type InflightMap = Mutex<HashMap<(Key, bool), watch::Receiver<Option<Shared>>>>;

/// Removes a coalescing slot when its leader finishes or is cancelled.
struct SlotGuard<'a> {
    map: &'a InflightMap,
    key: Option<(Key, bool)>,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.map
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&k);
        }
    }
}

/// Cache + coalescing + upstreams.
pub struct Resolver {
    pub upstreams: Upstreams,
    cache: Option<Cache>,
    inflight: InflightMap,
    servfail_ttl: Duration,
    metrics: CacheMetrics,
}

/// The cache key of a parsed query in `msg`.
pub fn key_of<'a>(msg: &'a [u8], q: &ParsedQuery) -> KeyRef<'a> {
    KeyRef {
        name: q.question.name(msg),
        qtype: q.question.qtype,
        qclass: q.question.qclass,
        flags: key_flags(q.opt.is_some_and(|o| o.dnssec_ok), q.header.cd()),
    }
}

impl Resolver {
    pub fn new(
        upstreams: Upstreams,
        cache: Option<Cache>,
        servfail_ttl: Duration,
        metrics: CacheMetrics,
    ) -> Resolver {
        Resolver {
            upstreams,
            cache,
            inflight: Mutex::new(HashMap::new()),
            servfail_ttl,
            metrics,
        }
    }

    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    /// Answers the client query `msg` (parsed as `q`; `tcp` when it came over TCP). The query's
    /// ID is overwritten on the way upstream.
    pub async fn resolve(
        self: &Arc<Self>,
        msg: &mut [u8],
        q: &ParsedQuery,
        tcp: bool,
    ) -> Result<Resolved, ResolveError> {
        let now = Instant::now();
        let mut stale = None;
        if let Some(cache) = &self.cache {
            let key = key_of(msg, q);
            match cache.get(&key, now) {
                Lookup::Fresh { entry, prefetch } => {
                    if prefetch && entry.claim_prefetch() {
                        self.metrics.prefetch.increment(1);
                        tokio::spawn(self.clone().refresh(key.to_owned()));
                    }
                    return Ok(Resolved {
                        reply: entry.reply_at(now, false),
                        source: Source::Cache,
                    });
                }
                Lookup::Stale(entry) => stale = Some(entry),
                Lookup::Miss => {}
            }
        }
        match self.coalesced(msg, q, tcp).await {
            Ok(bytes) => Ok(Resolved {
                reply: BytesMut::from(&bytes[..]),
                source: Source::Upstream,
            }),
            Err(e) => match (stale, &self.cache) {
                (Some(entry), Some(cache)) => {
                    cache.served_stale();
                    Ok(Resolved {
                        reply: entry.reply_at(Instant::now(), true),
                        source: Source::Stale,
                    })
                }
                _ => Err(e),
            },
        }
    }

    /// Asks upstream, sharing one exchange among identical queries in flight, and caches the
    /// result.
    async fn coalesced(&self, msg: &mut [u8], q: &ParsedQuery, tcp: bool) -> Shared {
        let owned = (key_of(msg, q).to_owned(), tcp);
        let leader = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&owned) {
                Some(rx) => Err(rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(None);
                    map.insert(owned.clone(), rx);
                    Ok(tx)
                }
            }
        };
        let tx = match leader {
            Ok(tx) => tx,
            Err(mut rx) => {
                self.metrics.coalesced.increment(1);
                return match rx.wait_for(|v| v.is_some()).await {
                    Ok(v) => v.clone().expect("checked"),
                    // The leader went away without an answer.
                    Err(_) => Err(ResolveError::Budget),
                };
            }
        };
        let _slot = SlotGuard {
            map: &self.inflight,
            key: Some(owned),
        };
        let result = self
            .upstreams
            .resolve(msg, q, tcp)
            .await
            .map(|ex| ex.reply.freeze());
        if let Some(cache) = &self.cache {
            let key = key_of(msg, q);
            match &result {
                Ok(reply) => {
                    cache.insert(&key, reply, Instant::now());
                }
                Err(_) if !self.servfail_ttl.is_zero() => {
                    let mut sf = BytesMut::new();
                    error_reply(
                        msg,
                        &q.header,
                        Some(&q.question),
                        rcode::SERVFAIL,
                        q.opt.as_ref(),
                        &mut sf,
                    );
                    cache.insert_for(&key, &sf, self.servfail_ttl, Kind::Denial, Instant::now());
                }
                Err(_) => {}
            }
        }
        let _ = tx.send(Some(result.clone()));
        result
    }

    /// Looks up `name` (uncompressed wire, any case) and `qtype` for podns's own purposes
    /// (search collapse, AAAA handling), through the cache and coalescing like client queries.
    pub async fn lookup(
        self: &Arc<Self>,
        name: &[u8],
        qtype: u16,
        flags: u8,
    ) -> Result<Resolved, ResolveError> {
        let mut msg = internal_query(name, qtype, flags);
        match admit(&msg) {
            Admission::Query(q) => self.resolve(&mut msg, &q, false).await,
            _ => Err(ResolveError::Budget),
        }
    }

    /// Refreshes a popular entry before it expires.
    async fn refresh(self: Arc<Self>, key: Key) {
        let (name, qtype, flags) = key.parts();
        let mut msg = internal_query(name, qtype, flags);
        if let Admission::Query(q) = admit(&msg) {
            let _ = self.coalesced(&mut msg, &q, false).await;
        }
    }
}

/// A query podns sends for itself: RD, CD and DO as `flags` says, and EDNS so answers up to our
/// UDP size come back without a TCP retry.
fn internal_query(name: &[u8], qtype: u16, flags: u8) -> BytesMut {
    let mut msg = BytesMut::with_capacity(name.len() + 32);
    write_query(rand::random(), name, qtype, &mut msg);
    if flags & 2 != 0 {
        msg[3] |= 0x10; // CD
    }
    write_opt(&mut msg, OUR_UDP_SIZE, 0, flags & 1 != 0);
    msg[11] = 1; // ARCOUNT
    msg
}
