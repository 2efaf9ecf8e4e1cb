//! UDP exchanges with one upstream over a pool of connected sockets.
//!
//! Each query leaves from a randomly chosen socket of the pool with a fresh random ID, so many
//! source ports are in use at once (RFC 5452). Sockets are connected: the kernel drops packets
//! from any other source, and an ICMP port unreachable shows up as ECONNREFUSED at once. A socket
//! older than the rotation age is replaced on its next use, so conntrack entries towards a
//! Service IP are renewed and traffic spreads over its endpoints; rotation is driven by traffic,
//! so an idle pod wakes for nothing.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::pending::{Delivery, PendingMap, Ticket};
use super::unwanted::Unwanted;
use crate::error::UpstreamError;
use crate::labels::{Proto, UpstreamReason};
use crate::metrics::UpstreamMetrics;

/// Largest UDP reply read from an upstream.
const RECV_BUF: usize = 65535;

/// One connected socket, its waiting queries and the task that reads its replies.
struct Channel {
    sock: UdpSocket,
    pending: PendingMap,
    born: Instant,
    /// The defence generation it was opened in ([`Unwanted`]).
    generation: u64,
    retire: Notify,
}

/// The socket pool of one upstream.
pub struct UdpPool {
    addr: SocketAddr,
    slots: Vec<Mutex<Option<Arc<Channel>>>>,
    rotate: Duration,
    /// How long a retired socket keeps reading for late replies.
    linger: Duration,
    metrics: Arc<UpstreamMetrics>,
    unwanted: Arc<Unwanted>,
}

impl UdpPool {
    pub fn new(
        addr: SocketAddr,
        size: usize,
        rotate: Duration,
        linger: Duration,
        metrics: Arc<UpstreamMetrics>,
        unwanted: Arc<Unwanted>,
    ) -> Self {
        UdpPool { addr, slots: (0..size.max(1)).map(|_| Mutex::new(None)).collect(), rotate, linger, metrics, unwanted }
    }

    /// Picks a random socket, opening or rotating it as needed. Rotation is best effort: when
    /// no new socket can be opened (out of file descriptors), the old one keeps serving rather
    /// than every query failing; a socket of an older defence generation ([`Unwanted`]) is
    /// replaced all the same, as it is the one a spoofer is aiming at.
    fn channel(&self) -> Result<Arc<Channel>, UpstreamError> {
        let i = rand::random_range(0..self.slots.len());
        let mut slot = self.slots[i].lock().unwrap_or_else(|p| p.into_inner());
        let generation = self.unwanted.generation();
        if let Some(ch) = slot.as_ref()
            && ch.born.elapsed() < self.rotate
            && ch.generation == generation
        {
            return Ok(ch.clone());
        }
        let fresh = match self.open(generation) {
            Ok(ch) => Arc::new(ch),
            Err(e) => match slot.as_ref() {
                Some(old) if old.generation == generation => {
                    tracing::debug!(upstream = %self.addr, error = %e, "cannot rotate an upstream socket; keeping the old one");
                    return Ok(old.clone());
                }
                _ => return Err(io_error(self.addr, e)),
            },
        };
        tokio::spawn(read_replies(fresh.clone(), self.addr, self.linger, self.metrics.clone(), self.unwanted.clone()));
        if let Some(old) = slot.replace(fresh.clone()) {
            old.retire.notify_one();
        }
        Ok(fresh)
    }

    fn open(&self, generation: u64) -> io::Result<Channel> {
        let bind: SocketAddr =
            if self.addr.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.expect("literal address");
        let std_sock = std::net::UdpSocket::bind(bind)?;
        std_sock.connect(self.addr)?;
        std_sock.set_nonblocking(true)?;
        Ok(Channel {
            sock: UdpSocket::from_std(std_sock)?,
            pending: PendingMap::new(self.addr),
            born: Instant::now(),
            generation,
            retire: Notify::new(),
        })
    }

    /// Sends `query` (whose question is `question_bytes` with a name of `name_len` octets) and
    /// waits up to `timeout` for the matching reply. The ID is set here.
    pub async fn exchange(
        &self,
        query: &mut [u8],
        question_bytes: std::ops::Range<usize>,
        name_len: usize,
        timeout: Duration,
    ) -> Result<BytesMut, UpstreamError> {
        let ch = self.channel()?;
        let mut ticket: Ticket<'_> = ch.pending.register(&query[question_bytes], name_len);
        crate::wire::set_id(query, ticket.id);
        self.metrics.requests(Proto::Udp, 1);
        if let Err(e) = ch.sock.send(query).await {
            return Err(io_error(self.addr, e));
        }
        match tokio::time::timeout(timeout, &mut ticket.rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(UpstreamError::Closed(self.addr)),
            Err(_) => Err(UpstreamError::Timeout(self.addr)),
        }
    }
}

fn io_error(addr: SocketAddr, e: io::Error) -> UpstreamError {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => UpstreamError::Refused(addr),
        kind => UpstreamError::Io(addr, kind),
    }
}

/// Reads replies for one socket until it is retired and has lingered for late replies.
async fn read_replies(
    ch: Arc<Channel>,
    addr: SocketAddr,
    linger: Duration,
    metrics: Arc<UpstreamMetrics>,
    unwanted: Arc<Unwanted>,
) {
    let mut buf = vec![0u8; RECV_BUF];
    let mut retired_at: Option<Instant> = None;
    loop {
        let received = tokio::select! {
            r = ch.sock.recv(&mut buf) => r,
            _ = ch.retire.notified(), if retired_at.is_none() => {
                retired_at = Some(Instant::now());
                continue;
            }
            _ = tokio::time::sleep_until(retired_at.map_or_else(Instant::now, |t| t + linger)), if retired_at.is_some() => break,
        };
        match received {
            Ok(n) => match ch.pending.complete(BytesMut::from(&buf[..n])) {
                // A rejected reply fails its query, which the attempt loop counts as malformed.
                Delivery::Delivered | Delivery::Rejected => {}
                Delivery::UnknownId | Delivery::WrongQuestion => {
                    metrics.error(UpstreamReason::Mismatch);
                    unwanted.record();
                }
                Delivery::Malformed => metrics.error(UpstreamReason::Malformed),
            },
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                ch.pending.fail_all(UpstreamError::Refused(addr));
            }
            Err(e) => {
                tracing::debug!(upstream = %addr, error = %e, "upstream UDP receive failed");
                ch.pending.fail_all(io_error(addr, e));
            }
        }
        if retired_at.is_some() && ch.pending.is_empty() {
            break;
        }
    }
}
