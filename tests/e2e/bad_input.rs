//! Malformed and unusual client input: dropped packets, NOTIMP, FORMERR, BADVERS, and random
//! garbage that must never take podns down.

use std::time::Duration;

use crate::support::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// How long to wait for a reply that must not come.
const NO_REPLY_WAIT: Duration = Duration::from_millis(300);

const RD: u16 = 0x0100;

/// Asserts podns still answers a normal query over UDP and TCP.
async fn assert_alive(podns: &Podns) {
    assert!(podns.try_exit().is_none(), "podns exited\n{}", podns.logs());
    // Retransmit as a stub resolver would: right after a flood the kernel may still drop a
    // datagram on podns's full receive queue, which says nothing about podns being alive.
    let q = query("alive.example.com", RecordType::A);
    let msg = encode(&q);
    let mut raw = None;
    for _ in 0..5 {
        raw = udp_raw(podns.addr(), &msg, Duration::from_secs(1)).await;
        if raw.is_some() {
            break;
        }
    }
    let reply = decode(&raw.unwrap_or_else(|| panic!("no UDP reply in 5 tries\n{}", podns.logs())));
    assert_eq!(reply.metadata.id, q.metadata.id, "reply ID");
    assert_eq!(reply.metadata.message_type, hickory_proto::op::MessageType::Response, "QR set");
    assert_eq!(a_records(&reply), vec![AUTO_V4]);
    let reply = tcp_query(podns.addr(), &query("alive.example.com", RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![AUTO_V4]);
}

/// Sends `msg` over UDP and TCP and returns both replies, which must come.
async fn both_transports(podns: &Podns, msg: &[u8]) -> [Vec<u8>; 2] {
    let udp = udp_raw(podns.addr(), msg, REPLY_TIMEOUT).await.unwrap_or_else(|| panic!("no UDP reply to {msg:02x?}"));
    let mut c = TcpClient::connect(podns.addr()).await;
    c.send_raw(msg).await.expect("send");
    let tcp = c.recv_raw().await;
    [udp, tcp]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_packets_and_responses_are_dropped() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    let question = wire_question("drop.example.com", 1);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("one byte", vec![0x12]),
        ("11 bytes", vec![0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0]),
        ("QR=1 response", wire_message(0x4242, 0x8180, [1, 0, 0, 0], &question)),
        ("QR=1 with answer", wire_message(0x4343, 0x8400, [1, 1, 0, 0], &question)),
    ];
    for (what, msg) in &cases {
        let got = udp_raw(podns.addr(), msg, NO_REPLY_WAIT).await;
        assert!(got.is_none(), "{what}: got a reply {got:02x?}");
    }
    assert!(up.received_for("drop.example.com").is_empty(), "a response was forwarded upstream");
    assert_alive(&podns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_opcodes_get_notimp() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    let question = wire_question("notimp.example.com", 1);
    for opcode in [1u16, 2, 4, 5, 15] {
        let msg = wire_message(0x5150 + opcode, (opcode << 11) | RD, [1, 0, 0, 0], &question);
        for (i, reply) in both_transports(&podns, &msg).await.iter().enumerate() {
            let h = raw_header(reply);
            let transport = ["udp", "tcp"][i];
            assert_eq!(h.id, 0x5150 + opcode, "{transport} opcode {opcode}");
            assert!(h.qr, "{transport} opcode {opcode}: QR");
            assert_eq!(h.rcode, 4, "{transport} opcode {opcode}: NOTIMP");
            assert_eq!(h.opcode, opcode as u8, "{transport}: the opcode is echoed");
        }
    }
    assert!(up.received_for("notimp.example.com").is_empty(), "nothing forwarded");
    assert_alive(&podns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn question_count_other_than_one_gets_formerr() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    let one = wire_question("formerr.example.com", 1);
    let two = [one.clone(), wire_question("formerr2.example.com", 1)].concat();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("QDCOUNT=0", wire_message(0x0f01, RD, [0, 0, 0, 0], &[])),
        ("QDCOUNT=2", wire_message(0x0f02, RD, [2, 0, 0, 0], &two)),
    ];
    for (what, msg) in &cases {
        for reply in both_transports(&podns, msg).await {
            let h = raw_header(&reply);
            assert_eq!(h.id, u16::from_be_bytes([msg[0], msg[1]]), "{what}");
            assert!(h.qr, "{what}");
            assert_eq!(h.rcode, 1, "{what}: FORMERR");
        }
    }
    assert!(up.received_for("formerr.example.com").is_empty(), "nothing forwarded");
    assert_alive(&podns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_question_gets_formerr() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // A label running past the end of the message.
        ("label past end", [&[20u8][..], b"abc"].concat()),
        // Name complete, but type and class missing.
        ("no type/class", wire_name("cut.example.com")),
        // A compression pointer to itself.
        ("pointer loop", vec![0xc0, 12, 0, 1, 0, 1]),
        // A label length with the reserved 0b10 prefix.
        ("reserved label type", vec![0x80, b'a', 0, 0, 1, 0, 1]),
    ];
    for (i, (what, body)) in cases.iter().enumerate() {
        let id = 0x7700 + i as u16;
        let msg = wire_message(id, RD, [1, 0, 0, 0], body);
        for reply in both_transports(&podns, &msg).await {
            let h = raw_header(&reply);
            assert_eq!(h.id, id, "{what}");
            assert!(h.qr, "{what}");
            assert_eq!(h.rcode, 1, "{what}: FORMERR");
        }
    }
    assert_alive(&podns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_opt_records_get_formerr() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    let body = [wire_question("opt2.example.com", 1), wire_opt(1232, 0), wire_opt(1232, 0)].concat();
    let msg = wire_message(0x0202, RD, [1, 0, 0, 2], &body);
    for reply in both_transports(&podns, &msg).await {
        let h = raw_header(&reply);
        assert_eq!(h.id, 0x0202);
        assert!(h.qr);
        assert_eq!(h.rcode, 1, "FORMERR for two OPT records");
    }
    assert!(up.received_for("opt2.example.com").is_empty(), "nothing forwarded");
    assert_alive(&podns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edns_version_above_zero_gets_badvers() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    let body = [wire_question("vers.example.com", 1), wire_opt(1232, 1)].concat();
    let msg = wire_message(0x0b0b, RD, [1, 0, 0, 1], &body);
    for reply in both_transports(&podns, &msg).await {
        let h = raw_header(&reply);
        assert_eq!(h.id, 0x0b0b);
        assert!(h.qr);
        let m = decode(&reply);
        let edns = m.edns.as_ref().expect("BADVERS needs an OPT record in the reply");
        assert_eq!(edns.version(), 0, "the reply's OPT has our version, 0");
        let full_rcode = (u16::from(edns.rcode_high()) << 4) | u16::from(h.rcode);
        assert_eq!(full_rcode, 16, "extended rcode BADVERS (16)");
    }
    assert!(up.received_for("vers.example.com").is_empty(), "nothing forwarded");
    // Version 0 is fine.
    let reply = udp_query(podns.addr(), &with_edns(query("vers.example.com", RecordType::A), 1232)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_alive(&podns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_garbage_never_kills_the_process() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    let seed = Rng::from_time().next();
    eprintln!("garbage seed: {seed:#x} (Rng::new to replay)");
    let mut rng = Rng::new(seed);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let valid = encode(&query("garbage.example.com", RecordType::A));
    for i in 0..3000 {
        let packet = match i % 4 {
            // Pure noise of any length.
            0 => {
                let n = rng.below(600);
                rng.bytes(n)
            }
            // A query header with a noisy body.
            1 => {
                let n = 12 + rng.below(300);
                let mut p = rng.bytes(n);
                p[2] &= 0x07; // QR=0, opcode 0
                p[4] = 0;
                p[5] = 1; // QDCOUNT=1
                p
            }
            // A valid query with some bytes flipped.
            2 => {
                let mut p = valid.clone();
                for _ in 0..3 {
                    let at = rng.below(p.len());
                    p[at] = rng.next() as u8;
                }
                p
            }
            // A valid query cut short.
            _ => valid[..rng.below(valid.len())].to_vec(),
        };
        sock.send_to(&packet, podns.addr()).await.unwrap();
        if i % 256 == 0 {
            // Keep the socket's receive queue from filling; replies are not checked.
            let mut buf = [0u8; 2048];
            while let Ok(Ok(_)) = tokio::time::timeout(Duration::ZERO, sock.recv_from(&mut buf)).await {}
        }
    }
    // Garbage over TCP too: noise frames, bogus lengths, a frame cut mid-way.
    for i in 0..30 {
        let mut c = TcpClient::connect(podns.addr()).await;
        let n = rng.below(400);
        let frame = rng.bytes(n);
        let _ = c.send_raw(&frame).await;
        if i % 3 == 0 {
            use tokio::io::AsyncWriteExt;
            let _ = c.stream.write_all(&[0xff, 0xff, 1, 2, 3]).await;
        }
    }
    assert_alive(&podns).await;
}
