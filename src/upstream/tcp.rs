//! TCP exchanges with one upstream: a connection opened on demand and reused, with queries
//! pipelined on it and answered in any order (RFC 7766 §6.2.1). The connection closes after it
//! has been idle for a while, so an idle pod holds no sockets to cluster DNS.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::pending::{Delivery, PendingMap};
use crate::error::UpstreamError;
use crate::metrics::UpstreamMetrics;

/// One open connection.
struct Conn {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: PendingMap,
}

/// The (single, reused) TCP connection to one upstream.
pub struct TcpPool {
    addr: SocketAddr,
    conn: Mutex<Option<Arc<Conn>>>,
    idle: Duration,
    metrics: Arc<UpstreamMetrics>,
}

impl TcpPool {
    pub fn new(addr: SocketAddr, idle: Duration, metrics: Arc<UpstreamMetrics>) -> Self {
        TcpPool { addr, conn: Mutex::new(None), idle, metrics }
    }

    fn current(&self) -> Option<Arc<Conn>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn connect(self: &Arc<Self>) -> Result<Arc<Conn>, UpstreamError> {
        let stream = TcpStream::connect(self.addr).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => UpstreamError::Refused(self.addr),
            kind => UpstreamError::Io(self.addr, kind),
        })?;
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        let conn = Arc::new(Conn { writer: tokio::sync::Mutex::new(w), pending: PendingMap::new(self.addr) });
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
    pub async fn exchange(
        self: &Arc<Self>,
        query: &mut [u8],
        question_bytes: std::ops::Range<usize>,
        name_len: usize,
        timeout: Duration,
    ) -> Result<BytesMut, UpstreamError> {
        let work = async {
            let conn = match self.current() {
                Some(c) => c,
                None => self.connect().await?,
            };
            let mut ticket = conn.pending.register(&query[question_bytes.clone()], name_len);
            crate::wire::set_id(query, ticket.id);
            self.metrics.requests_tcp.increment(1);
            let mut frame = Vec::with_capacity(query.len() + 2);
            frame.extend_from_slice(&(query.len() as u16).to_be_bytes());
            frame.extend_from_slice(query);
            let written = conn.writer.lock().await.write_all(&frame).await;
            if written.is_err() {
                self.forget(&conn);
                return Err(UpstreamError::Closed(self.addr));
            }
            match (&mut ticket.rx).await {
                Ok(r) => r,
                Err(_) => Err(UpstreamError::Closed(self.addr)),
            }
        };
        tokio::time::timeout(timeout, work).await.unwrap_or(Err(UpstreamError::Timeout(self.addr)))
    }

    /// Drops `conn` from the pool if it is still the current connection.
    fn forget(&self, conn: &Arc<Conn>) {
        let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
        }
    }

    /// Reads framed replies until the upstream closes, an error occurs, or the connection has
    /// had nothing in flight for the idle time.
    async fn read_replies(self: Arc<Self>, conn: Arc<Conn>, mut r: OwnedReadHalf) {
        let err = loop {
            // `read` is cancel-safe, so the idle timeout never loses half a length prefix.
            let mut prefix = [0u8; 2];
            let mut got = 0;
            let closed = loop {
                match tokio::time::timeout(self.idle, r.read(&mut prefix[got..])).await {
                    Err(_) if got == 0 && conn.pending.is_empty() => break true,
                    Err(_) => continue,
                    Ok(Ok(0) | Err(_)) => break true,
                    Ok(Ok(n)) => got += n,
                }
                if got == 2 {
                    break false;
                }
            };
            if closed {
                break UpstreamError::Closed(self.addr);
            }
            let len = u16::from_be_bytes(prefix) as usize;
            let mut buf = BytesMut::zeroed(len);
            if r.read_exact(&mut buf).await.is_err() {
                break UpstreamError::Closed(self.addr);
            }
            match conn.pending.complete(buf) {
                // A rejected reply fails its query, which the attempt loop counts as malformed.
                Delivery::Delivered | Delivery::Rejected => {}
                Delivery::UnknownId | Delivery::WrongQuestion => self.metrics.error("mismatch"),
                Delivery::Malformed => self.metrics.error("malformed"),
            }
        };
        self.forget(&conn);
        conn.pending.fail_all(err);
        let _ = conn.writer.lock().await.shutdown().await;
    }
}
