//! The fast path's table ([`super`]): the clients and upstream queries in flight, in a slab
//! bounded by `--max-inflight`, indexed by (socket, ID) for replies and by key for coalescing,
//! with the leaders in deadline order. Knows nothing of sockets, so it is tested on its own.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::time::Instant;

use crate::cache::KeyRef;
use crate::policy::ParsedQuery;
use crate::upstream::{FastKeys, LinkId};
use crate::wire::set_id;

/// No entry.
const NONE: u32 = u32::MAX;

/// One multiply per word: for keys that are already random (IDs podns chose, keyed SipHash
/// values), where a collision attack has nothing to aim at.
#[derive(Default)]
struct Mix(u64);

impl Hasher for Mix {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(29) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type MixState = BuildHasherDefault<Mix>;

/// A client waiting in the table. A *leader* also owns an upstream query.
pub(super) struct Entry<G> {
    /// The client's query (its ID replaced by the upstream one for a leader). The capacity is
    /// kept when the entry is reused, so a warm table copies without allocating.
    pub(super) query: Vec<u8>,
    pub(super) q: Option<ParsedQuery>,
    pub(super) peer: SocketAddr,
    pub(super) started: Instant,
    pub(super) guard: Option<G>,
    /// Next client waiting on the same upstream query.
    pub(super) next: u32,
    /// A follower that was not plain: it starts the slow path when the leader ends.
    pub(super) deferred: bool,
    // Leader only.
    pub(super) leader: bool,
    pub(super) link: LinkId,
    pub(super) id: u16,
    /// Its key's hash ([`FastKeys::hash`]), and whether the leader is the one indexed under it.
    pub(super) hash: u64,
    pub(super) key: Option<u64>,
    pub(super) sent: Instant,
    pub(super) deadline: Instant,
    pub(super) older: u32,
    pub(super) newer: u32,
}

/// The fast path's clients and upstream queries in flight: a slab bounded by `--max-inflight`,
/// with indexes by (socket, ID) for replies and by key for coalescing, and the leaders in
/// deadline order. Knows nothing of sockets, so it is tested on its own.
pub struct Table<G> {
    pub(super) entries: Vec<Entry<G>>,
    free: Vec<u32>,
    cap: usize,
    by_id: HashMap<(LinkId, u16), u32, MixState>,
    by_key: HashMap<u64, u32, MixState>,
    keys: Arc<FastKeys>,
    oldest: u32,
    newest: u32,
    clients: usize,
}

impl<G> Table<G> {
    /// A table for at most `cap` clients. The indexes get their capacity now, so inserting
    /// never allocates; entries are created on first use and reused.
    pub fn new(cap: usize, keys: Arc<FastKeys>) -> Table<G> {
        let index = cap.min(65536);
        Table {
            entries: Vec::new(),
            free: Vec::new(),
            cap,
            by_id: HashMap::with_capacity_and_hasher(index, MixState::default()),
            by_key: HashMap::with_capacity_and_hasher(index, MixState::default()),
            keys,
            oldest: NONE,
            newest: NONE,
            clients: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.clients == 0
    }

    /// The coalescing key's hash of the query `msg`: the name in lower case, type, class, DO
    /// and CD (the resolver's key, [`key_of`]), with a per-process random key.
    pub fn key_hash(&self, msg: &[u8], q: &ParsedQuery) -> u64 {
        self.keys.hash(&KeyRef::of(msg, q))
    }

    /// The leader in flight for the query `msg`'s key, if any.
    pub fn leader_for(&self, hash: u64, msg: &[u8], q: &ParsedQuery) -> Option<u32> {
        let &l = self.by_key.get(&hash)?;
        let e = &self.entries[l as usize];
        let lq = e.q.as_ref()?;
        let (a, b) = (KeyRef::of(&e.query, lq), KeyRef::of(msg, q));
        (a.qtype == b.qtype && a.qclass == b.qclass && a.flags == b.flags && a.name.eq_ignore_ascii_case(b.name))
            .then_some(l)
    }

    /// Adds a client (not yet leader nor follower). When the table is full, the guard comes
    /// back.
    pub fn add(&mut self, msg: &[u8], q: ParsedQuery, peer: SocketAddr, started: Instant, guard: G) -> Result<u32, G> {
        if self.clients >= self.cap {
            return Err(guard);
        }
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push(Entry {
                    query: Vec::new(),
                    q: None,
                    peer,
                    started,
                    guard: None,
                    next: NONE,
                    deferred: false,
                    leader: false,
                    link: 0,
                    id: 0,
                    hash: 0,
                    key: None,
                    sent: started,
                    deadline: started,
                    older: NONE,
                    newer: NONE,
                });
                (self.entries.len() - 1) as u32
            }
        };
        let e = &mut self.entries[idx as usize];
        e.query.clear();
        e.query.extend_from_slice(msg);
        e.q = Some(q);
        e.peer = peer;
        e.started = started;
        e.guard = Some(guard);
        e.next = NONE;
        e.deferred = false;
        e.leader = false;
        e.key = None;
        self.clients += 1;
        Ok(idx)
    }

    /// Makes `idx` a leader sending on `link` until `deadline`: picks an ID no other query in
    /// flight on `link` has, writes it into the stored query, indexes the leader by (link, ID)
    /// and, when no other leader holds it, by `hash`. Deadlines must not decrease from one
    /// call to the next (they are one attempt timeout after now).
    pub fn lead(&mut self, idx: u32, link: LinkId, hash: u64, now: Instant, deadline: Instant) -> u16 {
        let mut id: u16 = rand::random();
        while self.by_id.contains_key(&(link, id)) {
            id = rand::random();
        }
        self.by_id.insert((link, id), idx);
        self.keys.begin(hash);
        let key = match self.by_key.entry(hash) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(idx);
                Some(hash)
            }
            std::collections::hash_map::Entry::Occupied(_) => None,
        };
        let newest = self.newest;
        let e = &mut self.entries[idx as usize];
        set_id(&mut e.query, id);
        e.leader = true;
        e.link = link;
        e.id = id;
        e.hash = hash;
        e.key = key;
        e.sent = now;
        e.deadline = deadline;
        e.older = newest;
        e.newer = NONE;
        if newest == NONE {
            self.oldest = idx;
        } else {
            self.entries[newest as usize].newer = idx;
        }
        self.newest = idx;
        id
    }

    /// Chains `idx` behind `leader`: it gets the leader's answer. `deferred`: it goes to the
    /// slow path instead when the leader ends.
    pub fn follow(&mut self, leader: u32, idx: u32, deferred: bool) {
        let next = self.entries[leader as usize].next;
        let e = &mut self.entries[idx as usize];
        e.next = next;
        e.deferred = deferred;
        self.entries[leader as usize].next = idx;
    }

    /// The leader that sent ID `id` on `link`.
    pub fn lookup(&self, link: LinkId, id: u16) -> Option<u32> {
        self.by_id.get(&(link, id)).copied()
    }

    /// Ends the upstream query of `leader`: its ID is free again, its key no longer joins it,
    /// its deadline is gone. The clients (the leader first, then its followers through
    /// [`Table::next`]) stay until [`Table::release`]d.
    pub fn finish(&mut self, leader: u32) {
        let e = &mut self.entries[leader as usize];
        debug_assert!(e.leader);
        e.leader = false;
        let (link, id, key, older, newer) = (e.link, e.id, e.key.take(), e.older, e.newer);
        self.keys.end(e.hash);
        self.by_id.remove(&(link, id));
        if let Some(k) = key {
            self.by_key.remove(&k);
        }
        if older == NONE {
            self.oldest = newer;
        } else {
            self.entries[older as usize].newer = newer;
        }
        if newer == NONE {
            self.newest = older;
        } else {
            self.entries[newer as usize].older = older;
        }
    }

    /// The client after `idx` on the same upstream query.
    pub fn next(&self, idx: u32) -> Option<u32> {
        let n = self.entries[idx as usize].next;
        (n != NONE).then_some(n)
    }

    /// Frees `idx` (its query buffer is kept for reuse) and returns its guard.
    pub fn release(&mut self, idx: u32) -> Option<G> {
        let e = &mut self.entries[idx as usize];
        debug_assert!(!e.leader, "finish a leader before releasing it");
        e.q = None;
        let g = e.guard.take();
        self.free.push(idx);
        self.clients -= 1;
        g
    }

    /// The leader with the earliest deadline.
    pub fn oldest(&self) -> Option<u32> {
        (self.oldest != NONE).then_some(self.oldest)
    }

    /// The earliest deadline in the table.
    pub fn earliest(&self) -> Option<Instant> {
        self.oldest().map(|l| self.entries[l as usize].deadline)
    }

    /// The oldest leader if its deadline has passed at `now`.
    pub fn expired(&self, now: Instant) -> Option<u32> {
        self.oldest().filter(|&l| self.entries[l as usize].deadline <= now)
    }

    /// Leaders sending on `link`, oldest first (for a socket that failed).
    pub(super) fn leaders_on(&self, link: LinkId, out: &mut Vec<u32>) {
        let mut l = self.oldest;
        while l != NONE {
            let e = &self.entries[l as usize];
            if e.link == link {
                out.push(l);
            }
            l = e.newer;
        }
    }
}

/// The fast path of one listener: its table, its upstream sockets and its batches.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::BytesMut;

    use super::*;
    use crate::policy::{Admission, admit};
    use crate::upstream::same_question;
    use crate::wire::HEADER_LEN;
    use crate::wire::write_query;

    fn query(id: u16, name: &[u8], qtype: u16) -> (Vec<u8>, ParsedQuery) {
        let mut m = BytesMut::new();
        write_query(id, name, qtype, &mut m);
        let Admission::Query(q) = admit(&m) else { panic!("admitted") };
        (m.to_vec(), q)
    }

    fn keys() -> Arc<FastKeys> {
        Arc::new(FastKeys::new(metrics::Counter::noop()))
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:5353".parse().unwrap()
    }

    #[test]
    fn ids_are_unique_per_socket_and_freed() {
        let mut t: Table<()> = Table::new(70_000, keys());
        let now = Instant::now();
        let (m, q) = query(1, b"\x01a\x00", 1);
        let mut ids = std::collections::HashSet::new();
        let mut leaders = Vec::new();
        // 60,000 queries on one socket: all IDs distinct (the random draw must retry).
        for n in 0..60_000u64 {
            let i = t.add(&m, q, peer(), now, ()).ok().unwrap();
            let id = t.lead(i, 7, n, now, now);
            assert!(ids.insert(id), "ID {id} given twice on one socket");
            assert_eq!(u16::from_be_bytes([t.entries[i as usize].query[0], t.entries[i as usize].query[1]]), id);
            leaders.push(i);
        }
        // Another socket may reuse them.
        let i = t.add(&m, q, peer(), now, ()).ok().unwrap();
        let other = t.lead(i, 8, 1 << 40, now, now);
        assert_eq!(t.lookup(8, other), Some(i));
        // Finishing frees the ID for reuse and the lookup forgets it.
        let first = leaders[0];
        let id = t.entries[first as usize].id;
        t.finish(first);
        t.release(first);
        assert_eq!(t.lookup(7, id), None);
        assert_eq!(t.clients, 60_000);
    }

    #[test]
    fn followers_chain_behind_their_leader_by_key() {
        let mut t: Table<u32> = Table::new(16, keys());
        let now = Instant::now();
        let (m1, q1) = query(1, b"\x03www\x07example\x00", 1);
        let (m2, q2) = query(2, b"\x03WWW\x07eXample\x00", 1);
        let (m3, q3) = query(3, b"\x03www\x07example\x00", 28);
        let h1 = t.key_hash(&m1, &q1);
        assert_eq!(h1, t.key_hash(&m2, &q2), "the key ignores case");
        assert_ne!(h1, t.key_hash(&m3, &q3), "the type is part of the key");
        assert_eq!(t.leader_for(h1, &m1, &q1), None);
        let l = t.add(&m1, q1, peer(), now, 1).ok().unwrap();
        t.lead(l, 0, h1, now, now);
        assert_eq!(t.leader_for(h1, &m2, &q2), Some(l));
        // A different key under the same hash (a collision) does not join.
        assert_eq!(t.leader_for(h1, &m3, &q3), None);
        let f1 = t.add(&m2, q2, peer(), now, 2).ok().unwrap();
        t.follow(l, f1, false);
        let f2 = t.add(&m1, q1, peer(), now, 3).ok().unwrap();
        t.follow(l, f2, true);
        let mut chain = vec![l];
        while let Some(n) = t.next(*chain.last().unwrap()) {
            chain.push(n);
        }
        assert_eq!(chain.len(), 3);
        assert!(chain.contains(&f1) && chain.contains(&f2));
        assert!(t.entries[f2 as usize].deferred && !t.entries[f1 as usize].deferred);
        t.finish(l);
        assert_eq!(t.leader_for(h1, &m2, &q2), None, "a finished leader takes no more followers");
        let guards: Vec<u32> = chain.iter().map(|&i| t.release(i).unwrap()).collect();
        assert_eq!(guards.len(), 3);
        assert!(t.is_empty());
    }

    #[test]
    fn replies_match_by_socket_id_and_question_only() {
        let mut t: Table<()> = Table::new(8, keys());
        let now = Instant::now();
        let (m, q) = query(1, b"\x03WwW\x07example\x00", 1);
        let l = t.add(&m, q, peer(), now, ()).ok().unwrap();
        let id = t.lead(l, 3, t.key_hash(&m, &q), now, now);
        // What `on_reply` checks, in order: the (socket, ID) and then the question.
        assert_eq!(t.lookup(3, id), Some(l));
        assert_eq!(t.lookup(4, id), None, "the same ID on another socket is not this query");
        assert_eq!(t.lookup(3, id.wrapping_add(1)), None, "another ID on this socket is not this query");
        let e = &t.entries[l as usize];
        let mine = &e.query[HEADER_LEN..q.question.end];
        let name_len = q.question.name_end - HEADER_LEN;
        let (r, rq) = query(id, b"\x03www\x07EXAMPLE\x00", 1);
        assert!(same_question(mine, name_len, &r[HEADER_LEN..rq.question.end], name_len), "case does not matter");
        let (r, rq) = query(id, b"\x03www\x07example\x00", 28);
        assert!(!same_question(mine, name_len, &r[HEADER_LEN..rq.question.end], name_len), "the type does");
        let (r, rq) = query(id, b"\x03wwx\x07example\x00", 1);
        assert!(!same_question(mine, name_len, &r[HEADER_LEN..rq.question.end], name_len), "the name does");
        let (r, rq) = query(id, b"\x02ww\x07example\x00", 1);
        let theirs = &r[HEADER_LEN..rq.question.end];
        assert!(!same_question(mine, name_len, theirs, rq.question.name_end - HEADER_LEN), "a shorter name");
    }

    #[test]
    fn bounded_by_its_capacity() {
        let mut t: Table<()> = Table::new(3, keys());
        let now = Instant::now();
        let (m, q) = query(1, b"\x01a\x00", 1);
        let a: Vec<u32> = (0..3).map(|_| t.add(&m, q, peer(), now, ()).ok().unwrap()).collect();
        assert!(t.add(&m, q, peer(), now, ()).is_err(), "a fourth client fits nowhere");
        t.release(a[1]);
        let again = t.add(&m, q, peer(), now, ()).ok().unwrap();
        assert_eq!(again, a[1], "a freed entry is reused");
        assert_eq!(t.entries.len(), 3, "no entry beyond the capacity was ever created");
    }

    #[test]
    fn deadlines_expire_oldest_first_and_skip_answered_ones() {
        let mut t: Table<()> = Table::new(8, keys());
        let t0 = Instant::now();
        let (m, q) = query(1, b"\x01a\x00", 1);
        let mut l = Vec::new();
        for k in 0..4u64 {
            let i = t.add(&m, q, peer(), t0, ()).ok().unwrap();
            t.lead(i, 0, k, t0, t0 + Duration::from_millis(100 * (k + 1)));
            l.push(i);
        }
        assert_eq!(t.earliest(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(t.expired(t0 + Duration::from_millis(99)), None);
        // The second is answered: it leaves the deadline order from the middle.
        t.finish(l[1]);
        t.release(l[1]);
        let at = t0 + Duration::from_millis(350);
        let mut expired = Vec::new();
        while let Some(e) = t.expired(at) {
            t.finish(e);
            t.release(e);
            expired.push(e);
        }
        assert_eq!(expired, vec![l[0], l[2]]);
        assert_eq!(t.earliest(), Some(t0 + Duration::from_millis(400)));
        t.finish(l[3]);
        t.release(l[3]);
        assert_eq!(t.earliest(), None, "nothing in flight: no deadline to wake for");
    }
}
