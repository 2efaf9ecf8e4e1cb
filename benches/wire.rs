//! Micro-benchmarks of the pure functions every query goes through: admission, search-domain
//! classification and the answer cache's hit path.
//!
//! `cargo bench --bench wire [-- FILTER]` times them; `cargo test --all-targets` runs this file
//! without `--bench`, which only checks that each benchmarked call returns what it should.
//!
//! A small harness of our own (harness = false, std only) rather than criterion: criterion and
//! its dependencies would add minutes to every `cargo test --all-targets` on the 2-core build
//! machines, and these functions take tens to hundreds of nanoseconds, where calibrated batches,
//! `black_box` and the median of many samples are precise enough to compare changes.

use std::hint::black_box;
use std::time::{Duration, Instant as StdInstant};

use bytes::BytesMut;
use podns::cache::{Cache, CacheConfig, KeyRef, Lookup};
use podns::metrics::CacheMetrics;
use podns::policy::search::{SearchClass, SearchConfig, classify};
use podns::policy::{Admission, admit};
use podns::wire::{Header, min_ttl, parse_question};
use tokio::time::Instant;

/// Time each sample should take.
const SAMPLE_TARGET: Duration = Duration::from_millis(10);
/// Samples per benchmark; the median is reported.
const SAMPLES: usize = 31;

struct Runner {
    timing: bool,
    filter: Option<String>,
    checks: usize,
}

impl Runner {
    /// Times `f` (unless only checking) when `name` passes the filter.
    fn bench<T>(&mut self, name: &str, mut f: impl FnMut() -> T) {
        if !self.filter.as_ref().is_none_or(|p| name.contains(p.as_str())) {
            return;
        }
        if !self.timing {
            black_box(f());
            return;
        }
        // Calibrate: double the batch until one batch takes a tenth of a sample.
        let mut batch: u64 = 1;
        loop {
            let t = StdInstant::now();
            for _ in 0..batch {
                black_box(f());
            }
            if t.elapsed() >= SAMPLE_TARGET / 10 || batch >= 1 << 30 {
                break;
            }
            batch *= 2;
        }
        let per_sample = batch * 10;
        let mut ns: Vec<f64> = (0..SAMPLES)
            .map(|_| {
                let t = StdInstant::now();
                for _ in 0..per_sample {
                    black_box(f());
                }
                t.elapsed().as_nanos() as f64 / per_sample as f64
            })
            .collect();
        ns.sort_by(f64::total_cmp);
        let (lo, med, hi) = (ns[SAMPLES / 10], ns[SAMPLES / 2], ns[SAMPLES - 1 - SAMPLES / 10]);
        println!("{name:<48} {med:>9.1} ns/iter   (p10 {lo:.1}, p90 {hi:.1}; {per_sample} iters x {SAMPLES})");
    }

    fn check(&mut self, what: &str, ok: bool) {
        assert!(ok, "check failed: {what}");
        self.checks += 1;
    }
}

/// A stub resolver's query: ID, RD, one question, and an OPT record when `edns`.
fn query(name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)];
    m.extend_from_slice(&wire_name(name));
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    if edns {
        m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    }
    m
}

fn wire_name(dotted: &str) -> Vec<u8> {
    let mut w = Vec::new();
    for label in dotted.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        w.push(label.len() as u8);
        w.extend_from_slice(label.as_bytes());
    }
    w.push(0);
    w
}

/// A reply to `name` A with `n` A records of TTL `ttl` (owner names compressed to the question).
fn a_reply(name: &str, n: u8, ttl: u32) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, n, 0, 0, 0, 0];
    m.extend_from_slice(&wire_name(name));
    m.extend_from_slice(&[0, 1, 0, 1]);
    for i in 0..n {
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&[0, 4, 198, 18, 0, i + 1]);
    }
    m
}

fn ttl_of(reply: &[u8]) -> Option<u32> {
    let h = Header::parse(reply).ok()?;
    let q = parse_question(reply).ok()?;
    min_ttl(reply, &h, q.end).ok()?
}

fn bench_admit(r: &mut Runner) {
    // glibc's stub sends no OPT record unless `options edns0`; musl and others do.
    for (label, edns) in [("plain", false), ("edns", true)] {
        let q = query("kubernetes.default.svc.cluster.local", 1, edns);
        let admitted = admit(&q);
        r.check(
            "admit accepts a standard query",
            matches!(admitted, Admission::Query(p) if p.question.qtype == 1 && p.opt.is_some() == edns),
        );
        r.bench(&format!("admit/{label}"), || admit(black_box(&q)));
    }
}

/// What a classification must be.
type Expect = fn(&SearchClass) -> bool;

fn bench_classify(r: &mut Runner) {
    let search: Vec<String> =
        vec!["default.svc.cluster.local".into(), "svc.cluster.local".into(), "cluster.local".into()];
    let cfg = SearchConfig::new(&search, 5, "cluster.local").expect("valid search config");
    let cases: [(&str, &str, Expect); 5] = [
        ("classify/service-in-namespace", "kubernetes.default.svc.cluster.local", |c| {
            matches!(c, SearchClass::Other { search_index: 0 })
        }),
        ("classify/fqdn-like-first-search", "pypi.org.default.svc.cluster.local", |c| {
            matches!(c, SearchClass::FqdnLike { search_index: 0, prefix_len: 9, .. })
        }),
        ("classify/fqdn-like-second-search", "pypi.org.svc.cluster.local", |c| {
            matches!(c, SearchClass::FqdnLike { search_index: 1, .. })
        }),
        ("classify/impossible-third-search", "pypi.org.cluster.local", |c| {
            matches!(c, SearchClass::Impossible { search_index: 2 })
        }),
        ("classify/not-search", "pypi.org", |c| matches!(c, SearchClass::NotSearch)),
    ];
    for (label, name, expect) in cases {
        let w = wire_name(name);
        let class = classify(&w, &cfg);
        r.check(&format!("{label}: {name} classified as expected, got {class:?}"), expect(&class));
        r.bench(label, || classify(black_box(&w), black_box(&cfg)));
    }
}

fn bench_cache(r: &mut Runner) {
    let cfg = CacheConfig {
        max_bytes: 8 << 20,
        min_ttl: Duration::ZERO,
        max_ttl: Duration::from_secs(3600),
        max_negative_ttl: Duration::from_secs(300),
        serve_stale: Duration::from_secs(3600),
    };
    let cache = Cache::new(cfg, CacheMetrics::new()).expect("a cache of 8 MiB");
    let inserted = Instant::now();
    // A thousand other entries, so the lookup runs in a populated table.
    let names: Vec<String> = (0..1000).map(|i| format!("svc{i}.default.svc.cluster.local")).collect();
    for n in &names {
        let w = wire_name(n);
        let key = KeyRef { name: &w, qtype: 1, qclass: 1, flags: 0 };
        assert!(cache.insert(&key, &a_reply(n, 1, 30), inserted));
    }
    let hot = wire_name("api.default.svc.cluster.local");
    let key = KeyRef { name: &hot, qtype: 1, qclass: 1, flags: 0 };
    r.check(
        "a cacheable reply is stored",
        cache.insert(&key, &a_reply("api.default.svc.cluster.local", 2, 30), inserted),
    );
    // Looked up 5 s later: every TTL comes out lowered by 5.
    let now = inserted + Duration::from_secs(5);
    let hit = match cache.get(&key, now) {
        Lookup::Fresh { entry, .. } => Some(entry.reply_at(now, false)),
        _ => None,
    };
    r.check("get finds the entry fresh and reply_at lowers its TTLs", hit.as_deref().and_then(ttl_of) == Some(25));
    let mut out = BytesMut::with_capacity(1232);
    let fresh = cache.get_fresh(&key, now).map(|(e, _)| e.write_reply_at(now, false, &mut out));
    r.check("get_fresh + write_reply_at gives the same reply", fresh.is_some() && hit.as_deref() == Some(&out[..]));
    let other = wire_name("absent.default.svc.cluster.local");
    let miss = KeyRef { name: &other, ..key };
    r.check("an absent name misses", matches!(cache.get(&miss, now), Lookup::Miss));

    r.bench("cache/get-hit", || match cache.get(black_box(&key), now) {
        Lookup::Fresh { entry, .. } => Some(entry),
        _ => None,
    });
    r.bench("cache/get-hit+reply_at", || match cache.get(black_box(&key), now) {
        Lookup::Fresh { entry, .. } => Some(entry.reply_at(now, false)),
        _ => None,
    });
    r.bench("cache/get_fresh+write_reply_at (reused buffer)", || {
        out.clear();
        if let Some((entry, _)) = cache.get_fresh(black_box(&key), now) {
            entry.write_reply_at(now, false, &mut out);
        }
        out.len()
    });
    r.bench("cache/get-miss", || matches!(cache.get(black_box(&miss), now), Lookup::Miss));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test` does not, and then we only check.
    let timing = args.iter().any(|a| a == "--bench");
    let filter = args.iter().find(|a| !a.starts_with('-')).cloned();
    let mut r = Runner { timing, filter, checks: 0 };
    if timing {
        println!("{:<48} {:>9}", "benchmark", "median");
    }
    bench_admit(&mut r);
    bench_classify(&mut r);
    bench_cache(&mut r);
    println!("wire benchmarks: {} checks ok{}", r.checks, if timing { "" } else { " (timing skipped: no --bench)" });
}
