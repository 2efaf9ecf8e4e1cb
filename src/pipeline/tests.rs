//! Each layer in-process, on tokio's paused clock, with a scripted `next` (or, for the lookup,
//! a scripted upstream): what it asks below, and what it answers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;

use super::*;
use crate::cache::{CacheConfig, KeyRef};
use crate::error::UpstreamError;
use crate::policy::aaaa::{AaaaMode, AaaaPolicy};
use crate::upstream::UpstreamConfig;
use crate::upstream::script::Script;
use crate::wire::{Header, Name, rcode, rtype};

/// A reply to `query`: `rc`, and an A record with `ttl` when `addr` is given.
fn reply_to(query: &[u8], rc: u16, addr: Option<[u8; 4]>, ttl: u32) -> BytesMut {
    let q = crate::wire::parse_question(query).unwrap();
    let mut r = BytesMut::from(&query[..q.end]);
    r[2] |= 0x80; // QR
    r[3] = (r[3] & 0xf0) | rc as u8 | 0x80; // RA
    r[6..12].copy_from_slice(&[0, addr.is_some() as u8, 0, 0, 0, 0]);
    if let Some(a) = addr {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&[0, 4]);
        r.extend_from_slice(&a);
    }
    r
}

fn rcode_of(r: &Reply) -> Option<u16> {
    r.as_ref().ok().map(|r| Header::parse(&r.reply).unwrap().rcode())
}

/// A scripted next layer: answers by (name, type) through `f`, counting what it was asked.
struct Next<F> {
    f: F,
    asked: Mutex<Vec<(String, u16, bool)>>,
}

impl<F: Fn(&Request) -> Reply + Send + Sync + 'static> Next<F> {
    fn new(f: F) -> Arc<Next<F>> {
        Arc::new(Next { f, asked: Mutex::new(Vec::new()) })
    }
    fn asked(&self) -> Vec<(String, u16, bool)> {
        self.asked.lock().unwrap().clone()
    }
}

impl<F: Fn(&Request) -> Reply + Send + Sync + 'static> Service for Next<F> {
    fn passes(&self, _name: &[u8], _qtype: u16) -> bool {
        true
    }

    async fn call(&self, req: &mut Request) -> Reply {
        self.asked.lock().unwrap().push((crate::wire::to_dotted(req.name()), req.q.qtype(), req.refresh));
        (self.f)(req)
    }
}

fn upstream(req: &Request, rc: u16, addr: Option<[u8; 4]>) -> Reply {
    Ok(Resolved { reply: reply_to(&req.msg, rc, addr, 300), source: Source::Upstream, action: Action::Forwarded })
}

fn servfail() -> Reply {
    Err(ResolveError::Exhausted(UpstreamError::Rcode(([198, 18, 0, 10], 53).into(), rcode::SERVFAIL)))
}

fn store() -> Arc<Cache> {
    let cfg = CacheConfig {
        max_bytes: 1 << 20,
        min_ttl: Duration::ZERO,
        max_ttl: Duration::from_secs(3600),
        max_negative_ttl: Duration::from_secs(300),
        serve_stale: Duration::from_secs(3600),
    };
    Arc::new(Cache::new(cfg, CacheMetrics::new()).unwrap())
}

fn wire(dotted: &str) -> Vec<u8> {
    Name::from_dotted(dotted).unwrap().wire().to_vec()
}

#[tokio::test(start_paused = true)]
async fn the_lookup_cache_answers_a_repeat_and_serves_stale_when_the_next_fails() {
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f2 = fail.clone();
    let next =
        Next::new(move |r| if f2.load(Ordering::SeqCst) { servfail() } else { upstream(r, 0, Some([198, 18, 0, 1])) });
    let store = store();
    let layer = CacheLayer::new(Role::Lookups, Some(store.clone()), CacheMetrics::new(), next.clone());
    let name = wire("a.example.");
    for _ in 0..2 {
        let r = layer.call(&mut Request::internal(&name, rtype::A, 0)).await;
        assert_eq!(rcode_of(&r), Some(rcode::NOERROR));
    }
    assert_eq!(next.asked().len(), 1, "the repeat came from the cache");
    tokio::time::advance(Duration::from_secs(301)).await;
    fail.store(true, Ordering::SeqCst);
    let r = layer.call(&mut Request::internal(&name, rtype::A, 0)).await.unwrap();
    assert_eq!((r.source, r.action), (Source::Stale, Action::Stale));
    assert_eq!(next.asked().len(), 2, "an expired entry is asked for again first");
}

#[tokio::test(start_paused = true)]
async fn each_cache_role_stores_only_its_own_kind_of_reply() {
    let synthesized = |r: &Request| {
        Ok(Resolved {
            reply: reply_to(&r.msg, 0, Some([198, 18, 0, 2]), 60),
            source: Source::Synthesized,
            action: Action::Collapsed,
        })
    };
    let store = store();
    let name = wire("b.example.");
    let key = |q: &Request| KeyRef::of(&q.msg, &q.q).to_owned();
    for (role, next_source_synth, stored) in [
        (Role::Lookups, false, true),
        (Role::Lookups, true, false),
        (Role::Answers, false, false),
        (Role::Answers, true, true),
    ] {
        store.clear();
        let next =
            Next::new(move |r| if next_source_synth { synthesized(r) } else { upstream(r, 0, Some([198, 18, 0, 1])) });
        let layer = CacheLayer::new(role, Some(store.clone()), CacheMetrics::new(), next);
        let mut req = Request::internal(&name, rtype::A, 0);
        layer.call(&mut req).await.unwrap();
        let k = key(&req);
        let (n, t, f) = k.parts();
        let found = store.peek_fresh(&KeyRef { name: n, qtype: t, qclass: 1, flags: f }, tokio::time::Instant::now());
        assert_eq!(found.is_some(), stored, "{role:?} synthesized={next_source_synth}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_prefetch_runs_the_chain_below_the_top_cache_again() {
    let next = Next::new(|r| {
        Ok(Resolved {
            reply: reply_to(&r.msg, 0, Some([198, 18, 0, 3]), 100),
            source: Source::Synthesized,
            action: Action::Collapsed,
        })
    });
    let top = CacheLayer::new(Role::Answers, Some(store()), CacheMetrics::new(), next.clone());
    let mut req = Request::internal(&wire("c.example."), rtype::A, 0);
    top.call(&mut req).await.unwrap();
    let mut out = BytesMut::new();
    assert!(top.hit(&req.msg, &req.q, &mut out), "a fresh hit");
    assert_eq!(next.asked().len(), 1);
    tokio::time::advance(Duration::from_secs(95)).await;
    out.clear();
    assert!(top.hit(&req.msg, &req.q, &mut out), "still fresh, in its last tenth");
    tokio::task::yield_now().await;
    let asked = next.asked();
    assert_eq!(asked.len(), 2, "one background refresh");
    assert!(asked[1].2, "marked as a refresh, so the lookup cache below does not answer it");
}

#[tokio::test(start_paused = true)]
async fn root_denies_single_labels_an_upstream_refused_and_nothing_else() {
    let next = Next::new(|r| if r.q.qtype() == rtype::A { servfail() } else { Err(ResolveError::Budget) });
    let root = Root::new(Arc::new(Metrics::new()), next);
    let r = root.call(&mut Request::internal(&wire("pypi."), rtype::A, 0)).await.unwrap();
    assert_eq!(Header::parse(&r.reply).unwrap().rcode(), rcode::NXDOMAIN);
    assert_eq!(r.action, Action::Synthesized(Reason::RootZone));
    assert!(
        root.call(&mut Request::internal(&wire("x.db."), rtype::A, 0)).await.is_err(),
        "two labels keep the failure"
    );
    assert!(
        root.call(&mut Request::internal(&wire("pypi."), rtype::AAAA, 0)).await.is_err(),
        "silence is not an answer: an outage stays a failure"
    );
}

fn aaaa_policy(mode: AaaaMode) -> AaaaPolicy {
    AaaaPolicy {
        mode,
        types: vec![rtype::AAAA],
        nodata_for: vec![],
        synth_ttl: Duration::from_secs(30),
        timeout: Duration::from_millis(400),
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_aaaa_is_answered_from_the_a_outcome() {
    let next = Next::new(|r| match (crate::wire::to_dotted(r.name()).as_str(), r.q.qtype()) {
        (_, rtype::AAAA) => servfail(),
        ("exists.example.", _) => upstream(r, 0, Some([198, 18, 0, 4])),
        ("gone.example.", _) => upstream(r, rcode::NXDOMAIN, None),
        _ => servfail(),
    });
    let aaaa = Aaaa::new(aaaa_policy(AaaaMode::Fix), None, None, Arc::new(Metrics::new()), next.clone());
    let r = aaaa.call(&mut Request::internal(&wire("exists.example."), rtype::AAAA, 0)).await.unwrap();
    assert_eq!((Header::parse(&r.reply).unwrap().rcode(), r.source), (rcode::NOERROR, Source::Synthesized));
    let r = aaaa.call(&mut Request::internal(&wire("gone.example."), rtype::AAAA, 0)).await.unwrap();
    assert_eq!(Header::parse(&r.reply).unwrap().rcode(), rcode::NXDOMAIN);
    let r = aaaa.call(&mut Request::internal(&wire("broken.example."), rtype::AAAA, 0)).await;
    assert!(matches!(r, Err(ResolveError::Declined)), "A failed too: SERVFAIL, honestly");
    let asked: Vec<_> = next.asked().into_iter().map(|(n, t, _)| (n, t)).collect();
    assert_eq!(asked.iter().filter(|(_, t)| *t == rtype::A).count(), 3, "one A lookup per name");
    // A types it does not cover pass through untouched.
    let r = aaaa.call(&mut Request::internal(&wire("exists.example."), rtype::A, 0)).await;
    assert_eq!(rcode_of(&r), Some(rcode::NOERROR));
}

#[tokio::test(start_paused = true)]
async fn nodata_mode_never_asks_for_the_type() {
    let next = Next::new(|r| upstream(r, 0, Some([198, 18, 0, 5])));
    let aaaa = Aaaa::new(aaaa_policy(AaaaMode::Nodata), None, None, Arc::new(Metrics::new()), next.clone());
    let r = aaaa.call(&mut Request::internal(&wire("v4only.example."), rtype::AAAA, 0)).await.unwrap();
    assert_eq!(r.source, Source::Synthesized);
    assert!(next.asked().iter().all(|(_, t, _)| *t == rtype::A));
}

fn search() -> SearchConfig {
    SearchConfig::new(
        &["default.svc.cluster.local".into(), "svc.cluster.local".into(), "cluster.local".into()],
        5,
        "cluster.local",
    )
    .unwrap()
}

fn collapse_over<N: Service>(next: Arc<N>) -> Collapse<N> {
    let wait = Duration::from_millis(400);
    let probes = Arc::new(Probes::new(search(), None, Duration::from_secs(60), wait));
    let cfg = CollapseConfig {
        search: search(),
        mode: CollapseMode::On,
        namespaces: None,
        probe_ttl: Duration::from_secs(60),
        synth_ttl: 30,
    };
    Collapse::new(Some(cfg), Some(probes), wait, Arc::new(Metrics::new()), next)
}

#[tokio::test(start_paused = true)]
async fn the_collapse_answers_a_search_candidate_with_a_cname_to_the_name_that_has_data() {
    let next = Next::new(|r| match crate::wire::to_dotted(r.name()).as_str() {
        "pypi.org." => upstream(r, 0, Some([198, 18, 0, 6])),
        _ => upstream(r, rcode::NXDOMAIN, None),
    });
    let collapse = collapse_over(next.clone());
    let r =
        collapse.call(&mut Request::internal(&wire("pypi.org.default.svc.cluster.local."), rtype::A, 0)).await.unwrap();
    assert_eq!((r.source, r.action), (Source::Synthesized, Action::Collapsed));
    assert_eq!(crate::wire::answers_type(&r.reply, rtype::A), Some((rcode::NOERROR, true)));
    let asked: Vec<String> = next.asked().into_iter().map(|(n, _, _)| n).collect();
    assert!(asked.contains(&"pypi.org.".to_string()), "{asked:?}");
    assert!(
        !asked.contains(&"pypi.org.default.svc.cluster.local.".to_string()),
        "the impossible candidate is not asked"
    );
}

#[tokio::test(start_paused = true)]
async fn names_outside_the_search_walk_pass_through_and_impossible_ones_are_denied_without_asking() {
    let next = Next::new(|r| upstream(r, 0, Some([198, 18, 0, 7])));
    let collapse = collapse_over(next.clone());
    let r = collapse.call(&mut Request::internal(&wire("pypi.org."), rtype::A, 0)).await.unwrap();
    assert_eq!(r.action, Action::Forwarded);
    assert_eq!(next.asked().len(), 1);
    // A service name whose last label is no DNS-1123 label cannot exist in the cluster.
    let r = collapse.call(&mut Request::internal(&wire("under_score.default.svc.cluster.local."), rtype::A, 0)).await;
    let r = r.unwrap();
    assert_eq!(r.action, Action::Impossible);
    assert_eq!(Header::parse(&r.reply).unwrap().rcode(), rcode::NXDOMAIN);
    assert_eq!(next.asked().len(), 1, "denied without asking");
}

/// A scripted upstream that never answers, counting the attempts.
struct Silent(AtomicUsize);

impl Script for Silent {
    fn reply(&self, _query: &[u8], _tcp: bool) -> Option<Vec<u8>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        None
    }
}

fn lookup_with(script: Arc<dyn Script>, memo: Duration) -> Lookup {
    let cfg = UpstreamConfig::test_defaults();
    Lookup::new(Arc::new(Upstreams::scripted(&cfg, vec![script])), None, memo, CacheMetrics::new())
}

#[tokio::test(start_paused = true)]
async fn identical_questions_share_one_exchange_and_a_failure_is_remembered() {
    let silent = Arc::new(Silent(AtomicUsize::new(0)));
    let lookup = lookup_with(silent.clone(), Duration::from_secs(5));
    let name = wire("slow.example.");
    let (mut r1, mut r2) = (Request::internal(&name, rtype::A, 0), Request::internal(&name, rtype::A, 0));
    let (a, b) = tokio::join!(lookup.call(&mut r1), lookup.call(&mut r2));
    assert!(a.is_err() && b.is_err());
    let attempts = silent.0.load(Ordering::SeqCst);
    assert_eq!(attempts, 2, "one exchange (two attempts at the one upstream) for both");
    assert!(lookup.call(&mut Request::internal(&name, rtype::A, 0)).await.is_err());
    assert_eq!(silent.0.load(Ordering::SeqCst), attempts, "the failure is remembered: not asked again");
    tokio::time::advance(Duration::from_secs(6)).await;
    let _ = lookup.call(&mut Request::internal(&name, rtype::A, 0)).await;
    assert!(silent.0.load(Ordering::SeqCst) > attempts, "asked again once the memo expired");
    // Another flag set is another question.
    let before = silent.0.load(Ordering::SeqCst);
    let _ = lookup.call(&mut Request::internal(&name, rtype::A, crate::wire::FLAG_DO)).await;
    assert!(silent.0.load(Ordering::SeqCst) > before);
}
