//! End-to-end tests of the AAAA handling: an AAAA (or other synthesized type) the upstream
//! fails is answered from the A outcome for the same name — NODATA, NXDOMAIN or SERVFAIL — and
//! the `--aaaa` modes, `--aaaa-nodata-for` rules and `--synthesize-types`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::support::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

const V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20);

/// podns on `up`, with the search collapse off so the host's resolv.conf plays no part.
fn podns_for(up: &Upstream) -> PodnsBuilder {
    PodnsBuilder::new().upstream(up.addr).arg("--collapse", "off")
}

/// Scripts `name`: A answers [`V4`], `qtype` gets `failure`.
fn a_ok_but(up: &Upstream, name: &str, qtype: RecordType, failure: Action) {
    up.on(name, RecordType::A, Reply::answer(vec![Rr::a(V4)]).action());
    up.on(name, qtype, failure);
}

/// Scripts `name` as nonexistent (NXDOMAIN with an SOA) for A.
fn a_nxdomain(up: &Upstream, name: &str) {
    up.on(name, RecordType::A, Reply::nxdomain(Rr::soa("example.com", 60, 60)).action());
}

/// Sends `q` over UDP; returns the raw reply and its parsed form.
async fn ask(podns: &Podns, q: &Message) -> (Vec<u8>, Message) {
    let raw = udp_exchange_raw(podns.addr(), q).await;
    let reply = decode(&raw);
    assert_eq!(reply.metadata.id, q.metadata.id, "reply ID");
    (raw, reply)
}

/// Checks a synthesized NODATA: NOERROR, no answers, one SOA with TTL and MINIMUM `ttl`, the
/// question in the client's case, an OPT iff the query had one, RA set.
fn assert_synth_nodata(q: &Message, raw: &[u8], reply: &Message, ttl: u32) {
    let name = q.queries[0].name.to_ascii();
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{name}: {reply}");
    assert!(reply.answers.is_empty(), "{name}: NODATA has no answers: {reply}");
    assert_eq!(authority_soas(reply), vec![(ttl, ttl)], "{name}: one SOA, TTL and MINIMUM {ttl}: {reply}");
    assert_eq!(reply.authorities.len(), 1, "{name}: only the SOA in authority: {reply}");
    assert_eq!(raw_question(raw), raw_question(&encode(q)), "{name}: the question in the client's letter case");
    assert_eq!(reply.edns.is_some(), q.edns.is_some(), "{name}: an OPT exactly when the query had one: {reply}");
    assert!(reply.metadata.recursion_available, "{name}: RA set");
}

async fn synthesized(podns: &Podns, qtype: &str, reason: &str) -> f64 {
    podns.metric("podns_synthesized_total", &[("type", qtype), ("reason", reason)]).await
}

/// The AAAA of an existing name fails upstream with `rcode`: NODATA synthesized, counted with
/// `reason`; with and without EDNS in the query.
async fn failed_aaaa_becomes_nodata(rcode: ResponseCode, reason: &str, synth_ttl: Option<u32>) {
    let up = Upstream::start();
    let names = [format!("{reason}-edns.example.com"), format!("{reason}-plain.example.com")];
    for n in &names {
        a_ok_but(&up, n, RecordType::AAAA, Action::Rcode(rcode));
    }
    let mut b = podns_for(&up);
    if let Some(t) = synth_ttl {
        b = b.arg("--synth-ttl", &format!("{t}s"));
    }
    let podns = b.start().await;
    let ttl = synth_ttl.unwrap_or(30);
    let count = synthesized(&podns, "AAAA", reason).await;
    let answers = podns.metric("podns_responses_total", &[("rcode", "NOERROR"), ("source", "synthesized")]).await;

    for (n, edns) in [(&names[0], true), (&names[1], false)] {
        let mixed: String =
            n.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c }).collect();
        let q = query(&mixed, RecordType::AAAA);
        let q = if edns { with_edns(q, 1232) } else { q };
        let (raw, reply) = ask(&podns, &q).await;
        assert_synth_nodata(&q, &raw, &reply, ttl);
        assert!(
            up.received_for(n).iter().any(|r| r.qtype == RecordType::AAAA),
            "{n}: the AAAA query was forwarded first"
        );
    }
    podns
        .wait_metric(
            "podns_synthesized_total",
            &[("type", "AAAA"), ("reason", reason)],
            |v| v >= count + 2.0,
            REPLY_TIMEOUT,
        )
        .await;
    podns
        .wait_metric(
            "podns_responses_total",
            &[("rcode", "NOERROR"), ("source", "synthesized")],
            |v| v >= answers + 2.0,
            REPLY_TIMEOUT,
        )
        .await;

    // The synthesized answers are cached: asked again (the other way round for EDNS, in lower
    // case), they come back shaped for the new query without another AAAA query upstream.
    let aaaa_asked = || up.received().iter().filter(|r| r.qtype == RecordType::AAAA).count();
    let before = aaaa_asked();
    let cached = podns.metric("podns_responses_total", &[("rcode", "NOERROR"), ("source", "cache")]).await;
    for (n, edns) in [(&names[0], false), (&names[1], true)] {
        let q = query(n, RecordType::AAAA);
        let q = if edns { with_edns(q, 1232) } else { q };
        let (raw, reply) = ask(&podns, &q).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{n}: {reply}");
        assert!(reply.answers.is_empty(), "{n}: {reply}");
        let soas = authority_soas(&reply);
        assert!(soas.len() == 1 && soas[0].0 <= ttl, "{n}: cached SOA, TTL at most {ttl}: {reply}");
        assert_eq!(raw_question(&raw), raw_question(&encode(&q)), "{n}: the question in this client's case");
        assert_eq!(reply.edns.is_some(), edns, "{n}: an OPT exactly when this query had one: {reply}");
    }
    assert_eq!(aaaa_asked(), before, "answered from the cache");
    podns
        .wait_metric(
            "podns_responses_total",
            &[("rcode", "NOERROR"), ("source", "cache")],
            |v| v >= cached + 2.0,
            REPLY_TIMEOUT,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aaaa_servfail_for_an_existing_name_becomes_nodata() {
    failed_aaaa_becomes_nodata(ResponseCode::ServFail, "servfail", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aaaa_refused_for_an_existing_name_becomes_nodata_with_the_synth_ttl() {
    failed_aaaa_becomes_nodata(ResponseCode::Refused, "refused", Some(7)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aaaa_servfail_for_a_missing_name_becomes_nxdomain() {
    let up = Upstream::start();
    a_nxdomain(&up, "gone.example.com");
    up.on("gone.example.com", RecordType::AAAA, Action::Rcode(ResponseCode::ServFail));
    let podns = podns_for(&up).start().await;
    let q = query("Gone.Example.Com", RecordType::AAAA);
    let (raw, reply) = ask(&podns, &q).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain, "{reply}");
    assert!(reply.answers.is_empty());
    assert_eq!(raw_question(&raw), raw_question(&encode(&q)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aaaa_and_a_both_servfail_is_servfail() {
    // The name may exist outside the cluster and its upstream may be down: SERVFAIL, honestly
    // (a NODATA would turn glibc's EAI_AGAIN into EAI_NONAME).
    let up = Upstream::start();
    up.on_name("broken.example.com", Action::Rcode(ResponseCode::ServFail));
    let podns = podns_for(&up).start().await;
    let (_, reply) = ask(&podns, &query("broken.example.com", RecordType::AAAA)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail, "{reply}");
    assert!(reply.answers.is_empty() && reply.authorities.is_empty(), "{reply}");
    assert!(
        up.received_for("broken.example.com").iter().any(|r| r.qtype == RecordType::A),
        "the A outcome was looked up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_cluster_name_the_upstream_refuses_gets_short_nodata_for_aaaa() {
    // An air-gapped cluster answers SERVFAIL for `kubernetes.default.`, the last candidate of the
    // walk for `kubernetes.default`: c-ares < 1.16 walks every candidate for AAAA first and
    // fails on that SERVFAIL although the service's A exists; a 5 s NODATA lets it fall back to
    // its A walk (issue 10). `default` is the pod's namespace (from the search list).
    let up = Upstream::start();
    up.on_name("kubernetes.default", Action::Rcode(ResponseCode::ServFail));
    let resolv = TempFile::new(
        "resolv.conf",
        "nameserver 127.0.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
    );
    let podns = PodnsBuilder::new().upstream(up.addr).arg("--resolv-conf", resolv.path_str()).start().await;
    let before = synthesized(&podns, "AAAA", "servfail").await;
    let q = query("kubernetes.default", RecordType::AAAA);
    let (raw, reply) = ask(&podns, &q).await;
    assert_synth_nodata(&q, &raw, &reply, 5);
    podns
        .wait_metric(
            "podns_synthesized_total",
            &[("type", "AAAA"), ("reason", "servfail")],
            |v| v >= before + 1.0,
            REPLY_TIMEOUT,
        )
        .await;
    let (_, a) = ask(&podns, &query("kubernetes.default", RecordType::A)).await;
    assert_eq!(a.metadata.response_code, ResponseCode::ServFail, "A keeps its failure: {a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aaaa_and_a_both_silent_is_servfail() {
    // Nothing answers: cluster DNS may be down, and "no such name" would be a lie applications
    // keep (glibc's EAI_NONAME instead of EAI_AGAIN).
    let up = Upstream::start();
    up.on_name("silent.example.com", Action::Drop);
    let podns = podns_for(&up).arg("--attempt-timeout", "200ms").arg("--query-timeout", "500ms").start().await;
    let (_, reply) = ask(&podns, &query("silent.example.com", RecordType::AAAA)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail, "{reply}");
    assert!(reply.answers.is_empty() && reply.authorities.is_empty(), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_aaaa_after_a_answered_becomes_short_nodata_within_the_budget() {
    const NAME: &str = "silent.example.com";
    let up = Upstream::start();
    a_ok_but(&up, NAME, RecordType::AAAA, Action::Drop);
    let podns = podns_for(&up).start().await;
    let count = synthesized(&podns, "AAAA", "timeout").await;

    let a = udp_query(podns.addr(), &query(NAME, RecordType::A)).await;
    assert_eq!(a_records(&a), vec![V4]);
    let q = query(NAME, RecordType::AAAA);
    let started = Instant::now();
    let (raw, reply) = ask(&podns, &q).await;
    let took = started.elapsed();
    // Spec bound: --aaaa-timeout (400 ms) once A is known, well within the 2 s budget.
    assert!(took < Duration::from_millis(1500), "NODATA took {took:?}; the 2 s budget is not to be waited out");
    assert_synth_nodata(&q, &raw, &reply, 5);
    assert!(up.received_for(NAME).iter().any(|r| r.qtype == RecordType::AAAA), "the AAAA was asked");
    podns
        .wait_metric(
            "podns_synthesized_total",
            &[("type", "AAAA"), ("reason", "timeout")],
            |v| v >= count + 1.0,
            REPLY_TIMEOUT,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodata_mode_never_asks_aaaa_upstream() {
    let up = Upstream::start();
    up.on("v4only.example.com", RecordType::A, Reply::answer(vec![Rr::a(V4)]).action());
    a_nxdomain(&up, "missing.example.com");
    let podns = podns_for(&up).arg("--aaaa", "nodata").start().await;
    let count = synthesized(&podns, "AAAA", "no_ipv6").await;

    let q = with_edns(query("V4only.example.com", RecordType::AAAA), 1232);
    let (raw, reply) = ask(&podns, &q).await;
    assert_synth_nodata(&q, &raw, &reply, 30);
    let (_, reply) = ask(&podns, &query("missing.example.com", RecordType::AAAA)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain, "{reply}");
    assert!(reply.answers.is_empty());

    assert!(up.received().iter().all(|r| r.qtype != RecordType::AAAA), "no AAAA query reached the upstream");
    assert_eq!(up.received_for("v4only.example.com").len(), 1, "only the A query");
    podns
        .wait_metric(
            "podns_synthesized_total",
            &[("type", "AAAA"), ("reason", "no_ipv6")],
            |v| v >= count + 2.0,
            REPLY_TIMEOUT,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_mode_passes_servfail_through() {
    let up = Upstream::start();
    a_ok_but(&up, "sf.example.com", RecordType::AAAA, Action::Rcode(ResponseCode::ServFail));
    let podns = podns_for(&up).arg("--aaaa", "forward").start().await;
    let (_, reply) = ask(&podns, &query("sf.example.com", RecordType::AAAA)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail, "{reply}");
    assert!(
        up.received_for("sf.example.com").iter().all(|r| r.qtype == RecordType::AAAA),
        "plain forwarding asks nothing else"
    );
    assert_eq!(podns.metric("podns_synthesized_total", &[]).await, 0.0, "nothing synthesized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodata_for_rules_answer_matching_names_without_asking_aaaa() {
    let up = Upstream::start();
    for n in ["db.example.com", "example.com", "postgresql-primary.data.svc", "web.example.net"] {
        up.on(n, RecordType::A, Reply::answer(vec![Rr::a(V4)]).action());
        up.on(n, RecordType::AAAA, Reply::answer(vec![Rr::aaaa(V6)]).action());
    }
    let podns = podns_for(&up)
        .arg("--aaaa-nodata-for", "example.com")
        .arg("--aaaa-nodata-for", r"^postgresql-primary\.")
        .start()
        .await;
    let count = synthesized(&podns, "AAAA", "rule").await;

    for n in ["DB.Example.com", "example.com", "postgresql-primary.data.svc"] {
        let q = with_edns(query(n, RecordType::AAAA), 1232);
        let (raw, reply) = ask(&podns, &q).await;
        assert_synth_nodata(&q, &raw, &reply, 30);
        assert!(
            up.received_for(n).iter().all(|r| r.qtype != RecordType::AAAA),
            "{n}: a matching name gets no AAAA query upstream"
        );
    }
    // Not matching: neither a suffix (example.net, notexample.com would be) nor the regex.
    let (_, reply) = ask(&podns, &query("web.example.net", RecordType::AAAA)).await;
    let v6: Vec<Ipv6Addr> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
        .collect();
    assert_eq!(v6, vec![V6], "a non-matching name is forwarded: {reply}");
    assert_eq!(up.received_for("web.example.net").len(), 1);
    podns
        .wait_metric(
            "podns_synthesized_total",
            &[("type", "AAAA"), ("reason", "rule")],
            |v| v >= count + 3.0,
            REPLY_TIMEOUT,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_synthesized_when_listed_in_synthesize_types() {
    const NAME: &str = "svc-https.example.com";
    let up = Upstream::start();
    a_ok_but(&up, NAME, RecordType::HTTPS, Action::Rcode(ResponseCode::ServFail));
    up.on(NAME, RecordType::AAAA, Action::Rcode(ResponseCode::ServFail));
    let podns = podns_for(&up).arg("--synthesize-types", "AAAA,HTTPS").start().await;
    let count = synthesized(&podns, "HTTPS", "servfail").await;
    for qtype in [RecordType::HTTPS, RecordType::AAAA] {
        let q = query(NAME, qtype);
        let (raw, reply) = ask(&podns, &q).await;
        assert_synth_nodata(&q, &raw, &reply, 30);
        assert_eq!(reply.queries[0].query_type, qtype);
    }
    podns
        .wait_metric(
            "podns_synthesized_total",
            &[("type", "HTTPS"), ("reason", "servfail")],
            |v| v >= count + 1.0,
            REPLY_TIMEOUT,
        )
        .await;

    // Without the flag, HTTPS is plain forwarding: the SERVFAIL passes through.
    let plain = podns_for(&up).start().await;
    let (_, reply) = ask(&plain, &query(NAME, RecordType::HTTPS)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_aaaa_passes_through_untouched() {
    const NAME: &str = "dual.example.com";
    let up = Upstream::start();
    up.on(NAME, RecordType::AAAA, Reply::answer(vec![Rr::aaaa(V6).ttl(123)]).action());
    let podns = podns_for(&up).start().await;
    let q = with_edns(query("Dual.Example.Com", RecordType::AAAA), 1232);
    let (raw, reply) = ask(&podns, &q).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(reply.answers.len(), 1, "{reply}");
    assert_eq!(reply.answers[0].data, RData::AAAA(V6.into()));
    assert_eq!(reply.answers[0].ttl, 123);
    assert!(reply.authorities.is_empty(), "nothing added: {reply}");
    assert_eq!(raw_question(&raw), raw_question(&encode(&q)));
    let seen = up.received_for(NAME);
    assert_eq!(seen.len(), 1, "only the AAAA query itself");
    assert_eq!(seen[0].qtype, RecordType::AAAA);
    assert_eq!(podns.metric("podns_synthesized_total", &[]).await, 0.0, "nothing synthesized");
    podns
        .wait_metric(
            "podns_responses_total",
            &[("rcode", "NOERROR"), ("source", "upstream")],
            |v| v >= 1.0,
            REPLY_TIMEOUT,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_outcome_in_flight_is_shared_with_the_clients_a_query() {
    const NAME: &str = "inflight.example.com";
    let up = Upstream::start();
    let gate = Gate::new();
    up.on(NAME, RecordType::A, Action::gated(&gate, Reply::answer(vec![Rr::a(V4)]).action()));
    up.on(NAME, RecordType::AAAA, Action::Rcode(ResponseCode::ServFail));
    let podns = podns_for(&up).arg("--attempt-timeout", "3s").arg("--query-timeout", "4s").start().await;
    let addr = podns.addr();
    // As getaddrinfo does: A and AAAA together.
    let a = tokio::spawn(async move { udp_query(addr, &query(NAME, RecordType::A)).await });
    let aaaa = tokio::spawn(async move { udp_query(addr, &query(NAME, RecordType::AAAA)).await });
    // The AAAA fails at once; its fallback joins the client's A query in flight.
    podns.wait_metric("podns_coalesced_total", &[], |v| v >= 1.0, REPLY_TIMEOUT).await;
    gate.open();
    let a = a.await.expect("client task");
    let aaaa = aaaa.await.expect("client task");
    assert_eq!(a_records(&a), vec![V4]);
    assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError, "{aaaa}");
    assert!(aaaa.answers.is_empty());
    assert_eq!(authority_soas(&aaaa), vec![(30, 30)]);
    let a_queries = up.received_for(NAME).iter().filter(|r| r.qtype == RecordType::A).count();
    assert_eq!(a_queries, 1, "one A query upstream for the client and the AAAA fallback");
}
