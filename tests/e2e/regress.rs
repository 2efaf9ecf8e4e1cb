//! Regression suite for issue 15, in the style of dnsdist's regression-tests: the real binary
//! against a scripted upstream (or client) that misbehaves in one way per test. Each test
//! asserts the outcome and a bound — no wedge (the next query is answered), no starvation
//! (other clients are answered) — with generous deadlines and no timing assertions. Scenarios
//! that already pass and have a test elsewhere are listed in SECURITY.md, not repeated here.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const GOOD: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// A bound on anything podns must do, far above what it needs (2 s budgets, 2 s deadlines).
const BOUND: Duration = Duration::from_secs(20);

// --- raw replies ----------------------------------------------------------------------------

/// The end of the question of a query as hickory encodes it (one uncompressed question).
fn question_end(q: &[u8]) -> usize {
    12 + raw_question(q).len()
}

/// A reply to the raw query `q`: its ID, QR RD RA, its question, `an` answer records in `body`,
/// and nothing else.
fn reply_to(q: &[u8], an: u16, body: &[u8]) -> Vec<u8> {
    let mut r = q[..2].to_vec();
    r.extend_from_slice(&[0x80 | (q[2] & 0x01), 0x80, 0, 1]);
    r.extend_from_slice(&an.to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&q[12..question_end(q)]);
    r.extend_from_slice(body);
    r
}

/// An A record for the question name (pointer to offset 12) with this TTL and address.
fn a_rec(ttl: u32, ip: Ipv4Addr) -> Vec<u8> {
    let mut r = vec![0xc0, 12, 0, 1, 0, 1];
    r.extend_from_slice(&ttl.to_be_bytes());
    r.extend_from_slice(&[0, 4]);
    r.extend_from_slice(&ip.octets());
    r
}

async fn servfail_within_bound(podns: &Podns, name: &str) {
    let reply = tokio::time::timeout(BOUND, udp_query(podns.addr(), &query(name, RecordType::A)))
        .await
        .unwrap_or_else(|_| panic!("{name}: no answer within {BOUND:?}"));
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail, "{name}");
}

// --- row 1: upstream TCP stalls -----------------------------------------------------------

/// Row 1 with a given misbehaviour on the upstream's TCP side: the stalled query fails within
/// its budget, and later TCP queries — and UDP queries that need the TCP retry — are answered.
async fn upstream_tcp_misbehaviour_does_not_wedge(bad: Action) {
    let up = Upstream::start();
    up.on_name("stall.example.com", bad);
    up.on_name("big.example.com", Action::Truncate(vec![Rec::A(GOOD)]));
    let podns = PodnsBuilder::new().upstream(up.addr).arg("--attempt-timeout", "500ms").start().await;
    let reply = tokio::time::timeout(BOUND, tcp_query(podns.addr(), &query("stall.example.com", RecordType::A)))
        .await
        .expect("the stalled query is answered (SERVFAIL) within its budget");
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    for i in 0..3 {
        let name = format!("after{i}.example.com");
        let reply = tcp_query(podns.addr(), &query(&name, RecordType::A)).await;
        assert_eq!(a_records(&reply), vec![AUTO_V4], "{name} over TCP after the stall");
    }
    let reply = udp_query(podns.addr(), &query("big.example.com", RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![GOOD], "UDP query retried over TCP after the stall");
    assert!(up.count(Transport::Tcp) >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_stalling_in_the_middle_of_a_tcp_reply_does_not_wedge_later_queries() {
    upstream_tcp_misbehaviour_does_not_wedge(Action::StallTcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_accepting_tcp_and_never_answering_does_not_wedge_later_queries() {
    upstream_tcp_misbehaviour_does_not_wedge(Action::HangTcp).await;
}

// --- row 2: slowloris -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_slowloris_connections_are_reaped_and_new_clients_get_in() {
    let up = Upstream::start();
    const CAP: usize = 8;
    let podns = PodnsBuilder::new()
        .upstream(up.addr)
        .arg("--tcp-max-connections", &CAP.to_string())
        .arg("--tcp-idle-timeout", "1h")
        .start()
        .await;
    // As many connections as the cap, each sending one octet of a length prefix, then nothing.
    // (No newcomer arrives meanwhile, so eviction of idle connections plays no part.)
    let mut slow = Vec::new();
    for _ in 0..CAP {
        let mut c = TcpClient::connect(podns.addr()).await;
        let _ = c.stream.write_all(&[0]).await;
        slow.push(c);
    }
    // The idle timeout is an hour: only the per-message deadline can close them.
    for (i, c) in slow.iter_mut().enumerate() {
        assert!(c.closed_within(BOUND).await, "slowloris connection {i} still held");
    }
    let reply = tcp_query(podns.addr(), &query("after.example.com", RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![AUTO_V4]);
}

// --- row 3: pipelining without reading ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_clients_pipelining_without_reading_cannot_starve_udp_clients() {
    let up = Upstream::start();
    let gate = Gate::new();
    up.on_suffix("attack.example.com", Action::gated(&gate, Action::Auto));
    // A small budget so the attack is cheap to mount: 8 connections × 32 per connection would
    // fill 128 without the per-client share (64).
    let podns = PodnsBuilder::new()
        .upstream(up.addr)
        .arg("--max-inflight", "128")
        .arg("--query-timeout", "30s")
        .arg("--attempt-timeout", "30s")
        .start()
        .await;
    podns.wait_ready(REPLY_TIMEOUT).await;
    let mut attackers = JoinSet::new();
    for c in 0..8 {
        let addr = podns.addr();
        attackers.spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let mut batch = Vec::new();
            for i in 0..750 {
                let m = encode(&query(&format!("q{c}-{i}.attack.example.com"), RecordType::A));
                batch.extend_from_slice(&(m.len() as u16).to_be_bytes());
                batch.extend_from_slice(&m);
            }
            // Writes block once podns stops reading; the connection is never read.
            let _ = s.write_all(&batch).await;
            std::future::pending::<()>().await;
        });
    }
    // The attack is in effect once the upstream holds the TCP clients' share of queries.
    let deadline = Instant::now() + BOUND;
    while up.received().iter().filter(|r| r.name.ends_with("attack.example.com")).count() < 64 {
        assert!(Instant::now() < deadline, "the attack never reached the upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 39 UDP clients, each from its own socket, all answered.
    let mut clients = JoinSet::new();
    for i in 0..39 {
        let addr = podns.addr();
        clients.spawn(async move { udp_query(addr, &query(&format!("victim{i}.example.com"), RecordType::A)).await });
    }
    let mut answered = 0;
    while let Some(r) = clients.join_next().await {
        let reply = r.expect("client task");
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "a UDP client got SERVFAIL");
        assert_eq!(a_records(&reply), vec![AUTO_V4]);
        answered += 1;
    }
    assert_eq!(answered, 39);
    let held = up.received().iter().filter(|r| r.name.ends_with("attack.example.com")).count();
    assert!(held <= 64, "TCP clients hold {held} queries, more than their share of 64");
    gate.open();
    attackers.abort_all();
}

// --- row 4: the metrics port ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_http_clients_are_cut_off_and_capped() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    let closed = Arc::new(AtomicUsize::new(0));
    let mut slow = JoinSet::new();
    const N: usize = 80; // above the 64-connection cap
    for _ in 0..N {
        let (addr, closed) = (podns.metrics, closed.clone());
        slow.spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            // A request head trickled a byte a second: each read on its own is quick, the
            // request never completes.
            let mut buf = [0u8; 256];
            for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().cycle() {
                tokio::select! {
                    r = s.read(&mut buf) => {
                        if matches!(r, Ok(0) | Err(_)) {
                            break;
                        }
                    }
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {
                        if s.write_all(&[*b]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            closed.fetch_add(1, Ordering::SeqCst);
        });
    }
    let all_closed = tokio::time::timeout(BOUND, async { while slow.join_next().await.is_some() {} }).await;
    assert!(all_closed.is_ok(), "{} of {N} slow HTTP connections closed", closed.load(Ordering::SeqCst));
    // Every endpoint still works.
    assert_eq!(podns.http_get("/health").await.0, 200);
    let rejected = podns.metric("podns_http_connections_rejected_total", &[]).await;
    assert!(rejected >= 1.0, "no connection was refused over the cap");
}

// --- row 5: SO_REUSEPORT --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_cannot_bind_the_listen_address() {
    use socket2::{Domain, Protocol, Socket, Type};
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    let addr: SocketAddr = podns.addr();
    for (ty, proto) in [(Type::DGRAM, Protocol::UDP), (Type::STREAM, Protocol::TCP)] {
        let s = Socket::new(Domain::IPV4, ty, Some(proto)).unwrap();
        s.set_reuse_port(true).unwrap();
        s.set_reuse_address(true).unwrap();
        assert!(s.bind(&addr.into()).is_err(), "an intruder bound {addr} ({proto:?}) beside podns");
    }
    let reply = udp_query(podns.addr(), &query("mine.example.com", RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![AUTO_V4]);
}

// --- row 6: a 65,535-byte answer over TCP ---------------------------------------------------

/// A TXT reply to `q` of exactly `total` octets (with an OPT record when `opt`).
fn txt_reply_of_size(q: &[u8], total: usize, opt: bool) -> Vec<u8> {
    let head = question_end(q);
    let opt_len = if opt { 11 } else { 0 };
    let room = total - head - opt_len;
    let full = (room - 13) / 268;
    let last = room - full * 268 - 13;
    let mut body = Vec::new();
    for i in 0..=full {
        let len = if i == full { last } else { 255 };
        body.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 60]);
        body.extend_from_slice(&((len + 1) as u16).to_be_bytes());
        body.push(len as u8);
        body.extend(std::iter::repeat_n(b'x', len));
    }
    let mut r = reply_to(q, (full + 1) as u16, &body);
    if opt {
        r[11] = 1;
        r.extend_from_slice(&wire_opt(4096, 0));
    }
    assert_eq!(r.len(), total);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_of_65535_bytes_to_an_edns_client_over_tcp_gets_a_reply() {
    let up = Upstream::start();
    up.on_name("with-opt.example.com", Action::raw(|q| txt_reply_of_size(q, 65535, true)));
    up.on_name("without-opt.example.com", Action::raw(|q| txt_reply_of_size(q, 65535, false)));
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    for name in ["with-opt.example.com", "without-opt.example.com"] {
        let q = with_edns(query(name, RecordType::TXT), 4096);
        let mut c = TcpClient::connect(podns.addr()).await;
        c.send(&q).await;
        let raw = c.recv_raw().await;
        assert!(raw.len() <= 65535);
        let reply = decode(&raw);
        assert_eq!(reply.metadata.id, q.metadata.id, "{name}");
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(reply.edns.is_some(), "{name}: an EDNS client gets an OPT record");
        if reply.metadata.truncation {
            assert!(!reply.answers.is_empty(), "{name}: the records that fit");
        } else {
            assert_eq!(raw.len(), 65535, "{name}: the whole answer");
        }
        // The connection still works.
        let again = c.query(&query("next.example.com", RecordType::A)).await;
        assert_eq!(a_records(&again), vec![AUTO_V4]);
    }
}

// --- row 8: TTLs with the top bit set -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_with_the_top_bit_set_reach_clients_as_zero_and_are_not_cached() {
    let up = Upstream::start();
    up.on_name(
        "msb.example.com",
        Action::raw(|q| {
            let body = [a_rec(0x8000_0005, GOOD), a_rec(0xffff_ffff, GOOD)].concat();
            reply_to(q, 2, &body)
        }),
    );
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    for round in 1..=2 {
        let reply = udp_query(podns.addr(), &query("msb.example.com", RecordType::A)).await;
        let ttls: Vec<u32> = reply.answers.iter().map(|r| r.ttl).collect();
        assert_eq!(ttls, vec![0, 0], "round {round}");
        assert_eq!(up.received_for("msb.example.com").len(), round, "round {round}: asked upstream, not cached");
    }
}

// --- row 9: malformed replies ---------------------------------------------------------------

/// A malformed reply is an upstream error: SERVFAIL (one upstream), never relayed nor cached —
/// once the upstream answers properly, the client gets the proper answer.
async fn malformed_reply_is_not_relayed_nor_cached(what: &str, bad: fn(&[u8]) -> Vec<u8>) {
    let up = Upstream::start();
    let name = "bad.example.com";
    up.on_name(name, Action::raw(bad));
    // --servfail-ttl 0: the failure itself is remembered by default (RFC 9520); what is checked
    // here is that the malformed reply never reaches the answer cache.
    let podns = PodnsBuilder::new().upstream(up.addr).arg("--servfail-ttl", "0s").start().await;
    servfail_within_bound(&podns, name).await;
    let malformed = podns.wait_metric("podns_upstream_errors_total", &[("reason", "malformed")], |v| v >= 1.0, BOUND);
    assert!(malformed.await >= 1.0, "{what}: counted as malformed");
    up.on_name(name, Action::Answer(vec![Rec::A(GOOD)]));
    let reply = udp_query(podns.addr(), &query(name, RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![GOOD], "{what}: the malformed reply was cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_with_a_forward_compression_pointer_is_malformed() {
    malformed_reply_is_not_relayed_nor_cached("forward pointer", |q| {
        // The answer's owner points at its own RDATA, after it.
        let at = question_end(q);
        let mut rec = a_rec(60, GOOD);
        rec[0] = 0xc0 | ((at + 12) >> 8) as u8;
        rec[1] = (at + 12) as u8;
        reply_to(q, 1, &rec)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_with_a_compression_pointer_loop_is_malformed() {
    malformed_reply_is_not_relayed_nor_cached("pointer loop", |q| {
        // A CNAME whose target is a label followed by a pointer back to that label.
        let at = question_end(q);
        let target = at + 12;
        let mut rec = vec![0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 4, 1, b'a'];
        rec.extend_from_slice(&[0xc0 | (target >> 8) as u8, target as u8]);
        reply_to(q, 1, &rec)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_with_trailing_bytes_is_malformed() {
    malformed_reply_is_not_relayed_nor_cached("trailing bytes", |q| {
        let mut r = reply_to(q, 1, &a_rec(60, GOOD));
        r.extend_from_slice(b"\x00junk");
        r
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_reply_fails_over_to_the_next_upstream() {
    let bad = Upstream::start();
    bad.on_name("fo.example.com", Action::raw(|q| [reply_to(q, 1, &a_rec(60, EVIL_V4)), vec![0]].concat()));
    let good = Upstream::start();
    good.on_name("fo.example.com", Action::Answer(vec![Rec::A(GOOD)]));
    let podns = PodnsBuilder::new().upstream(bad.addr).upstream(good.addr).start().await;
    let reply = udp_query(podns.addr(), &query("fo.example.com", RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![GOOD], "the malformed reply was relayed");
    assert!(!bad.received_for("fo.example.com").is_empty(), "the first upstream was asked");
    let to = bad.addr.to_string();
    assert!(podns.metric("podns_upstream_errors_total", &[("to", &to), ("reason", "malformed")]).await >= 1.0);
}

// --- row 12: idle connection flood ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_flood_cannot_keep_tcp_clients_out() {
    let up = Upstream::start();
    // The default cap. A flood that reconnects at once can still close a newcomer that has not
    // sent its query after CAP evictions; the default cap makes that window as wide as it is in
    // production.
    const CAP: usize = 256;
    let podns = PodnsBuilder::new().upstream(up.addr).arg("--tcp-idle-timeout", "1h").start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let mut flood = JoinSet::new();
    for _ in 0..CAP {
        let (addr, stop, opened) = (podns.addr(), stop.clone(), opened.clone());
        flood.spawn(async move {
            // Reconnect as soon as podns closes the connection; never send anything.
            while !stop.load(Ordering::SeqCst) {
                let Ok(mut s) = TcpStream::connect(addr).await else { continue };
                opened.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 16];
                let _ = s.read(&mut buf).await;
            }
        });
    }
    let deadline = Instant::now() + BOUND;
    while opened.load(Ordering::SeqCst) < CAP {
        assert!(Instant::now() < deadline, "the flood did not fill the connection cap");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut served = 0;
    for i in 0..50 {
        let reply = tcp_query(podns.addr(), &query(&format!("legit{i}.example.com"), RecordType::A)).await;
        assert_eq!(a_records(&reply), vec![AUTO_V4]);
        served += 1;
    }
    assert_eq!(served, 50);
    stop.store(true, Ordering::SeqCst);
    flood.abort_all();
    assert!(podns.metric("podns_tcp_connections_evicted_total", &[]).await >= 50.0);
}

// --- row 13: forged reply flood -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwanted_reply_flood_flushes_the_cache_and_replaces_upstream_sockets() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new()
        .upstream(up.addr)
        .arg("--unwanted-reply-threshold", "100")
        .arg("--upstream-sockets", "1")
        .start()
        .await;
    podns.wait_ready(REPLY_TIMEOUT).await;
    let reply = udp_query(podns.addr(), &query("cached.example.com", RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![AUTO_V4]);
    let before: Vec<SocketAddr> = up.received().iter().map(|r| r.src).collect();
    let port = up.received_for("cached.example.com")[0].src;
    // Forged replies from the upstream's address to podns's source port, none matching a query.
    let mut forged = 0u16;
    while podns.metric("podns_unwanted_reply_actions_total", &[]).await < 1.0 {
        for _ in 0..50 {
            forged = forged.wrapping_add(1);
            let m = wire_message(forged, 0x8180, [1, 1, 0, 0], &wire_question("cached.example.com", 1));
            up.send_udp_from_upstream(port, &[m, a_rec(3600, Ipv4Addr::new(203, 0, 113, 66))].concat()).await;
        }
        assert!(forged < 20_000, "no defensive action after {forged} forged replies");
    }
    // The cache was flushed: the name is asked upstream again, and from a new source port.
    let reply = udp_query(podns.addr(), &query("cached.example.com", RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![AUTO_V4]);
    let asked = up.received_for("cached.example.com");
    assert_eq!(asked.len(), 2, "the cached answer survived the defensive action");
    assert!(!before.contains(&asked[1].src), "the upstream socket was not replaced");
}

// --- scenarios that passed before: only those without a test elsewhere ----------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_upstream_is_used_again_once_it_recovers() {
    let flappy = Upstream::start();
    let steady = Upstream::start();
    let podns =
        PodnsBuilder::new().upstream(flappy.addr).upstream(steady.addr).arg("--attempt-timeout", "200ms").start().await;
    for round in 0..3 {
        flappy.set_default(Action::Drop);
        for i in 0..4 {
            let reply = udp_query(podns.addr(), &query(&format!("down{round}-{i}.example.com"), RecordType::A)).await;
            assert_eq!(a_records(&reply), vec![AUTO_V4], "round {round}: answered while the first upstream is down");
        }
        flappy.set_default(Action::Auto);
        // Once its back-off has passed, the first upstream is tried again and answers.
        let deadline = Instant::now() + BOUND;
        let mut i = 0;
        loop {
            let name = format!("up{round}-{i}.example.com");
            let reply = udp_query(podns.addr(), &query(&name, RecordType::A)).await;
            assert_eq!(a_records(&reply), vec![AUTO_V4]);
            if podns.metric("podns_upstream_healthy", &[("to", &flappy.addr.to_string())]).await == 1.0
                && !flappy.received_for(&name).is_empty()
            {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: the recovered upstream was never used again");
            i += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // An answer record check that the replies are what the upstreams sent, not synthesized.
    let reply = udp_query(podns.addr(), &query("final.example.com", RecordType::A)).await;
    assert!(matches!(reply.answers[0].data, RData::A(_)));
}

// --- row 4, second half: out of file descriptors --------------------------------------------

/// Sets podns's soft limit on open files to `n` (`None`: back to its hard limit).
fn set_nofile(pid: i32, n: Option<u64>) {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a null new limit only reads the current one into `old`.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let lim = libc::rlimit { rlim_cur: n.unwrap_or(old.rlim_max), rlim_max: old.rlim_max };
    // SAFETY: prlimit reads `lim` and writes nothing (old limit pointer is null).
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

fn open_fds(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_neither_spins_nor_floods_nor_breaks_udp() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new()
        .upstream(up.addr)
        .arg("--upstream-sockets", "1")
        .arg("--socket-rotate", "1ms")
        .start()
        .await;
    podns.wait_ready(REPLY_TIMEOUT).await;
    let reply = udp_query(podns.addr(), &query("warm.example.com", RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![AUTO_V4]);
    // A few descriptors to spare, then connections to both TCP listeners use them up; the rest
    // wait in the kernel's backlog while accept fails with EMFILE.
    let limit = open_fds(podns.pid()) + 4;
    set_nofile(podns.pid(), Some(limit));
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(podns.metrics).await.expect("connect to the HTTP port"));
        held.push(TcpStream::connect(podns.addr()).await.expect("connect to the DNS port"));
    }
    let deadline = Instant::now() + BOUND;
    while open_fds(podns.pid()) < limit {
        assert!(Instant::now() < deadline, "podns never reached its descriptor limit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // UDP clients are still answered: a socket that cannot be rotated keeps serving.
    for i in 0..5 {
        let reply = udp_query(podns.addr(), &query(&format!("udp{i}.example.com"), RecordType::A)).await;
        assert_eq!(a_records(&reply), vec![AUTO_V4], "UDP query {i} while out of descriptors");
    }
    podns.wait_log(&["cannot accept TCP connections"], BOUND).await;
    // One warning per listener and run of failures, not one per attempt (a run ends whenever a
    // descriptor frees up, e.g. when a held HTTP connection times out).
    let warnings = podns.logs().matches("cannot accept TCP connections").count();
    assert!(warnings <= 10, "{warnings} accept warnings:\n{}", podns.logs());
    // With descriptors back, both listeners serve again.
    set_nofile(podns.pid(), None);
    drop(held);
    assert_eq!(podns.http_get("/health").await.0, 200);
    let reply = tcp_query(podns.addr(), &query("tcp-again.example.com", RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![AUTO_V4]);
}
