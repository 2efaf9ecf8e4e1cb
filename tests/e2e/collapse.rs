//! End-to-end tests of the search-domain collapse, against an upstream scripted like CoreDNS
//! in a cluster with the namespaces `default`, `dev` and `kube-system`, for a pod in `default`
//! whose resolv.conf says `search default.svc.cluster.local svc.cluster.local cluster.local`
//! and `options ndots:5`.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::support::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

const PYPI: Ipv4Addr = Ipv4Addr::new(151, 101, 0, 223);
const PYPI_V6: Ipv6Addr = Ipv6Addr::new(0x2a04, 0x4e42, 0, 0, 0, 0, 0, 0x223);
const FASTLY: Ipv4Addr = Ipv4Addr::new(151, 101, 64, 223);
const KUBERNETES: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
const WEB_DEV_SERVICE: Ipv4Addr = Ipv4Addr::new(10, 96, 5, 5);
const WEB_DEV_PUBLIC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 55);
const INTRANET_CORP: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 1);
const INTRANET_PUBLIC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);

const PYPI_TTL: u32 = 300;
const TXT_SIZE: usize = 1000;

const POD_SEARCH: &str = "default.svc.cluster.local svc.cluster.local cluster.local";

fn cluster_soa() -> Rr {
    Rr::soa("cluster.local", 30, 30)
}

/// A resolv.conf as kubelet writes it for a pod in `default`, plus `extra` search domains.
fn resolv_conf(extra: &str) -> TempFile {
    let search = format!("{POD_SEARCH} {extra}");
    TempFile::new("resolv.conf", &format!("nameserver 127.0.0.1\nsearch {}\noptions ndots:5\n", search.trim_end()))
}

/// Scripts a name that exists with `a` for A (and `aaaa` for AAAA), NODATA with `zone`'s SOA
/// for every other type.
fn exists(up: &Upstream, name: &str, zone: &str, a: Vec<Rr>, aaaa: Vec<Rr>) {
    up.on_name(name, Reply::nodata(Rr::soa(zone, 60, 60)).action());
    up.on(name, RecordType::A, Reply::answer(a).action());
    if !aaaa.is_empty() {
        up.on(name, RecordType::AAAA, Reply::answer(aaaa).action());
    }
}

/// An upstream answering like CoreDNS (kubernetes plugin for cluster.local, forwarding the
/// rest): namespaces default, dev, kube-system; services kubernetes.default and web.dev; public
/// names pypi.org, files.pythonhosted.org (a CNAME to Fastly), web.dev (a public name under the
/// `dev` TLD) and big.example.org (a TXT record over 512 octets). Everything else is NXDOMAIN
/// with the cluster SOA under cluster.local and the root SOA elsewhere.
fn cluster_upstream() -> Upstream {
    let up = Upstream::with_default(Reply::nxdomain(Rr::soa(".", 3600, 86400)).action());
    up.on_suffix("cluster.local", Reply::nxdomain(cluster_soa()).action());
    up.on_name("cluster.local", Reply::nodata(cluster_soa()).action());
    up.on("cluster.local", RecordType::SOA, Reply::answer(vec![cluster_soa()]).action());
    for ns in ["default", "dev", "kube-system"] {
        up.on_name(&format!("{ns}.svc.cluster.local"), Reply::nodata(cluster_soa()).action());
    }
    exists(&up, "kubernetes.default.svc.cluster.local", "cluster.local", vec![Rr::a(KUBERNETES).ttl(5)], vec![]);
    exists(&up, "web.dev.svc.cluster.local", "cluster.local", vec![Rr::a(WEB_DEV_SERVICE).ttl(5)], vec![]);
    exists(&up, "pypi.org", "org", vec![Rr::a(PYPI).ttl(PYPI_TTL)], vec![Rr::aaaa(PYPI_V6).ttl(PYPI_TTL)]);
    exists(
        &up,
        "files.pythonhosted.org",
        "org",
        vec![
            Rr::cname("dualstack.python.map.fastly.net").ttl(120),
            Rr::a(FASTLY).owner("dualstack.python.map.fastly.net").ttl(60),
        ],
        vec![],
    );
    exists(&up, "dualstack.python.map.fastly.net", "fastly.net", vec![Rr::a(FASTLY).ttl(60)], vec![]);
    exists(&up, "web.dev", "dev", vec![Rr::a(WEB_DEV_PUBLIC)], vec![]);
    up.on_name("big.example.org", Reply::nodata(Rr::soa("example.org", 60, 60)).action());
    up.on("big.example.org", RecordType::TXT, Reply::answer(Rr::big_txt(TXT_SIZE)).action());
    up
}

/// podns for the pod: the scripted cluster DNS as upstream, the search list from `resolv`.
async fn pod_podns(up: &Upstream, resolv: &TempFile, extra: &[(&str, &str)]) -> Podns {
    let mut b = PodnsBuilder::new().upstream(up.addr).arg("--resolv-conf", resolv.path_str());
    for (flag, value) in extra {
        b = b.arg(flag, value);
    }
    b.start().await
}

/// The queries the upstream received, as sorted "name TYPE" strings (lower case), without
/// podns's start-up probe (`cluster.local. SOA`).
fn asked(up: &Upstream) -> Vec<String> {
    let mut v: Vec<String> = up
        .received()
        .iter()
        .filter(|r| !(r.qtype == RecordType::SOA && r.name.eq_ignore_ascii_case("cluster.local")))
        .map(|r| format!("{} {}", r.name.to_ascii_lowercase(), r.qtype))
        .collect();
    v.sort();
    v
}

fn sorted(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Answer records as (owner, type, data, TTL), names in lower case with the final dot.
fn answers(reply: &Message) -> Vec<(String, String, String, u32)> {
    reply
        .answers
        .iter()
        .map(|r| {
            let data = match &r.data {
                RData::CNAME(c) => c.0.to_ascii().to_ascii_lowercase(),
                RData::A(a) => a.0.to_string(),
                RData::AAAA(a) => a.0.to_string(),
                RData::TXT(_) => "txt".to_string(),
                other => format!("{other:?}"),
            };
            (r.name.to_ascii().to_ascii_lowercase(), r.record_type().to_string(), data, r.ttl)
        })
        .collect()
}

/// Sends `q` over UDP and checks the reply carries the question exactly as sent (letter case
/// included).
async fn ask_udp(podns: &Podns, q: &Message) -> Message {
    let raw = udp_exchange_raw(podns.addr(), q).await;
    assert_eq!(raw_header(&raw).id, q.metadata.id, "reply ID");
    assert_eq!(
        String::from_utf8_lossy(&raw_question(&raw)),
        String::from_utf8_lossy(&raw_question(&encode(q))),
        "the question in the client's letter case"
    );
    decode(&raw)
}

async fn ask(podns: &Podns, name: &str, qtype: RecordType) -> Message {
    ask_udp(podns, &query(name, qtype)).await
}

/// Asserts `reply` is `qname CNAME target.` followed by `target A ip`, with the CNAME's TTL
/// that of the A record.
fn assert_cname_to(reply: &Message, qname: &str, target: &str, ip: Ipv4Addr) {
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{qname}: {reply}");
    let got = answers(reply);
    assert_eq!(got.len(), 2, "{qname}: a CNAME and the target's A: {reply}");
    let (owner, t, data, cname_ttl) = &got[0];
    assert_eq!((owner.as_str(), t.as_str()), (format!("{}.", qname.to_ascii_lowercase()).as_str(), "CNAME"), "{reply}");
    assert_eq!(data, &format!("{target}."), "{qname}: CNAME target");
    let (owner, t, data, a_ttl) = &got[1];
    assert_eq!(
        (owner.as_str(), t.as_str(), data.as_str()),
        (format!("{target}.").as_str(), "A", ip.to_string().as_str())
    );
    assert_eq!(cname_ttl, a_ttl, "{qname}: CNAME TTL = the A record's TTL");
}

async fn search_metric(podns: &Podns, action: &str) -> f64 {
    podns.metric("podns_search_total", &[("action", action)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fqdn_in_the_namespace_domain_is_a_cname_to_the_public_name() {
    let up = cluster_upstream();
    let resolv = resolv_conf("");
    let podns = pod_podns(&up, &resolv, &[]).await;
    podns.wait_log(&["search collapse", "namespace=default"], REPLY_TIMEOUT).await;
    let collapsed = search_metric(&podns, "collapsed").await;
    let saved = podns.metric("podns_search_upstream_saved_total", &[]).await;

    let reply = ask(&podns, "PyPI.org.Default.svc.cluster.local", RecordType::A).await;
    assert_cname_to(&reply, "pypi.org.default.svc.cluster.local", "pypi.org", PYPI);
    assert_eq!(reply.answers[1].ttl, PYPI_TTL, "fresh from upstream");
    assert_eq!(
        asked(&up),
        sorted(&["org.svc.cluster.local A", "org.default.svc.cluster.local A", "pypi.org A"]),
        "the upstream got the two probes for `org` and the public name, nothing else"
    );
    podns.wait_metric("podns_search_total", &[("action", "collapsed")], |v| v > collapsed, REPLY_TIMEOUT).await;
    podns.wait_metric("podns_search_upstream_saved_total", &[], |v| v > saved, REPLY_TIMEOUT).await;

    // The rest of the client's walk costs no upstream query.
    let reply = ask(&podns, "pypi.org.svc.cluster.local", RecordType::A).await;
    assert_cname_to(&reply, "pypi.org.svc.cluster.local", "pypi.org", PYPI);
    let reply = ask(&podns, "pypi.org.cluster.local", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain, "{reply}");
    let reply = ask(&podns, "pypi.org", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&reply), vec![PYPI]);
    assert_eq!(asked(&up).len(), 3, "no further upstream query: {:?}", asked(&up));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glibc_walk_for_a_and_aaaa_costs_at_most_four_upstream_queries() {
    let up = cluster_upstream();
    let resolv = resolv_conf("");
    let podns = pod_podns(&up, &resolv, &[]).await;
    let candidates =
        ["pypi.org.default.svc.cluster.local", "pypi.org.svc.cluster.local", "pypi.org.cluster.local", "pypi.org"];
    for cand in candidates {
        // glibc sends A and AAAA together.
        let (a, aaaa) = tokio::join!(ask(&podns, cand, RecordType::A), ask(&podns, cand, RecordType::AAAA));
        if cand == "pypi.org.cluster.local" {
            assert_eq!(a.metadata.response_code, ResponseCode::NXDomain, "{cand} A: {a}");
            assert_eq!(aaaa.metadata.response_code, ResponseCode::NXDomain, "{cand} AAAA: {aaaa}");
            continue;
        }
        assert_eq!(a.metadata.response_code, ResponseCode::NoError, "{cand} A: {a}");
        assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError, "{cand} AAAA: {aaaa}");
        assert_eq!(a_records(&a), vec![PYPI], "{cand} A");
        let v6: Vec<String> = answers(&aaaa).into_iter().filter(|r| r.1 == "AAAA").map(|r| r.2).collect();
        assert_eq!(v6, vec![PYPI_V6.to_string()], "{cand} AAAA: {aaaa}");
        if cand != "pypi.org" {
            assert_eq!(answers(&a)[0].2, "pypi.org.", "{cand} A: a CNAME to pypi.org.");
            assert_eq!(answers(&aaaa)[0].2, "pypi.org.", "{cand} AAAA: a CNAME to pypi.org.");
        }
    }
    // Eight client queries; upstream: the two probes for `org`, and pypi.org A and AAAA, once each.
    assert_eq!(
        asked(&up),
        sorted(&["org.svc.cluster.local A", "org.default.svc.cluster.local A", "pypi.org A", "pypi.org AAAA"]),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cname_chain_of_the_public_name_follows_the_synthesized_cname() {
    let up = cluster_upstream();
    let resolv = resolv_conf("");
    let podns = pod_podns(&up, &resolv, &[]).await;
    let reply = ask(&podns, "files.pythonhosted.org.default.svc.cluster.local", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{reply}");
    let got: Vec<(String, String, String)> = answers(&reply).into_iter().map(|(o, t, d, _)| (o, t, d)).collect();
    let want = [
        ("files.pythonhosted.org.default.svc.cluster.local.", "CNAME", "files.pythonhosted.org."),
        ("files.pythonhosted.org.", "CNAME", "dualstack.python.map.fastly.net."),
        ("dualstack.python.map.fastly.net.", "A", "151.101.64.223"),
    ];
    let want: Vec<(String, String, String)> =
        want.iter().map(|(o, t, d)| (o.to_string(), t.to_string(), d.to_string())).collect();
    assert_eq!(got, want, "{reply}");
    let ttls: Vec<u32> = reply.answers.iter().map(|r| r.ttl).collect();
    assert!(ttls[0] <= ttls[1] && ttls[0] <= ttls[2], "the CNAME outlives no record it leads to: {ttls:?}");
    assert!(up.received_for("files.pythonhosted.org.default.svc.cluster.local").is_empty(), "collapsed, not forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_cluster_name_is_nxdomain_without_asking() {
    let up = cluster_upstream();
    let resolv = resolv_conf("");
    let podns = pod_podns(&up, &resolv, &[]).await;
    let impossible = search_metric(&podns, "impossible").await;
    let q = with_edns(query("PyPI.Org.Cluster.Local", RecordType::A), 1232);
    let reply = ask_udp(&podns, &q).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain, "{reply}");
    assert!(reply.answers.is_empty());
    assert_eq!(authority_soas(&reply).len(), 1, "NXDOMAIN with the cluster SOA: {reply}");
    assert_eq!(reply.authorities[0].name.to_ascii().to_ascii_lowercase(), "cluster.local.", "{reply}");
    assert!(reply.edns.is_some(), "an OPT for a query with one");
    assert!(reply.metadata.recursion_available, "RA set");
    assert!(asked(&up).is_empty(), "no upstream query at all: {:?}", asked(&up));
    podns.wait_metric("podns_search_total", &[("action", "impossible")], |v| v > impossible, REPLY_TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_names_are_forwarded_unchanged() {
    let up = cluster_upstream();
    let resolv = resolv_conf("");
    let podns = pod_podns(&up, &resolv, &[]).await;
    let forwarded = search_metric(&podns, "forwarded").await;

    // The walk of `kubernetes.default`: first under the namespace domain (NXDOMAIN, as cluster
    // DNS says), then under svc.cluster.local (the service).
    let reply = ask(&podns, "kubernetes.default.default.svc.cluster.local", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain, "{reply}");
    assert_eq!(authority_soas(&reply), vec![(30, 30)], "cluster DNS's own denial: {reply}");
    assert_eq!(up.received_for("kubernetes.default.default.svc.cluster.local").len(), 1, "forwarded");
    let reply = ask(&podns, "kubernetes.default.svc.cluster.local", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{reply}");
    assert_eq!(
        answers(&reply),
        vec![("kubernetes.default.svc.cluster.local.".into(), "A".into(), KUBERNETES.to_string(), 5)]
    );
    assert_eq!(up.received_for("kubernetes.default.svc.cluster.local").len(), 1, "forwarded");

    // A bare service name's first candidate, and the FQDN asked directly, in another case.
    let reply = ask(&podns, "Kubernetes.Default.SVC.cluster.local", RecordType::A).await;
    assert_eq!(a_records(&reply), vec![KUBERNETES]);
    let reply = ask(&podns, "kube-system.svc.cluster.local", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "a namespace: NODATA: {reply}");
    assert!(reply.answers.is_empty());
    assert!(
        asked(&up).iter().all(|q| q.contains("cluster.local")),
        "nothing outside the cluster was asked: {:?}",
        asked(&up)
    );
    podns.wait_metric("podns_search_total", &[("action", "forwarded")], |v| v >= forwarded + 2.0, REPLY_TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_named_like_a_tld_keeps_its_cluster_answers() {
    let up = cluster_upstream();
    let resolv = resolv_conf("");
    let podns = pod_podns(&up, &resolv, &[]).await;

    // `dev` is a namespace (its probe says NOERROR): web.dev is a cluster name, not web.dev.
    let reply = ask(&podns, "web.dev.default.svc.cluster.local", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain, "what cluster DNS says: {reply}");
    assert_eq!(authority_soas(&reply), vec![(30, 30)], "cluster DNS's own denial: {reply}");
    assert_eq!(up.received_for("web.dev.default.svc.cluster.local").len(), 1, "forwarded");

    let reply = ask(&podns, "web.dev.svc.cluster.local", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{reply}");
    assert_eq!(
        answers(&reply),
        vec![("web.dev.svc.cluster.local.".into(), "A".into(), WEB_DEV_SERVICE.to_string(), 5)],
        "the service web in namespace dev, not the public web.dev"
    );
    assert_eq!(up.received_for("web.dev.svc.cluster.local").len(), 1, "forwarded");
    assert!(up.received_for("web.dev").is_empty(), "the public web.dev was never asked");
    assert!(!a_records(&reply).contains(&WEB_DEV_PUBLIC));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonexistent_public_name_is_nxdomain_for_the_whole_walk() {
    let up = cluster_upstream();
    let resolv = resolv_conf("");
    let podns = pod_podns(&up, &resolv, &[]).await;
    // Probes for `org` cached from a first name, as a pod that resolved something before.
    ask(&podns, "pypi.org.default.svc.cluster.local", RecordType::A).await;
    let before = asked(&up);

    let reply = ask(&podns, "nonexistent-name.org.default.svc.cluster.local", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain, "{reply}");
    assert!(reply.answers.is_empty());
    assert_eq!(authority_soas(&reply).len(), 1, "a cacheable denial: {reply}");
    let mut new: Vec<String> = asked(&up);
    for b in &before {
        let i = new.iter().position(|n| n == b).expect("queries only grow");
        new.remove(i);
    }
    assert_eq!(new, vec!["nonexistent-name.org A".to_string()], "only the public name, the probes are known");
    for rest in ["nonexistent-name.org.svc.cluster.local", "nonexistent-name.org.cluster.local", "nonexistent-name.org"]
    {
        let reply = ask(&podns, rest, RecordType::A).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain, "{rest}: {reply}");
    }
    assert_eq!(asked(&up).len(), before.len() + 1, "the rest of the walk asks nothing: {:?}", asked(&up));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonexistent_public_name_with_fresh_probes() {
    let up = cluster_upstream();
    let resolv = resolv_conf("");
    let podns = pod_podns(&up, &resolv, &[]).await;
    let reply = ask(&podns, "nonexistent-name.org.default.svc.cluster.local", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain, "{reply}");
    assert_eq!(
        asked(&up),
        sorted(&["org.svc.cluster.local A", "org.default.svc.cluster.local A", "nonexistent-name.org A"]),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthesized_answer_too_big_for_udp_is_truncated_and_whole_over_tcp() {
    let up = cluster_upstream();
    let resolv = resolv_conf("");
    let podns = pod_podns(&up, &resolv, &[]).await;
    const NAME: &str = "big.example.org.default.svc.cluster.local";
    let q = query(NAME, RecordType::TXT);
    let raw = udp_exchange_raw(podns.addr(), &q).await;
    let h = raw_header(&raw);
    assert_eq!(h.id, q.metadata.id);
    assert!(raw.len() <= 512, "{} bytes to a client without EDNS", raw.len());
    assert!(h.tc, "TC set on an answer that does not fit 512 bytes");
    assert!(decode(&raw).edns.is_none(), "no OPT to a client without EDNS");

    let reply = tcp_query(podns.addr(), &q).await;
    assert!(!reply.metadata.truncation);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{reply}");
    let got = answers(&reply);
    assert_eq!((got[0].1.as_str(), got[0].2.as_str()), ("CNAME", "big.example.org."), "{reply}");
    assert_eq!(txt_of(&reply), txt_payload(TXT_SIZE), "the whole TXT data over TCP");

    // A UDP client advertising 4096 octets gets it whole over UDP.
    let reply = udp_query(podns.addr(), &with_edns(query(NAME, RecordType::TXT), 4096)).await;
    assert!(!reply.metadata.truncation, "{reply}");
    assert_eq!(txt_of(&reply), txt_payload(TXT_SIZE));
    assert!(reply.edns.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collapse_off_forwards_every_candidate() {
    let up = cluster_upstream();
    let resolv = resolv_conf("");
    let podns = pod_podns(&up, &resolv, &[("--collapse", "off")]).await;
    let candidates =
        ["pypi.org.default.svc.cluster.local", "pypi.org.svc.cluster.local", "pypi.org.cluster.local", "pypi.org"];
    for cand in candidates {
        let reply = ask(&podns, cand, RecordType::A).await;
        if cand == "pypi.org" {
            assert_eq!(answers(&reply), vec![("pypi.org.".into(), "A".into(), PYPI.to_string(), PYPI_TTL)]);
        } else {
            assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain, "{cand}: {reply}");
            assert_eq!(authority_soas(&reply), vec![(30, 30)], "{cand}: cluster DNS's own denial: {reply}");
        }
    }
    let want: Vec<String> = candidates.iter().map(|c| format!("{c} A")).collect();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(asked(&up), want_sorted, "every candidate forwarded as is, and no probe");
    assert_eq!(podns.metric("podns_search_total", &[]).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_cluster_search_domain_is_asked_before_the_public_name() {
    let up = cluster_upstream();
    up.on_suffix("corp.example", Reply::nxdomain(Rr::soa("corp.example", 60, 60)).action());
    exists(&up, "intranet.org.corp.example", "corp.example", vec![Rr::a(INTRANET_CORP)], vec![]);
    exists(&up, "intranet.org", "org", vec![Rr::a(INTRANET_PUBLIC)], vec![]);
    let resolv = resolv_conf("corp.example");
    let podns = pod_podns(&up, &resolv, &[]).await;

    let reply = ask(&podns, "intranet.org.default.svc.cluster.local", RecordType::A).await;
    assert_cname_to(&reply, "intranet.org.default.svc.cluster.local", "intranet.org.corp.example", INTRANET_CORP);
    // pypi.org.corp.example does not exist: the public name.
    let reply = ask(&podns, "pypi.org.default.svc.cluster.local", RecordType::A).await;
    assert_cname_to(&reply, "pypi.org.default.svc.cluster.local", "pypi.org", PYPI);
    assert_eq!(up.received_for("pypi.org.corp.example").len(), 1, "the corp candidate was asked");
    // The corp name itself, as the walk reaches it: its own answer.
    let reply = ask(&podns, "intranet.org.corp.example", RecordType::A).await;
    assert_eq!(
        answers(&reply),
        vec![("intranet.org.corp.example.".into(), "A".into(), INTRANET_CORP.to_string(), 60)],
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggressive_collapse_skips_non_cluster_search_domains() {
    let up = cluster_upstream();
    up.on_suffix("corp.example", Reply::nxdomain(Rr::soa("corp.example", 60, 60)).action());
    exists(&up, "intranet.org.corp.example", "corp.example", vec![Rr::a(INTRANET_CORP)], vec![]);
    exists(&up, "intranet.org", "org", vec![Rr::a(INTRANET_PUBLIC)], vec![]);
    let resolv = resolv_conf("corp.example");
    let podns = pod_podns(&up, &resolv, &[("--collapse", "aggressive")]).await;

    let reply = ask(&podns, "intranet.org.default.svc.cluster.local", RecordType::A).await;
    assert_cname_to(&reply, "intranet.org.default.svc.cluster.local", "intranet.org", INTRANET_PUBLIC);
    let reply = ask(&podns, "nonexistent-name.org.default.svc.cluster.local", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain, "{reply}");
    assert!(
        asked(&up).iter().all(|q| !q.contains("corp.example")),
        "no corp.example candidate asked: {:?}",
        asked(&up)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggressive_collapse_keeps_the_answer_of_an_existing_name_under_a_non_cluster_domain() {
    let up = cluster_upstream();
    up.on_suffix("corp.example", Reply::nxdomain(Rr::soa("corp.example", 60, 60)).action());
    exists(&up, "intranet.org.corp.example", "corp.example", vec![Rr::a(INTRANET_CORP)], vec![]);
    exists(&up, "intranet.org", "org", vec![Rr::a(INTRANET_PUBLIC)], vec![]);
    let resolv = resolv_conf("corp.example");
    let podns = pod_podns(&up, &resolv, &[("--collapse", "aggressive")]).await;
    // A name asked for itself (e.g. `intranet.org.corp.example.`, or the last, absolute step of
    // a walk): aggressive skips corp.example as a *candidate* for other names, but this name
    // exists and must keep its own records, not get intranet.org's.
    let reply = ask(&podns, "intranet.org.corp.example", RecordType::A).await;
    assert_eq!(
        answers(&reply),
        vec![("intranet.org.corp.example.".into(), "A".into(), INTRANET_CORP.to_string(), 60)],
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aaaa_handling_applies_to_the_collapsed_candidate() {
    let up = cluster_upstream();
    up.on("pypi.org", RecordType::AAAA, Action::Rcode(ResponseCode::ServFail));
    let resolv = resolv_conf("");
    let podns = pod_podns(&up, &resolv, &[]).await;
    let count = podns.metric("podns_synthesized_total", &[("type", "AAAA"), ("reason", "servfail")]).await;
    let reply = ask(&podns, "pypi.org.default.svc.cluster.local", RecordType::AAAA).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "NODATA, not SERVFAIL: {reply}");
    let got = answers(&reply);
    assert_eq!(got.len(), 1, "only the CNAME: {reply}");
    assert_eq!((got[0].1.as_str(), got[0].2.as_str()), ("CNAME", "pypi.org."), "{reply}");
    assert_eq!(authority_soas(&reply).len(), 1, "the synthesized SOA of pypi.org's NODATA: {reply}");
    // The public name asked directly (the end of the walk): the same NODATA, from the cache.
    let reply = ask(&podns, "pypi.org", RecordType::AAAA).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{reply}");
    assert!(reply.answers.is_empty(), "{reply}");
    podns
        .wait_metric(
            "podns_synthesized_total",
            &[("type", "AAAA"), ("reason", "servfail")],
            |v| v > count,
            REPLY_TIMEOUT,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collapse_lookup_shares_the_clients_exchange_in_flight() {
    let up = cluster_upstream();
    let gate = Gate::new();
    up.on("pypi.org", RecordType::A, Action::gated(&gate, Reply::answer(vec![Rr::a(PYPI).ttl(PYPI_TTL)]).action()));
    let resolv = resolv_conf("");
    let podns = pod_podns(&up, &resolv, &[("--attempt-timeout", "3s"), ("--query-timeout", "4s")]).await;
    let addr = podns.addr();
    let direct = tokio::spawn(async move { udp_query(addr, &query("pypi.org", RecordType::A)).await });
    up.wait_received("pypi.org", 1, REPLY_TIMEOUT).await;
    let searched =
        tokio::spawn(async move { udp_query(addr, &query("pypi.org.default.svc.cluster.local", RecordType::A)).await });
    // The collapse's lookup of pypi.org joins the client's exchange (or, failing that, shows up
    // as a second query upstream).
    podns.wait_metric("podns_coalesced_total", &[], |v| v >= 1.0, REPLY_TIMEOUT).await;
    gate.open();
    let direct = direct.await.expect("client task");
    let searched = searched.await.expect("client task");
    assert_eq!(a_records(&direct), vec![PYPI]);
    assert_cname_to(&searched, "pypi.org.default.svc.cluster.local", "pypi.org", PYPI);
    assert_eq!(up.received_for("pypi.org").len(), 1, "one upstream query for both");
}

/// A node search domain that answers NOERROR with no data for every name under it (an MX
/// wildcard; some cloud and router resolvers), as kubelet appends it to the pod's search list.
fn nodata_node_domain(up: &Upstream) -> TempFile {
    up.on_suffix("nodata.example", Reply::nodata(Rr::soa("nodata.example", 60, 60)).action());
    resolv_conf("nodata.example")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodata_search_candidate_is_skipped_like_nxdomain() {
    // glibc skips a NODATA candidate on its own walk; a CNAME to it (ANCOUNT > 0) would end the
    // walk on a name without addresses (issue 10). A and AAAA choose the same candidate.
    let up = cluster_upstream();
    let resolv = nodata_node_domain(&up);
    let podns = pod_podns(&up, &resolv, &[]).await;
    let reply = ask(&podns, "pypi.org.default.svc.cluster.local", RecordType::A).await;
    assert_cname_to(&reply, "pypi.org.default.svc.cluster.local", "pypi.org", PYPI);
    let reply = ask(&podns, "pypi.org.default.svc.cluster.local", RecordType::AAAA).await;
    let got = answers(&reply);
    assert_eq!(got[0].2, "pypi.org.", "AAAA: the same owner: {reply}");
    assert_eq!(got[1].2, PYPI_V6.to_string());
    // An IPv4-only name: NODATA for AAAA, from its owner, not from the node domain.
    let reply = ask(&podns, "files.pythonhosted.org.default.svc.cluster.local", RecordType::AAAA).await;
    let got = answers(&reply);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{reply}");
    assert_eq!(got[0].2, "files.pythonhosted.org.", "CNAME to the owner of the A record: {reply}");
    assert!(got.iter().all(|r| r.1 != "AAAA"));
    // The node domain's own name keeps its own answer.
    let reply = ask(&podns, "pypi.org.nodata.example", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{reply}");
    assert!(reply.answers.is_empty(), "its own NODATA: {reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_are_asked_one_at_a_time_in_the_clients_order() {
    // The walk stops at the owner: a later candidate is never asked when an earlier one has the
    // data, so the collapse costs no more queries than the client's own walk.
    let up = cluster_upstream();
    up.on_suffix("corp.example", Reply::nxdomain(Rr::soa("corp.example", 60, 60)).action());
    exists(&up, "intranet.example.com.corp.example", "corp.example", vec![Rr::a(INTRANET_CORP)], vec![]);
    let resolv = resolv_conf("corp.example lab.example");
    let podns = pod_podns(&up, &resolv, &[]).await;
    let reply = ask(&podns, "intranet.example.com.default.svc.cluster.local", RecordType::A).await;
    assert_cname_to(
        &reply,
        "intranet.example.com.default.svc.cluster.local",
        "intranet.example.com.corp.example",
        INTRANET_CORP,
    );
    let asked = asked(&up);
    assert!(asked.contains(&"intranet.example.com.corp.example A".to_string()), "{asked:?}");
    assert!(
        !asked.iter().any(|q| q.starts_with("intranet.example.com.lab.example") || q == "intranet.example.com A"),
        "no candidate after the owner was asked: {asked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_candidate_is_passed_but_never_becomes_nxdomain() {
    // glibc goes on past a SERVFAIL candidate; so does the collapse. With no owner after it,
    // the answer is SERVFAIL, not a claim that the name is missing.
    let up = cluster_upstream();
    up.on_suffix("broken.example", Action::Rcode(ResponseCode::ServFail));
    let resolv = resolv_conf("broken.example");
    let podns = pod_podns(&up, &resolv, &[]).await;
    let reply = ask(&podns, "pypi.org.default.svc.cluster.local", RecordType::A).await;
    assert_cname_to(&reply, "pypi.org.default.svc.cluster.local", "pypi.org", PYPI);
    let reply = ask(&podns, "nothing.example.org.default.svc.cluster.local", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail, "{reply}");
}
