//! The answer cache: upstream (and synthesized) replies stored as wire bytes.
//!
//! Keyed by the lower-cased question and the flags that change an answer (DO, CD). A hit copies
//! the bytes and lowers every TTL by the entry's age; the caller restores the client's ID and
//! question case. Bounded by bytes with quick_cache's CLOCK-Pro-like eviction, which keeps hot
//! entries. Expired entries stay until evicted so they can be served stale (RFC 8767) when every
//! upstream fails. Time is always an argument, so tests control it.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quick_cache::{Equivalent, Lifecycle, OptionsBuilder, Weighter};
use tokio::time::Instant;

use crate::metrics::CacheMetrics;
use crate::wire::{self, Header, ParsedQuery, Records, Section, parse_question, rcode, rtype};

/// Limits of the cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    pub max_bytes: u64,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub max_negative_ttl: Duration,
    /// How long past expiry an entry may be served when upstreams fail.
    pub serve_stale: Duration,
}

/// TTL given to records served stale (RFC 8767 §4 recommends 30 s).
pub const STALE_TTL: u32 = 30;

/// Whether an entry holds data or a denial (NXDOMAIN / NODATA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Success = 0,
    Denial = 1,
}

/// An owned key: the name in lower case.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Key {
    name: Box<[u8]>,
    qtype: u16,
    qclass: u16,
    flags: u8,
}

/// A borrowed key over a client's question, in any letter case: lookups allocate nothing.
#[derive(Clone, Copy, Debug)]
pub struct KeyRef<'a> {
    pub name: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    pub flags: u8,
}

fn hash_key<H: Hasher>(name: &[u8], qtype: u16, qclass: u16, flags: u8, state: &mut H) {
    let mut lower = [0u8; 255];
    let n = name.len().min(lower.len());
    for (d, s) in lower[..n].iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    state.write(&lower[..n]);
    state.write_u16(qtype);
    state.write_u16(qclass);
    state.write_u8(flags);
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(&self.name, self.qtype, self.qclass, self.flags, state);
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(self.name, self.qtype, self.qclass, self.flags, state);
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.qtype == key.qtype
            && self.qclass == key.qclass
            && self.flags == key.flags
            && self.name.eq_ignore_ascii_case(&key.name)
    }
}

impl Key {
    /// Name (lower-case wire), type and flags.
    pub fn parts(&self) -> (&[u8], u16, u8) {
        (&self.name, self.qtype, self.flags)
    }
}

impl<'a> KeyRef<'a> {
    /// The key of the query `q` parsed from `msg`: its question, and the DO/CD bits
    /// ([`ParsedQuery::key_flags`]).
    pub fn of(msg: &'a [u8], q: &ParsedQuery) -> KeyRef<'a> {
        KeyRef { name: q.name(msg), qtype: q.question.qtype, qclass: q.question.qclass, flags: q.key_flags() }
    }

    pub fn to_owned(&self) -> Key {
        Key {
            name: self.name.to_ascii_lowercase().into_boxed_slice(),
            qtype: self.qtype,
            qclass: self.qclass,
            flags: self.flags,
        }
    }
}

/// One cached reply.
#[derive(Debug)]
pub struct Entry {
    /// The reply, with TTLs already clamped; its ID and question case are meaningless.
    wire: Bytes,
    inserted: Instant,
    ttl: Duration,
    pub kind: Kind,
    prefetching: AtomicBool,
}

impl Entry {
    fn expires(&self) -> Instant {
        self.inserted + self.ttl
    }

    /// The reply as of `now`: TTLs lowered by the entry's age, or set to [`STALE_TTL`] when
    /// served stale.
    pub fn reply_at(&self, now: Instant, stale: bool) -> BytesMut {
        let mut out = BytesMut::with_capacity(self.wire.len() + 16);
        self.write_reply_at(now, stale, &mut out);
        out
    }

    /// Like [`Entry::reply_at`], appending to `out` (the receive loop reuses one buffer).
    pub fn write_reply_at(&self, now: Instant, stale: bool, out: &mut BytesMut) {
        let start = out.len();
        out.extend_from_slice(&self.wire);
        let age = now.saturating_duration_since(self.inserted).as_secs().min(u64::from(u32::MAX)) as u32;
        let msg = &mut out[start..];
        if let (Ok(h), Ok(q)) = (Header::parse(msg), parse_question(msg)) {
            let _ = wire::rewrite_ttls(msg, &h, q.end, |t| if stale { STALE_TTL } else { t.saturating_sub(age) });
        }
    }

    /// The reply's response code.
    pub fn rcode(&self) -> u16 {
        Header::parse(&self.wire).map_or(rcode::SERVFAIL, |h| h.rcode())
    }

    /// Claims the right to refresh this entry in the background; true for the first caller.
    pub fn claim_prefetch(&self) -> bool {
        !self.prefetching.swap(true, Ordering::AcqRel)
    }
}

/// Result of a lookup.
pub enum Lookup {
    /// A live entry; `prefetch` is true when it is in the last tenth of its lifetime.
    Fresh {
        entry: Arc<Entry>,
        prefetch: bool,
    },
    /// Expired, but within the serve-stale window: usable only if upstreams fail.
    Stale(Arc<Entry>),
    Miss,
}

#[derive(Clone)]
struct ByteWeighter;

impl Weighter<Key, Arc<Entry>> for ByteWeighter {
    fn weight(&self, key: &Key, val: &Arc<Entry>) -> u64 {
        // Bytes of the reply and name, plus the fixed cost of an entry and its slot.
        (val.wire.len() + key.name.len() + 96) as u64
    }
}

/// Keeps the per-kind entry gauges right as entries are evicted.
#[derive(Clone)]
struct Counting {
    counts: Arc<[AtomicI64; 2]>,
    evictions: metrics::Counter,
}

impl Lifecycle<Key, Arc<Entry>> for Counting {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: Key, val: Arc<Entry>) {
        self.counts[val.kind as usize].fetch_sub(1, Ordering::Relaxed);
        self.evictions.increment(1);
    }
}

/// The answer cache.
pub struct Cache {
    inner: quick_cache::sync::Cache<Key, Arc<Entry>, ByteWeighter, quick_cache::DefaultHashBuilder, Counting>,
    cfg: CacheConfig,
    counts: Arc<[AtomicI64; 2]>,
    metrics: CacheMetrics,
}

/// How long a reply may be cached and as what, from its contents (RFC 2308 for denials);
/// `None` when it must not be cached. TTLs (and SOA MINIMUM) with the top bit set count as 0
/// (RFC 2181 §8); upstream replies have them zeroed already, this keeps any other path honest.
pub fn cache_ttl(reply: &[u8], cfg: &CacheConfig) -> Option<(Duration, Kind)> {
    let h = Header::parse(reply).ok()?;
    if !h.qr() || h.tc() || h.qdcount != 1 {
        return None;
    }
    let q = parse_question(reply).ok()?;
    let mut min_answer: Option<u32> = None;
    let mut soa_negative: Option<u32> = None;
    for r in Records::new(reply, &h, q.end) {
        let r = r.ok()?;
        match (r.section, r.rtype) {
            (_, rtype::OPT) => {}
            (Section::Authority, rtype::SOA) if r.rdlen >= 20 => {
                let minimum = wire::effective_ttl(wire::read_u32(reply, r.end() - 4).ok()?);
                soa_negative = Some(wire::effective_ttl(r.ttl).min(minimum));
            }
            (Section::Answer, _) => {
                let ttl = wire::effective_ttl(r.ttl);
                min_answer = Some(min_answer.map_or(ttl, |m| m.min(ttl)));
            }
            _ => {}
        }
    }
    let secs = |s: u32| Duration::from_secs(u64::from(s));
    match (h.rcode(), min_answer) {
        (rcode::NOERROR, Some(ttl)) => Some((secs(ttl).clamp(cfg.min_ttl, cfg.max_ttl), Kind::Success)),
        (rcode::NOERROR | rcode::NXDOMAIN, None) => {
            let neg = secs(soa_negative?).min(cfg.max_negative_ttl);
            Some((neg.max(cfg.min_ttl.min(cfg.max_negative_ttl)), Kind::Denial))
        }
        _ => None,
    }
}

impl Cache {
    /// A cache of `cfg.max_bytes`; `None` when that is zero (caching off).
    pub fn new(cfg: CacheConfig, metrics: CacheMetrics) -> Option<Cache> {
        if cfg.max_bytes == 0 {
            return None;
        }
        let counts: Arc<[AtomicI64; 2]> = Arc::new([AtomicI64::new(0), AtomicI64::new(0)]);
        let opts = OptionsBuilder::new()
            .estimated_items_capacity((cfg.max_bytes / 256).max(16) as usize)
            .weight_capacity(cfg.max_bytes)
            .build()
            .expect("valid cache options");
        let inner = quick_cache::sync::Cache::with_options(
            opts,
            ByteWeighter,
            Default::default(),
            Counting { counts: counts.clone(), evictions: metrics.evictions.clone() },
        );
        Some(Cache { inner, cfg, counts, metrics })
    }

    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    /// A live entry for `key` and whether it is due for a refresh (in the last tenth of its
    /// lifetime), counting a hit or a miss.
    pub fn get_fresh(&self, key: &KeyRef<'_>, now: Instant) -> Option<(Arc<Entry>, bool)> {
        let Some(entry) = self.inner.get(key).filter(|e| now < e.expires()) else {
            self.metrics.misses.increment(1);
            return None;
        };
        self.metrics.hits[entry.kind as usize].increment(1);
        let prefetch = entry.kind == Kind::Success && (entry.expires() - now) * 10 <= entry.ttl;
        Some((entry, prefetch))
    }

    /// An expired entry for `key` still within the serve-stale window, without counting anything
    /// (serving it counts, see [`Cache::served_stale`]).
    pub fn stale(&self, key: &KeyRef<'_>, now: Instant) -> Option<Arc<Entry>> {
        self.inner.peek(key).filter(|e| now >= e.expires() && now < e.expires() + self.cfg.serve_stale)
    }

    /// Looks `key` up as of `now`, counting a hit or a miss (a stale entry counts as a miss
    /// here and as a stale hit if it is served).
    pub fn get(&self, key: &KeyRef<'_>, now: Instant) -> Lookup {
        match self.get_fresh(key, now) {
            Some((entry, prefetch)) => Lookup::Fresh { entry, prefetch },
            None => self.stale(key, now).map_or(Lookup::Miss, Lookup::Stale),
        }
    }

    /// A live entry for `key`, without counting a hit or miss (for podns's own decisions).
    pub fn peek_fresh(&self, key: &KeyRef<'_>, now: Instant) -> Option<Arc<Entry>> {
        self.inner.peek(key).filter(|e| now < e.expires())
    }

    /// Counts a stale entry actually served.
    pub fn served_stale(&self) {
        self.metrics.stale.increment(1);
    }

    /// Stores `reply` for `key` if it is cacheable; returns whether it was stored.
    pub fn insert(&self, key: &KeyRef<'_>, reply: &[u8], now: Instant) -> bool {
        let Some((ttl, kind)) = cache_ttl(reply, &self.cfg) else {
            return false;
        };
        if ttl.is_zero() {
            return false;
        }
        self.store(key, reply, ttl, kind, now);
        true
    }

    /// Stores `reply` for exactly `ttl` (SERVFAIL memo, synthesized answers with their own TTL).
    pub fn insert_for(&self, key: &KeyRef<'_>, reply: &[u8], ttl: Duration, kind: Kind, now: Instant) {
        if !ttl.is_zero() {
            self.store(key, reply, ttl, kind, now);
        }
    }

    fn store(&self, key: &KeyRef<'_>, reply: &[u8], ttl: Duration, kind: Kind, now: Instant) {
        let mut wire = BytesMut::from(reply);
        // Clamp every record's TTL into the entry's lifetime so a hit never shows a TTL that
        // outlives the entry (max-ttl) or hits zero while the entry lives (min-ttl).
        let (lo, hi) = match kind {
            Kind::Success => (self.cfg.min_ttl.as_secs() as u32, ttl.as_secs() as u32),
            Kind::Denial => (ttl.as_secs() as u32, ttl.as_secs() as u32),
        };
        if let (Ok(h), Ok(q)) = (Header::parse(&wire), parse_question(&wire)) {
            let _ = wire::rewrite_ttls(&mut wire, &h, q.end, |t| t.clamp(lo.min(hi), hi));
        }
        let entry =
            Arc::new(Entry { wire: wire.freeze(), inserted: now, ttl, kind, prefetching: AtomicBool::new(false) });
        if let Some(old) = self.inner.peek(key) {
            self.counts[old.kind as usize].fetch_sub(1, Ordering::Relaxed);
        }
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
        self.inner.insert(key.to_owned(), entry);
        self.publish();
    }

    fn publish(&self) {
        self.metrics.entries[0].set(self.counts[0].load(Ordering::Relaxed) as f64);
        self.metrics.entries[1].set(self.counts[1].load(Ordering::Relaxed) as f64);
        self.metrics.bytes.set(self.inner.weight() as f64);
    }

    /// Removes every entry (the spoofing defence: nothing cached can be trusted).
    pub fn clear(&self) {
        self.inner.clear();
        for c in self.counts.iter() {
            c.store(0, Ordering::Relaxed);
        }
        self.publish();
    }

    /// Entries now held.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Bytes now held (by the weigher's count).
    pub fn weight(&self) -> u64 {
        self.inner.weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Header, min_ttl};

    fn cfg() -> CacheConfig {
        CacheConfig {
            max_bytes: 1 << 20,
            min_ttl: Duration::ZERO,
            max_ttl: Duration::from_secs(3600),
            max_negative_ttl: Duration::from_secs(300),
            serve_stale: Duration::from_secs(3600),
        }
    }

    /// A reply to `name` A with one A record of `ttl`, or (ttl None) an NXDOMAIN with an SOA of
    /// TTL `soa_ttl` and MINIMUM `soa_min`.
    fn reply(name: &str, ttl: Option<u32>, soa: (u32, u32)) -> Vec<u8> {
        let n = crate::wire::Name::from_dotted(name).unwrap();
        let mut m = Vec::new();
        let (rc, an, ns) = if ttl.is_some() { (0u8, 1u8, 0u8) } else { (3, 0, 1) };
        m.extend_from_slice(&[0, 1, 0x81, 0x80 | rc, 0, 1, 0, an, 0, ns, 0, 0]);
        m.extend_from_slice(n.wire());
        m.extend_from_slice(&[0, 1, 0, 1]);
        if let Some(t) = ttl {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            m.extend_from_slice(&t.to_be_bytes());
            m.extend_from_slice(&[0, 4, 10, 0, 0, 1]);
        } else {
            m.extend_from_slice(&[0xc0, 12, 0, 6, 0, 1]);
            m.extend_from_slice(&soa.0.to_be_bytes());
            let rdata_len = 2 + 2 + 20;
            m.extend_from_slice(&(rdata_len as u16).to_be_bytes());
            m.extend_from_slice(&[0xc0, 12, 0xc0, 12]);
            m.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4]);
            m.extend_from_slice(&soa.1.to_be_bytes());
        }
        m
    }

    fn key(name: &[u8]) -> KeyRef<'_> {
        KeyRef { name, qtype: 1, qclass: 1, flags: 0 }
    }

    fn ttl_of(b: &[u8]) -> u32 {
        let h = Header::parse(b).unwrap();
        min_ttl(b, &h, parse_question(b).unwrap().end).unwrap().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_decrements_then_expires_then_stale() {
        let c = Cache::new(cfg(), CacheMetrics::new()).unwrap();
        let r = reply("pypi.org", Some(100), (0, 0));
        let t0 = Instant::now();
        assert!(c.insert(&key(b"\x04PYPI\x03org\x00"), &r, t0));
        let Lookup::Fresh { entry, prefetch } = c.get(&key(b"\x04pypi\x03ORG\x00"), t0 + Duration::from_secs(30))
        else {
            panic!("expected a hit, case-insensitively")
        };
        assert!(!prefetch);
        assert_eq!(ttl_of(&entry.reply_at(t0 + Duration::from_secs(30), false)), 70);
        let Lookup::Fresh { prefetch, .. } = c.get(&key(b"\x04pypi\x03org\x00"), t0 + Duration::from_secs(95)) else {
            panic!()
        };
        assert!(prefetch, "last tenth of the TTL");
        let Lookup::Stale(e) = c.get(&key(b"\x04pypi\x03org\x00"), t0 + Duration::from_secs(100)) else {
            panic!("expired")
        };
        assert_eq!(ttl_of(&e.reply_at(t0 + Duration::from_secs(100), true)), STALE_TTL);
        assert!(matches!(c.get(&key(b"\x04pypi\x03org\x00"), t0 + Duration::from_secs(100 + 3600)), Lookup::Miss));
    }

    #[test]
    fn negative_ttl_is_min_of_soa_ttl_and_minimum_capped() {
        let c = cfg();
        assert_eq!(cache_ttl(&reply("x.org", None, (60, 900)), &c), Some((Duration::from_secs(60), Kind::Denial)));
        assert_eq!(cache_ttl(&reply("x.org", None, (900, 45)), &c), Some((Duration::from_secs(45), Kind::Denial)));
        assert_eq!(cache_ttl(&reply("x.org", None, (9000, 9000)), &c), Some((Duration::from_secs(300), Kind::Denial)));
        // No SOA: not cached.
        let mut no_soa = reply("x.org", None, (1, 1));
        no_soa[9] = 0;
        let cut = parse_question(&no_soa).unwrap().end;
        no_soa.truncate(cut);
        assert_eq!(cache_ttl(&no_soa, &c), None);
    }

    #[test]
    fn ttls_with_the_top_bit_set_are_not_cached() {
        for ttl in [0x8000_0005, u32::MAX] {
            assert_eq!(cache_ttl(&reply("a.org", Some(ttl), (0, 0)), &cfg()).unwrap().0, Duration::ZERO, "{ttl:#x}");
            let neg = cache_ttl(&reply("x.org", None, (ttl, 900)), &cfg()).unwrap().0;
            assert_eq!(neg, Duration::ZERO, "SOA TTL {ttl:#x}");
        }
        let c = Cache::new(cfg(), CacheMetrics::new()).unwrap();
        assert!(!c.insert(&key(b"\x01a\x03org\x00"), &reply("a.org", Some(0x8000_0005), (0, 0)), Instant::now()));
    }

    #[test]
    fn clamps_servfail_and_truncation() {
        let mut c = cfg();
        c.min_ttl = Duration::from_secs(10);
        c.max_ttl = Duration::from_secs(60);
        assert_eq!(cache_ttl(&reply("a.org", Some(1), (0, 0)), &c).unwrap().0, Duration::from_secs(10));
        assert_eq!(cache_ttl(&reply("a.org", Some(86400), (0, 0)), &c).unwrap().0, Duration::from_secs(60));
        let mut sf = reply("a.org", Some(30), (0, 0));
        sf[3] = 0x82;
        assert_eq!(cache_ttl(&sf, &c), None, "SERVFAIL");
        let mut tc = reply("a.org", Some(30), (0, 0));
        tc[2] |= 0x02;
        assert_eq!(cache_ttl(&tc, &c), None, "TC");
    }

    #[tokio::test(start_paused = true)]
    async fn stored_ttls_are_clamped() {
        let mut cf = cfg();
        cf.max_ttl = Duration::from_secs(60);
        let c = Cache::new(cf, CacheMetrics::new()).unwrap();
        let t0 = Instant::now();
        c.insert(&key(b"\x01a\x03org\x00"), &reply("a.org", Some(86400), (0, 0)), t0);
        let Lookup::Fresh { entry, .. } = c.get(&key(b"\x01a\x03org\x00"), t0) else { panic!() };
        assert_eq!(ttl_of(&entry.reply_at(t0, false)), 60);
    }

    #[tokio::test(start_paused = true)]
    async fn flags_are_part_of_the_key() {
        let c = Cache::new(cfg(), CacheMetrics::new()).unwrap();
        let t0 = Instant::now();
        c.insert(&key(b"\x01a\x03org\x00"), &reply("a.org", Some(60), (0, 0)), t0);
        let with_do = KeyRef { flags: wire::FLAG_DO, ..key(b"\x01a\x03org\x00") };
        let with_cd = KeyRef { flags: wire::FLAG_CD, ..key(b"\x01a\x03org\x00") };
        assert!(matches!(c.get(&with_do, t0), Lookup::Miss));
        assert!(matches!(c.get(&with_cd, t0), Lookup::Miss));
        assert!(matches!(c.get(&key(b"\x01a\x03org\x00"), t0), Lookup::Fresh { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn clear_empties_the_cache() {
        let c = Cache::new(cfg(), CacheMetrics::new()).unwrap();
        let t0 = Instant::now();
        assert!(c.insert(&key(b"\x01a\x03org\x00"), &reply("a.org", Some(60), (0, 0)), t0));
        c.clear();
        assert!(c.is_empty());
        assert!(matches!(c.get(&key(b"\x01a\x03org\x00"), t0), Lookup::Miss));
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_keeps_within_the_byte_bound() {
        let mut cf = cfg();
        cf.max_bytes = 16 * 1024;
        let c = Cache::new(cf, CacheMetrics::new()).unwrap();
        let t0 = Instant::now();
        let names: Vec<String> = (0..2000).map(|i| format!("host{i}.example.org")).collect();
        for n in &names {
            let w = crate::wire::Name::from_dotted(n).unwrap();
            assert!(c.insert(
                &KeyRef { name: w.wire(), qtype: 1, qclass: 1, flags: 0 },
                &reply(n, Some(300), (0, 0)),
                t0
            ));
        }
        assert!(c.weight() <= cf.max_bytes, "weight {} over {}", c.weight(), cf.max_bytes);
        assert!(c.len() < names.len() && !c.is_empty());
    }
}
