//! Matching upstream replies to waiting queries. Input: one length octet N, one mode octet, a
//! query of N octets (its question is registered, as the upstream exchanges do), then the
//! reply handed to `PendingMap::complete`. The outcome is checked against RFC 5452 §9.1's rule:
//! delivered exactly when the reply is a response with one question, for a waiting ID, asking
//! the same name (any case), type and class.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use podns::upstream::{Delivery, PendingMap};
use podns::wire::{HEADER_LEN, Header, parse_question, set_id};

/// Mode bits.
const USE_TICKET_ID: u8 = 1;
const SECOND_TICKET: u8 = 2;
const DROP_BEFORE: u8 = 4;

fuzz_target!(|data: &[u8]| {
    let [n, mode, rest @ ..] = data else {
        return;
    };
    let Some((query, reply)) = rest.split_at_checked(usize::from(*n)) else {
        return;
    };
    let Ok(qq) = parse_question(query) else {
        return;
    };
    let map = PendingMap::default();
    let question = &query[HEADER_LEN..qq.end];
    let name_len = qq.name_end - HEADER_LEN;
    let mut ticket = map.register(question, name_len);
    let other = (mode & SECOND_TICKET != 0).then(|| map.register(b"\x01x\x00\x00\x01\x00\x01", 3));
    assert_eq!(map.len(), 1 + other.is_some() as usize);
    if let Some(o) = &other {
        assert_ne!(o.id, ticket.id);
    }

    let mut reply = BytesMut::from(reply);
    if mode & USE_TICKET_ID != 0 {
        set_id(&mut reply, ticket.id);
    }
    let dropped = mode & DROP_BEFORE != 0;
    let id = ticket.id;
    if dropped {
        drop(ticket);
        assert_eq!(map.len(), other.is_some() as usize);
        ticket = map.register(question, name_len);
        // A fresh ID: the reply is for the dropped one unless the IDs happen to agree.
    }

    // What RFC 5452 §9.1 says should happen.
    let expected = match (Header::parse(&reply), parse_question(&reply)) {
        (Ok(h), _) if !h.qr() || h.qdcount != 1 => Delivery::Malformed,
        (Err(_), _) | (_, Err(_)) => Delivery::Malformed,
        (Ok(h), Ok(rq)) => {
            if h.id == ticket.id {
                if !rq.same_as(&reply, &qq, query) {
                    Delivery::WrongQuestion
                } else if podns::wire::sanitize_reply(&mut reply.to_vec()).is_err() {
                    // Matching replies are checked whole (compression, lengths, trailing bytes).
                    Delivery::Rejected
                } else {
                    Delivery::Delivered
                }
            } else if other.as_ref().is_some_and(|o| o.id == h.id) {
                let x = b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01x\x00\x00\x01\x00\x01";
                let xq = parse_question(x).unwrap();
                if !rq.same_as(&reply, &xq, x) {
                    Delivery::WrongQuestion
                } else if podns::wire::sanitize_reply(&mut reply.to_vec()).is_err() {
                    Delivery::Rejected
                } else {
                    Delivery::Delivered
                }
            } else {
                Delivery::UnknownId
            }
        }
    };
    let before = map.len();
    let got = map.complete(reply.clone());
    assert_eq!(got, expected, "reply for id {id} (ticket now {})", ticket.id);
    if got == Delivery::Delivered {
        assert_eq!(map.len(), before - 1);
        let h = Header::parse(&reply).unwrap();
        if h.id == ticket.id {
            let delivered = ticket.rx.try_recv().expect("delivered").expect("a reply, not an error");
            // The same bytes but TTLs with the top bit set, which read as 0 (RFC 2181 §8).
            let mut want = reply.to_vec();
            podns::wire::sanitize_reply(&mut want).expect("delivered replies are valid");
            assert_eq!(delivered[..], want[..]);
        }
        // The same reply again finds nobody waiting.
        assert_eq!(map.complete(reply), Delivery::UnknownId);
    } else if got == Delivery::Rejected {
        // The waiter is answered with an error, never with the reply.
        assert_eq!(map.len(), before - 1);
        if Header::parse(&reply).unwrap().id == ticket.id {
            assert!(ticket.rx.try_recv().expect("answered").is_err());
        }
    } else {
        assert_eq!(map.len(), before);
        assert!(ticket.rx.try_recv().is_err(), "something delivered without a match");
    }
    drop(ticket);
    drop(other);
    assert!(map.is_empty(), "tickets dropped but IDs still registered");
});
