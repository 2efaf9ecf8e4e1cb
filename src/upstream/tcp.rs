//! TCP exchanges with one upstream: connections opened on demand and reused, with queries
//! pipelined on them and answered in any order (RFC 7766 §6.2.1). A connection closes after it
//! has been idle for a while, so an idle pod holds no sockets to cluster DNS.
//!
//! Usually one connection carries everything. A connection that has had queries outstanding
//! without delivering any reply for a quarter of the attempt timeout is suspect — its upstream
//! may be stalled in the middle of a reply, which blocks every reply pipelined behind it — and
//! new queries go to another connection (at most [`MAX_CONNS`] per upstream).
//!
//! A connection that fails a query is not trusted with the next one: when an exchange times
//! out, the connection is dropped from the pool and closed, and the next query opens a fresh
//! one (RFC 7766 §6.2.2 leaves reuse to the client; dnsdist does the same on a timeout).
//! Replies are read with a deadline on every message ([`crate::net::frame`]), so an upstream
//! that stalls in the middle of a reply closes its connection instead of wedging it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;

use super::pending::{Delivery, PendingMap};
use super::unwanted::Unwanted;
use crate::error::UpstreamError;
use crate::labels::{Proto, UpstreamReason};
use crate::metrics::UpstreamMetrics;
use crate::net::{MESSAGE_TIMEOUT, now_ms, read_frame, write_frame};

/// One open connection.
struct Conn {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: PendingMap,
    /// Tells the reader to close the connection.
    close: Notify,
    /// Set once the connection is out of the pool (timed out, broken, closed by the upstream).
    retired: AtomicBool,
    /// The defence generation it was opened in ([`Unwanted`]).
    generation: u64,
    /// When it last made progress ([`now_ms`]): a reply arrived, or a query was sent while
    /// nothing was outstanding.
    progress: AtomicU64,
}

/// Connections per upstream at most.
pub const MAX_CONNS: usize = 4;

impl Conn {
    /// Usable for a new query at `now`: not retired, of the current generation, and not
    /// sitting on outstanding queries without a reply for `stall_hint` ms.
    fn usable(&self, generation: u64, now: u64, stall_hint: u64) -> bool {
        !self.retired.load(Ordering::Acquire)
            && self.generation == generation
            && (self.pending.is_empty() || now.saturating_sub(self.progress.load(Ordering::Relaxed)) < stall_hint)
    }
}

/// The TCP connections to one upstream.
pub struct TcpPool {
    addr: SocketAddr,
    conns: Mutex<Vec<Arc<Conn>>>,
    idle: Duration,
    metrics: Arc<UpstreamMetrics>,
    unwanted: Arc<Unwanted>,
}

impl TcpPool {
    pub fn new(addr: SocketAddr, idle: Duration, metrics: Arc<UpstreamMetrics>, unwanted: Arc<Unwanted>) -> Self {
        TcpPool { addr, conns: Mutex::new(Vec::new()), idle, metrics, unwanted }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection for a new query: the first usable one; else, when no more may be opened,
    /// the one that made progress last; `None` means "open one". Connections of an older
    /// defence generation are retired on the way.
    fn pick(&self, stall_hint: u64) -> Option<Arc<Conn>> {
        let generation = self.unwanted.generation();
        let now = now_ms();
        let mut conns = self.lock();
        conns.retain(|c| {
            let keep = c.generation == generation && !c.retired.load(Ordering::Acquire);
            if !keep {
                c.retired.store(true, Ordering::Release);
                c.close.notify_one();
            }
            keep
        });
        if let Some(c) = conns.iter().find(|c| c.usable(generation, now, stall_hint)) {
            return Some(c.clone());
        }
        if conns.len() < MAX_CONNS {
            return None;
        }
        conns.iter().max_by_key(|c| c.progress.load(Ordering::Relaxed)).cloned()
    }

    async fn connect(self: &Arc<Self>) -> Result<Arc<Conn>, UpstreamError> {
        let stream = TcpStream::connect(self.addr).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => UpstreamError::Refused(self.addr),
            kind => UpstreamError::Io(self.addr, kind),
        })?;
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        let conn = Arc::new(Conn {
            writer: tokio::sync::Mutex::new(w),
            pending: PendingMap::new(self.addr),
            close: Notify::new(),
            retired: AtomicBool::new(false),
            generation: self.unwanted.generation(),
            progress: AtomicU64::new(now_ms()),
        });
        {
            let mut conns = self.lock();
            // Others may have connected meanwhile; stay within the bound.
            if conns.len() >= MAX_CONNS {
                let best = conns.iter().max_by_key(|c| c.progress.load(Ordering::Relaxed)).cloned();
                return best.ok_or(UpstreamError::Closed(self.addr));
            }
            conns.push(conn.clone());
        }
        tokio::spawn(self.clone().read_replies(conn.clone(), r));
        Ok(conn)
    }

    /// Sends `query` over TCP and waits up to `timeout` (connecting included) for its reply.
    ///
    /// A query lost because its connection went away under it — the upstream closed it, or
    /// another query's timeout retired it (a reply stalled half-way blocks every reply
    /// pipelined behind it) — is sent again on a fresh connection while time is left (RFC 7766
    /// §6.2.1: a client whose connection closes with queries outstanding may resend them).
    pub async fn exchange(
        self: &Arc<Self>,
        query: &mut [u8],
        question_bytes: std::ops::Range<usize>,
        name_len: usize,
        timeout: Duration,
    ) -> Result<BytesMut, UpstreamError> {
        /// Connections tried per exchange at most.
        const TRIES: usize = 3;
        let stall_hint = (timeout.as_millis() as u64 / 4).max(1);
        let mut used: Option<Arc<Conn>> = None;
        let work = async {
            for attempt in 1..=TRIES {
                let conn = match self.pick(stall_hint) {
                    Some(c) => c,
                    None => self.connect().await?,
                };
                used = Some(conn.clone());
                if conn.pending.is_empty() {
                    conn.progress.store(now_ms(), Ordering::Relaxed);
                }
                let mut ticket = conn.pending.register(&query[question_bytes.clone()], name_len);
                crate::wire::set_id(query, ticket.id);
                self.metrics.requests(Proto::Tcp, 1);
                let written = write_frame(&mut *conn.writer.lock().await, query, MESSAGE_TIMEOUT).await;
                let result = if written.is_err() {
                    self.retire(&conn);
                    Err(UpstreamError::Closed(self.addr))
                } else {
                    match (&mut ticket.rx).await {
                        Ok(r) => r,
                        Err(_) => Err(UpstreamError::Closed(self.addr)),
                    }
                };
                match result {
                    Err(UpstreamError::Closed(_)) if attempt < TRIES && conn.retired.load(Ordering::Acquire) => {}
                    other => return other,
                }
            }
            Err(UpstreamError::Closed(self.addr))
        };
        let result = tokio::time::timeout(timeout, work).await.unwrap_or(Err(UpstreamError::Timeout(self.addr)));
        if let (Err(UpstreamError::Timeout(_)), Some(conn)) = (&result, &used) {
            // The upstream accepted the query and did not answer it in time: whatever state
            // the connection is in (a reply stalled half-way, a server that reads and never
            // writes), the next query gets a fresh one.
            self.retire(conn);
        }
        result
    }

    /// Drops `conn` from the pool and closes it.
    fn retire(&self, conn: &Arc<Conn>) {
        conn.retired.store(true, Ordering::Release);
        self.lock().retain(|c| !Arc::ptr_eq(c, conn));
        conn.close.notify_one();
    }

    /// Reads framed replies until the upstream closes, a message stalls, the connection is
    /// retired, or it has had nothing in flight for the idle time.
    async fn read_replies(self: Arc<Self>, conn: Arc<Conn>, mut r: OwnedReadHalf) {
        let err = loop {
            let buf = tokio::select! {
                m = read_frame(&mut r, self.idle, MESSAGE_TIMEOUT, || conn.pending.is_empty()) => match m {
                    Ok(m) => m,
                    Err(_) => break UpstreamError::Closed(self.addr),
                },
                _ = conn.close.notified() => break UpstreamError::Closed(self.addr),
            };
            match conn.pending.complete(buf) {
                // A rejected reply fails its query, which the attempt loop counts as malformed.
                Delivery::Delivered | Delivery::Rejected => conn.progress.store(now_ms(), Ordering::Relaxed),
                Delivery::UnknownId | Delivery::WrongQuestion => {
                    self.metrics.error(UpstreamReason::Mismatch);
                    self.unwanted.record();
                }
                Delivery::Malformed => self.metrics.error(UpstreamReason::Malformed),
            }
        };
        self.retire(&conn);
        conn.pending.fail_all(err);
        let _ = conn.writer.lock().await.shutdown().await;
    }
}
