//! The TCP listener (RFC 7766): length-framed queries, several in flight per connection and
//! answered as they complete, with bounds on everything a client can hold:
//!
//! - every read has a deadline ([`crate::net::frame`]): an idle connection closes after
//!   `--tcp-idle-timeout`, a started message must be complete within 2 s (slowloris);
//! - every write has a deadline, so a client that pipelines queries and never reads its answers
//!   is closed and releases its queries' slots;
//! - a connection has at most `--tcp-max-inflight` queries in flight; while it is at that cap
//!   podns stops reading from it, and TCP flow control pushes back on the client (RFC 7766
//!   §6.2.1.1 lets a server limit pipelining; dnsdist's `maxInFlight` does the same);
//! - at `--tcp-max-connections`, a new connection replaces the connection that has been idle
//!   longest (no query in flight), as RFC 7766 §6.2.3 allows a server under pressure; only when
//!   every connection is busy is the new one refused. A flood of idle connections therefore
//!   cannot keep working clients out.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;

use crate::metrics::{Drop, Proto};
use crate::net::{Acceptor, FrameEnd, MESSAGE_TIMEOUT, now_ms, read_frame, write_frame};
use crate::pipeline::{Admitted, Pipeline, Served};
use crate::wire::HEADER_LEN;

pub use crate::config::TcpLimits;

/// What the accept loop and the connection's tasks share about one connection.
struct Conn {
    slots: Arc<Semaphore>,
    cap: usize,
    last_active: AtomicU64,
    /// Set when the connection is being closed (evicted, or a write failed).
    dead: AtomicBool,
    close: Notify,
}

impl Conn {
    fn new(cap: u32) -> Conn {
        let cap = cap.max(1) as usize;
        Conn {
            slots: Arc::new(Semaphore::new(cap)),
            cap,
            last_active: AtomicU64::new(now_ms()),
            dead: AtomicBool::new(false),
            close: Notify::new(),
        }
    }

    /// Queries in flight on this connection.
    fn busy(&self) -> usize {
        self.cap - self.slots.available_permits()
    }

    fn touch(&self) {
        self.last_active.store(now_ms(), Ordering::Relaxed);
    }

    fn kill(&self) {
        self.dead.store(true, Ordering::Release);
        self.close.notify_one();
    }

    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }
}

/// The open connections. Locked only on accept and close, never per query.
#[derive(Default)]
struct Registry(Mutex<Vec<Arc<Conn>>>);

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Conn>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections that are not being closed.
    fn live(&self) -> usize {
        self.lock().iter().filter(|c| !c.is_dead()).count()
    }

    /// Closes the live connection idle longest (nothing in flight); false if every one is busy.
    fn evict_idle(&self) -> bool {
        let conns = self.lock();
        let victim = conns
            .iter()
            .filter(|c| !c.is_dead() && c.busy() == 0)
            .min_by_key(|c| c.last_active.load(Ordering::Relaxed));
        match victim {
            Some(c) => {
                c.kill();
                true
            }
            None => false,
        }
    }

    fn remove(&self, conn: &Arc<Conn>) -> usize {
        let mut conns = self.lock();
        conns.retain(|c| !Arc::ptr_eq(c, conn));
        conns.len()
    }
}

/// Accepts connections on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, pipeline: Arc<Pipeline>, limits: TcpLimits, mut stop: watch::Receiver<bool>) {
    let acceptor = Acceptor::new(listener, "dns");
    let registry = Arc::new(Registry::default());
    loop {
        let (stream, peer) = tokio::select! {
            c = acceptor.accept() => c,
            _ = stop.wait_for(|s| *s) => return,
        };
        if registry.live() >= limits.max_connections as usize {
            if registry.evict_idle() {
                pipeline.metrics.tcp_evicted.increment(1);
            } else {
                pipeline.metrics.tcp_rejected.increment(1);
                drop(stream);
                continue;
            }
        }
        let conn = Arc::new(Conn::new(limits.max_inflight));
        let n = {
            let mut conns = registry.lock();
            conns.push(conn.clone());
            conns.len()
        };
        pipeline.metrics.tcp_connections.set(n as f64);
        let (pipeline, registry, stop) = (pipeline.clone(), registry.clone(), stop.clone());
        tokio::spawn(async move {
            let end = connection(stream, peer, &pipeline, limits.idle, &conn, stop).await;
            tracing::debug!(%peer, ?end, "TCP client connection closed");
            let n = registry.remove(&conn);
            pipeline.metrics.tcp_connections.set(n as f64);
        });
    }
}

/// Why a client connection ended (for the debug log, which reads the fields through `Debug`).
#[derive(Debug)]
#[allow(dead_code)]
enum End {
    Read(FrameEnd),
    ShortFrame(usize),
    Closed,
    Stopped,
}

/// Writes one answer unless the connection is being closed; a write that fails or cannot finish
/// within the message deadline closes the connection.
async fn send(w: &tokio::sync::Mutex<OwnedWriteHalf>, conn: &Conn, msg: &[u8]) -> bool {
    if conn.is_dead() {
        return false;
    }
    let mut w = w.lock().await;
    if conn.is_dead() {
        return false;
    }
    if write_frame(&mut *w, msg, MESSAGE_TIMEOUT).await.is_err() {
        conn.kill();
        return false;
    }
    conn.touch();
    true
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    pipeline: &Arc<Pipeline>,
    idle: Duration,
    conn: &Arc<Conn>,
    mut stop: watch::Receiver<bool>,
) -> End {
    let _ = stream.set_nodelay(true);
    let (mut r, w) = stream.into_split();
    let w = Arc::new(tokio::sync::Mutex::new(w));
    let mut out = BytesMut::with_capacity(512);
    loop {
        let msg = tokio::select! {
            m = read_frame(&mut r, idle, MESSAGE_TIMEOUT, || conn.busy() == 0) => match m {
                Ok(m) => m,
                Err(e) => return End::Read(e),
            },
            _ = conn.close.notified() => return End::Closed,
            _ = stop.wait_for(|s| *s) => return End::Stopped,
        };
        if msg.len() < HEADER_LEN {
            pipeline.metrics.dropped(Drop::Short);
            return End::ShortFrame(msg.len());
        }
        conn.touch();
        // At the per-connection cap, wait for a query to finish before reading on.
        let slot = tokio::select! {
            s = conn.slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            _ = conn.close.notified() => return End::Closed,
            _ = stop.wait_for(|s| *s) => return End::Stopped,
        };
        let started = Instant::now();
        out.clear();
        match pipeline.admit(&msg, Proto::Tcp, peer.ip(), &mut out) {
            Admitted::Dropped => {}
            Admitted::Answered { rcode, source, action, qtype } => {
                if !send(&w, conn, &out).await {
                    pipeline.metrics.dropped(Drop::SendFailed);
                    return End::Closed;
                }
                let elapsed = started.elapsed();
                let (query, reply) = (&msg[..], &out[..]);
                pipeline.record(&Served {
                    proto: Proto::Tcp,
                    client: peer,
                    query,
                    qtype,
                    reply,
                    rcode,
                    source,
                    action,
                    elapsed,
                });
            }
            Admitted::Forward(q, guard) => {
                let (pipeline, w, conn) = (pipeline.clone(), w.clone(), conn.clone());
                tokio::spawn(async move {
                    let answer = pipeline.serve(msg, &q, Proto::Tcp).await;
                    if send(&w, &conn, &answer.bytes).await {
                        pipeline.record(&Served::answer(Proto::Tcp, peer, q.qtype(), &answer, started));
                    } else {
                        pipeline.metrics.dropped(Drop::SendFailed);
                    }
                    drop(slot);
                    drop(guard);
                });
                continue;
            }
        }
        drop(slot);
    }
}
