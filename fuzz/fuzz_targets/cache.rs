//! The answer cache on arbitrary replies: `cache_ttl` against its definition, then an
//! insert + get + `Entry::reply_at` round trip at several points of the entry's life.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use podns::cache::{Cache, CacheConfig, KeyRef, Kind, Lookup, STALE_TTL, cache_ttl};
use podns::metrics::CacheMetrics;
use podns::wire::{Header, RecordRef, Records, Section, parse_question, rcode, rtype};
use tokio::time::Instant;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The defaults of the CLI, a narrow window that clamps most TTLs, and serve-stale off.
const CONFIGS: [CacheConfig; 3] = [
    CacheConfig {
        max_bytes: 1 << 20,
        min_ttl: secs(0),
        max_ttl: secs(3600),
        max_negative_ttl: secs(300),
        serve_stale: secs(3600),
    },
    CacheConfig {
        max_bytes: 1 << 20,
        min_ttl: secs(60),
        max_ttl: secs(120),
        max_negative_ttl: secs(30),
        serve_stale: secs(5),
    },
    CacheConfig {
        max_bytes: 1 << 20,
        min_ttl: secs(0),
        max_ttl: secs(86400),
        max_negative_ttl: secs(0),
        serve_stale: secs(0),
    },
];

/// What `cache_ttl` must say, from RFC 2308 and the configured limits.
fn expected_ttl(reply: &[u8], cfg: &CacheConfig) -> Option<(Duration, Kind)> {
    let h = Header::parse(reply).ok()?;
    if !h.qr() || h.tc() || h.qdcount != 1 {
        return None;
    }
    let q = parse_question(reply).ok()?;
    let records: Vec<RecordRef> = Records::new(reply, &h, q.end).collect::<Result<_, _>>().ok()?;
    // TTLs with the most significant bit set count as 0 (RFC 2181 §8).
    let ttl = |t: u32| podns::wire::effective_ttl(t);
    let answer =
        records.iter().filter(|r| r.section == Section::Answer && r.rtype != rtype::OPT).map(|r| ttl(r.ttl)).min();
    // The last SOA of the authority section with a full RDATA sets the negative TTL.
    let mut negative = None;
    for r in records.iter().filter(|r| r.section == Section::Authority && r.rtype == rtype::SOA && r.rdlen >= 20) {
        let m = &reply[r.end() - 4..r.end()];
        negative = Some(ttl(r.ttl).min(ttl(u32::from_be_bytes([m[0], m[1], m[2], m[3]]))));
    }
    let d = |s: u32| Duration::from_secs(u64::from(s));
    match (h.rcode(), answer) {
        (rcode::NOERROR, Some(t)) => Some((d(t).max(cfg.min_ttl).min(cfg.max_ttl), Kind::Success)),
        (rcode::NOERROR | rcode::NXDOMAIN, None) => {
            let neg = d(negative?).min(cfg.max_negative_ttl);
            Some((neg.max(cfg.min_ttl.min(cfg.max_negative_ttl)), Kind::Denial))
        }
        _ => None,
    }
}

/// TTLs of every non-OPT record in `msg`, with the TTL fields blanked out of a copy of `msg`.
fn ttls_and_rest(msg: &[u8]) -> (Vec<u32>, Vec<u8>) {
    let h = Header::parse(msg).unwrap();
    let q = parse_question(msg).unwrap();
    let mut rest = msg.to_vec();
    let mut ttls = Vec::new();
    for r in Records::new(msg, &h, q.end) {
        let r = r.expect("a cached reply's records parse");
        if r.rtype != rtype::OPT {
            ttls.push(r.ttl);
            rest[r.ttl_at..r.ttl_at + 4].fill(0);
        }
    }
    (ttls, rest)
}

fn round_trip(reply: &[u8], cfg: &CacheConfig) {
    let got = cache_ttl(reply, cfg);
    assert_eq!(got, expected_ttl(reply, cfg), "cache_ttl disagrees with RFC 2308 and the limits");
    let cache = Cache::new(*cfg, CacheMetrics::new()).expect("cache on");
    let Ok(q) = parse_question(reply) else {
        return;
    };
    let key = KeyRef { name: q.name(reply), qtype: q.qtype, qclass: q.qclass, flags: 0 };
    let now = Instant::now();
    let stored = cache.insert(&key, reply, now);
    assert_eq!(stored, got.is_some_and(|(ttl, _)| !ttl.is_zero()));
    let Some((ttl, kind)) = got.filter(|_| stored) else {
        assert!(matches!(cache.get(&key, now), Lookup::Miss));
        return;
    };
    assert_eq!(cache.len(), 1);
    // Any letter case finds the entry; another type or flag does not.
    let upper = key.name.to_ascii_uppercase();
    let upper_key = KeyRef { name: &upper, ..key };
    let Lookup::Fresh { entry, prefetch } = cache.get(&upper_key, now) else {
        panic!("a stored entry is not fresh at once");
    };
    assert!(!prefetch);
    assert_eq!(entry.kind, kind);
    assert_eq!(entry.rcode(), Header::parse(reply).unwrap().rcode());
    assert!(matches!(cache.get(&KeyRef { flags: 1, ..key }, now), Lookup::Miss));
    assert!(matches!(cache.get(&KeyRef { qtype: key.qtype ^ 1, ..key }, now), Lookup::Miss));

    // TTLs are clamped into the entry's life, and nothing else changes.
    let (orig_ttls, orig_rest) = ttls_and_rest(reply);
    let s = ttl.as_secs() as u32;
    let (lo, hi) = match kind {
        Kind::Success => (cfg.min_ttl.as_secs() as u32, s),
        Kind::Denial => (s, s),
    };
    let clamped: Vec<u32> = orig_ttls.iter().map(|t| (*t).clamp(lo.min(hi), hi)).collect();
    let at = |d: Duration, stale: bool| {
        let r = entry.reply_at(now + d, stale);
        assert_eq!(r.len(), reply.len());
        ttls_and_rest(&r)
    };
    let (t0, rest0) = at(Duration::ZERO, false);
    assert_eq!(rest0, orig_rest, "a cache hit changed more than TTLs");
    assert_eq!(t0, clamped);
    assert!(t0.iter().all(|t| *t <= s), "a TTL outlives its entry");
    // Aged by half the entry's life.
    let half = secs(u64::from(s / 2));
    let (th, _) = at(half, false);
    assert_eq!(th, clamped.iter().map(|t| t.saturating_sub(s / 2)).collect::<Vec<_>>());
    // Near the end of its life a success is due for a prefetch.
    if let Lookup::Fresh { prefetch, .. } = cache.get(&key, now + ttl - ttl / 10) {
        assert_eq!(prefetch, kind == Kind::Success);
    } else {
        panic!("entry gone before it expired");
    }
    // Expired: stale (TTL 30 everywhere) within the serve-stale window, then gone.
    match cache.get(&key, now + ttl) {
        Lookup::Stale(e) if !cfg.serve_stale.is_zero() => {
            let r = e.reply_at(now + ttl, true);
            let (ts, rest) = ttls_and_rest(&r);
            assert_eq!(rest, orig_rest);
            assert!(ts.iter().all(|t| *t == STALE_TTL));
        }
        Lookup::Miss if cfg.serve_stale.is_zero() => {}
        _ => panic!("wrong lookup at expiry"),
    }
    assert!(cache.peek_fresh(&key, now + ttl).is_none());
    assert!(matches!(cache.get(&key, now + ttl + cfg.serve_stale), Lookup::Miss));
}

fuzz_target!(|reply: &[u8]| {
    for cfg in &CONFIGS {
        round_trip(reply, cfg);
    }
});
