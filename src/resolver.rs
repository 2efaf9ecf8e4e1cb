//! The lookup layer between the policies and the upstreams: cache, then coalescing of identical
//! queries in flight, then the upstream exchange; with serve-stale when upstreams fail and a
//! background refresh of popular entries before they expire.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cache::{Cache, Entry, Key, KeyRef, key_flags};
use crate::error::{ResolveError, UpstreamError};
use crate::metrics::{CacheMetrics, Metrics, Source};
use crate::policy::aaaa::Reason;
use crate::policy::root::{self, RootDenial};
use crate::policy::{Admission, ParsedQuery, admit};
use crate::upstream::{FastKeys, Upstreams};
use crate::wire::{Header, OUR_UDP_SIZE, Soa, negative_reply, rcode, write_opt, write_query};

/// A reply for a query: its ID and question case are not the client's yet.
#[derive(Debug)]
pub struct Resolved {
    pub reply: BytesMut,
    pub source: Source,
}

type Shared = Result<Bytes, ResolveError>;

/// What podns knows about a query key beyond the cache: an exchange in flight (its followers
/// wait on the receiver), or a recent failure (RFC 9520 §3.2: a resolver MUST cache a resolution
/// failure for at least 1 s, and may for up to 5 min, so that clients' retries and search walks
/// do not multiply the load on an upstream that is already failing). A truncated reply whose
/// TCP retry failed counts as a failure here: it must not be cached as an answer, and asking
/// again would only meet the same broken TCP.
enum Slot {
    Busy(watch::Receiver<Option<Shared>>),
    Failed { until: Instant, result: Shared },
}

/// Slots by key and transport.
type InflightMap = Mutex<HashMap<(Key, bool), Slot>>;

/// Failures remembered at most; past this a new failure is not remembered (a flood of distinct
/// failing names cannot grow memory), and expired ones are swept first.
const MAX_FAILURES: usize = 4096;

/// Removes a coalescing slot when its leader finishes (leaving a failure behind when
/// configured) or is cancelled.
struct SlotGuard<'a> {
    map: &'a InflightMap,
    key: Option<(Key, bool)>,
    /// When the exchange started, and after how long a cancelled exchange counts as having met
    /// silence: a client's budget that runs out while the upstream has said nothing for a
    /// quarter of an attempt (200 ms by default, a hundred times a cluster DNS round trip) is
    /// a failure to remember like any other, or the client's retries would ask again.
    started: Instant,
    silent_after: Duration,
    memo: Duration,
}

impl SlotGuard<'_> {
    /// Ends the exchange with `result`: remembers it for `memo` when it is a failure (an error,
    /// or a truncated UDP reply, whose TCP retry failed), else frees the slot.
    fn finish(mut self, result: &Shared) {
        let Some(k) = self.key.take() else { return };
        let failed = match result {
            _ if self.memo.is_zero() => false,
            Err(_) => true,
            // Truncated although the upstream layer retried over TCP: that retry failed.
            Ok(reply) => !k.1 && Header::parse(reply).is_ok_and(|h| h.tc()),
        };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if failed {
            remember(&mut map, k, result, Instant::now() + self.memo);
        } else {
            map.remove(&k);
        }
    }
}

impl Drop for SlotGuard<'_> {
    /// A cancelled exchange (the client's budget ran out first) that has met silence long enough
    /// is remembered as a failure; a younger one just frees the slot.
    fn drop(&mut self) {
        let Some(k) = self.key.take() else { return };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if !self.memo.is_zero() && now >= self.started + self.silent_after {
            remember(&mut map, k, &Err(ResolveError::Budget), now + self.memo);
        } else {
            map.remove(&k);
        }
    }
}

/// Remembers the failure `result` of `key` until `until` (and, for a truncated UDP reply whose
/// TCP retry failed, the failure of the same question over TCP). Expired failures are swept
/// when the map is full; past [`MAX_FAILURES`] nothing more is remembered.
fn remember(map: &mut HashMap<(Key, bool), Slot>, key: (Key, bool), result: &Shared, until: Instant) {
    if map.len() >= MAX_FAILURES {
        let now = Instant::now();
        map.retain(|_, s| !matches!(s, Slot::Failed { until, .. } if *until <= now));
    }
    if map.len() + 1 >= MAX_FAILURES {
        map.remove(&key);
        return;
    }
    if result.is_ok() && !key.1 {
        map.entry((key.0.clone(), true)).or_insert(Slot::Failed { until, result: Err(ResolveError::Budget) });
    }
    map.insert(key, Slot::Failed { until, result: result.clone() });
}

/// TTL of a root-zone denial given in place of a failure: short, as the failure may pass.
pub const ROOT_DENIAL_TTL: u32 = 5;

/// Cache + coalescing + upstreams.
pub struct Resolver {
    pub upstreams: Upstreams,
    cache: Option<Arc<Cache>>,
    inflight: InflightMap,
    servfail_ttl: Duration,
    metrics: CacheMetrics,
    synthesized: Arc<Metrics>,
    /// Keys the UDP fast path is asking upstream (issue 12's seam, `server::fast`).
    fast: Arc<FastKeys>,
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
        synthesized: Arc<Metrics>,
    ) -> Resolver {
        let cache = cache.map(Arc::new);
        if let Some(c) = &cache {
            // A forged reply that got through the ID and question checks is in the cache: when
            // the spoofing defence acts, nothing cached may be trusted any more.
            let weak = Arc::downgrade(c);
            upstreams.on_unwanted_replies(Box::new(move || {
                if let Some(c) = weak.upgrade() {
                    c.clear();
                }
            }));
        }
        let fast = Arc::new(FastKeys::new(metrics.coalesced.clone()));
        Resolver { upstreams, cache, inflight: Mutex::new(HashMap::new()), servfail_ttl, metrics, synthesized, fast }
    }

    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_deref()
    }

    /// The keys the UDP fast path is asking upstream (issue 12's seam, `server::fast`).
    pub fn fast_keys(&self) -> &Arc<FastKeys> {
        &self.fast
    }

    /// A live cache entry for `key`, starting a background refresh when it is due.
    fn fresh(self: &Arc<Self>, key: &KeyRef<'_>, now: Instant) -> Option<Arc<Entry>> {
        let (entry, prefetch) = self.cache.as_ref()?.get_fresh(key, now)?;
        if prefetch && entry.claim_prefetch() {
            self.metrics.prefetch.increment(1);
            tokio::spawn(self.clone().refresh(key.to_owned()));
        }
        Some(entry)
    }

    /// Answers a query already known to have no live cache entry (client queries are looked up
    /// once, in admission): upstream, or a stale entry if that fails.
    ///
    /// When every upstream fails a single-label name, one of them by answering SERVFAIL or
    /// REFUSED, and nothing stale is cached, the answer is what the root zone would give
    /// ([`crate::policy::root`]).
    pub async fn resolve_miss(&self, msg: &mut [u8], q: &ParsedQuery, tcp: bool) -> Result<Resolved, ResolveError> {
        let e = match self.coalesced(msg, q, tcp, false).await {
            Ok(bytes) => return Ok(Resolved { reply: BytesMut::from(&bytes[..]), source: Source::Upstream }),
            Err(e) => e,
        };
        let now = Instant::now();
        if let Some((cache, entry)) = self.cache.as_ref().and_then(|c| Some((c, c.stale(&key_of(msg, q), now)?))) {
            cache.served_stale();
            return Ok(Resolved { reply: entry.reply_at(now, true), source: Source::Stale });
        }
        // Only when an upstream *answered* with a failure (systemd-resolved's SERVFAIL for
        // single-label names): silence cannot be told from an outage, and claiming a name
        // missing while cluster DNS is down would turn the application's "try again"
        // (EAI_AGAIN) into "no such name" (EAI_NONAME), which some cache.
        if !matches!(e, ResolveError::Exhausted(UpstreamError::Rcode(..))) {
            return Err(e);
        }
        let Some(denial) = root::denial(q.question.name(msg)) else { return Err(e) };
        let rc = match denial {
            RootDenial::NxDomain => rcode::NXDOMAIN,
            RootDenial::NoData => rcode::NOERROR,
        };
        let mut reply = BytesMut::with_capacity(q.question.end + 96);
        negative_reply(msg, &q.header, &q.question, rc, ROOT_DENIAL_TTL, Soa::Root, q.opt.as_ref(), &mut reply);
        self.synthesized.synthesized(q.question.qtype, Reason::RootZone);
        Ok(Resolved { reply, source: Source::Synthesized })
    }

    /// The UDP fast path's seam (issue 12, `server::fast`): true when the resolver's coalescing
    /// map holds `key` for UDP, as an exchange in flight or a failure still remembered. Such a
    /// query must take the slow path ([`Resolver::resolve_miss`]), which follows that exchange or
    /// answers from that failure, instead of asking upstream a second time. Allocates only when
    /// the map is not empty.
    pub fn is_engaged(&self, key: &KeyRef<'_>) -> bool {
        let map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if map.is_empty() {
            return false;
        }
        match map.get(&(key.to_owned(), false)) {
            Some(Slot::Busy(_)) => true,
            Some(Slot::Failed { until, .. }) => Instant::now() < *until,
            None => false,
        }
    }

    /// Writes a live cache entry for the query `msg` into `out` (TTLs lowered by its age, ID and
    /// question case not yet the client's), starting a background refresh when it is due.
    /// Returns false on a miss; stale entries are left for [`Resolver::resolve_miss`].
    pub fn cached_answer(self: &Arc<Self>, msg: &[u8], q: &ParsedQuery, out: &mut BytesMut) -> bool {
        let now = Instant::now();
        let Some(entry) = self.fresh(&key_of(msg, q), now) else { return false };
        entry.write_reply_at(now, false, out);
        true
    }

    /// Asks upstream, sharing one exchange among identical queries in flight, and caches the
    /// result (`refresh`: a prefetch of an entry still live, which must go upstream). A failure is remembered for `--servfail-ttl`: the same question meanwhile fails
    /// at once, without going upstream.
    async fn coalesced(&self, msg: &mut [u8], q: &ParsedQuery, tcp: bool, refresh: bool) -> Shared {
        let owned = (key_of(msg, q).to_owned(), tcp);
        let leader = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&owned) {
                Some(Slot::Busy(rx)) => Err(rx.clone()),
                Some(Slot::Failed { until, result }) if Instant::now() < *until => return result.clone(),
                _ => {
                    let (tx, rx) = watch::channel(None);
                    map.insert(owned.clone(), Slot::Busy(rx));
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
        let slot = SlotGuard {
            map: &self.inflight,
            key: Some(owned),
            started: Instant::now(),
            silent_after: self.upstreams.attempt_timeout() / 4,
            memo: self.servfail_ttl,
        };
        // The UDP fast path may be asking upstream for this key now: its answer fills the cache.
        if !refresh {
            self.fast.wait_for(&key_of(msg, q), self.upstreams.attempt_timeout()).await;
        }
        // The exchange that held this slot a moment ago may have just filled the cache, after
        // this query looked there: use its answer rather than ask again.
        let now = Instant::now();
        let fresh = if refresh { None } else { self.cache.as_ref().and_then(|c| c.peek_fresh(&key_of(msg, q), now)) };
        if let Some(entry) = fresh {
            let result: Shared = Ok(entry.reply_at(now, false).freeze());
            slot.finish(&result);
            let _ = tx.send(Some(result.clone()));
            return result;
        }
        let result = self.upstreams.resolve(msg, q, tcp).await.map(|ex| ex.reply.freeze());
        if let (Some(cache), Ok(reply)) = (&self.cache, &result) {
            cache.insert(&key_of(msg, q), reply, Instant::now());
        }
        slot.finish(&result);
        let _ = tx.send(Some(result.clone()));
        result
    }

    /// Looks up `name` (uncompressed wire, any case) and `qtype` for podns's own purposes
    /// (search collapse, AAAA handling), through the cache and coalescing like client queries.
    ///
    /// A miss runs as a task of its own: when the client query that needed it runs out of
    /// budget first, the exchange still finishes, so its answer (or failure) is remembered and
    /// the client's next query for it does not ask the upstream again.
    pub async fn lookup(self: &Arc<Self>, name: &[u8], qtype: u16, flags: u8) -> Result<Resolved, ResolveError> {
        let mut msg = internal_query(name, qtype, flags);
        let Admission::Query(q) = admit(&msg) else { return Err(ResolveError::Budget) };
        let now = Instant::now();
        if let Some(entry) = self.fresh(&key_of(&msg, &q), now) {
            return Ok(Resolved { reply: entry.reply_at(now, false), source: Source::Cache });
        }
        let this = self.clone();
        let exchange = tokio::spawn(async move { this.resolve_miss(&mut msg, &q, false).await });
        exchange.await.unwrap_or(Err(ResolveError::Budget))
    }

    /// Refreshes a popular entry before it expires.
    async fn refresh(self: Arc<Self>, key: Key) {
        let (name, qtype, flags) = key.parts();
        let mut msg = internal_query(name, qtype, flags);
        if let Admission::Query(q) = admit(&msg) {
            let _ = self.coalesced(&mut msg, &q, false, true).await;
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::net::UdpSocket;
    use tokio::sync::Notify;

    use super::*;
    use crate::cache::{CacheConfig, Lookup};
    use crate::upstream::UpstreamConfig;
    use crate::wire::{Header, min_ttl, parse_question, rtype};

    /// How the fake upstream answers.
    #[derive(Clone, Copy)]
    enum Script {
        /// An A record with this TTL, after a delay.
        Answer { ttl: u32, delay_ms: u64 },
        /// A reply whose question is another name: never acceptable.
        WrongQuestion,
    }

    struct Upstream {
        addr: SocketAddr,
        queries: Arc<AtomicUsize>,
        seen: Arc<Notify>,
    }

    async fn fake_upstream(script: Script) -> Upstream {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = sock.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Notify::new());
        let (q2, s2) = (queries.clone(), seen.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, peer) = sock.recv_from(&mut buf).await.unwrap();
                q2.fetch_add(1, Ordering::SeqCst);
                s2.notify_waiters();
                let query = buf[..n].to_vec();
                let sock = sock.clone();
                tokio::spawn(async move {
                    let q = parse_question(&query).unwrap();
                    let mut r = query[..q.end].to_vec();
                    r[2] |= 0x80;
                    r[11] = 0; // drop the OPT
                    match script {
                        Script::Answer { ttl, delay_ms } => {
                            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                            r[7] = 1;
                            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
                            r.extend_from_slice(&ttl.to_be_bytes());
                            r.extend_from_slice(&[0, 4, 192, 0, 2, 7]);
                        }
                        Script::WrongQuestion => r[13] ^= 0x20 ^ 0x01,
                    }
                    let _ = sock.send_to(&r, peer).await;
                });
            }
        });
        Upstream { addr, queries, seen }
    }

    fn resolver(addr: SocketAddr, cache_bytes: u64) -> Arc<Resolver> {
        let cfg = UpstreamConfig {
            addrs: vec![addr],
            attempt_timeout: Duration::from_millis(300),
            query_timeout: Duration::from_millis(600),
            sockets: 4,
            rotate: Duration::from_secs(5),
            tcp_idle: Duration::from_secs(5),
            unwanted_threshold: 0,
        };
        let cache = Cache::new(
            CacheConfig {
                max_bytes: cache_bytes,
                min_ttl: Duration::ZERO,
                max_ttl: Duration::from_secs(3600),
                max_negative_ttl: Duration::from_secs(300),
                serve_stale: Duration::from_secs(3600),
            },
            CacheMetrics::new(),
        );
        Arc::new(Resolver::new(
            Upstreams::new(&cfg, metrics::Counter::noop()),
            cache,
            Duration::ZERO,
            CacheMetrics::new(),
            Arc::new(Metrics::new()),
        ))
    }

    const NAME: &[u8] = b"\x04pypi\x03org\x00";

    fn ttl_of(b: &[u8]) -> u32 {
        let h = Header::parse(b).unwrap();
        min_ttl(b, &h, parse_question(b).unwrap().end).unwrap().unwrap()
    }

    /// A reply for NAME as the fake upstream would send it, for seeding the cache.
    fn seed_reply(ttl: u32) -> Vec<u8> {
        let mut r = vec![0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        r.extend_from_slice(NAME);
        r.extend_from_slice(&[0, 1, 0, 1, 0xc0, 12, 0, 1, 0, 1]);
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&[0, 4, 192, 0, 2, 7]);
        r
    }

    fn key() -> KeyRef<'static> {
        KeyRef { name: NAME, qtype: rtype::A, qclass: 1, flags: key_flags(false, false) }
    }

    #[tokio::test]
    async fn concurrent_identical_queries_share_one_upstream_query() {
        let up = fake_upstream(Script::Answer { ttl: 60, delay_ms: 150 }).await;
        let r = resolver(up.addr, 0); // no cache: only coalescing can save queries
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let r = r.clone();
                tokio::spawn(async move { r.lookup(NAME, rtype::A, 0).await })
            })
            .collect();
        for t in tasks {
            let got = t.await.unwrap().expect("answered");
            assert_eq!(Header::parse(&got.reply).unwrap().ancount, 1);
        }
        assert_eq!(up.queries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn second_lookup_is_a_cache_hit() {
        let up = fake_upstream(Script::Answer { ttl: 60, delay_ms: 0 }).await;
        let r = resolver(up.addr, 1 << 20);
        assert_eq!(r.lookup(NAME, rtype::A, 0).await.unwrap().source, Source::Upstream);
        let again = r.lookup(b"\x04PyPI\x03ORG\x00", rtype::A, 0).await.unwrap();
        assert_eq!(again.source, Source::Cache);
        assert_eq!(up.queries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn serves_stale_when_upstream_fails() {
        // Nothing listens on this port: every attempt is refused at once.
        let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let r = resolver(dead, 1 << 20);
        let cache = r.cache().unwrap();
        let long_ago = Instant::now() - Duration::from_secs(120);
        assert!(cache.insert(&key(), &seed_reply(60), long_ago));
        assert!(matches!(cache.get(&key(), Instant::now()), Lookup::Stale(_)));
        let got = r.lookup(NAME, rtype::A, 0).await.expect("stale answer");
        assert_eq!(got.source, Source::Stale);
        assert_eq!(ttl_of(&got.reply), crate::cache::STALE_TTL);
    }

    #[tokio::test]
    async fn popular_entry_is_refreshed_before_expiry() {
        let up = fake_upstream(Script::Answer { ttl: 100, delay_ms: 0 }).await;
        let r = resolver(up.addr, 1 << 20);
        let cache = r.cache().unwrap();
        assert!(cache.insert(&key(), &seed_reply(100), Instant::now() - Duration::from_secs(95)));
        let seen = up.seen.notified();
        let got = r.lookup(NAME, rtype::A, 0).await.unwrap();
        assert_eq!(got.source, Source::Cache);
        assert!(ttl_of(&got.reply) <= 5);
        seen.await;
        // The refresh replaces the entry; wait for the new one rather than for time to pass.
        for _ in 0..200 {
            if let Some(e) = cache.peek_fresh(&key(), Instant::now())
                && ttl_of(&e.reply_at(Instant::now(), false)) > 50
            {
                assert_eq!(up.queries.load(Ordering::SeqCst), 1);
                return;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the entry was not refreshed");
    }

    #[tokio::test]
    async fn mismatched_replies_are_never_cached() {
        let up = fake_upstream(Script::WrongQuestion).await;
        let r = resolver(up.addr, 1 << 20);
        assert!(r.lookup(NAME, rtype::A, 0).await.is_err());
        assert!(up.queries.load(Ordering::SeqCst) >= 1);
        assert!(r.cache().unwrap().is_empty());
    }
}
