//! The UDP fast path (issue 12): plain forwards with no task, lock, timer or allocation per
//! query, run by the listener loop itself (`server::udp`).
//!
//! A *plain* forward is a UDP client query that [`Pipeline::serve`] would only pass to the
//! resolver unchanged ([`Pipeline::passes`]: no search-collapse action, AAAA plan
//! `Forward`) and whose key the resolver is not busy with nor remembers a failure for
//! ([`Pipeline::is_engaged`]). The loop writes it to one of its own upstream
//! sockets ([`Links`]) with a fresh random ID and records the client in a [`Table`] keyed by
//! (socket, ID). Replies are read in batches on the same loop, matched by ID *and* question
//! (RFC 5452 §9.1, [`same_question`]), checked whole ([`sanitize_reply`]), cached, shaped for
//! each client ([`shape`]) and sent back in the listener's send batch.
//!
//! **Coalescing.** A client query whose key (name in any case, type, class, DO and CD) matches a
//! leader in flight joins it as a follower: no second upstream query. A query of the same key
//! that is *not* plain (its policies changed between the two, e.g. `--aaaa auto` found an IPv6
//! address meanwhile) joins too, as a *deferred* follower: when the leader ends it starts the
//! slow path, whose lookup then finds the leader's answer in the cache. The other way round:
//! a key the slow path is exchanging, or remembers a failure for, goes to the slow path
//! ([`Pipeline::is_engaged`]), which follows that exchange; and a slow-path exchange that
//! starts while a fast leader asks for its key (podns's own lookups: collapse candidates, the
//! AAAA handling's A queries) waits for that leader to end and takes its answer from the cache
//! ([`FastKeys`], in the lookup layer, `pipeline::Lookup`) instead of asking too. With `--cache-size 0` there
//! is no cache to take it from: such a lookup asks after the leader has ended.
//!
//! **Leaving the fast path.** Whatever the fast path does not handle itself goes to the slow
//! path ([`Pipeline::serve_within`], with what is left of the client's budget) exactly as a
//! query that never entered it, and the attempt loop continues the fast path's attempt
//! ([`Handoff`]) rather than repeating it: after a timeout, a port unreachable, a send error or
//! a reply that does not hold together, that upstream's attempt is used up; a truncated,
//! SERVFAIL, REFUSED or FORMERR reply is taken as that upstream's reply (TCP retry, failover
//! without asking it again, retry without EDNS). Only a reply longer than a batch slot (4 KiB)
//! is asked again.
//!
//! **Timeouts.** Every leader waits the same attempt timeout, so deadlines are in insertion
//! order: a list threaded through the table (oldest first), checked by the loop, with one
//! `sleep_until` armed by the loop only while something is in flight.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::cache::KeyRef;
use crate::error::UpstreamError;
use crate::metrics::{Drop, Proto, Source};
use crate::net::batch::{Push, RecvBatch, SendBatch};
use crate::pipeline::{Action, Answer, InflightGuard, Pipeline, Served, shape};
use crate::policy::ParsedQuery;
use crate::upstream::{FastKeys, Handoff, LinkId, Links, same_question};
use crate::wire::{HEADER_LEN, Header, parse_question, rcode, sanitize_reply, set_id};

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
struct Entry<G> {
    /// The client's query (its ID replaced by the upstream one for a leader). The capacity is
    /// kept when the entry is reused, so a warm table copies without allocating.
    query: Vec<u8>,
    q: Option<ParsedQuery>,
    peer: SocketAddr,
    started: Instant,
    guard: Option<G>,
    /// Next client waiting on the same upstream query.
    next: u32,
    /// A follower that was not plain: it starts the slow path when the leader ends.
    deferred: bool,
    // Leader only.
    leader: bool,
    link: LinkId,
    id: u16,
    /// Its key's hash ([`FastKeys::hash`]), and whether the leader is the one indexed under it.
    hash: u64,
    key: Option<u64>,
    sent: Instant,
    deadline: Instant,
    older: u32,
    newer: u32,
}

/// The fast path's clients and upstream queries in flight: a slab bounded by `--max-inflight`,
/// with indexes by (socket, ID) for replies and by key for coalescing, and the leaders in
/// deadline order. Knows nothing of sockets, so it is tested on its own.
pub struct Table<G> {
    entries: Vec<Entry<G>>,
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
    fn leaders_on(&self, link: LinkId, out: &mut Vec<u32>) {
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
pub struct FastPath<F> {
    core: Core<F>,
    /// Queries for the batch's upstream socket.
    up_out: SendBatch,
    /// Replies read from an upstream socket.
    replies: RecvBatch,
}

struct Core<F> {
    pipeline: Arc<Pipeline>,
    listener: Arc<UdpSocket>,
    table: Table<InflightGuard>,
    links: Links<F>,
    /// The socket this batch's new queries leave from (one random socket per batch, so one
    /// `sendmmsg` carries them), and the leaders queued in `up_out` for it.
    batch_link: Option<LinkId>,
    queued: Vec<u32>,
    scratch: BytesMut,
    attempt: Duration,
    budget: Duration,
    links_scratch: Vec<LinkId>,
    leaders_scratch: Vec<u32>,
}

/// Why a leader's upstream query ended without an answer the fast path relays.
enum Ended {
    /// Timed out, could not be sent, or the reply does not hold together: the upstream's first
    /// attempt is used up.
    Failed(UpstreamError),
    /// A reply the slow path acts on (truncated, SERVFAIL, REFUSED, FORMERR), sent at the
    /// instant given: it continues from it.
    Reply(bytes::Bytes, Instant),
    /// Too long for a batch slot: the slow path asks again.
    Redo,
}

impl<F: Future<Output = ()>> FastPath<F> {
    /// `wait_ready` is [`crate::upstream::wait_ready`].
    pub fn new(
        pipeline: Arc<Pipeline>,
        listener: Arc<UdpSocket>,
        max_inflight: usize,
        wait_ready: fn(Arc<UdpSocket>) -> F,
    ) -> FastPath<F> {
        let ups = &pipeline.upstreams;
        let links = Links::new(ups, wait_ready);
        let (attempt, budget) = (ups.attempt_timeout(), ups.query_timeout());
        let table = Table::new(max_inflight, pipeline.fast_keys().clone());
        FastPath {
            core: Core {
                pipeline,
                listener,
                table,
                links,
                batch_link: None,
                queued: Vec::with_capacity(crate::net::batch::SLOTS),
                scratch: BytesMut::new(),
                attempt,
                budget,
                links_scratch: Vec::new(),
                leaders_scratch: Vec::new(),
            },
            up_out: SendBatch::new(),
            replies: RecvBatch::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.core.table.is_empty()
    }

    /// When the loop must look at the table next, if anything is in flight.
    pub fn earliest(&self) -> Option<Instant> {
        self.core.table.earliest()
    }

    /// Registers `cx` for replies on every upstream socket; true when one is readable.
    pub fn poll_replies(&mut self, cx: &mut Context<'_>) -> bool {
        self.core.links.poll_readable(cx)
    }

    /// Takes an admitted UDP query: joins a leader of the same key, leads a new upstream query
    /// (queued in the batch, sent by [`FastPath::flush`]), or goes to the slow path.
    pub async fn forward(
        &mut self,
        msg: &[u8],
        q: ParsedQuery,
        guard: InflightGuard,
        peer: SocketAddr,
        started: Instant,
    ) {
        let c = &mut self.core;
        let plain = c.pipeline.passes(msg, &q);
        let hash = c.table.key_hash(msg, &q);
        if let Some(leader) = c.table.leader_for(hash, msg, &q) {
            // Every client in the table holds an in-flight slot, so it has room for this one;
            // were it full, the slow path would take the query.
            match c.table.add(msg, q, peer, started, guard) {
                Ok(idx) => {
                    c.table.follow(leader, idx, !plain);
                    c.pipeline.fast_keys().coalesced.increment(1);
                }
                Err(guard) => {
                    slow(&c.pipeline, &c.listener, BytesMut::from(msg), q, guard, peer, started, c.budget, None)
                }
            }
            return;
        }
        if !plain || c.pipeline.is_engaged(msg, &q) {
            return slow(&c.pipeline, &c.listener, BytesMut::from(msg), q, guard, peer, started, c.budget, None);
        }
        let now = Instant::now();
        let link = match c.batch_link {
            Some(l) => l,
            None => match c.links.pick(&c.pipeline.upstreams, now) {
                Some(l) => {
                    c.batch_link = Some(l);
                    l
                }
                None => {
                    return slow(
                        &c.pipeline,
                        &c.listener,
                        BytesMut::from(msg),
                        q,
                        guard,
                        peer,
                        started,
                        c.budget,
                        None,
                    );
                }
            },
        };
        let idx = match c.table.add(msg, q, peer, started, guard) {
            Ok(idx) => idx,
            Err(guard) => {
                return slow(&c.pipeline, &c.listener, BytesMut::from(msg), q, guard, peer, started, c.budget, None);
            }
        };
        c.table.lead(idx, link, hash, now, now + c.attempt);
        c.links.sent(link);
        c.queued.push(idx);
        let mut pushed = self.up_out.push(&self.core.table.entries[idx as usize].query, None);
        if pushed == Push::Full {
            // Flushing sends what is queued (this query included) and forgets the batch's
            // socket; this leader was already counted as queued, so it goes with them.
            self.core.queued.pop();
            self.flush().await;
            self.core.batch_link = Some(link);
            self.core.queued.push(idx);
            pushed = self.up_out.push(&self.core.table.entries[idx as usize].query, None);
        }
        if pushed != Push::Queued {
            // Larger than a whole batch: cannot be, as client queries fit a receive slot.
            self.core.queued.pop();
            self.core.table.finish(idx);
            self.core.links.done(link);
            self.core.hand_over(idx, 0, Ended::Redo);
        }
    }

    /// Sends the queries queued for the batch's upstream socket. Those the socket refuses go to
    /// the slow path.
    pub async fn flush(&mut self) {
        let c = &mut self.core;
        let Some(link) = c.batch_link.take() else { return };
        if c.queued.is_empty() {
            return;
        }
        let upstream = c.links.upstream(link);
        let ups = &c.pipeline.upstreams;
        let sock = c.links.sock(link);
        // A new socket is writable only once the runtime has seen it so; an old one at once.
        let (sent, err) = match sock.writable().await {
            Ok(()) => self.up_out.try_flush(sock),
            Err(e) => {
                self.up_out.clear();
                (0, Some(e))
            }
        };
        ups.fast_sent(upstream, sent);
        if let Some(e) = err {
            let addr = ups.fast_addr(upstream);
            let e = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => UpstreamError::Refused(addr),
                kind => UpstreamError::Io(addr, kind),
            };
            ups.fast_failed(upstream, e);
            let failed: Vec<u32> = c.queued[sent..].to_vec();
            for l in failed {
                c.table.finish(l);
                c.links.done(link);
                c.hand_over(l, upstream, Ended::Failed(e));
            }
        }
        c.queued.clear();
    }

    /// Reads the replies waiting on every upstream socket and answers their clients into `tx`.
    pub async fn read_replies(&mut self, tx: &mut SendBatch) {
        let mut ids = std::mem::take(&mut self.core.links_scratch);
        ids.clear();
        ids.extend(self.core.links.ids());
        for &link in &ids {
            // A few batches per socket per turn, so one busy socket cannot starve the rest.
            for _ in 0..4 {
                if !self.core.links.is_open(link) {
                    break;
                }
                let n = match self.replies.recv(self.core.links.sock(link)) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        self.core.link_failed(link, e);
                        break;
                    }
                };
                for i in 0..n {
                    let p = self.replies.get(i);
                    self.core.on_reply(link, p.data, p.truncated, tx).await;
                }
                if n < crate::net::batch::SLOTS {
                    break;
                }
            }
            if self.core.links.is_open(link)
                && let Some(e) = RecvBatch::take_error(self.core.links.sock(link))
            {
                self.core.link_failed(link, e);
            }
        }
        self.core.links_scratch = ids;
    }

    /// Hands every leader whose deadline passed to the slow path.
    pub fn expire(&mut self, now: Instant) {
        let c = &mut self.core;
        while let Some(l) = c.table.expired(now) {
            let link = c.table.entries[l as usize].link;
            let upstream = c.links.upstream(link);
            let ups = &c.pipeline.upstreams;
            let e = UpstreamError::Timeout(ups.fast_addr(upstream));
            ups.fast_failed(upstream, e);
            c.table.finish(l);
            c.links.done(link);
            c.hand_over(l, upstream, Ended::Failed(e));
        }
    }

    /// Closes the upstream sockets (the listener stops; nothing is in flight).
    pub fn close(&mut self) {
        self.core.links.close_all();
    }
}

impl<F: Future<Output = ()>> Core<F> {
    /// One reply read from `link`.
    async fn on_reply(&mut self, link: LinkId, data: &mut [u8], too_long: bool, tx: &mut SendBatch) {
        let upstream = self.links.upstream(link);
        let ups = &self.pipeline.upstreams;
        let (Ok(h), Ok(rq)) = (Header::parse(data), parse_question(data)) else {
            return ups.fast_unwanted(upstream, true);
        };
        if !h.qr() || h.qdcount != 1 {
            return ups.fast_unwanted(upstream, true);
        }
        let Some(leader) = self.table.lookup(link, h.id) else {
            return ups.fast_unwanted(upstream, false);
        };
        let e = &self.table.entries[leader as usize];
        let lq = e.q.as_ref().expect("a leader holds a query");
        let mine = &e.query[HEADER_LEN..lq.question.end];
        if !same_question(mine, lq.question.name_end - HEADER_LEN, &data[HEADER_LEN..rq.end], rq.name_end - HEADER_LEN)
        {
            return ups.fast_unwanted(upstream, false);
        }
        let sent = e.sent;
        self.table.finish(leader);
        self.links.done(link);
        if too_long {
            ups.fast_answered(upstream, h.rcode(), sent.elapsed());
            return self.hand_over(leader, upstream, Ended::Redo);
        }
        if sanitize_reply(data).is_err() {
            let e = UpstreamError::Malformed(ups.fast_addr(upstream));
            ups.fast_failed(upstream, e);
            return self.hand_over(leader, upstream, Ended::Failed(e));
        }
        if h.tc() || matches!(h.rcode(), rcode::SERVFAIL | rcode::REFUSED | rcode::FORMERR) {
            // The slow path's exchange takes this reply as its own, and counts it.
            let reply = bytes::Bytes::copy_from_slice(data);
            return self.hand_over(leader, upstream, Ended::Reply(reply, sent));
        }
        ups.fast_answered(upstream, h.rcode(), sent.elapsed());
        let now = Instant::now();
        let e = &self.table.entries[leader as usize];
        self.pipeline.store_upstream_reply(&e.query, e.q.as_ref().expect("held"), data);
        let _ = now;
        let mut next = Some(leader);
        while let Some(idx) = next {
            next = self.table.next(idx);
            let e = &self.table.entries[idx as usize];
            if e.deferred {
                self.release_to_slow_path(idx, None);
                continue;
            }
            let q = e.q.expect("held");
            self.scratch.clear();
            self.scratch.extend_from_slice(data);
            let (rc, source, action) = match shape(&mut self.scratch, &e.query, &q, Proto::Udp, &self.pipeline.metrics)
            {
                Some(rc) => (rc, Source::Upstream, Some(Action::Forwarded)),
                None => {
                    let a = Answer::servfail(&e.query, &q);
                    self.scratch.clear();
                    self.scratch.extend_from_slice(&a.bytes);
                    (a.rcode, a.source, None)
                }
            };
            let (peer, started) = (e.peer, e.started);
            send(tx, &self.listener, &self.pipeline, &self.scratch, peer).await;
            self.pipeline.record(&Served {
                proto: Proto::Udp,
                client: peer,
                query: &self.table.entries[idx as usize].query,
                qtype: q.qtype(),
                reply: &self.scratch,
                rcode: rc,
                source,
                action,
                elapsed: started.elapsed(),
            });
            drop(self.table.release(idx));
        }
    }

    /// The socket `link` reported an error (an ICMP port unreachable: the upstream is not
    /// listening): its queries go to the slow path at once, as the slow path's own would fail.
    fn link_failed(&mut self, link: LinkId, err: std::io::Error) {
        let upstream = self.links.upstream(link);
        let ups = &self.pipeline.upstreams;
        let addr = ups.fast_addr(upstream);
        let e = match err.kind() {
            std::io::ErrorKind::ConnectionRefused => UpstreamError::Refused(addr),
            kind => {
                tracing::debug!(upstream = %addr, error = %err, "upstream UDP receive failed");
                UpstreamError::Io(addr, kind)
            }
        };
        let mut leaders = std::mem::take(&mut self.leaders_scratch);
        leaders.clear();
        self.table.leaders_on(link, &mut leaders);
        if !leaders.is_empty() {
            ups.fast_failed(upstream, e);
        }
        for &l in &leaders {
            self.table.finish(l);
            self.links.done(link);
            self.hand_over(l, upstream, Ended::Failed(e));
        }
        self.leaders_scratch = leaders;
    }

    /// Sends `leader` (already finished; it asked `upstream`) and its followers to the slow path.
    fn hand_over(&mut self, leader: u32, upstream: usize, why: Ended) {
        let handoff = match why {
            Ended::Failed(e) => Handoff { failed: 1u64 << (upstream % 64), last: Some(e), reply: None },
            Ended::Reply(r, sent) => {
                let addr = self.pipeline.upstreams.fast_addr(upstream);
                Handoff { failed: 0, last: None, reply: Some((addr, r, sent)) }
            }
            Ended::Redo => Handoff::default(),
        };
        let mut next = Some(leader);
        while let Some(idx) = next {
            next = self.table.next(idx);
            self.release_to_slow_path(idx, Some(handoff.clone()));
        }
    }

    /// Releases `idx` into the slow path.
    fn release_to_slow_path(&mut self, idx: u32, handoff: Option<Handoff>) {
        let e = &self.table.entries[idx as usize];
        let (msg, q, peer, started) = (BytesMut::from(&e.query[..]), e.q.expect("held"), e.peer, e.started);
        if let Some(guard) = self.table.release(idx) {
            slow(&self.pipeline, &self.listener, msg, q, guard, peer, started, self.budget, handoff);
        }
    }
}

/// Queues `data` for `peer` in the listener's send batch (flushing it when full).
async fn send(tx: &mut SendBatch, listener: &UdpSocket, pipeline: &Pipeline, data: &[u8], peer: SocketAddr) {
    loop {
        match tx.push(data, Some(peer)) {
            Push::Queued => return,
            Push::Full => {
                let failed = tx.flush(listener).await;
                for _ in 0..failed {
                    pipeline.metrics.dropped(Drop::SendFailed);
                }
            }
            Push::TooLarge => {
                if listener.send_to(data, peer).await.is_err() {
                    pipeline.metrics.dropped(Drop::SendFailed);
                }
                return;
            }
        }
    }
}

/// Answers a query on the slow path, in a task of its own, as the listener did before the fast
/// path existed; `handoff` when the fast path already asked upstream for it.
#[allow(clippy::too_many_arguments)]
pub fn slow(
    pipeline: &Arc<Pipeline>,
    listener: &Arc<UdpSocket>,
    msg: BytesMut,
    q: ParsedQuery,
    guard: InflightGuard,
    peer: SocketAddr,
    started: Instant,
    budget: Duration,
    handoff: Option<Handoff>,
) {
    let left = budget.saturating_sub(started.elapsed());
    let (pipeline, sock) = (pipeline.clone(), listener.clone());
    drop(tokio::spawn(async move {
        let answer = pipeline.serve_within(msg, &q, Proto::Udp, left, handoff).await;
        if sock.send_to(&answer.bytes, peer).await.is_err() {
            pipeline.metrics.dropped(Drop::SendFailed);
        }
        pipeline.record(&Served::answer(Proto::Udp, peer, q.qtype(), &answer, started));
        drop(guard);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Admission, admit};
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
