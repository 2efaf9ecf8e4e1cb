//! Exchanges with cluster DNS: random IDs and source ports, reply validation, retries over
//! TCP for truncated replies, per-attempt timeouts within an overall budget, failover between
//! upstreams, and health tracking so a dead upstream is skipped until it recovers.

mod health;
mod pending;
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

pub use health::Health;
pub use pending::{Delivery, PendingMap};
pub use unwanted::{OnTrip, Unwanted};

use crate::error::{ResolveError, UpstreamError};
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

/// One upstream server.
struct Upstream {
    addr: SocketAddr,
    udp: udp::UdpPool,
    tcp: Arc<tcp::TcpPool>,
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

/// All upstreams, tried in health order.
pub struct Upstreams {
    list: Vec<Upstream>,
    attempt_timeout: Duration,
    query_timeout: Duration,
    answered: AtomicBool,
    tcp_fallback: Counter,
    unwanted: Arc<Unwanted>,
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
                    udp: udp::UdpPool::new(
                        addr,
                        cfg.sockets,
                        cfg.rotate,
                        cfg.query_timeout,
                        metrics.clone(),
                        unwanted.clone(),
                    ),
                    tcp: Arc::new(tcp::TcpPool::new(addr, cfg.tcp_idle, metrics.clone(), unwanted.clone())),
                    health: Health::new(),
                    metrics,
                }
            })
            .collect();
        Upstreams {
            list,
            attempt_timeout: cfg.attempt_timeout,
            query_timeout: cfg.query_timeout,
            answered: AtomicBool::new(false),
            tcp_fallback,
            unwanted,
        }
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

    /// The `k`-th upstream to try: healthy ones in configured order, then the others in order
    /// of recovery; the sequence repeats. Computed per attempt so no list is allocated.
    fn nth_choice(&self, k: usize, now: Instant) -> &Upstream {
        let n = self.list.len();
        let k = k % n;
        let healthy = self.list.iter().filter(|u| u.health.is_up(now)).count();
        if k < healthy {
            self.list.iter().filter(|u| u.health.is_up(now)).nth(k).expect("counted")
        } else {
            let mut down: [(Instant, usize); 16] = [(now, 0); 16];
            let mut m = 0;
            for (i, u) in self.list.iter().enumerate() {
                if !u.health.is_up(now) && m < down.len() {
                    down[m] = (u.health.down_until(), i);
                    m += 1;
                }
            }
            down[..m].sort_unstable();
            let j = (k - healthy).min(m.saturating_sub(1));
            &self.list[if m == 0 { k } else { down[j].1 }]
        }
    }

    /// Resolves `query` (parsed as `parsed`) upstream. `tcp` says the client came over TCP, so
    /// the upstream is asked over TCP too. The query's ID is overwritten per attempt.
    pub async fn resolve(&self, query: &mut [u8], parsed: &ParsedQuery, tcp: bool) -> Result<Exchange, ResolveError> {
        let started = Instant::now();
        let deadline = started + self.query_timeout;
        let question = HEADER_LEN..parsed.question.end;
        let name_len = parsed.question.name_end - HEADER_LEN;
        let mut last: Option<UpstreamError> = None;
        // Two rounds over the upstreams; one when all of them are backing off, so a dead
        // cluster DNS is not asked twice per client query on top of the client's own retries.
        let rounds = if self.list.iter().any(|u| u.health.is_up(started)) { 2 } else { 1 };
        for k in 0..rounds * self.list.len() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let up = self.nth_choice(k, now);
            let timeout = self.attempt_timeout.min(deadline - now);
            let sent = Instant::now();
            let result = if tcp {
                up.tcp.exchange(query, question.clone(), name_len, timeout).await
            } else {
                up.udp.exchange(query, question.clone(), name_len, timeout).await
            };
            let reply = match result {
                Ok(reply) => reply,
                Err(e) => {
                    up.metrics.error(e.reason());
                    up.health.failure(Instant::now(), &up.metrics.healthy);
                    last = Some(e);
                    continue;
                }
            };
            let Ok(header) = Header::parse(&reply) else {
                up.metrics.error("malformed");
                continue;
            };
            up.metrics.answered(header.rcode(), sent.elapsed());
            up.health.success(&up.metrics.healthy);
            self.answered.store(true, Ordering::Relaxed);
            let mut ex = Exchange { reply, header, from: up.addr };
            if header.tc() && !tcp {
                self.tcp_fallback.increment(1);
                let left = deadline.saturating_duration_since(Instant::now()).min(self.attempt_timeout);
                match up.tcp.exchange(query, question.clone(), name_len, left).await {
                    Ok(full) => match Header::parse(&full) {
                        Ok(h) => ex = Exchange { reply: full, header: h, from: up.addr },
                        Err(_) => up.metrics.error("malformed"),
                    },
                    // The truncated reply still tells the client to retry over TCP itself.
                    Err(e) => up.metrics.error(e.reason()),
                }
            }
            match ex.header.rcode() {
                rcode::SERVFAIL | rcode::REFUSED => {
                    let e = UpstreamError::Rcode(up.addr, ex.header.rcode());
                    up.metrics.error(e.reason());
                    last = Some(e);
                }
                _ => return Ok(ex),
            }
        }
        Err(last.map_or(ResolveError::Budget, ResolveError::Exhausted))
    }
}
