//! The UDP listener: one loop per socket, reading and answering in batches (`recvmmsg`,
//! `sendmmsg`, [`crate::net::batch`]).
//!
//! Per datagram: admission ([`Pipeline::admit`]: drops, errors and cache hits are answered from
//! the loop into the send batch); plain forwards go to the fast path ([`super::fast`]), run by
//! this same loop with no task, lock or timer per query; anything else is copied and continues
//! in a task of its own on the slow path ([`Pipeline::serve`]). The loop also reads the fast
//! path's upstream replies, expires its deadlines with a single timer armed only while a query
//! is in flight, and sends each turn's answers and upstream queries with one call per socket.
//! An idle listener makes no system call.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::BytesMut;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;

use super::fast::FastPath;
use crate::metrics::{Drop, Proto};
use crate::net::batch::{Push, RecvBatch, SLOTS, SendBatch};
use crate::pipeline::{Admitted, Pipeline, Served};
use crate::upstream::wait_ready;

/// Receive batches read per turn at most, so replies and expiries get their turn under load.
const BATCHES_PER_TURN: usize = 4;

/// Serves `sock` until `stop` turns true; then stops reading queries and returns once the fast
/// path has answered or handed over every query it holds (the slow path's tasks are waited for
/// by the caller, [`Pipeline::wait_idle`]).
pub async fn serve(sock: Arc<UdpSocket>, pipeline: Arc<Pipeline>, mut stop: watch::Receiver<bool>) {
    let mut fast = FastPath::new(pipeline.clone(), sock.clone(), pipeline.max_inflight() as usize, wait_ready);
    let mut rx = RecvBatch::new();
    let mut tx = SendBatch::new();
    let mut out = BytesMut::with_capacity(1024);
    let mut stopping = false;
    let mut stop_signal = pin!(stop.wait_for(|s| *s));
    let mut timer = pin!(tokio::time::sleep_until(Instant::now()));
    let mut armed = false;
    loop {
        // The loop may find work at every turn under load: it yields to the other tasks (the
        // slow path, TCP, HTTP) as the runtime's I/O futures do, every so many turns.
        tokio::task::consume_budget().await;
        // Wait for a query, a reply, the earliest deadline or the stop signal.
        std::future::poll_fn(|cx| {
            let mut ready = false;
            if !stopping && stop_signal.as_mut().poll(cx).is_ready() {
                stopping = true;
                ready = true;
            }
            if !stopping && sock.poll_recv_ready(cx).is_ready() {
                ready = true;
            }
            if fast.poll_replies(cx) {
                ready = true;
            }
            if armed && timer.as_mut().poll(cx).is_ready() {
                armed = false;
                ready = true;
            }
            if ready { Poll::Ready(()) } else { Poll::Pending }
        })
        .await;

        if !stopping {
            for _ in 0..BATCHES_PER_TURN {
                let n = match rx.recv(&sock) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // ICMP errors for earlier replies surface here; they concern one client.
                        tracing::debug!(error = %e, "UDP receive error");
                        continue;
                    }
                };
                let started = Instant::now();
                for i in 0..n {
                    let p = rx.get(i);
                    let Some(peer) = p.from else { continue };
                    // A query longer than a slot (4 KiB) is read as its first 4 KiB: admission
                    // answers FORMERR for what no longer parses.
                    let msg: &[u8] = p.data;
                    out.clear();
                    match pipeline.admit(msg, Proto::Udp, peer.ip(), &mut out) {
                        Admitted::Dropped => {}
                        Admitted::Answered { rcode, source, action, qtype } => {
                            queue(&mut tx, &sock, &pipeline, &out, peer).await;
                            let (query, reply, elapsed) = (msg, &out[..], started.elapsed());
                            pipeline.record(&Served {
                                proto: Proto::Udp,
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
                        Admitted::Forward(q, guard) => fast.forward(msg, q, guard, peer, started).await,
                    }
                }
                fast.flush().await;
                if n < SLOTS {
                    break;
                }
            }
        }
        fast.read_replies(&mut tx).await;
        fast.expire(Instant::now());
        if !tx.is_empty() {
            for _ in 0..tx.flush(&sock).await {
                pipeline.metrics.dropped(Drop::SendFailed);
            }
        }
        if stopping && fast.is_empty() {
            fast.close();
            return;
        }
        if !armed && let Some(at) = fast.earliest() {
            timer.as_mut().reset(at);
            armed = true;
        }
    }
}

/// Queues an answer for `peer`, flushing the batch when it is full.
async fn queue(tx: &mut SendBatch, sock: &UdpSocket, pipeline: &Pipeline, data: &[u8], peer: std::net::SocketAddr) {
    loop {
        match tx.push(data, Some(peer)) {
            Push::Queued => return,
            Push::Full => {
                for _ in 0..tx.flush(sock).await {
                    pipeline.metrics.dropped(Drop::SendFailed);
                }
            }
            Push::TooLarge => {
                if sock.send_to(data, peer).await.is_err() {
                    pipeline.metrics.dropped(Drop::SendFailed);
                }
                return;
            }
        }
    }
}
