//! The UDP listener: one receive loop per socket. Immediate answers (errors, later cache hits)
//! are sent from the loop itself with a reused buffer; forwarded queries copy the packet into a
//! slab shared by many queries and continue in a task of their own.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::{Drop, Proto};
use crate::pipeline::{Admitted, Pipeline, Served};
use crate::wire::MAX_MESSAGE;

/// Bytes reserved at a time for copies of forwarded queries.
const SLAB: usize = 64 * 1024;

/// Serves `sock` until `stop` turns true.
pub async fn serve(sock: Arc<UdpSocket>, pipeline: Arc<Pipeline>, mut stop: watch::Receiver<bool>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut out = BytesMut::with_capacity(1024);
    let mut slab = BytesMut::with_capacity(SLAB);
    loop {
        let (n, peer) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP errors for earlier replies surface here; they concern one client.
                    tracing::debug!(error = %e, "UDP receive error");
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let started = Instant::now();
        out.clear();
        match pipeline.admit(&buf[..n], Proto::Udp, peer.ip(), &mut out) {
            Admitted::Dropped => {}
            Admitted::Answered { rcode, source, action, .. } => {
                if sock.send_to(&out, peer).await.is_err() {
                    pipeline.metrics.dropped(Drop::SendFailed);
                }
                let elapsed = started.elapsed();
                let (query, reply) = (&buf[..n], &out[..]);
                pipeline.record(&Served {
                    proto: Proto::Udp,
                    client: peer,
                    query,
                    reply,
                    rcode,
                    source,
                    action,
                    elapsed,
                });
            }
            Admitted::Forward(q, guard) => {
                if slab.capacity() < n {
                    slab.reserve(SLAB.max(n));
                }
                slab.extend_from_slice(&buf[..n]);
                let msg = slab.split();
                let sock = sock.clone();
                let pipeline = pipeline.clone();
                tokio::spawn(async move {
                    let answer = pipeline.serve(msg, &q, Proto::Udp).await;
                    if sock.send_to(&answer.bytes, peer).await.is_err() {
                        pipeline.metrics.dropped(Drop::SendFailed);
                    }
                    pipeline.record(&Served {
                        proto: Proto::Udp,
                        client: peer,
                        query: &answer.query,
                        reply: &answer.bytes,
                        rcode: answer.rcode,
                        source: answer.source,
                        action: answer.action,
                        elapsed: started.elapsed(),
                    });
                    drop(guard);
                });
            }
        }
    }
}
