//! End-to-end forwarding: listeners, upstream ID and port randomisation, reply validation,
//! TC handling, EDNS, timeouts and failover, and real clients (dig, kdig).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::support::*;
use hickory_proto::op::{MessageType, ResponseCode};
use hickory_proto::rr::RecordType;

const ANSWER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// A name unique to a transport, so no answer comes from podns's cache (or is coalesced with
/// another client's query) and each transport's path upstream is exercised.
fn per_transport(base: &str, tcp: bool) -> String {
    format!("{}-{base}", if tcp { "tcp" } else { "udp" })
}

/// Sends `q` over TCP or UDP and returns the reply.
async fn ask(podns: &Podns, q: &hickory_proto::op::Message, tcp: bool) -> hickory_proto::op::Message {
    if tcp { tcp_query(podns.addr(), q).await } else { udp_query(podns.addr(), q).await }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_over_udp_and_tcp_with_matching_upstream_transport() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    for tcp in [false, true] {
        let name = per_transport("www.example.com", tcp);
        up.on(&name, RecordType::A, Action::Answer(vec![Rec::A(ANSWER)]));
        let q = query(&name, RecordType::A);
        let reply = ask(&podns, &q, tcp).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{name}");
        assert_eq!(a_records(&reply), vec![ANSWER], "{name}");
        assert_eq!(reply.queries, q.queries, "{name}: question echoed");
        let seen = up.received_for(&name);
        assert_eq!(seen.len(), 1, "{name}: one upstream query for one client query");
        let want = if tcp { Transport::Tcp } else { Transport::Udp };
        assert_eq!(seen[0].transport, want, "{name}: the upstream is asked over the client's transport");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_on_every_listen_address_including_ipv6() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).extra_listener().ipv6().start().await;
    assert_eq!(podns.listen.len(), 3);
    assert!(podns.listen[2].is_ipv6());
    for (i, addr) in podns.listen.iter().enumerate() {
        let name = format!("l{i}.example.com");
        let reply = udp_query(*addr, &query(&name, RecordType::A)).await;
        assert_eq!(a_records(&reply), vec![AUTO_V4], "UDP on {addr}");
        let reply = tcp_query(*addr, &query(&name, RecordType::AAAA)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "TCP on {addr}");
        assert_eq!(reply.answers.len(), 1, "TCP on {addr}: {reply}");
    }
    // The IPv6 listener's queries are counted as such.
    let v6 = podns.wait_metric("podns_requests_total", &[("family", "2")], |v| v >= 2.0, REPLY_TIMEOUT).await;
    assert!(v6 >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_ids_are_random_and_source_ports_vary() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).arg("--upstream-sockets", "16").start().await;
    const N: usize = 64;
    const CLIENT_ID: u16 = 0x1234;
    for i in 0..N {
        let mut q = query(&format!("id{i}.example.com"), RecordType::A);
        q.metadata.id = CLIENT_ID;
        let reply = udp_query(podns.addr(), &q).await;
        assert_eq!(reply.metadata.id, CLIENT_ID, "client gets its own ID back");
        assert_eq!(a_records(&reply), vec![AUTO_V4]);
    }
    let seen: Vec<Received> =
        up.received().into_iter().filter(|r| r.name.starts_with("id") && r.transport == Transport::Udp).collect();
    assert_eq!(seen.len(), N, "one upstream query per client query");
    let same = seen.iter().filter(|r| r.id == CLIENT_ID).count();
    assert!(same <= 1, "{same} of {N} upstream queries reused the client's ID");
    let ids: HashSet<u16> = seen.iter().map(|r| r.id).collect();
    assert!(ids.len() >= N - 4, "only {} distinct IDs over {N} queries", ids.len());
    let ports: HashSet<u16> = seen.iter().map(|r| r.src.port()).collect();
    assert!(ports.len() >= 4, "only {} source ports over {N} queries: {ports:?}", ports.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gets_its_id_and_question_case_back() {
    let up = Upstream::start();
    up.lowercase_replies(true);
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    for tcp in [false, true] {
        let name = if tcp { "ExAmPlE.NeT" } else { "ExAmPlE.CoM" };
        up.on(name, RecordType::A, Action::Answer(vec![Rec::A(ANSWER)]));
        let q = query(name, RecordType::A);
        let sent = encode(&q);
        let raw = if tcp {
            let mut c = TcpClient::connect(podns.addr()).await;
            c.send(&q).await;
            c.recv_raw().await
        } else {
            udp_exchange_raw(podns.addr(), &q).await
        };
        let h = raw_header(&raw);
        assert_eq!(h.id, q.metadata.id, "{name}: client ID");
        assert_eq!(h.qdcount, 1);
        assert_eq!(
            String::from_utf8_lossy(&raw_question(&raw)),
            String::from_utf8_lossy(&raw_question(&sent)),
            "{name}: question with the client's letter case"
        );
        assert_eq!(a_records(&decode(&raw)), vec![ANSWER], "{name}");
        assert_eq!(up.received_for(name).len(), 1, "{name}: asked upstream (which answered in lower case)");
    }
    // A second client asking in another case gets its own case back too (cached or not).
    let q = query("eXaMpLe.cOm", RecordType::A);
    let raw = udp_exchange_raw(podns.addr(), &q).await;
    assert_eq!(raw_question(&raw), raw_question(&encode(&q)), "second client's letter case");
}

/// Asks `name` over UDP and TCP (distinct names) from an upstream scripted with `action`
/// carrying [`ANSWER`]; the answer must be the right one, from the first attempt.
async fn right_reply_wins(base: &str, action: fn(Vec<Rec>) -> Action) {
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    for tcp in [false, true] {
        let name = per_transport(base, tcp);
        up.on(&name, RecordType::A, action(vec![Rec::A(ANSWER)]));
        let q = query(&name, RecordType::A);
        let reply = ask(&podns, &q, tcp).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{name}");
        assert_eq!(reply.queries, q.queries, "{name}");
        assert_eq!(a_records(&reply), vec![ANSWER], "{name}: the genuine reply wins, not the spoofed one");
        assert_eq!(up.received_for(&name).len(), 1, "{name}: the genuine reply was accepted on the first attempt");
    }
    assert!(podns.try_exit().is_none(), "podns survived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_with_wrong_id_is_ignored() {
    right_reply_wins("spoof.example.com", Action::WrongIdFirst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_with_wrong_question_is_ignored() {
    right_reply_wins("q.example.com", Action::WrongQuestionFirst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_reply_is_ignored() {
    right_reply_wins("junk.example.com", Action::GarbageFirst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_udp_reply_is_retried_over_tcp() {
    let up = Upstream::start();
    up.on("tc.example.com", RecordType::A, Action::Truncate(vec![Rec::A(ANSWER)]));
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    let q = query("tc.example.com", RecordType::A);
    let reply = udp_query(podns.addr(), &q).await;
    assert!(!reply.metadata.truncation, "the full answer fits 512 bytes: {reply}");
    assert_eq!(a_records(&reply), vec![ANSWER]);
    let seen = up.received_for("tc.example.com");
    let transports: Vec<Transport> = seen.iter().map(|r| r.transport).collect();
    assert_eq!(transports, vec![Transport::Udp, Transport::Tcp], "UDP first, then TCP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_answer_fits_the_clients_edns_size() {
    let up = Upstream::start();
    up.on("big.example.com", RecordType::TXT, Action::Answer(big_txt(1500)));
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    let q = with_edns(query("big.example.com", RecordType::TXT), 4096);
    let raw = udp_exchange_raw(podns.addr(), &q).await;
    let reply = decode(&raw);
    assert!(!reply.metadata.truncation, "1.5 kB fits the advertised 4096");
    assert!(raw.len() > 1500 && raw.len() <= 4096, "reply of {} bytes", raw.len());
    assert_eq!(txt_of(&reply), txt_payload(1500));
    assert!(reply.edns.is_some(), "an EDNS query gets an OPT back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_answer_is_truncated_to_the_clients_size() {
    let up = Upstream::start();
    up.on("big.example.com", RecordType::TXT, Action::Answer(big_txt(1500)));
    up.on("huge.example.com", RecordType::TXT, Action::Answer(big_txt(3000)));
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;

    // No EDNS: never more than 512 bytes over UDP.
    let q = query("big.example.com", RecordType::TXT);
    let raw = udp_exchange_raw(podns.addr(), &q).await;
    let h = raw_header(&raw);
    assert_eq!(h.id, q.metadata.id);
    assert!(raw.len() <= 512, "{} bytes to a client without EDNS", raw.len());
    assert!(h.tc, "a truncated reply says so");
    assert!(decode(&raw).edns.is_none(), "no OPT to a client that sent none");
    // The client retries over TCP and gets everything.
    let reply = tcp_query(podns.addr(), &q).await;
    assert!(!reply.metadata.truncation);
    assert_eq!(txt_of(&reply), txt_payload(1500));

    // EDNS 1232, answer of 3 kB: TC, within 1232.
    let q = with_edns(query("huge.example.com", RecordType::TXT), 1232);
    let raw = udp_exchange_raw(podns.addr(), &q).await;
    assert!(raw.len() <= 1232, "{} bytes to a client advertising 1232", raw.len());
    assert!(raw_header(&raw).tc);
    let reply = tcp_query(podns.addr(), &q).await;
    assert_eq!(txt_of(&reply), txt_payload(3000));
    // The UDP attempts went upstream over UDP first, then over TCP.
    let seen = up.received_for("huge.example.com");
    assert!(seen.iter().any(|r| r.transport == Transport::Tcp), "TCP used upstream: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edns_is_passed_through() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    let q = with_edns(query("edns.example.com", RecordType::A), 1400);
    let reply = udp_query(podns.addr(), &q).await;
    assert_eq!(a_records(&reply), vec![AUTO_V4]);
    let edns = reply.edns.as_ref().expect("OPT in the reply to an EDNS query");
    assert_eq!(edns.version(), 0);
    let seen = up.received_for("edns.example.com");
    assert_eq!(seen.len(), 1);
    assert!(seen[0].edns_payload.is_some(), "the upstream query carries the client's OPT");

    let reply = udp_query(podns.addr(), &query("plain.example.com", RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![AUTO_V4]);
    assert!(reply.edns.is_none(), "no OPT in the reply to a query without one");
}

// --- timeouts and failover ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_when_the_first_upstream_refuses() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new()
        .upstream(refusing_addr())
        .upstream(up.addr)
        .arg("--attempt-timeout", "1500ms")
        .arg("--query-timeout", "3s")
        .start()
        .await;
    for tcp in [false, true] {
        let name = per_transport("fo.example.com", tcp);
        up.on(&name, RecordType::A, Action::Answer(vec![Rec::A(ANSWER)]));
        let started = Instant::now();
        let reply = ask(&podns, &query(&name, RecordType::A), tcp).await;
        let took = started.elapsed();
        assert_eq!(a_records(&reply), vec![ANSWER], "{name}: answered by the second upstream");
        assert!(
            took < Duration::from_secs(1),
            "{name}: {took:?}: the refusal was not noticed before the 1.5 s attempt timeout"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_when_the_first_upstream_is_silent() {
    let silent = Upstream::with_default(Action::Drop);
    let up = Upstream::start();
    let podns = PodnsBuilder::new()
        .upstream(silent.addr)
        .upstream(up.addr)
        .arg("--attempt-timeout", "300ms")
        .arg("--query-timeout", "2s")
        .start()
        .await;
    for tcp in [false, true] {
        let name = per_transport("fo.example.com", tcp);
        up.on(&name, RecordType::A, Action::Answer(vec![Rec::A(ANSWER)]));
        let reply = ask(&podns, &query(&name, RecordType::A), tcp).await;
        assert_eq!(a_records(&reply), vec![ANSWER], "{name}: answered by the second upstream");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_on_servfail_and_refused_rcodes() {
    let first = Upstream::start();
    first.on("sf.example.com", RecordType::A, Action::Rcode(ResponseCode::ServFail));
    first.on("rf.example.com", RecordType::A, Action::Rcode(ResponseCode::Refused));
    let second = Upstream::start();
    second.on("sf.example.com", RecordType::A, Action::Answer(vec![Rec::A(ANSWER)]));
    second.on("rf.example.com", RecordType::A, Action::Answer(vec![Rec::A(ANSWER)]));
    let podns = PodnsBuilder::new().upstream(first.addr).upstream(second.addr).start().await;
    for name in ["sf.example.com", "rf.example.com"] {
        let reply = udp_query(podns.addr(), &query(name, RecordType::A)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{name}");
        assert_eq!(a_records(&reply), vec![ANSWER], "{name}: answered by the second upstream");
        assert!(!first.received_for(name).is_empty(), "{name}: the first upstream was asked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_when_the_first_upstream_resets_tcp() {
    let first = Upstream::start();
    first.on("rst.example.com", RecordType::A, Action::ResetTcp);
    let second = Upstream::start();
    second.on("rst.example.com", RecordType::A, Action::Answer(vec![Rec::A(ANSWER)]));
    let podns = PodnsBuilder::new().upstream(first.addr).upstream(second.addr).start().await;
    let reply = tcp_query(podns.addr(), &query("rst.example.com", RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![ANSWER]);
    assert_eq!(first.received_for("rst.example.com")[0].transport, Transport::Tcp);
    // The reset connection is not reused: the next TCP query works.
    let reply = tcp_query(podns.addr(), &query("after.example.com", RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![AUTO_V4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_fast_when_every_upstream_refuses() {
    let podns = PodnsBuilder::new().upstream(refusing_addr()).upstream(refusing_addr()).start().await;
    for tcp in [false, true] {
        let q = query(&per_transport("dead.example.com", tcp), RecordType::A);
        let started = Instant::now();
        let reply = ask(&podns, &q, tcp).await;
        let took = started.elapsed();
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail, "tcp={tcp}");
        assert!(took < Duration::from_millis(800), "tcp={tcp}: SERVFAIL took {took:?} though every upstream refuses");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_within_budget_when_every_upstream_is_silent() {
    let a = Upstream::with_default(Action::Drop);
    let b = Upstream::with_default(Action::Drop);
    let podns = PodnsBuilder::new()
        .upstream(a.addr)
        .upstream(b.addr)
        .arg("--attempt-timeout", "800ms")
        .arg("--query-timeout", "2s")
        .start()
        .await;
    let q = query("silent.example.com", RecordType::A);
    let started = Instant::now();
    let reply = udp_query(podns.addr(), &q).await;
    let took = started.elapsed();
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert!(took < Duration::from_millis(3500), "SERVFAIL after {took:?}, budget 2s");
    assert!(!a.received_for("silent.example.com").is_empty(), "first upstream tried");
    assert!(!b.received_for("silent.example.com").is_empty(), "second upstream tried after the attempt timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_when_every_upstream_answers_servfail() {
    let a = Upstream::with_default(Action::Rcode(ResponseCode::ServFail));
    let b = Upstream::with_default(Action::Rcode(ResponseCode::ServFail));
    let podns = PodnsBuilder::new().upstream(a.addr).upstream(b.addr).start().await;
    let q = query("sf.example.com", RecordType::A);
    let started = Instant::now();
    let reply = udp_query(podns.addr(), &q).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() < Duration::from_millis(3500));
    assert!(!a.received_for("sf.example.com").is_empty());
    assert!(!b.received_for("sf.example.com").is_empty(), "both upstreams asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_is_asked_once_per_upstream() {
    // Asking a server that answered SERVFAIL the same question again only doubles the load on a
    // failing cluster DNS (issue 10, RFC 9520 §3.1): each upstream is asked once.
    let a = Upstream::with_default(Action::Rcode(ResponseCode::ServFail));
    let b = Upstream::with_default(Action::Rcode(ResponseCode::Refused));
    let one = PodnsBuilder::new().upstream(a.addr).start().await;
    let reply = udp_query(one.addr(), &query("sf1.example.com", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(a.received_for("sf1.example.com").len(), 1, "one upstream: one query");

    let two = PodnsBuilder::new().upstream(a.addr).upstream(b.addr).start().await;
    let reply = udp_query(two.addr(), &query("sf2.example.com", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(a.received_for("sf2.example.com").len(), 1, "SERVFAIL: not asked again");
    assert_eq!(b.received_for("sf2.example.com").len(), 1, "REFUSED: not asked again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formerr_to_an_edns_query_is_retried_without_edns() {
    // RFC 6891 §7: a responder without EDNS may answer FORMERR to a query with an OPT record;
    // the requester retries without it.
    let up = Upstream::start();
    up.on("old.example.com", RecordType::A, Action::NoEdns(Box::new(Action::Answer(vec![Rec::A(ANSWER)]))));
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    for tcp in [false, true] {
        let reply = ask(&podns, &with_edns(query("old.example.com", RecordType::A), 1232), tcp).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "tcp={tcp}: {reply}");
        assert_eq!(a_records(&reply), vec![ANSWER], "tcp={tcp}");
        assert!(reply.edns.is_some(), "tcp={tcp}: the client asked with EDNS and podns speaks it");
    }
    let seen = up.received_for("old.example.com");
    assert_eq!(seen.len(), 2, "the UDP answer is cached; one FORMERR and one retry: {seen:?}");
    assert!(seen[0].edns_payload.is_some() && seen[1].edns_payload.is_none(), "the retry has no OPT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_is_tried_before_servfail_when_the_first_two_are_silent() {
    // The order is fixed when a query starts: an upstream that goes down mid-query cannot push
    // another out of its turn (issue 15, row 11).
    let s1 = Upstream::with_default(Action::Drop);
    let s2 = Upstream::with_default(Action::Drop);
    let good = Upstream::start();
    let podns = PodnsBuilder::new()
        .upstream(s1.addr)
        .upstream(s2.addr)
        .upstream(good.addr)
        .arg("--attempt-timeout", "300ms")
        .arg("--query-timeout", "2s")
        .start()
        .await;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let addr = podns.addr();
            tokio::spawn(async move { udp_query(addr, &query(&format!("q{i}.example.com"), RecordType::A)).await })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let reply = t.await.unwrap();
        assert_eq!(a_records(&reply), vec![AUTO_V4], "query {i}: a healthy upstream exists: {reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_label_name_every_upstream_fails_gets_the_root_zones_answer() {
    // systemd-resolved answers SERVFAIL for single-label names; the root zone would say NXDOMAIN
    // (not a TLD) or NODATA (a TLD). Multi-label names keep their SERVFAIL (issue 10).
    let up = Upstream::with_default(Action::Rcode(ResponseCode::ServFail));
    for aaaa in ["fix", "forward"] {
        let podns = PodnsBuilder::new().upstream(up.addr).arg("--aaaa", aaaa).start().await;
        for qtype in [RecordType::A, RecordType::AAAA] {
            let reply = udp_query(podns.addr(), &query("postgresql-primary", qtype)).await;
            assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain, "--aaaa {aaaa} {qtype}: {reply}");
            let soa = &reply.authorities[0];
            assert_eq!(soa.name.to_ascii(), ".", "--aaaa {aaaa}: the root zone's SOA");
            assert!(soa.ttl <= 5, "short TTL: {reply}");
            let reply = udp_query(podns.addr(), &query("com", qtype)).await;
            assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "--aaaa {aaaa} {qtype}: a TLD: {reply}");
            assert!(reply.answers.is_empty());
        }
        let reply = udp_query(podns.addr(), &query("x.db", RecordType::A)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail, "a private zone's name stays a failure");
        let root_zone = podns.metric("podns_synthesized_total", &[("type", "A"), ("reason", "root_zone")]).await;
        assert!(root_zone >= 2.0, "--aaaa {aaaa}: counted: {root_zone}");
    }
}

// --- real clients -----------------------------------------------------------------------------

fn have(tool: &str) -> bool {
    let found = std::process::Command::new(tool)
        .arg("-v")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("NOTICE: {tool} is not installed; skipping its part of this test");
    }
    found
}

async fn run_tool(tool: &str, args: &[String]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::process::Command::new(tool).args(args).kill_on_drop(true).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{tool} {args:?} did not finish"))
    .unwrap_or_else(|e| panic!("{tool}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

/// Arguments for `tool` (dig or kdig) to ask `server` for `name`/`qtype` once, with `extra`.
fn tool_args(tool: &str, server: std::net::SocketAddr, extra: &[&str], name: &str, qtype: &str) -> Vec<String> {
    let mut args = vec![format!("@{}", server.ip()), "-p".into(), server.port().to_string()];
    let once: &[&str] = if tool == "kdig" { &["+timeout=5", "+retry=0"] } else { &["+time=5", "+tries=1"] };
    args.extend(once.iter().chain(extra).map(|s| s.to_string()));
    args.extend([name.to_string(), qtype.to_string()]);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_and_kdig_over_udp_and_tcp() {
    let up = Upstream::start();
    up.on("www.example.com", RecordType::A, Action::Answer(vec![Rec::A(ANSWER)]));
    up.on("big.example.com", RecordType::TXT, Action::Answer(big_txt(3000)));
    let podns = PodnsBuilder::new().upstream(up.addr).ipv6().start().await;
    let mut ran = 0;
    for tool in ["dig", "kdig"] {
        if !have(tool) {
            continue;
        }
        ran += 1;
        for server in [podns.addr(), podns.listen[1]] {
            for transport in ["+notcp", "+tcp"] {
                let args = tool_args(tool, server, &[transport], "www.example.com", "A");
                let out = run_tool(tool, &args).await;
                assert!(out.contains("NOERROR"), "{tool} {args:?}:\n{out}");
                assert!(out.contains(&ANSWER.to_string()), "{tool} {args:?}:\n{out}");
            }
        }
        // A 3 kB answer over UDP (the default transport; kdig takes +notcp as "UDP only"):
        // truncated, the tool retries over TCP and gets it all.
        let args = tool_args(tool, podns.addr(), &["+bufsize=1232"], "big.example.com", "TXT");
        let out = run_tool(tool, &args).await;
        assert!(out.contains("NOERROR"), "{tool} {args:?}:\n{out}");
        assert!(out.to_ascii_lowercase().contains("trunc"), "{tool} saw TC and retried over TCP:\n{out}");
        assert!(out.contains(&txt_payload(3000)[..250]), "{tool} got the TXT data:\n{out}");
        assert!(out.contains(&txt_payload(3000)[2750..]), "{tool} got all the TXT data:\n{out}");
    }
    if ran == 0 {
        eprintln!("NOTICE: neither dig nor kdig is installed; test did nothing");
    }
    // Whatever the tools did, podns answered them with the right message type.
    let reply = udp_query(podns.addr(), &query("www.example.com", RecordType::A)).await;
    assert_eq!(reply.metadata.message_type, MessageType::Response);
}

// --- the test upstream itself --------------------------------------------------------------------

/// The first two messages the upstream sends back to `q` over UDP or TCP.
async fn two_replies(up: &Upstream, q: &hickory_proto::op::Message, tcp: bool) -> (Vec<u8>, Vec<u8>) {
    if tcp {
        let mut c = TcpClient::connect(up.addr).await;
        c.send(q).await;
        (c.recv_raw().await, c.recv_raw().await)
    } else {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.connect(up.addr).await.unwrap();
        sock.send(&encode(q)).await.unwrap();
        let mut buf = vec![0u8; 65535];
        let mut next = async || {
            let n = tokio::time::timeout(REPLY_TIMEOUT, sock.recv(&mut buf)).await.expect("reply").unwrap();
            buf[..n].to_vec()
        };
        let first = next().await;
        (first, next().await)
    }
}

/// The spoofing tests above only mean something if the test upstream really misbehaves: this
/// checks it directly, without podns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_upstream_misbehaves_as_scripted() {
    let up = Upstream::start();
    up.on("wid.test", RecordType::A, Action::WrongIdFirst(vec![Rec::A(ANSWER)]));
    up.on("wq.test", RecordType::A, Action::WrongQuestionFirst(vec![Rec::A(ANSWER)]));
    up.on("junk.test", RecordType::A, Action::GarbageFirst(vec![Rec::A(ANSWER)]));
    up.on("tc.test", RecordType::A, Action::Truncate(vec![Rec::A(ANSWER)]));
    up.on("drop.test", RecordType::A, Action::Drop);
    up.on("rst.test", RecordType::A, Action::ResetTcp);
    up.on("big.test", RecordType::TXT, Action::Answer(big_txt(1500)));
    for tcp in [false, true] {
        let q = query("wid.test", RecordType::A);
        let (first, second) = two_replies(&up, &q, tcp).await;
        assert_ne!(raw_header(&first).id, q.metadata.id, "tcp={tcp}");
        assert_eq!(a_records(&decode(&first)), vec![EVIL_V4]);
        assert_eq!(raw_header(&second).id, q.metadata.id);
        assert_eq!(a_records(&decode(&second)), vec![ANSWER]);

        let q = query("wq.test", RecordType::A);
        let (first, second) = two_replies(&up, &q, tcp).await;
        let first = decode(&first);
        assert_eq!(first.metadata.id, q.metadata.id, "tcp={tcp}");
        assert_ne!(first.queries, q.queries);
        assert_eq!(a_records(&first), vec![EVIL_V4]);
        assert_eq!(decode(&second).queries, q.queries);

        let q = query("junk.test", RecordType::A);
        let (first, second) = two_replies(&up, &q, tcp).await;
        assert_eq!(raw_header(&first).id, q.metadata.id, "tcp={tcp}");
        assert!(raw_header(&first).qr);
        assert!(hickory_proto::op::Message::from_vec(&first).is_err(), "garbage does not parse");
        assert_eq!(a_records(&decode(&second)), vec![ANSWER]);
    }
    let q = query("tc.test", RecordType::A);
    let udp = decode(&udp_exchange_raw(up.addr, &q).await);
    assert!(udp.metadata.truncation && udp.answers.is_empty());
    let tcp = tcp_query(up.addr, &q).await;
    assert!(!tcp.metadata.truncation);
    assert_eq!(a_records(&tcp), vec![ANSWER]);

    let q = query("big.test", RecordType::TXT);
    assert!(raw_header(&udp_exchange_raw(up.addr, &q).await).tc, "too big for 512");
    assert_eq!(txt_of(&tcp_query(up.addr, &q).await), txt_payload(1500));

    assert!(udp_raw(up.addr, &encode(&query("drop.test", RecordType::A)), Duration::from_millis(300)).await.is_none());
    let mut c = TcpClient::connect(up.addr).await;
    c.send(&query("rst.test", RecordType::A)).await;
    assert!(c.closed_within(REPLY_TIMEOUT).await, "connection reset");

    up.lowercase_replies(true);
    let reply = udp_query(up.addr, &query("MiXeD.test", RecordType::A)).await;
    assert_eq!(reply.queries[0].name.to_ascii(), "mixed.test.");
    let seen = up.received_for("mixed.test");
    assert_eq!(seen[0].name, "MiXeD.test", "the upstream records the case as received");
}

// ---------------------------------------------------------------------------------------------
// The UDP fast path (issue 12): plain UDP queries are forwarded by the listener loop itself,
// with batched I/O and a table of queries in flight instead of a task per query. These tests
// pin down what it must keep from the slow path.

/// `name` in a letter case of its own for client `i`.
fn mixed_case(name: &str, i: usize) -> String {
    name.chars().enumerate().map(|(k, c)| if (i >> (k % 8)) & 1 == 1 { c.to_ascii_uppercase() } else { c }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_coalesces_identical_udp_queries_into_one_upstream_query() {
    const CLIENTS: usize = 24;
    const NAME: &str = "hot.fast.example.com";
    let up = Upstream::start();
    let gate = Gate::new();
    up.on(NAME, RecordType::A, Action::gated(&gate, Action::Answer(vec![Rec::A(ANSWER)])));
    // No cache: the followers get the leader's reply from the fast path's table, not the cache.
    let podns = PodnsBuilder::new()
        .upstream(up.addr)
        .arg("--cache-size", "0")
        .arg("--attempt-timeout", "3s")
        .arg("--query-timeout", "4s")
        .start()
        .await;
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let addr = podns.addr();
        let mut q = query(&mixed_case(NAME, i), RecordType::A);
        q.metadata.id = 1000 + i as u16;
        clients.spawn(async move { (udp_query(addr, &q).await, q) });
    }
    up.wait_received(NAME, 1, Duration::from_secs(2)).await;
    podns.wait_metric("podns_coalesced_total", &[], |v| v >= (CLIENTS - 1) as f64, Duration::from_secs(3)).await;
    gate.open();
    let mut answered = 0;
    while let Some(r) = clients.join_next().await {
        let (reply, q) = r.expect("client task");
        assert_eq!(a_records(&reply), vec![ANSWER], "{reply}");
        assert_eq!(reply.queries, q.queries, "each client gets its own question case back");
        answered += 1;
    }
    assert_eq!(answered, CLIENTS);
    assert_eq!(up.received_for(NAME).len(), 1, "{CLIENTS} identical queries in flight share one upstream query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_timeout_fails_over_without_asking_the_silent_upstream_again() {
    let silent = Upstream::with_default(Action::Drop);
    let up = Upstream::start();
    let podns = PodnsBuilder::new()
        .upstream(silent.addr)
        .upstream(up.addr)
        .arg("--attempt-timeout", "400ms")
        .arg("--query-timeout", "3s")
        .start()
        .await;
    const NAME: &str = "silent-first.fast.example.com";
    up.on(NAME, RecordType::A, Action::Answer(vec![Rec::A(ANSWER)]));
    let started = Instant::now();
    let reply = udp_query(podns.addr(), &query(NAME, RecordType::A)).await;
    let took = started.elapsed();
    assert_eq!(a_records(&reply), vec![ANSWER], "answered by the second upstream");
    assert!(took < Duration::from_millis(1100), "{took:?}: more than one attempt went to the silent upstream");
    assert_eq!(silent.received_for(NAME).len(), 1, "the timed-out attempt is not repeated");
    assert_eq!(up.received_for(NAME).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_ignores_and_counts_spoofed_replies() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    for (name, action) in [
        ("wrong-id.fast.example.com", Action::WrongIdFirst as fn(Vec<Rec>) -> Action),
        ("wrong-q.fast.example.com", Action::WrongQuestionFirst),
    ] {
        up.on(name, RecordType::A, action(vec![Rec::A(ANSWER)]));
        let reply = udp_query(podns.addr(), &query(name, RecordType::A)).await;
        assert_eq!(a_records(&reply), vec![ANSWER], "{name}: the genuine reply wins");
        assert_eq!(up.received_for(name).len(), 1, "{name}");
    }
    // Both forgeries were read, matched against the table and counted, not relayed.
    podns
        .wait_metric("podns_upstream_errors_total", &[("reason", "mismatch")], |v| v >= 2.0, Duration::from_secs(2))
        .await;
    // And none of them reached the cache.
    let again = udp_query(podns.addr(), &query("wrong-q.fast.example.com", RecordType::A)).await;
    assert_eq!(a_records(&again), vec![ANSWER]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_truncated_reply_goes_over_tcp_once_for_all_its_clients() {
    const CLIENTS: usize = 8;
    const NAME: &str = "tc.fast.example.com";
    let up = Upstream::start();
    let gate = Gate::new();
    up.on(NAME, RecordType::A, Action::gated(&gate, Action::Truncate(vec![Rec::A(ANSWER)])));
    let podns = PodnsBuilder::new()
        .upstream(up.addr)
        .arg("--cache-size", "0")
        .arg("--attempt-timeout", "3s")
        .arg("--query-timeout", "4s")
        .start()
        .await;
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let addr = podns.addr();
        let mut q = query(NAME, RecordType::A);
        q.metadata.id = 7 + i as u16;
        clients.spawn(async move { udp_query(addr, &q).await });
    }
    up.wait_received(NAME, 1, Duration::from_secs(2)).await;
    podns.wait_metric("podns_coalesced_total", &[], |v| v >= (CLIENTS - 1) as f64, Duration::from_secs(3)).await;
    gate.open();
    while let Some(r) = clients.join_next().await {
        let reply = r.expect("client task");
        assert!(!reply.metadata.truncation, "{reply}");
        assert_eq!(a_records(&reply), vec![ANSWER]);
    }
    let transports: Vec<Transport> = up.received_for(NAME).iter().map(|r| r.transport).collect();
    assert_eq!(transports, vec![Transport::Udp, Transport::Tcp], "one UDP query, then one TCP retry for every client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_answers_its_queries_in_flight_before_exiting_on_sigterm() {
    const NAME: &str = "slow-answer.fast.example.com";
    let up = Upstream::start();
    up.on(NAME, RecordType::A, Action::delayed(Duration::from_millis(1200), Action::Answer(vec![Rec::A(ANSWER)])));
    let podns = PodnsBuilder::new()
        .upstream(up.addr)
        .arg("--drain-grace", "200ms")
        .arg("--attempt-timeout", "3s")
        .arg("--query-timeout", "4s")
        .start()
        .await;
    let addr = podns.addr();
    let client = tokio::spawn(async move { udp_query(addr, &query(NAME, RecordType::A)).await });
    up.wait_received(NAME, 1, Duration::from_secs(2)).await;
    podns.signal(libc::SIGTERM);
    // The listener stops reading 200 ms later; the reply comes a second after that.
    let reply = client.await.expect("client task");
    assert_eq!(a_records(&reply), vec![ANSWER], "the query in flight was answered during the drain");
    let exit = podns.wait_exit(Duration::from_secs(6)).await;
    assert_eq!(exit.code(), Some(0), "{exit}");
    assert_eq!(up.received_for(NAME).len(), 1, "answered by its own upstream query, not handed over and asked again");
}
