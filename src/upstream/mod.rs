//! Exchanges with cluster DNS: random IDs and source ports, reply validation, retries over
//! TCP for truncated replies, per-attempt timeouts within an overall budget, failover between
//! upstreams, and health tracking so a dead upstream is skipped until it recovers.

mod fast;
mod health;
mod pending;
#[cfg(test)]
pub mod script;
mod tcp;
mod udp;
mod unwanted;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use metrics::Counter;
use tokio::time::Instant;

pub use fast::{FastKeys, LinkId, Links, wait_ready};
pub use health::Health;
pub use pending::same_question;
pub use pending::{Delivery, PendingMap};
pub use unwanted::{OnTrip, Unwanted};

use crate::error::{ResolveError, UpstreamError};
use crate::labels::UpstreamReason;
use crate::metrics::UpstreamMetrics;
use crate::policy::ParsedQuery;
use crate::wire::{HEADER_LEN, Header, rcode};

/// Settings of the upstream side.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub addrs: Vec<SocketAddr>,
    pub attempt_timeout: Duration,
    pub query_timeout: Duration,
    pub sockets: usize,
    pub rotate: Duration,
    /// A TCP connection to an upstream with nothing in flight closes after this long.
    pub tcp_idle: Duration,
    /// Unwanted replies before the spoofing defence acts ([`Unwanted`]); 0 never.
    pub unwanted_threshold: u64,
}

/// Most upstreams podns will use (a pod's resolv.conf allows three; `--upstream` is
/// validated against this).
pub const MAX_UPSTREAMS: usize = 64;

/// How one upstream is reached.
enum Transport {
    /// UDP socket pool and a TCP connection: the real thing.
    Net { udp: udp::UdpPool, tcp: Arc<tcp::TcpPool> },
    /// A pure function of the query, for in-process tests of everything above the socket
    /// (the attempt loop, failover, TCP and EDNS retries, the cache and the policies).
    #[cfg(test)]
    Scripted(Arc<dyn script::Script>),
}

impl Transport {
    async fn exchange(
        &self,
        query: &mut [u8],
        question: std::ops::Range<usize>,
        name_len: usize,
        timeout: Duration,
        tcp: bool,
    ) -> Result<BytesMut, UpstreamError> {
        match self {
            Transport::Net { udp, tcp: pool } => {
                if tcp {
                    pool.exchange(query, question, name_len, timeout).await
                } else {
                    udp.exchange(query, question, name_len, timeout).await
                }
            }
            #[cfg(test)]
            Transport::Scripted(s) => s.exchange(query, tcp, timeout).await,
        }
    }
}

/// One upstream server.
struct Upstream {
    addr: SocketAddr,
    transport: Transport,
    health: Health,
    metrics: Arc<UpstreamMetrics>,
}

/// The reply to a query, as an upstream sent it (its ID is the upstream-side one).
#[derive(Debug)]
pub struct Exchange {
    pub reply: BytesMut,
    pub header: Header,
    pub from: SocketAddr,
}

/// What the UDP fast path (`server::fast`) already did for a query it hands to the slow path:
/// the attempt loop of [`Upstreams::resolve`] continues from there instead of starting over.
#[derive(Debug, Clone, Default)]
pub struct Handoff {
    /// Bit i: upstream i was asked once and failed (no answer in time, port unreachable, a
    /// reply that does not hold together): that attempt is used up.
    pub failed: u64,
    /// The error that ended that attempt.
    pub last: Option<UpstreamError>,
    /// A UDP reply of this upstream (already checked by [`crate::wire::sanitize_reply`]), sent
    /// at the instant given, that the fast path does not relay itself (truncated, SERVFAIL,
    /// REFUSED, FORMERR): it is this upstream's first UDP exchange, so the TCP retry, the
    /// retry without EDNS and the failover follow from it as from any reply.
    pub reply: Option<(SocketAddr, bytes::Bytes, Instant)>,
}

/// All upstreams, tried in health order.
pub struct Upstreams {
    list: Vec<Upstream>,
    attempt_timeout: Duration,
    query_timeout: Duration,
    answered: AtomicBool,
    tcp_fallback: Counter,
    unwanted: Arc<Unwanted>,
    /// `--upstream-sockets` and `--socket-rotate`, for the fast path's own sockets ([`Links`]).
    fast_sockets: usize,
    fast_rotate: Duration,
}

impl Upstreams {
    pub fn new(cfg: &UpstreamConfig, tcp_fallback: Counter) -> Upstreams {
        let unwanted = Arc::new(Unwanted::new(cfg.unwanted_threshold));
        let list = cfg
            .addrs
            .iter()
            .map(|&addr| {
                let metrics = Arc::new(UpstreamMetrics::new(&addr.to_string()));
                metrics.healthy.set(1.0);
                Upstream {
                    addr,
                    transport: Transport::Net {
                        udp: udp::UdpPool::new(
                            addr,
                            cfg.sockets,
                            cfg.rotate,
                            cfg.query_timeout,
                            metrics.clone(),
                            unwanted.clone(),
                        ),
                        tcp: Arc::new(tcp::TcpPool::new(addr, cfg.tcp_idle, metrics.clone(), unwanted.clone())),
                    },
                    health: Health::new(),
                    metrics,
                }
            })
            .take(MAX_UPSTREAMS)
            .collect();
        Upstreams {
            list,
            attempt_timeout: cfg.attempt_timeout,
            query_timeout: cfg.query_timeout,
            answered: AtomicBool::new(false),
            tcp_fallback,
            unwanted,
            fast_sockets: cfg.sockets,
            fast_rotate: cfg.rotate,
        }
    }

    /// How long one attempt waits (`--attempt-timeout`).
    pub fn attempt_timeout(&self) -> Duration {
        self.attempt_timeout
    }

    /// The overall budget of one client query (`--query-timeout`).
    pub fn query_timeout(&self) -> Duration {
        self.query_timeout
    }

    /// Sets what else the spoofing defence does when it acts (the resolver flushes its cache);
    /// the sockets are replaced in any case.
    pub fn on_unwanted_replies(&self, f: OnTrip) {
        self.unwanted.on_trip(f);
    }

    /// True once any upstream has sent a valid reply (readiness).
    pub fn has_answered(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
    }

    /// The order in which this query tries the upstreams, decided once when it starts (so an
    /// upstream that fails mid-query cannot shift the others' positions and be tried twice while
    /// another was never tried): healthy ones in configured order, then the others by when their
    /// back-off ends. Returns the order and how many entries of it are used.
    fn order(&self, now: Instant) -> ([u8; MAX_UPSTREAMS], usize) {
        let mut order = [0u8; MAX_UPSTREAMS];
        let mut n = 0;
        for (i, u) in self.list.iter().enumerate() {
            if u.health.is_up(now) {
                order[n] = i as u8;
                n += 1;
            }
        }
        let healthy = n;
        for (i, u) in self.list.iter().enumerate() {
            if !u.health.is_up(now) {
                order[n] = i as u8;
                n += 1;
            }
        }
        order[healthy..n].sort_by_key(|&i| self.list[i as usize].health.down_until());
        (order, n)
    }

    /// Resolves `query` (parsed as `parsed`) upstream. `tcp` says the client came over TCP, so
    /// the upstream is asked over TCP too. The query's ID is overwritten per attempt.
    ///
    /// Attempts follow [`Upstreams::order`], for at most two rounds (one when every upstream
    /// is backing off). An upstream that *answered* SERVFAIL or REFUSED is not asked again for
    /// this query: asking the same server the same question again only doubles the load a
    /// failing cluster DNS sees (the client retries on its own; RFC 9520 §3.1 asks resolvers
    /// not to repeat a failed query at the same server). Timeouts may be retried in the second
    /// round, as a lost datagram is the usual cause. `handoff`: what the UDP fast path already did
    /// for this query ([`Handoff`]), which the attempts continue from.
    pub async fn resolve(
        &self,
        query: &mut [u8],
        parsed: &ParsedQuery,
        tcp: bool,
        handoff: Option<Handoff>,
    ) -> Result<Exchange, ResolveError> {
        let started = Instant::now();
        let deadline = started + self.query_timeout;
        let (order, n) = self.order(started);
        let rounds = if n > 0 && self.list[order[0] as usize].health.is_up(started) { 2 } else { 1 };
        let handoff = if tcp { Handoff::default() } else { handoff.unwrap_or_default() };
        let mut handed = handoff.reply;
        let mut answered_badly: u64 = 0; // bit i: upstream i answered SERVFAIL/REFUSED
        let mut skip_once = handoff.failed;
        let mut last: Option<UpstreamError> = handoff.last;
        for k in 0..rounds * n {
            let i = order[k % n] as usize;
            if answered_badly & (1 << i) != 0 {
                continue;
            }
            if skip_once & (1 << i) != 0 {
                skip_once &= !(1 << i);
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let up = &self.list[i];
            let reply = match &handed {
                Some((addr, ..)) if *addr == up.addr => handed.take().map(|(_, r, sent)| (BytesMut::from(r), sent)),
                _ => None,
            };
            let ex = match self.attempt(up, query, parsed, tcp, deadline, reply).await {
                Ok(ex) => ex,
                Err(e) => {
                    // An upstream's answer (SERVFAIL, REFUSED) says more than a later silence:
                    // the policies tell "the resolver refuses this name" from "it is down".
                    if !matches!(last, Some(UpstreamError::Rcode(..))) {
                        last = Some(e);
                    }
                    continue;
                }
            };
            match ex.header.rcode() {
                rcode::SERVFAIL | rcode::REFUSED => {
                    let e = UpstreamError::Rcode(up.addr, ex.header.rcode());
                    up.metrics.error(e.reason());
                    answered_badly |= 1 << i;
                    last = Some(e);
                }
                _ => return Ok(ex),
            }
        }
        Err(last.map_or(ResolveError::Budget, ResolveError::Exhausted))
    }

    /// One attempt at one upstream within `deadline`: the exchange, the TCP retry of a truncated
    /// UDP reply, and the retry without EDNS of a FORMERR to a query with an OPT record.
    async fn attempt(
        &self,
        up: &Upstream,
        query: &mut [u8],
        parsed: &ParsedQuery,
        tcp: bool,
        deadline: Instant,
        handed: Option<(BytesMut, Instant)>,
    ) -> Result<Exchange, UpstreamError> {
        let mut ex = self.exchange(up, query, parsed, tcp, deadline, handed).await?;
        // RFC 6891 §7: "responders that do not support EDNS … may return FORMERR"; a requester
        // that gets FORMERR to a query with an OPT record retries without it. The client then
        // gets the answer (with our own OPT, since podns speaks EDNS to it).
        if ex.header.rcode() == rcode::FORMERR
            && let Some(opt) = parsed.opt
            && opt.end == query.len()
            && parsed.header.arcount == 1
        {
            let mut plain = query[..opt.start].to_vec();
            plain[10..12].copy_from_slice(&0u16.to_be_bytes());
            let mut plain_parsed = *parsed;
            plain_parsed.opt = None;
            plain_parsed.header.arcount = 0;
            up.metrics.error(UpstreamReason::Rcode);
            ex = self.exchange(up, &mut plain, &plain_parsed, tcp, deadline, None).await?;
        }
        Ok(ex)
    }

    /// Sends `query` to `up` once (UDP, or TCP when `tcp`), with a TCP retry when a UDP reply
    /// comes back truncated; records the upstream's health and metrics. `handed`: the reply the
    /// fast path already got for this exchange, and when it sent the query ([`Handoff`]).
    async fn exchange(
        &self,
        up: &Upstream,
        query: &mut [u8],
        parsed: &ParsedQuery,
        tcp: bool,
        deadline: Instant,
        handed: Option<(BytesMut, Instant)>,
    ) -> Result<Exchange, UpstreamError> {
        let question = HEADER_LEN..parsed.question.end;
        let name_len = parsed.question.name_end - HEADER_LEN;
        let timeout = self.attempt_timeout.min(deadline.saturating_duration_since(Instant::now()));
        let (sent, result) = match handed {
            Some((reply, sent)) => (sent, Ok(reply)),
            None => (Instant::now(), up.transport.exchange(query, question.clone(), name_len, timeout, tcp).await),
        };
        let reply = match result {
            Ok(reply) => reply,
            Err(e) => {
                up.metrics.error(e.reason());
                up.health.failure(Instant::now(), &up.metrics.healthy);
                return Err(e);
            }
        };
        let Ok(header) = Header::parse(&reply) else {
            up.metrics.error(UpstreamReason::Malformed);
            return Err(UpstreamError::Malformed(up.addr));
        };
        up.metrics.answered(header.rcode(), sent.elapsed());
        up.health.success(&up.metrics.healthy);
        self.answered.store(true, Ordering::Relaxed);
        let mut ex = Exchange { reply, header, from: up.addr };
        if header.tc() && !tcp {
            self.tcp_fallback.increment(1);
            let left = deadline.saturating_duration_since(Instant::now()).min(self.attempt_timeout);
            match up.transport.exchange(query, question, name_len, left, true).await {
                Ok(full) => match Header::parse(&full) {
                    Ok(h) => ex = Exchange { reply: full, header: h, from: up.addr },
                    Err(_) => up.metrics.error(UpstreamReason::Malformed),
                },
                // The truncated reply still tells the client to retry over TCP itself.
                Err(e) => up.metrics.error(e.reason()),
            }
        }
        Ok(ex)
    }
}
