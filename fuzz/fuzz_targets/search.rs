//! Search-domain classification of arbitrary query names, against the usual Kubernetes search
//! list and against search lists read from arbitrary resolv.conf text. The search index `classify`
//! reports is checked against a plain reference (first search domain, in list order, that is a
//! label-aligned suffix leaving at most ndots labels), and every class against its definition.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use podns::policy::search::{SearchClass, SearchConfig, classify, is_public_tld, probe_names};
use podns::wire::Name;

const CLUSTER_DOMAIN: &str = "cluster.local";

fn k8s() -> &'static SearchConfig {
    static CFG: OnceLock<SearchConfig> = OnceLock::new();
    CFG.get_or_init(|| {
        let search: Vec<String> = ["default.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        SearchConfig::new(&search, 5, CLUSTER_DOMAIN).unwrap()
    })
}

/// Labels of a well-formed uncompressed wire name (1-63 octet labels, the root last and only
/// last, at most 255 octets), or `None`.
fn reference_labels(q: &[u8]) -> Option<Vec<&[u8]>> {
    if q.len() > 255 {
        return None;
    }
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let l = *q.get(at)? as usize;
        if l == 0 {
            return (at + 1 == q.len()).then_some(out);
        }
        if l > 63 {
            return None;
        }
        out.push(q.get(at + 1..at + 1 + l)?);
        at += 1 + l;
    }
}

/// Reference for the search index: the first search domain S (in order) such that the name is
/// P.S with P of 1..=ndots labels.
fn reference_index(labels: &[&[u8]], cfg: &SearchConfig) -> Option<(usize, usize)> {
    cfg.search().iter().enumerate().find_map(|(i, s)| {
        let s: Vec<&[u8]> = podns::wire::labels(s.wire()).collect();
        if s.len() >= labels.len() {
            return None;
        }
        let p = labels.len() - s.len();
        let suffix_matches = labels[p..].iter().zip(&s).all(|(a, b)| a.eq_ignore_ascii_case(b));
        (suffix_matches && p <= usize::from(cfg.ndots())).then_some((i, p))
    })
}

fn check(q: &[u8], cfg: &SearchConfig) {
    let class = classify(q, cfg);
    // Letter case never matters.
    assert_eq!(classify(&q.to_ascii_lowercase(), cfg), class);
    assert_eq!(classify(&q.to_ascii_uppercase(), cfg), class);
    let Some(labels) = reference_labels(q) else {
        assert_eq!(class, SearchClass::NotSearch, "malformed name classified");
        return;
    };
    let reference = reference_index(&labels, cfg);
    let index = match &class {
        SearchClass::NotSearch => None,
        SearchClass::Impossible { search_index }
        | SearchClass::Other { search_index }
        | SearchClass::FqdnLike { search_index, .. } => Some(*search_index),
    };
    assert_eq!(index, reference.map(|r| r.0), "search index differs from the reference for {q:?}");
    let Some((i, p_labels)) = reference else {
        return;
    };
    let s = cfg.search()[i].wire();
    let prefix_len = q.len() - s.len();
    let tld_is_public = p_labels >= 2 && is_public_tld(labels[p_labels - 1]);
    match class {
        SearchClass::FqdnLike { prefix_len: pl, tld, .. } => {
            assert_eq!(pl, prefix_len);
            assert!(tld_is_public);
            assert_eq!(tld.end, prefix_len);
            assert_eq!(&q[tld.clone()], labels[p_labels - 1]);
            assert_eq!(q[tld.start - 1] as usize, tld.len());
            // The caller builds probe names from this label: that must never panic.
            let (ns_probe, svc_probe) = probe_names(&q[tld.clone()], cfg);
            let cd = cfg.cluster_domain().wire();
            assert!(ns_probe.wire().ends_with(cd) && ns_probe.wire().len() <= 255);
            assert_eq!(ns_probe.label_count(), cfg.cluster_domain().label_count() + 2);
            if let Some(sp) = svc_probe {
                assert!(sp.wire().ends_with(ns_probe.wire()[1 + tld.len()..].as_ref()));
                assert!(sp.wire().len() <= 255);
            }
        }
        SearchClass::Other { .. } => assert!(!tld_is_public, "FQDN-like name classified Other"),
        SearchClass::Impossible { .. } => {
            // Only names inside the cluster domain are ever ruled out.
            let cd = cfg.cluster_domain().wire();
            assert!(q.len() > cd.len() && q[q.len() - cd.len()..].eq_ignore_ascii_case(cd));
        }
        SearchClass::NotSearch => unreachable!(),
    }
}

/// Query names built from a configuration's own search domains (what a stub would send).
fn expansions(cfg: &SearchConfig, extra: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for s in cfg.search().iter().take(8) {
        for p in [&b"\x04pypi\x03org"[..], b"\x05redis", b"\x03web\x03dev", b"\x03WWW\x04PyPi\x03ORG", extra] {
            let mut q = p.to_vec();
            q.extend_from_slice(s.wire());
            out.push(q);
        }
    }
    out
}

fn check_config(cfg: &SearchConfig, text: &str, cluster_domain: &str) {
    assert!(cfg.ndots() <= 15);
    assert_eq!(Some(cfg.cluster_domain()), Name::from_dotted(cluster_domain).as_ref());
    let lower = text.to_ascii_lowercase();
    for (i, s) in cfg.search().iter().enumerate() {
        assert!(s.wire().len() > 1 && s.wire().len() <= 255);
        let dotted = podns::wire::labels(s.wire()).collect::<Vec<_>>().join(&b'.');
        assert!(
            lower.as_bytes().windows(dotted.len()).any(|w| w == dotted),
            "search domain {} not in the text",
            s.to_dotted()
        );
        let below = s.wire().ends_with(cfg.cluster_domain().wire());
        // is_cluster_search is label-aligned, a plain suffix test may say more.
        if cfg.is_cluster_search(i) {
            assert!(below);
        }
    }
    if let Some(ns) = cfg.namespace() {
        let mut want = ns.wire()[..ns.wire().len() - 1].to_vec();
        want.extend_from_slice(b"\x03svc");
        want.extend_from_slice(cfg.cluster_domain().wire());
        assert!(cfg.search().iter().any(|s| s.wire() == want), "namespace without its search domain");
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, k8s());
    for q in expansions(k8s(), data.get(..64).unwrap_or(data)) {
        check(&q, k8s());
    }

    let text = String::from_utf8_lossy(data);
    if let Ok(cfg) = SearchConfig::from_resolv_conf(&text, CLUSTER_DOMAIN) {
        check_config(&cfg, &text, CLUSTER_DOMAIN);
        check(data, &cfg);
        for q in expansions(&cfg, b"\x01x") {
            check(&q, &cfg);
        }
    }
    // The same text with its first token as the cluster domain (what --cluster-domain may be).
    if let Some(cd) = text.split_whitespace().next()
        && let Ok(cfg) = SearchConfig::from_resolv_conf(&text, cd)
    {
        check_config(&cfg, &text, cd);
        for q in expansions(&cfg, b"\x01x") {
            check(&q, &cfg);
        }
    }
});
