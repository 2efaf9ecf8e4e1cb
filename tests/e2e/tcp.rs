//! The TCP listener: RFC 1035 framing, pipelining with out-of-order answers (RFC 7766), idle
//! timeout, connection cap, and messages up to 65535 bytes.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::support::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::io::AsyncWriteExt;

const SLOW: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const FAST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_queries_on_one_connection_and_split_frames() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    let mut c = TcpClient::connect(podns.addr()).await;
    for i in 0..5 {
        let reply = c.query(&query(&format!("seq{i}.example.com"), RecordType::A)).await;
        assert_eq!(a_records(&reply), vec![AUTO_V4]);
    }
    // A frame written one byte at a time (length prefix included).
    let q = query("bytewise.example.com", RecordType::A);
    let msg = encode(&q);
    let mut frame = (msg.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&msg);
    for b in &frame {
        c.stream.write_all(std::slice::from_ref(b)).await.unwrap();
        c.stream.flush().await.unwrap();
    }
    let reply = c.recv().await;
    assert_eq!(reply.metadata.id, q.metadata.id);
    assert_eq!(a_records(&reply), vec![AUTO_V4]);
    // Two frames in one write.
    let q1 = query("two1.example.com", RecordType::A);
    let q2 = query("two2.example.com", RecordType::A);
    let mut both = Vec::new();
    for q in [&q1, &q2] {
        let m = encode(q);
        both.extend_from_slice(&(m.len() as u16).to_be_bytes());
        both.extend_from_slice(&m);
    }
    c.stream.write_all(&both).await.unwrap();
    let mut ids = vec![c.recv().await.metadata.id, c.recv().await.metadata.id];
    ids.sort_unstable();
    let mut want = vec![q1.metadata.id, q2.metadata.id];
    want.sort_unstable();
    assert_eq!(ids, want, "both pipelined queries answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_queries_are_answered_out_of_order() {
    let up = Upstream::start();
    up.on(
        "slow.example.com",
        RecordType::A,
        Action::delayed(Duration::from_millis(700), Action::Answer(vec![Rec::A(SLOW)])),
    );
    up.on("fast.example.com", RecordType::A, Action::Answer(vec![Rec::A(FAST)]));
    let podns =
        PodnsBuilder::new().upstream(up.addr).arg("--attempt-timeout", "2s").arg("--query-timeout", "3s").start().await;
    let mut c = TcpClient::connect(podns.addr()).await;
    let slow = query("slow.example.com", RecordType::A);
    let fast = query("fast.example.com", RecordType::A);
    c.send(&slow).await;
    // Only send the second once the first is known to be waiting upstream.
    up.wait_received("slow.example.com", 1, REPLY_TIMEOUT).await;
    c.send(&fast).await;
    let first = c.recv().await;
    let second = c.recv().await;
    assert_eq!(first.metadata.id, fast.metadata.id, "the fast answer comes first");
    assert_eq!(a_records(&first), vec![FAST]);
    assert_eq!(second.metadata.id, slow.metadata.id);
    assert_eq!(a_records(&second), vec![SLOW]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_is_closed() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).arg("--tcp-idle-timeout", "300ms").start().await;
    let mut c = TcpClient::connect(podns.addr()).await;
    let reply = c.query(&query("idle.example.com", RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![AUTO_V4]);
    assert!(c.closed_within(Duration::from_secs(3)).await, "idle connection still open after 3 s (idle timeout 300ms)");
    // A connection that never sends anything is closed too.
    let mut c = TcpClient::connect(podns.addr()).await;
    assert!(c.closed_within(Duration::from_secs(3)).await, "silent connection still open after 3 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_with_a_query_in_flight_is_not_idle() {
    let up = Upstream::start();
    up.on(
        "slow.example.com",
        RecordType::A,
        Action::delayed(Duration::from_millis(900), Action::Answer(vec![Rec::A(SLOW)])),
    );
    let podns = PodnsBuilder::new()
        .upstream(up.addr)
        .arg("--tcp-idle-timeout", "300ms")
        .arg("--attempt-timeout", "2s")
        .arg("--query-timeout", "3s")
        .start()
        .await;
    let mut c = TcpClient::connect(podns.addr()).await;
    let reply = c.query(&query("slow.example.com", RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![SLOW], "answered although slower than the idle timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_while_all_are_busy() {
    let up = Upstream::start();
    let gate = Gate::new();
    up.on_suffix("held.example.com", Action::gated(&gate, Action::Auto));
    let podns = PodnsBuilder::new().upstream(up.addr).arg("--tcp-max-connections", "2").start().await;
    let mut a = TcpClient::connect(podns.addr()).await;
    let mut b = TcpClient::connect(podns.addr()).await;
    let (qa, qb) = (query("a.held.example.com", RecordType::A), query("b.held.example.com", RecordType::A));
    a.send(&qa).await;
    b.send(&qb).await;
    up.wait_received("a.held.example.com", 1, REPLY_TIMEOUT).await;
    up.wait_received("b.held.example.com", 1, REPLY_TIMEOUT).await;

    // Both connections have a query in flight: the third is closed, its query not forwarded.
    let mut third = TcpClient::connect(podns.addr()).await;
    let _ = third.send_raw(&encode(&query("c.example.com", RecordType::A))).await;
    assert!(third.closed_within(REPLY_TIMEOUT).await, "third connection was not closed");
    assert!(up.received_for("c.example.com").is_empty(), "the third connection's query was forwarded");
    let rejected = podns.wait_metric("podns_tcp_connections_rejected_total", &[], |v| v >= 1.0, REPLY_TIMEOUT).await;
    assert!(rejected >= 1.0);

    // Once they are answered and idle, a new connection gets in by closing the one idle
    // longest (RFC 7766 §6.2.3): a, as b has just been used again.
    gate.open();
    assert_eq!(a.recv().await.metadata.id, qa.metadata.id);
    assert_eq!(b.recv().await.metadata.id, qb.metadata.id);
    assert_eq!(a_records(&b.query(&query("b2.example.com", RecordType::A)).await), vec![AUTO_V4]);
    let reply = tcp_query(podns.addr(), &query("again.example.com", RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![AUTO_V4]);
    assert!(a.closed_within(REPLY_TIMEOUT).await, "the idle connection was not the one closed");
    assert_eq!(a_records(&b.query(&query("b3.example.com", RecordType::A)).await), vec![AUTO_V4]);
    let evicted = podns.wait_metric("podns_tcp_connections_evicted_total", &[], |v| v >= 1.0, REPLY_TIMEOUT).await;
    assert!(evicted >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_up_to_65535_bytes_pass() {
    let up = Upstream::start();
    // About 60 kB of TXT: near the 65535-byte limit of a TCP message.
    const SIZE: usize = 60_000;
    up.on("huge.example.com", RecordType::TXT, Action::Answer(big_txt(SIZE)));
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    let q = query("huge.example.com", RecordType::TXT);
    let mut c = TcpClient::connect(podns.addr()).await;
    c.send(&q).await;
    let raw = c.recv_raw().await;
    assert!(raw.len() > SIZE && raw.len() <= 65535, "reply of {} bytes", raw.len());
    let reply = decode(&raw);
    assert_eq!(reply.metadata.id, q.metadata.id);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(!reply.metadata.truncation);
    assert_eq!(txt_of(&reply), txt_payload(SIZE), "the whole answer, intact");
    // Over UDP with the largest EDNS size, the same answer arrives whole as well (directly, or
    // after podns's own retry over TCP if it advertises less upstream).
    let q = with_edns(query("huge.example.com", RecordType::TXT), 65535);
    let raw = udp_exchange_raw(podns.addr(), &q).await;
    let reply = decode(&raw);
    assert!(!reply.metadata.truncation, "fits 65535");
    assert_eq!(txt_of(&reply), txt_payload(SIZE));
    // A client sending a maximal 65535-byte frame of junk does not break the listener.
    let mut junk = TcpClient::connect(podns.addr()).await;
    let _ = junk.send_raw(&vec![0u8; 65535]).await;
    let reply = tcp_query(podns.addr(), &query("after.example.com", RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![AUTO_V4]);
}
