//! TCP exchanges with one upstream: a connection opened on demand and reused, with queries
//! pipelined on it and answered in any order (RFC 7766 §6.2.1). The connection closes after it
//! has been idle for a while, so an idle pod holds no sockets to cluster DNS.
//!
//! A connection that fails a query is not trusted with the next one: when an exchange times
//! out, the connection is dropped from the pool and closed, and the next query opens a fresh
//! one (RFC 7766 §6.2.2 leaves reuse to the client; dnsdist does the same on a timeout).
//! Replies are read with a deadline on every message ([`crate::net::frame`]), so an upstream
//! that stalls in the middle of a reply closes its connection instead of wedging it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
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
use crate::metrics::UpstreamMetrics;
use crate::net::{MESSAGE_TIMEOUT, read_frame, write_frame};

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
}

/// The (single, reused) TCP connection to one upstream.
pub struct TcpPool {
    addr: SocketAddr,
    conn: Mutex<Option<Arc<Conn>>>,
    idle: Duration,
    metrics: Arc<UpstreamMetrics>,
    unwanted: Arc<Unwanted>,
}

impl TcpPool {
    pub fn new(addr: SocketAddr, idle: Duration, metrics: Arc<UpstreamMetrics>, unwanted: Arc<Unwanted>) -> Self {
        TcpPool { addr, conn: Mutex::new(None), idle, metrics, unwanted }
    }

    /// The current connection, unless the spoofing defence has since replaced every socket.
    fn current(&self) -> Option<Arc<Conn>> {
        let c = self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        if c.generation != self.unwanted.generation() {
            self.retire(&c);
            return None;
        }
        Some(c)
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
        });
        {
            let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            // Another query may have connected meanwhile; keep the one already shared.
            if let Some(existing) = slot.as_ref() {
                return Ok(existing.clone());
            }
            *slot = Some(conn.clone());
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
        let mut used: Option<Arc<Conn>> = None;
        let work = async {
            for attempt in 1..=TRIES {
                let conn = match self.current() {
                    Some(c) => c,
                    None => self.connect().await?,
                };
                used = Some(conn.clone());
                let mut ticket = conn.pending.register(&query[question_bytes.clone()], name_len);
                crate::wire::set_id(query, ticket.id);
                self.metrics.requests_tcp.increment(1);
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

    /// Drops `conn` from the pool if it is still the current connection, and closes it.
    fn retire(&self, conn: &Arc<Conn>) {
        conn.retired.store(true, Ordering::Release);
        {
            let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
                *slot = None;
            }
        }
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
                Delivery::Delivered | Delivery::Rejected => {}
                Delivery::UnknownId | Delivery::WrongQuestion => {
                    self.metrics.error("mismatch");
                    self.unwanted.record();
                }
                Delivery::Malformed => self.metrics.error("malformed"),
            }
        };
        self.retire(&conn);
        conn.pending.fail_all(err);
        let _ = conn.writer.lock().await.shutdown().await;
    }
}
