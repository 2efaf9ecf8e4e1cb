//! The query pipeline shared by the UDP and TCP listeners: admission, then forwarding, then the
//! reply shaped for the client (its ID, its question case, its UDP size). Listeners own framing
//! and sockets; this owns what the answer is.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::BytesMut;
use tokio::sync::Notify;

use crate::metrics::{Metrics, Proto, Source};
use crate::policy::{Admission, ParsedQuery, admit};
use crate::upstream::Upstreams;
use crate::wire::{HEADER_LEN, error_reply, find_opt, parse_question, rcode, restore_question, strip_opt, truncated_reply};

/// What admission decided for one packet.
pub enum Admitted {
    /// Nothing is sent back.
    Dropped,
    /// An answer was written to the output buffer.
    Answered { rcode: u16, source: Source },
    /// The query goes upstream; the guard holds its in-flight slot.
    Forward(ParsedQuery, InflightGuard),
}

/// An answer to send.
pub struct Answer {
    pub bytes: BytesMut,
    pub rcode: u16,
    pub source: Source,
}

/// Counts queries in flight; wakes [`Handler::wait_idle`] when the count drops to zero.
pub struct InflightGuard {
    handler: Arc<Handler>,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let left = self.handler.inflight.fetch_sub(1, Ordering::AcqRel) - 1;
        self.handler.metrics.inflight.set(f64::from(left));
        if left == 0 {
            self.handler.idle.notify_waiters();
        }
    }
}

/// The service behind the listeners.
pub struct Handler {
    pub upstreams: Upstreams,
    pub metrics: Arc<Metrics>,
    inflight: AtomicU32,
    max_inflight: u32,
    idle: Notify,
}

impl Handler {
    pub fn new(upstreams: Upstreams, metrics: Arc<Metrics>, max_inflight: u32) -> Handler {
        Handler { upstreams, metrics, inflight: AtomicU32::new(0), max_inflight, idle: Notify::new() }
    }

    /// Admits the packet `msg` from a client. Immediate answers are written to `out`.
    pub fn admit(self: &Arc<Self>, msg: &[u8], proto: Proto, ipv6: bool, out: &mut BytesMut) -> Admitted {
        match admit(msg) {
            Admission::Drop(why) => {
                self.metrics.dropped(why);
                Admitted::Dropped
            }
            Admission::Reject { header, rcode, question, opt } => {
                error_reply(msg, &header, question.as_ref(), rcode, opt.as_ref(), out);
                Admitted::Answered { rcode, source: Source::Error }
            }
            Admission::Query(q) => {
                self.metrics.request(proto, ipv6, q.question.qtype);
                let n = self.inflight.fetch_add(1, Ordering::AcqRel);
                if n >= self.max_inflight {
                    self.inflight.fetch_sub(1, Ordering::AcqRel);
                    self.metrics.inflight_rejected.increment(1);
                    error_reply(msg, &q.header, Some(&q.question), rcode::SERVFAIL, q.opt.as_ref(), out);
                    return Admitted::Answered { rcode: rcode::SERVFAIL, source: Source::Error };
                }
                self.metrics.inflight.set(f64::from(n + 1));
                Admitted::Forward(q, InflightGuard { handler: self.clone() })
            }
        }
    }

    /// Answers an admitted query from upstream. `msg` is the client's query; its ID is
    /// overwritten on the way (the parsed header keeps the client's).
    pub async fn forward(&self, msg: &mut BytesMut, q: &ParsedQuery, proto: Proto) -> Answer {
        match self.upstreams.resolve(msg, q, proto == Proto::Tcp).await {
            Ok(ex) => {
                let mut reply = ex.reply;
                let client_name = &msg[HEADER_LEN..q.question.name_end];
                match parse_question(&reply) {
                    Ok(rq) if restore_question(&mut reply, &rq, q.header.id, client_name) => {
                        let mut header = ex.header;
                        // Only replies with additional records can carry an OPT: the common
                        // reply skips the walk.
                        let opt = if header.arcount > 0 { find_opt(&reply, &header, rq.end).ok().flatten() } else { None };
                        if let (None, Some(o)) = (q.opt, opt) {
                            strip_opt(&mut reply, &mut header, &o);
                        }
                        if proto == Proto::Udp && reply.len() > q.max_udp_reply() {
                            self.metrics.truncated.increment(1);
                            let mut out = BytesMut::with_capacity(rq.end + 16);
                            truncated_reply(&reply, &header, &rq, opt.filter(|_| q.opt.is_some()).as_ref(), &mut out);
                            crate::wire::set_id(&mut out, q.header.id);
                            reply = out;
                        }
                        Answer { bytes: reply, rcode: ex.header.rcode(), source: Source::Upstream }
                    }
                    // The pending map checked the question already; this cannot happen, but a
                    // wrong answer is worse than an honest failure.
                    _ => self.servfail(msg, q),
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, name = %crate::wire::to_dotted(&msg[HEADER_LEN..q.question.name_end]), "upstream resolution failed");
                self.servfail(msg, q)
            }
        }
    }

    fn servfail(&self, msg: &[u8], q: &ParsedQuery) -> Answer {
        let mut out = BytesMut::with_capacity(q.question.end + 11);
        error_reply(msg, &q.header, Some(&q.question), rcode::SERVFAIL, q.opt.as_ref(), &mut out);
        Answer { bytes: out, rcode: rcode::SERVFAIL, source: Source::Error }
    }

    /// Queries in flight now.
    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Acquire)
    }

    /// Waits until no query is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inflight() == 0 {
                return;
            }
            notified.await;
        }
    }
}
