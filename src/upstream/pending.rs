//! Queries sent on one upstream socket or connection and not yet answered, keyed by the random
//! ID they went out with. Shared by UDP and TCP: a reply completes its waiter only when its ID
//! and its question match (RFC 5452 §9.1); anything else is counted and ignored, so a spoofed
//! reply cannot displace the real one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use bytes::BytesMut;
use tokio::sync::oneshot;

use crate::error::UpstreamError;
use crate::wire::{HEADER_LEN, Header, parse_question};

/// The question a reply must carry: name (compared case-insensitively), type and class.
/// Stored inline so registering a query allocates nothing.
struct QuestionKey {
    bytes: [u8; 259],
    name_len: u8,
    len: u16,
}

impl QuestionKey {
    fn new(question_bytes: &[u8], name_len: usize) -> QuestionKey {
        let mut bytes = [0u8; 259];
        let len = question_bytes.len().min(bytes.len());
        bytes[..len].copy_from_slice(&question_bytes[..len]);
        QuestionKey { bytes, name_len: name_len.min(255) as u8, len: len as u16 }
    }

    fn matches(&self, question_bytes: &[u8], name_len: usize) -> bool {
        same_question(&self.bytes[..self.len as usize], self.name_len as usize, question_bytes, name_len)
    }
}

/// Whether the question of a reply (`theirs`: name, type, class, with a name of `their_name_len`
/// octets) is the one asked (`mine`, likewise): the name compared case-insensitively, type and
/// class exactly (RFC 5452 §9.1). Shared by [`PendingMap`] and the UDP fast path.
pub fn same_question(mine: &[u8], my_name_len: usize, theirs: &[u8], their_name_len: usize) -> bool {
    let n = my_name_len;
    their_name_len == n
        && theirs.len() == mine.len()
        && n <= mine.len()
        && theirs[..n].eq_ignore_ascii_case(&mine[..n])
        && theirs[n..] == mine[n..]
}

struct Waiter {
    key: QuestionKey,
    tx: oneshot::Sender<Result<BytesMut, UpstreamError>>,
}

/// What happened to a reply handed to [`PendingMap::complete`].
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// No query with that ID is waiting (late, or spoofed).
    UnknownId,
    /// A query with that ID waits, but for another question.
    WrongQuestion,
    /// Not a reply podns can read.
    Malformed,
    /// It answers a waiting query but does not hold together past the question (bad
    /// compression pointers, record lengths, trailing bytes): the query fails with
    /// [`UpstreamError::Malformed`] so it moves on to the next upstream at once, and the reply
    /// is neither relayed nor cached.
    Rejected,
}

/// The waiting queries of one socket or connection.
pub struct PendingMap {
    inner: Mutex<HashMap<u16, Waiter>>,
    /// The upstream, named in the error a rejected reply gives its query.
    addr: SocketAddr,
}

impl Default for PendingMap {
    fn default() -> Self {
        PendingMap::new(SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

/// A registered query: its ID and the receiver of its reply. Dropping it unregisters the ID.
pub struct Ticket<'a> {
    pub id: u16,
    pub rx: oneshot::Receiver<Result<BytesMut, UpstreamError>>,
    map: &'a PendingMap,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.map.lock().remove(&self.id);
    }
}

impl PendingMap {
    /// The waiting queries of a socket or connection to `addr`.
    pub fn new(addr: SocketAddr) -> PendingMap {
        PendingMap { inner: Mutex::new(HashMap::new()), addr }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Waiter>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a query whose question (name, type, class) is `question_bytes` with a name of
    /// `name_len` octets, under a fresh random ID not in use on this socket.
    pub fn register(&self, question_bytes: &[u8], name_len: usize) -> Ticket<'_> {
        let (tx, rx) = oneshot::channel();
        let key = QuestionKey::new(question_bytes, name_len);
        let mut map = self.lock();
        let mut id: u16 = rand::random();
        while map.contains_key(&id) {
            id = rand::random();
        }
        map.insert(id, Waiter { key, tx });
        Ticket { id, rx, map: self }
    }

    /// Hands a reply to the query it answers, if it answers one. A matching reply is checked
    /// whole first ([`crate::wire::sanitize_reply`], which also zeroes TTLs with the top bit
    /// set, RFC 2181 §8): every exchange, UDP or TCP, passes here, so nothing unchecked is
    /// relayed or cached. Only matching replies are walked, so forged floods cost a hash lookup.
    pub fn complete(&self, mut reply: BytesMut) -> Delivery {
        let Ok(h) = Header::parse(&reply) else {
            return Delivery::Malformed;
        };
        if !h.qr() || h.qdcount != 1 {
            return Delivery::Malformed;
        }
        let Ok(q) = parse_question(&reply) else {
            return Delivery::Malformed;
        };
        let mut map = self.lock();
        let Some(w) = map.get(&h.id) else {
            return Delivery::UnknownId;
        };
        if !w.key.matches(&reply[HEADER_LEN..q.end], q.name_end - HEADER_LEN) {
            return Delivery::WrongQuestion;
        }
        let w = map.remove(&h.id).expect("present");
        drop(map);
        if crate::wire::sanitize_reply(&mut reply).is_err() {
            let _ = w.tx.send(Err(UpstreamError::Malformed(self.addr)));
            return Delivery::Rejected;
        }
        let _ = w.tx.send(Ok(reply));
        Delivery::Delivered
    }

    /// Fails every waiting query (connection lost, port unreachable).
    pub fn fail_all(&self, err: UpstreamError) {
        let drained: Vec<Waiter> = self.lock().drain().map(|(_, w)| w).collect();
        for w in drained {
            let _ = w.tx.send(Err(err));
        }
    }

    /// Number of waiting queries.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: u16, qr: bool, name: &[u8], qtype: u16) -> BytesMut {
        let mut m = BytesMut::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&[if qr { 0x81 } else { 0x01 }, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(name);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m
    }

    #[test]
    fn only_matching_replies_complete() {
        let map = PendingMap::default();
        let q = msg(0, false, b"\x03WwW\x00", 1);
        let mut t = map.register(&q[12..], 5);
        assert_eq!(map.complete(msg(t.id.wrapping_add(1), true, b"\x03www\x00", 1)), Delivery::UnknownId);
        assert_eq!(map.complete(msg(t.id, true, b"\x03wwx\x00", 1)), Delivery::WrongQuestion);
        assert_eq!(map.complete(msg(t.id, true, b"\x03www\x00", 28)), Delivery::WrongQuestion);
        assert_eq!(map.complete(msg(t.id, false, b"\x03www\x00", 1)), Delivery::Malformed);
        assert_eq!(map.complete(BytesMut::from(&b"junk"[..])), Delivery::Malformed);
        assert!(t.rx.try_recv().is_err(), "nothing delivered yet");
        assert_eq!(map.complete(msg(t.id, true, b"\x03WWW\x00", 1)), Delivery::Delivered);
        assert!(t.rx.try_recv().unwrap().is_ok());
    }

    #[test]
    fn matching_but_malformed_reply_fails_its_query() {
        let addr: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let map = PendingMap::new(addr);
        let q = msg(0, false, b"\x03www\x00", 1);
        let mut t = map.register(&q[12..], 5);
        let mut r = msg(t.id, true, b"\x03www\x00", 1);
        r.extend_from_slice(b"trailing");
        assert_eq!(map.complete(r), Delivery::Rejected);
        assert_eq!(t.rx.try_recv().unwrap().unwrap_err(), UpstreamError::Malformed(addr));
        assert!(map.is_empty());
    }

    #[test]
    fn ids_are_unique_and_released() {
        let map = PendingMap::default();
        let q = msg(0, false, b"\x01a\x00", 1);
        let tickets: Vec<_> = (0..500).map(|_| map.register(&q[12..], 3)).collect();
        let mut ids: Vec<u16> = tickets.iter().map(|t| t.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 500);
        drop(tickets);
        assert!(map.is_empty());
    }

    #[test]
    fn fail_all_reaches_every_waiter() {
        let map = PendingMap::default();
        let q = msg(0, false, b"\x01a\x00", 1);
        let mut a = map.register(&q[12..], 3);
        let addr = "127.0.0.1:53".parse().unwrap();
        map.fail_all(UpstreamError::Refused(addr));
        assert_eq!(a.rx.try_recv().unwrap().unwrap_err(), UpstreamError::Refused(addr));
    }
}
