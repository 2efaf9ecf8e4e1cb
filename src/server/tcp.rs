//! The TCP listener (RFC 7766): length-framed queries, several in flight per connection and
//! answered as they complete, an idle timeout, and a cap on connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use super::handler::{Admitted, Handler};
use crate::error::ClientError;
use crate::metrics::{Drop, Proto};
use crate::wire::HEADER_LEN;

/// Limits of the TCP listener.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    pub max_connections: u32,
    pub idle: Duration,
}

/// Accepts connections on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, handler: Arc<Handler>, limits: TcpLimits, mut stop: watch::Receiver<bool>) {
    let open = Arc::new(AtomicU32::new(0));
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "TCP accept failed");
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        if open.load(Ordering::Acquire) >= limits.max_connections {
            handler.metrics.tcp_rejected.increment(1);
            drop(stream);
            continue;
        }
        let n = open.fetch_add(1, Ordering::AcqRel) + 1;
        handler.metrics.tcp_connections.set(f64::from(n));
        let (handler, open, stop) = (handler.clone(), open.clone(), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &handler, limits.idle, stop).await {
                tracing::debug!(error = %e, "TCP client connection closed");
            }
            let n = open.fetch_sub(1, Ordering::AcqRel) - 1;
            handler.metrics.tcp_connections.set(f64::from(n));
        });
    }
}

/// Reads a 2-byte length prefix; `None` when the connection closed, or has been idle with
/// nothing in flight for `idle`. `read` is cancel-safe, so timeouts lose no bytes.
async fn read_prefix(r: &mut OwnedReadHalf, idle: Duration, busy: &AtomicUsize) -> Option<usize> {
    let mut prefix = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        match tokio::time::timeout(idle, r.read(&mut prefix[got..])).await {
            Err(_) if got == 0 && busy.load(Ordering::Acquire) == 0 => return None,
            Err(_) => continue,
            Ok(Ok(0) | Err(_)) => return None,
            Ok(Ok(n)) => got += n,
        }
    }
    Some(u16::from_be_bytes(prefix) as usize)
}

async fn write_frame(w: &Mutex<OwnedWriteHalf>, msg: &[u8]) -> std::io::Result<()> {
    // The length prefix is 16 bits: a longer message cannot be framed (and no reply podns
    // composes is allowed to be one).
    let Ok(len) = u16::try_from(msg.len()) else {
        return Err(std::io::ErrorKind::InvalidData.into());
    };
    let mut frame = Vec::with_capacity(msg.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(msg);
    w.lock().await.write_all(&frame).await
}

async fn connection(
    stream: TcpStream,
    handler: &Arc<Handler>,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ClientError> {
    let _ = stream.set_nodelay(true);
    let ipv6 = stream.peer_addr().is_ok_and(|a| a.is_ipv6());
    let (mut r, w) = stream.into_split();
    let w = Arc::new(Mutex::new(w));
    let busy = Arc::new(AtomicUsize::new(0));
    let mut out = BytesMut::with_capacity(512);
    loop {
        let len = tokio::select! {
            l = read_prefix(&mut r, idle, &busy) => match l {
                Some(l) => l,
                None => return Ok(()),
            },
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        if len < HEADER_LEN {
            handler.metrics.dropped(Drop::Short);
            return Err(ClientError::ShortFrame(len));
        }
        let mut msg = BytesMut::zeroed(len);
        match tokio::time::timeout(idle, r.read_exact(&mut msg)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let started = Instant::now();
        out.clear();
        match handler.admit(&msg, Proto::Tcp, ipv6, &mut out) {
            Admitted::Dropped => {}
            Admitted::Answered { rcode, source } => {
                if write_frame(&w, &out).await.is_err() {
                    handler.metrics.dropped(Drop::SendFailed);
                    return Ok(());
                }
                handler.metrics.response(Proto::Tcp, source, rcode, started.elapsed());
            }
            Admitted::Forward(q, guard) => {
                busy.fetch_add(1, Ordering::AcqRel);
                let (handler, w, busy) = (handler.clone(), w.clone(), busy.clone());
                tokio::spawn(async move {
                    let answer = handler.forward(&mut msg, &q, Proto::Tcp).await;
                    if write_frame(&w, &answer.bytes).await.is_err() {
                        handler.metrics.dropped(Drop::SendFailed);
                    }
                    handler.metrics.response(Proto::Tcp, answer.source, answer.rcode, started.elapsed());
                    busy.fetch_sub(1, Ordering::AcqRel);
                    drop(guard);
                });
            }
        }
    }
}
