//! The upstream side of the UDP fast path (`server::fast`): connected sockets owned by one
//! listener loop, so that loop alone sends on them and reads their replies, with no task, lock
//! or channel per query.
//!
//! The sockets follow the same rules as [`super::udp::UdpPool`]'s: `--upstream-sockets` per
//! upstream, each query (here: each batch of queries, see `server::fast`) on a random one,
//! replaced when older than `--socket-rotate` or of an older spoofing-defence generation
//! ([`super::Unwanted`]). A replaced socket keeps being read until its last query is answered
//! or expires; then it is closed. Rotation is driven by traffic, so an idle pod wakes for
//! nothing.
//!
//! The accounting the slow path does per exchange (`Upstreams::exchange`) is offered here as
//! methods the fast path calls per reply: requests, round-trip times, errors, health,
//! readiness, unwanted replies.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Context;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::{Transport, Upstreams};
use crate::error::UpstreamError;
use crate::labels::UpstreamReason;

/// Identifies a socket of a [`Links`] while it is open.
pub type LinkId = u32;

struct Link<F> {
    sock: Arc<UdpSocket>,
    /// Waits for the socket to be readable or to hold an error ([`wait_ready`]); replaced in
    /// place when it completes, so waiting allocates nothing.
    ready: Pin<Box<F>>,
    upstream: usize,
    born: Instant,
    generation: u64,
    /// Queries sent on it and not yet answered or expired.
    inflight: u32,
    /// Replaced in its pool: closed when `inflight` reaches 0.
    retired: bool,
}

/// Waits until `sock` is readable or holds an error. Polling tokio's read readiness alone
/// would miss an ICMP port unreachable (EPOLLERR only), which the slow path notices at once.
pub async fn wait_ready(sock: Arc<UdpSocket>) {
    let _ = sock.ready(Interest::READABLE | Interest::ERROR).await;
}

/// One listener's fast-path sockets to every upstream. `F` is [`wait_ready`]'s future.
pub struct Links<F> {
    links: Vec<Option<Link<F>>>,
    make: fn(Arc<UdpSocket>) -> F,
    free: Vec<LinkId>,
    /// Per upstream, its pool: the link in each of `--upstream-sockets` places.
    pools: Vec<Vec<Option<LinkId>>>,
    rotate: Duration,
}

impl<F: Future<Output = ()>> Links<F> {
    /// Sockets for `ups`, opened on first use; `make` is [`wait_ready`].
    pub fn new(ups: &Upstreams, make: fn(Arc<UdpSocket>) -> F) -> Links<F> {
        Links {
            links: Vec::new(),
            make,
            free: Vec::new(),
            pools: ups.list.iter().map(|_| vec![None; ups.fast_sockets.max(1)]).collect(),
            rotate: ups.fast_rotate,
        }
    }

    /// The upstream a plain query goes to now, and a random socket to it: the first upstream of
    /// [`Upstreams::order`] when it is not backing off. `None` leaves the query to the slow path
    /// (every upstream backing off, scripted upstreams in tests, no socket can be opened).
    pub fn pick(&mut self, ups: &Upstreams, now: Instant) -> Option<LinkId> {
        let (order, n) = ups.order(now);
        if n == 0 {
            return None;
        }
        let upstream = order[0] as usize;
        let up = &ups.list[upstream];
        if !up.health.is_up(now) || !matches!(up.transport, Transport::Net { .. }) {
            return None;
        }
        let place = rand::random_range(0..self.pools[upstream].len());
        let generation = ups.unwanted.generation();
        if let Some(id) = self.pools[upstream][place] {
            let l = self.links[id as usize].as_ref().expect("pooled links are open");
            if now.saturating_duration_since(l.born) < self.rotate && l.generation == generation {
                return Some(id);
            }
        }
        let sock = match open(up.addr) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(upstream = %up.addr, error = %e, "cannot open a fast-path upstream socket");
                // As the slow path does: an old socket of the current generation keeps serving.
                let old = self.pools[upstream][place]?;
                return (self.links[old as usize].as_ref()?.generation == generation).then_some(old);
            }
        };
        let sock = Arc::new(sock);
        let ready = Box::pin((self.make)(sock.clone()));
        let link = Link { sock, ready, upstream, born: now, generation, inflight: 0, retired: false };
        let id = match self.free.pop() {
            Some(id) => {
                self.links[id as usize] = Some(link);
                id
            }
            None => {
                self.links.push(Some(link));
                (self.links.len() - 1) as LinkId
            }
        };
        if let Some(old) = self.pools[upstream][place].replace(id) {
            self.retire(old);
        }
        Some(id)
    }

    fn retire(&mut self, id: LinkId) {
        let l = self.links[id as usize].as_mut().expect("open");
        l.retired = true;
        if l.inflight == 0 {
            self.links[id as usize] = None;
            self.free.push(id);
        }
    }

    /// The socket of an open link.
    pub fn sock(&self, id: LinkId) -> &UdpSocket {
        &self.links[id as usize].as_ref().expect("open").sock
    }

    /// Whether `id` names an open link.
    pub fn is_open(&self, id: LinkId) -> bool {
        self.links.get(id as usize).is_some_and(Option::is_some)
    }

    /// The upstream (index in [`Upstreams`]) a link goes to.
    pub fn upstream(&self, id: LinkId) -> usize {
        self.links[id as usize].as_ref().expect("open").upstream
    }

    /// A query was sent on `id`.
    pub fn sent(&mut self, id: LinkId) {
        self.links[id as usize].as_mut().expect("open").inflight += 1;
    }

    /// A query sent on `id` was answered, expired or handed over; a retired link with nothing
    /// left in flight is closed.
    pub fn done(&mut self, id: LinkId) {
        let l = self.links[id as usize].as_mut().expect("open");
        l.inflight -= 1;
        if l.retired && l.inflight == 0 {
            self.links[id as usize] = None;
            self.free.push(id);
        }
    }

    /// Open links, by id.
    pub fn ids(&self) -> impl Iterator<Item = LinkId> + '_ {
        self.links.iter().enumerate().filter(|(_, l)| l.is_some()).map(|(i, _)| i as LinkId)
    }

    /// Registers `cx` for readiness (data or an error) of every open link; true when one is
    /// ready. A link found ready starts waiting anew; the loop's reads clear its readiness.
    pub fn poll_readable(&mut self, cx: &mut Context<'_>) -> bool {
        let mut any = false;
        for l in self.links.iter_mut().flatten() {
            if l.ready.as_mut().poll(cx).is_ready() {
                l.ready.set((self.make)(l.sock.clone()));
                any = true;
            }
        }
        any
    }

    /// Closes every link (the listener stops).
    pub fn close_all(&mut self) {
        self.links.clear();
        self.free.clear();
        for p in &mut self.pools {
            p.iter_mut().for_each(|s| *s = None);
        }
    }
}

fn open(addr: SocketAddr) -> io::Result<UdpSocket> {
    let bind: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let s = std::net::UdpSocket::bind(bind)?;
    s.connect(addr)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s)
}

/// The per-exchange accounting of [`Upstreams::exchange`], for queries the fast path sent.
impl Upstreams {
    /// `n` queries went out to upstream `i`.
    pub fn fast_sent(&self, i: usize, n: usize) {
        self.list[i].metrics.requests(crate::labels::Proto::Udp, n as u64);
    }

    /// Upstream `i` answered with `rcode` after `rtt`: a valid reply (health, readiness).
    pub fn fast_answered(&self, i: usize, rcode: u16, rtt: Duration) {
        let up = &self.list[i];
        up.metrics.answered(rcode, rtt);
        up.health.success(&up.metrics.healthy);
        self.answered.store(true, Ordering::Relaxed);
    }

    /// An exchange with upstream `i` failed (`timeout`, `io`, `malformed`, ...).
    pub fn fast_failed(&self, i: usize, e: UpstreamError) {
        let up = &self.list[i];
        up.metrics.error(e.reason());
        up.health.failure(Instant::now(), &up.metrics.healthy);
    }

    /// Upstream `i`'s address.
    pub fn fast_addr(&self, i: usize) -> SocketAddr {
        self.list[i].addr
    }

    /// A reply from upstream `i` that matched no query (wrong ID or question), or that could
    /// not be read (`malformed`).
    pub fn fast_unwanted(&self, i: usize, malformed: bool) {
        if malformed {
            self.list[i].metrics.error(UpstreamReason::Malformed);
        } else {
            self.list[i].metrics.error(UpstreamReason::Mismatch);
            self.unwanted.record();
        }
    }
}

/// Keys the UDP fast path is asking upstream right now, as the resolver's coalescing sees them
/// (issue 12): a counter per hash bucket, raised by a fast leader and lowered when it ends. A
/// lookup of the resolver's own (collapse candidates, the AAAA handling's A queries) that finds
/// its bucket raised waits for the fast leader to end, then finds its answer in the cache,
/// instead of asking a second time. Atomics only on the fast path; a wake-up only when a
/// lookup waits.
pub struct FastKeys {
    keys: std::hash::RandomState,
    buckets: Box<[std::sync::atomic::AtomicU32]>,
    waiters: std::sync::atomic::AtomicU32,
    ended: tokio::sync::Notify,
    /// `podns_coalesced_total`: fast followers and lookups that waited count there too.
    pub coalesced: metrics::Counter,
}

/// Buckets of [`FastKeys`]: a power of two; a collision only makes a lookup wait for an
/// unrelated key's leader (at most one attempt timeout, usually one round trip).
const FAST_BUCKETS: usize = 4096;

impl FastKeys {
    pub fn new(coalesced: metrics::Counter) -> FastKeys {
        FastKeys {
            keys: std::hash::RandomState::new(),
            buckets: (0..FAST_BUCKETS).map(|_| std::sync::atomic::AtomicU32::new(0)).collect(),
            waiters: std::sync::atomic::AtomicU32::new(0),
            ended: tokio::sync::Notify::new(),
            coalesced,
        }
    }

    /// The keyed hash of a coalescing key: the name in lower case, type, class, flags.
    pub fn hash(&self, key: &crate::cache::KeyRef<'_>) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = self.keys.build_hasher();
        for &b in key.name {
            h.write_u8(b.to_ascii_lowercase());
        }
        h.write_u16(key.qtype);
        h.write_u16(key.qclass);
        h.write_u8(key.flags);
        h.finish()
    }

    fn bucket(&self, hash: u64) -> &std::sync::atomic::AtomicU32 {
        &self.buckets[(hash as usize) & (FAST_BUCKETS - 1)]
    }

    /// A fast leader for `hash` starts.
    pub fn begin(&self, hash: u64) {
        self.bucket(hash).fetch_add(1, Ordering::AcqRel);
    }

    /// A fast leader for `hash` ended (answered, or handed to the slow path).
    pub fn end(&self, hash: u64) {
        self.bucket(hash).fetch_sub(1, Ordering::AcqRel);
        if self.waiters.load(Ordering::Acquire) > 0 {
            self.ended.notify_waiters();
        }
    }

    /// Waits, at most `max`, until no fast leader for `key` is in flight. True when it waited.
    pub async fn wait_for(&self, key: &crate::cache::KeyRef<'_>, max: Duration) -> bool {
        let b = self.bucket(self.hash(key));
        if b.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.coalesced.increment(1);
        self.waiters.fetch_add(1, Ordering::AcqRel);
        let _ = tokio::time::timeout(max, async {
            loop {
                let ended = self.ended.notified();
                let mut ended = std::pin::pin!(ended);
                ended.as_mut().enable();
                if b.load(Ordering::Acquire) == 0 {
                    return;
                }
                ended.await;
            }
        })
        .await;
        self.waiters.fetch_sub(1, Ordering::AcqRel);
        true
    }
}
