//! Admission: what to do with a packet before anything else ([`crate::policy::admit`] decides),
//! and the bound on queries in flight: `--max-inflight` overall and each client's share of it
//! ([`super::shares`]), so a flood gets SERVFAIL at once instead of growing memory.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::BytesMut;
use tokio::sync::Notify;

use super::shares::ClientShares;
use crate::metrics::{Metrics, Proto, Source};
use crate::policy::{Admission as Decision, admit};
use crate::wire::{ParsedQuery, error_reply, rcode};

/// What admission decided for one packet.
pub enum Admitted {
    /// Nothing is sent back.
    Dropped,
    /// An answer was written to the output buffer; `qtype` is 0 when no question was read.
    Answered { rcode: u16, source: Source, qtype: u16, action: Option<super::Action> },
    /// The query goes on to the chain; the guard holds its in-flight slot.
    Forward(ParsedQuery, InflightGuard),
}

/// The in-flight accounting.
pub struct Admission {
    metrics: Arc<Metrics>,
    inflight: AtomicU32,
    max_inflight: u32,
    shares: ClientShares,
    idle: Notify,
}

/// Holds one query's in-flight slot; wakes [`Admission::wait_idle`] when the last one goes.
pub struct InflightGuard {
    admission: Arc<Admission>,
    /// The client's share bucket.
    bucket: usize,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let a = &self.admission;
        a.shares.release(self.bucket);
        let left = a.inflight.fetch_sub(1, Ordering::AcqRel) - 1;
        a.metrics.inflight.set(f64::from(left));
        if left == 0 {
            a.idle.notify_waiters();
        }
    }
}

impl Admission {
    /// `max_per_client` is each client's share of `max_inflight`.
    pub fn new(metrics: Arc<Metrics>, max_inflight: u32, max_per_client: u32) -> Admission {
        Admission {
            metrics,
            inflight: AtomicU32::new(0),
            max_inflight,
            shares: ClientShares::new(max_per_client),
            idle: Notify::new(),
        }
    }

    /// Parses the packet `msg`: a query, or what was done instead (dropped, or an error
    /// written to `out`).
    pub fn parse(&self, msg: &[u8], proto: Proto, peer: IpAddr, out: &mut BytesMut) -> Result<ParsedQuery, Admitted> {
        match admit(msg) {
            Decision::Drop(why) => {
                self.metrics.dropped(why);
                Err(Admitted::Dropped)
            }
            Decision::Reject { header, rcode, question, opt } => {
                error_reply(msg, &header, question.as_ref(), rcode, opt.as_ref(), out);
                Err(Admitted::Answered {
                    rcode,
                    source: Source::Error,
                    qtype: question.map_or(0, |q| q.qtype),
                    action: None,
                })
            }
            Decision::Query(q) => {
                self.metrics.request(proto, peer.is_ipv6(), q.question.qtype, msg.len());
                Ok(q)
            }
        }
    }

    /// Takes an in-flight slot for the query `q` in `msg`, or answers SERVFAIL into `out` when
    /// the client's share or `--max-inflight` is used up.
    pub fn take(
        self: &Arc<Self>,
        msg: &[u8],
        q: ParsedQuery,
        peer: IpAddr,
        proto: Proto,
        out: &mut BytesMut,
    ) -> Admitted {
        let reject = |out: &mut BytesMut| {
            self.metrics.inflight_rejected.increment(1);
            error_reply(msg, &q.header, Some(&q.question), rcode::SERVFAIL, q.opt.as_ref(), out);
            Admitted::Answered { rcode: rcode::SERVFAIL, source: Source::Error, qtype: q.question.qtype, action: None }
        };
        let Some(bucket) = self.shares.take(peer, proto) else {
            return reject(out);
        };
        let n = self.inflight.fetch_add(1, Ordering::AcqRel);
        if n >= self.max_inflight {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            self.shares.release(bucket);
            return reject(out);
        }
        self.metrics.inflight.set(f64::from(n + 1));
        Admitted::Forward(q, InflightGuard { admission: self.clone(), bucket })
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
