//! End-to-end tests of the answer cache: hits with the client's ID and letter case, negative
//! caching (RFC 2308), the DO/CD key, `--cache-size 0`, coalescing of identical queries in
//! flight, serve-stale (RFC 8767), and replies that must never be cached.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::support::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::task::JoinSet;

const PYPI: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const HOT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const STALE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);
const GOOD: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 13);

/// podns on `up`, with the search collapse off so the host's resolv.conf plays no part.
fn podns_for(up: &Upstream) -> PodnsBuilder {
    PodnsBuilder::new().upstream(up.addr).arg("--collapse", "off")
}

/// TTLs of the answer records of `reply`.
fn answer_ttls(reply: &Message) -> Vec<u32> {
    reply.answers.iter().map(|r| r.ttl).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_query_is_answered_from_the_cache_with_the_clients_id_and_case() {
    let up = Upstream::start();
    up.on("pypi.org", RecordType::A, Reply::answer(vec![Rr::a(PYPI).ttl(300)]).action());
    let podns = podns_for(&up).start().await;

    let first = udp_query(podns.addr(), &query("pypi.org", RecordType::A)).await;
    assert_eq!(first.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&first), vec![PYPI]);
    assert_eq!(up.received_for("pypi.org").len(), 1, "the first query goes upstream");

    let cache_answers = podns.metric("podns_responses_total", &[("rcode", "NOERROR"), ("source", "cache")]).await;
    let hits = podns.metric("podns_cache_hits_total", &[("kind", "success")]).await;

    // Another client, another ID, another letter case, over UDP and then TCP.
    for (name, tcp) in [("PyPI.Org", false), ("PYPI.ORG", true)] {
        let mut q = query(name, RecordType::A);
        q.metadata.id = first.metadata.id.wrapping_add(0x5a5a);
        let raw = if tcp {
            let mut c = TcpClient::connect(podns.addr()).await;
            c.send(&q).await;
            c.recv_raw().await
        } else {
            udp_exchange_raw(podns.addr(), &q).await
        };
        assert_eq!(raw_header(&raw).id, q.metadata.id, "{name}: the client's own ID");
        assert_eq!(
            String::from_utf8_lossy(&raw_question(&raw)),
            String::from_utf8_lossy(&raw_question(&encode(&q))),
            "{name}: the question in the client's letter case"
        );
        let reply = decode(&raw);
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{name}");
        assert_eq!(a_records(&reply), vec![PYPI], "{name}");
        for ttl in answer_ttls(&reply) {
            assert!(ttl <= 300, "{name}: cached TTL {ttl} above the original 300");
        }
    }
    assert_eq!(up.received_for("pypi.org").len(), 1, "repeats are answered from the cache, not upstream");
    podns
        .wait_metric(
            "podns_responses_total",
            &[("rcode", "NOERROR"), ("source", "cache")],
            |v| v >= cache_answers + 2.0,
            REPLY_TIMEOUT,
        )
        .await;
    podns.wait_metric("podns_cache_hits_total", &[("kind", "success")], |v| v >= hits + 2.0, REPLY_TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_are_cached_for_the_soa_minimum_and_only_with_an_soa() {
    let up = Upstream::start();
    up.on("nx.example.com", RecordType::A, Reply::nxdomain(Rr::soa("example.com", 60, 10)).action());
    up.on("nosoa.example.com", RecordType::A, Action::Rcode(ResponseCode::NXDomain));
    up.on("nodata.example.com", RecordType::MX, Reply::nodata(Rr::soa("example.com", 60, 10)).action());
    let podns = podns_for(&up).start().await;

    // NXDOMAIN with an SOA (TTL 60, MINIMUM 10): cached for min(60, 10).
    let first = udp_query(podns.addr(), &query("nx.example.com", RecordType::A)).await;
    assert_eq!(first.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(authority_soas(&first).len(), 1, "the upstream's SOA reaches the client: {first}");
    let denials = podns.metric("podns_cache_hits_total", &[("kind", "denial")]).await;
    let again = udp_query(podns.addr(), &query("Nx.Example.Com", RecordType::A)).await;
    assert_eq!(again.metadata.response_code, ResponseCode::NXDomain);
    let soas = authority_soas(&again);
    assert_eq!(soas.len(), 1, "the cached denial keeps its SOA: {again}");
    assert!(soas[0].0 <= 10, "cached SOA TTL {} exceeds the negative TTL min(60, MINIMUM 10)", soas[0].0);
    assert_eq!(up.received_for("nx.example.com").len(), 1, "the second NXDOMAIN came from the cache");
    podns.wait_metric("podns_cache_hits_total", &[("kind", "denial")], |v| v >= denials + 1.0, REPLY_TIMEOUT).await;

    // NODATA with an SOA: cached the same way.
    let first = udp_query(podns.addr(), &query("nodata.example.com", RecordType::MX)).await;
    assert_eq!(first.metadata.response_code, ResponseCode::NoError);
    assert!(first.answers.is_empty());
    let again = udp_query(podns.addr(), &query("nodata.example.com", RecordType::MX)).await;
    assert_eq!(again.metadata.response_code, ResponseCode::NoError);
    let soas = authority_soas(&again);
    assert!(soas.len() == 1 && soas[0].0 <= 10, "cached NODATA with its SOA, TTL at most 10: {again}");
    assert_eq!(up.received_for("nodata.example.com").len(), 1, "the second NODATA came from the cache");

    // NXDOMAIN without an SOA: no negative TTL, not cached (RFC 2308 §5).
    for i in 1..=2 {
        let reply = udp_query(podns.addr(), &query("nosoa.example.com", RecordType::A)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(up.received_for("nosoa.example.com").len(), i, "query {i}: an NXDOMAIN without SOA is not cached");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_is_remembered_for_servfail_ttl() {
    // RFC 9520 §3.2: a failure is cached (5 s by default), so a client's retries do not reach a
    // failing upstream again; with --servfail-ttl 0 every query goes upstream.
    let up = Upstream::start();
    up.on("sf.example.com", RecordType::A, Action::Rcode(ResponseCode::ServFail));
    let podns = podns_for(&up).start().await;
    let forgetful = podns_for(&up).arg("--servfail-ttl", "0s").start().await;
    let reply = udp_query(podns.addr(), &query("sf.example.com", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    let after_first = up.received_for("sf.example.com").len();
    assert_eq!(after_first, 1, "one upstream answered SERVFAIL: it is not asked the same question again");
    let reply = udp_query(podns.addr(), &query("sf.example.com", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(up.received_for("sf.example.com").len(), after_first, "the retry met the remembered failure");

    for i in 1..=2 {
        let reply = udp_query(forgetful.addr(), &query("sf.example.com", RecordType::A)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(
            up.received_for("sf.example.com").len(),
            after_first + i,
            "--servfail-ttl 0: query {i} went upstream"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn do_and_cd_bits_are_cached_separately() {
    let up = Upstream::start();
    const NAME: &str = "sec.example.com";
    up.on(NAME, RecordType::A, Reply::answer(vec![Rr::a(PYPI).ttl(300)]).action());
    let podns = podns_for(&up).start().await;
    let ask = |m: Message| {
        let addr = podns.addr();
        async move { udp_query(addr, &m).await }
    };

    let plain = ask(with_edns(query(NAME, RecordType::A), 1232)).await;
    assert_eq!(a_records(&plain), vec![PYPI]);
    assert_eq!(up.received_for(NAME).len(), 1);

    // DO after a query without DO: another key, upstream again, with DO set.
    let dnssec = ask(with_do(query(NAME, RecordType::A))).await;
    assert_eq!(a_records(&dnssec), vec![PYPI]);
    let seen = up.received_for(NAME);
    assert_eq!(seen.len(), 2, "a DO query is not answered from the non-DO entry");
    let upstream_do = decode(&seen[1].raw).edns.map(|e| e.flags().dnssec_ok);
    assert_eq!(upstream_do, Some(true), "the DO bit is forwarded");
    ask(with_do(query(NAME, RecordType::A))).await;
    assert_eq!(up.received_for(NAME).len(), 2, "the DO entry is reused for DO queries");

    // CD: another key again.
    let cd = ask(with_cd(with_edns(query(NAME, RecordType::A), 1232))).await;
    assert_eq!(a_records(&cd), vec![PYPI]);
    let seen = up.received_for(NAME);
    assert_eq!(seen.len(), 3, "a CD query is not answered from the non-CD entries");
    assert!(decode(&seen[2].raw).metadata.checking_disabled, "the CD bit is forwarded");
    ask(with_cd(with_edns(query(NAME, RecordType::A), 1232))).await;
    assert_eq!(up.received_for(NAME).len(), 3, "the CD entry is reused for CD queries");

    // Without EDNS at all: DO and CD clear, the first entry; no OPT for a client that sent none.
    let bare = ask(query(NAME, RecordType::A)).await;
    assert_eq!(a_records(&bare), vec![PYPI]);
    assert!(bare.edns.is_none(), "no OPT to a client without EDNS: {bare}");
    assert_eq!(up.received_for(NAME).len(), 3, "answered from the DO=0 CD=0 entry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_size_zero_disables_the_cache() {
    let up = Upstream::start();
    up.on("pypi.org", RecordType::A, Reply::answer(vec![Rr::a(PYPI).ttl(300)]).action());
    let podns = podns_for(&up).arg("--cache-size", "0").start().await;
    for i in 1..=3 {
        let reply = udp_query(podns.addr(), &query("pypi.org", RecordType::A)).await;
        assert_eq!(a_records(&reply), vec![PYPI]);
        assert_eq!(up.received_for("pypi.org").len(), i, "query {i} went upstream");
    }
    let text = podns.metrics_text().await;
    assert_eq!(metric_sum(&text, "podns_responses_total", &[("source", "cache")]).unwrap_or(0.0), 0.0, "{text}");
    assert_eq!(metric_sum(&text, "podns_cache_hits_total", &[]).unwrap_or(0.0), 0.0, "{text}");
}

/// 50 clients (each its own socket) ask the same question while the upstream holds its answer
/// back: the upstream must see one query and every client must get the answer.
async fn concurrent_identical_queries_share_one_exchange(extra: &[(&str, &str)]) {
    const CLIENTS: usize = 50;
    const NAME: &str = "hot.example.com";
    let up = Upstream::start();
    let gate = Gate::new();
    up.on(NAME, RecordType::A, Action::gated(&gate, Reply::answer(vec![Rr::a(HOT)]).action()));
    // Attempts long enough that no retry happens while the clients gather.
    let mut b = podns_for(&up).arg("--attempt-timeout", "3s").arg("--query-timeout", "4s");
    for (flag, value) in extra {
        b = b.arg(flag, value);
    }
    let podns = b.start().await;
    let mut clients = JoinSet::new();
    for _ in 0..CLIENTS {
        let addr = podns.addr();
        clients.spawn(async move { udp_query(addr, &query(NAME, RecordType::A)).await });
    }
    // Release the answer once every other client joined the first one's exchange (or as soon
    // as a second exchange shows that they did not).
    let deadline = Instant::now() + Duration::from_millis(2500);
    loop {
        let joined = podns.metric("podns_coalesced_total", &[]).await;
        if joined >= (CLIENTS - 1) as f64 || up.received_for(NAME).len() > 1 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gate.open();
    let mut answered = 0;
    while let Some(reply) = clients.join_next().await {
        let reply = reply.expect("client task");
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{reply}");
        assert_eq!(a_records(&reply), vec![HOT]);
        answered += 1;
    }
    assert_eq!(answered, CLIENTS);
    assert_eq!(up.received_for(NAME).len(), 1, "{CLIENTS} identical queries in flight share one upstream query");
    let joined = podns.metric("podns_coalesced_total", &[]).await;
    assert!(joined >= 1.0, "podns_coalesced_total = {joined}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_queries_in_flight_are_coalesced() {
    concurrent_identical_queries_share_one_exchange(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_queries_in_flight_are_coalesced_without_a_cache() {
    concurrent_identical_queries_share_one_exchange(&[("--cache-size", "0")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_answer_is_served_stale_when_the_upstream_fails() {
    const NAME: &str = "stale.example.com";
    let up = Upstream::start();
    up.on(NAME, RecordType::A, Reply::answer(vec![Rr::a(STALE).ttl(1)]).action());
    let fast = |b: PodnsBuilder| b.arg("--attempt-timeout", "200ms").arg("--query-timeout", "500ms");
    let stale = fast(podns_for(&up)).start().await;
    let strict = fast(podns_for(&up)).arg("--serve-stale", "0").start().await;
    for p in [&stale, &strict] {
        let reply = udp_query(p.addr(), &query(NAME, RecordType::A)).await;
        assert_eq!(a_records(&reply), vec![STALE]);
        assert_eq!(answer_ttls(&reply), vec![1]);
    }
    assert_eq!(up.received_for(NAME).len(), 2, "one query from each podns");

    // The upstream goes silent; let the one-second entries expire. (Time has to pass here: the
    // expiry is what is under test, and there is no event to wait for.)
    up.on(NAME, RecordType::A, Action::Drop);
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let stale_answers = stale.metric("podns_responses_total", &[("source", "stale")]).await;
    let stale_hits = stale.metric("podns_cache_hits_total", &[("kind", "stale")]).await;
    let reply = udp_query(stale.addr(), &query(NAME, RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{reply}");
    assert_eq!(a_records(&reply), vec![STALE], "the expired answer is served");
    assert_eq!(answer_ttls(&reply), vec![30], "served stale with TTL 30 (RFC 8767)");
    assert!(up.received_for(NAME).len() > 2, "podns asked upstream before serving stale");
    stale
        .wait_metric(
            "podns_responses_total",
            &[("rcode", "NOERROR"), ("source", "stale")],
            |v| v >= stale_answers + 1.0,
            REPLY_TIMEOUT,
        )
        .await;
    stale.wait_metric("podns_cache_hits_total", &[("kind", "stale")], |v| v >= stale_hits + 1.0, REPLY_TIMEOUT).await;

    let reply = udp_query(strict.addr(), &query(NAME, RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail, "--serve-stale 0: {reply}");
    assert!(reply.answers.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_reply_is_never_cached() {
    const NAME: &str = "spoofed.example.com";
    let up = Upstream::start();
    up.on(NAME, RecordType::A, Action::WrongQuestionOnly);
    // --servfail-ttl 0: the failure is not remembered, so what is checked is the answer cache.
    let podns = podns_for(&up)
        .arg("--attempt-timeout", "200ms")
        .arg("--query-timeout", "500ms")
        .arg("--servfail-ttl", "0s")
        .start()
        .await;
    let reply = udp_query(podns.addr(), &query(NAME, RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail, "only a spoofed reply came: {reply}");
    assert!(!a_records(&reply).contains(&EVIL_V4));
    let asked = up.received_for(NAME).len();
    assert!(asked >= 1);
    podns.wait_metric("podns_upstream_errors_total", &[("reason", "mismatch")], |v| v >= 1.0, REPLY_TIMEOUT).await;

    // The genuine answer now: the next query must go upstream and get it, not the spoofed one.
    up.on(NAME, RecordType::A, Reply::answer(vec![Rr::a(GOOD)]).action());
    let reply = udp_query(podns.addr(), &query(NAME, RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![GOOD], "{reply}");
    assert_eq!(up.received_for(NAME).len(), asked + 1, "the next query went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_reply_whose_tcp_retry_fails_is_not_cached() {
    const NAME: &str = "tc-fail.example.com";
    let up = Upstream::start();
    up.on(NAME, RecordType::A, Action::by_transport(Action::Truncate(vec![Rec::A(GOOD)]), Action::ResetTcp));
    // --servfail-ttl 0: what is checked here is the answer cache, not the failure memo.
    let podns = podns_for(&up)
        .arg("--attempt-timeout", "300ms")
        .arg("--query-timeout", "600ms")
        .arg("--servfail-ttl", "0s")
        .start()
        .await;
    let udp_queries = || up.received_for(NAME).iter().filter(|r| r.transport == Transport::Udp).count();

    let reply = udp_query(podns.addr(), &query(NAME, RecordType::A)).await;
    assert!(reply.answers.is_empty(), "no answer could be had: {reply}");
    assert!(
        reply.metadata.truncation || reply.metadata.response_code == ResponseCode::ServFail,
        "the client is told to retry over TCP or that resolution failed: {reply}"
    );
    assert!(
        up.received_for(NAME).iter().any(|r| r.transport == Transport::Tcp),
        "podns retried the truncated reply over TCP"
    );
    let before = udp_queries();
    assert!(before >= 1);

    let reply = udp_query(podns.addr(), &query(NAME, RecordType::A)).await;
    assert!(reply.answers.is_empty(), "{reply}");
    assert!(udp_queries() > before, "the truncated reply was not cached: the next query went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_reply_whose_tcp_retry_fails_is_remembered_as_a_failure() {
    // Asking again would only meet the same broken TCP: for --servfail-ttl the client gets the
    // truncated reply again (never as a cached answer), over UDP, and SERVFAIL over TCP, without
    // another upstream query.
    const NAME: &str = "tc-broken.example.com";
    let up = Upstream::start();
    up.on(NAME, RecordType::A, Action::by_transport(Action::Truncate(vec![Rec::A(GOOD)]), Action::ResetTcp));
    let podns = podns_for(&up).arg("--attempt-timeout", "300ms").arg("--query-timeout", "600ms").start().await;
    let first = udp_query(podns.addr(), &query(NAME, RecordType::A)).await;
    assert!(first.answers.is_empty() && first.metadata.truncation, "{first}");
    let asked = up.received_for(NAME).len();
    let again = udp_query(podns.addr(), &query(NAME, RecordType::A)).await;
    assert!(again.answers.is_empty() && again.metadata.truncation, "still truncated: {again}");
    let over_tcp = tcp_query(podns.addr(), &query(NAME, RecordType::A)).await;
    assert_eq!(over_tcp.metadata.response_code, ResponseCode::ServFail, "{over_tcp}");
    assert_eq!(up.received_for(NAME).len(), asked, "neither retry reached the upstream");
}
