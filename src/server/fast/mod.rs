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

mod table;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::error::UpstreamError;
use crate::metrics::{Drop, Proto, Source};
use crate::net::batch::{Push, RecvBatch, SendBatch};
use crate::pipeline::{Action, Answer, InflightGuard, Pipeline, Served, shape};
use crate::policy::ParsedQuery;
use crate::upstream::{Handoff, LinkId, Links, same_question};
use crate::wire::{HEADER_LEN, Header, parse_question, rcode, sanitize_reply};

pub use table::Table;

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
        let e = &self.table.entries[leader as usize];
        self.pipeline.store_upstream_reply(&e.query, e.q.as_ref().expect("held"), data);
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
