//! The query pipeline shared by the UDP and TCP listeners: admission, then forwarding, then the
//! reply shaped for the client (its ID, its question case, its UDP size). Listeners own framing
//! and sockets; this owns what the answer is.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::Notify;

use crate::metrics::{Metrics, Proto, Source};
use crate::policy::aaaa::{AaaaPolicy, Plan};
use crate::policy::{Admission, ParsedQuery, admit};
use crate::resolver::Resolver;
use crate::wire::{
    HEADER_LEN, Header, MAX_MESSAGE, OUR_UDP_SIZE, error_reply, find_opt, parse_question, rcode, restore_question,
    strip_opt, truncated_reply, write_opt,
};

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
    /// The client's share bucket ([`super::shares::ClientShares`]).
    bucket: usize,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.handler.shares.release(self.bucket);
        let left = self.handler.inflight.fetch_sub(1, Ordering::AcqRel) - 1;
        self.handler.metrics.inflight.set(f64::from(left));
        if left == 0 {
            self.handler.idle.notify_waiters();
        }
    }
}

/// The service behind the listeners.
pub struct Handler {
    pub resolver: Arc<Resolver>,
    pub metrics: Arc<Metrics>,
    pub(super) aaaa: AaaaPolicy,
    pub(super) ipv6: super::aaaa::Ipv6State,
    pub(super) collapse: Option<super::collapse::Collapse>,
    inflight: AtomicU32,
    max_inflight: u32,
    shares: super::shares::ClientShares,
    idle: Notify,
}

impl Handler {
    /// `max_per_client` is each client's share of `max_inflight` (see [`super::shares`]).
    pub fn new(
        resolver: Arc<Resolver>,
        metrics: Arc<Metrics>,
        max_inflight: u32,
        max_per_client: u32,
        aaaa: AaaaPolicy,
        collapse: Option<super::collapse::Collapse>,
    ) -> Handler {
        Handler {
            resolver,
            metrics,
            aaaa,
            ipv6: super::aaaa::Ipv6State::default(),
            collapse,
            inflight: AtomicU32::new(0),
            max_inflight,
            shares: super::shares::ClientShares::new(max_per_client),
            idle: Notify::new(),
        }
    }

    /// Admits the packet `msg` from a client at `peer`. Immediate answers are written to `out`.
    pub fn admit(self: &Arc<Self>, msg: &[u8], proto: Proto, peer: IpAddr, out: &mut BytesMut) -> Admitted {
        let ipv6 = peer.is_ipv6();
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
                // A live cache entry is the final answer whatever the policies would do (their
                // answers are cached under the client's key too): answer from this loop.
                if self.resolver.cached_answer(msg, &q, out)
                    && let Some(rcode) = self.shape(out, msg, &q, proto)
                {
                    return Admitted::Answered { rcode, source: Source::Cache };
                }
                out.clear();
                let Some(bucket) = self.shares.take(peer, proto) else {
                    self.metrics.inflight_rejected.increment(1);
                    error_reply(msg, &q.header, Some(&q.question), rcode::SERVFAIL, q.opt.as_ref(), out);
                    return Admitted::Answered { rcode: rcode::SERVFAIL, source: Source::Error };
                };
                let n = self.inflight.fetch_add(1, Ordering::AcqRel);
                if n >= self.max_inflight {
                    self.inflight.fetch_sub(1, Ordering::AcqRel);
                    self.shares.release(bucket);
                    self.metrics.inflight_rejected.increment(1);
                    error_reply(msg, &q.header, Some(&q.question), rcode::SERVFAIL, q.opt.as_ref(), out);
                    return Admitted::Answered { rcode: rcode::SERVFAIL, source: Source::Error };
                }
                self.metrics.inflight.set(f64::from(n + 1));
                Admitted::Forward(q, InflightGuard { handler: self.clone(), bucket })
            }
        }
    }

    /// Answers an admitted query. `msg` is the client's query; its ID is overwritten on the
    /// way (the parsed header keeps the client's). Whatever the policies do (collapse, AAAA
    /// handling: several lookups in a row), the client has its answer within `--query-timeout`,
    /// SERVFAIL at worst, well inside the stubs' own 5 s.
    pub async fn forward(&self, msg: &mut BytesMut, q: &ParsedQuery, proto: Proto) -> Answer {
        self.forward_within(msg, q, proto, self.resolver.upstreams.query_timeout()).await
    }

    /// [`Handler::forward`] with what is left of the client's budget: the UDP fast path
    /// (`server::fast`) hands a query over after spending part of it.
    pub async fn forward_within(&self, msg: &mut BytesMut, q: &ParsedQuery, proto: Proto, budget: Duration) -> Answer {
        match tokio::time::timeout(budget, self.forward_within_budget(msg, q, proto)).await {
            Ok(answer) => answer,
            Err(_) => self.servfail(msg, q),
        }
    }

    async fn forward_within_budget(&self, msg: &mut BytesMut, q: &ParsedQuery, proto: Proto) -> Answer {
        if let Some(c) = &self.collapse
            && let Some(answer) = self.collapse(c, msg, q, proto).await
        {
            return answer;
        }
        match self.aaaa_plan(q.question.name(msg), q.question.qtype) {
            Plan::Forward => {}
            Plan::Fix => return self.forward_fixing(msg, q, proto).await,
            Plan::FromA(reason) => return self.answer_from_a(msg, q, reason).await,
        }
        match self.resolver.resolve_miss(msg, q, proto == Proto::Tcp).await {
            Ok(r) => self.answer(r, msg, q, proto),
            Err(e) => {
                tracing::debug!(error = %e, name = %crate::wire::to_dotted(&msg[HEADER_LEN..q.question.name_end]), "resolution failed");
                self.servfail(msg, q)
            }
        }
    }

    /// The UDP fast path's seam (issue 12, `server::fast`): true when [`Handler::forward`] would
    /// do nothing for this query but ask the resolver for it unchanged: the search collapse
    /// takes no action on the name and the AAAA plan is [`Plan::Forward`]. Counts the
    /// collapse's "forwarded" decision as [`Handler::forward`] would. Whether the resolver is
    /// already busy with the key is the caller's check ([`Resolver::is_engaged`]).
    pub fn plain_forward(&self, msg: &[u8], q: &ParsedQuery) -> bool {
        let name = q.question.name(msg);
        if let Some(c) = &self.collapse {
            match crate::policy::search::classify(name, &c.cfg) {
                crate::policy::search::SearchClass::NotSearch => {}
                crate::policy::search::SearchClass::Other { .. } => {
                    self.metrics.search(super::collapse::Action::Forwarded as usize, 0)
                }
                _ => return false,
            }
        }
        // Types the AAAA handling does not cover skip the IPv6 state (a lock in --aaaa auto).
        !self.aaaa.types.contains(&q.question.qtype) || self.aaaa_plan(name, q.question.qtype) == Plan::Forward
    }

    /// The client's answer from a resolved reply.
    pub(super) fn answer(&self, r: crate::resolver::Resolved, msg: &[u8], q: &ParsedQuery, proto: Proto) -> Answer {
        let mut bytes = r.reply;
        match self.shape(&mut bytes, msg, q, proto) {
            Some(rcode) => Answer { bytes, rcode, source: r.source },
            // The question was checked on the way in; a reply that still does not fit it is an
            // internal error, and a wrong answer is worse than an honest failure.
            None => self.servfail(msg, q),
        }
    }

    /// Makes `reply` the client's, in place: its ID and question case, an OPT record exactly
    /// when the query had one (RFC 6891 §7), and TC when it exceeds the client's UDP size (or,
    /// over TCP, the 65,535-octet maximum).
    /// Returns the rcode, or `None` when the reply does not answer the question.
    pub fn shape(&self, reply: &mut BytesMut, msg: &[u8], q: &ParsedQuery, proto: Proto) -> Option<u16> {
        let rq = parse_question(reply).ok()?;
        if !restore_question(reply, &rq, q.header.id, &msg[HEADER_LEN..q.question.name_end]) {
            return None;
        }
        let mut header = Header::parse(reply).ok()?;
        // Only replies with additional records can carry an OPT: the common reply skips the walk.
        let opt = if header.arcount > 0 { find_opt(reply, &header, rq.end).ok().flatten() } else { None };
        match (q.opt, opt) {
            (None, Some(o)) => strip_opt(reply, &mut header, &o),
            // A reply whose additional count is already at the maximum cannot take an OPT (and
            // cannot be a real reply: find_opt walked it without finding one).
            (Some(co), None) => {
                header.arcount = header.arcount.checked_add(1)?;
                write_opt(reply, OUR_UDP_SIZE, 0, co.dnssec_ok);
                reply[10..12].copy_from_slice(&header.arcount.to_be_bytes());
            }
            _ => {}
        }
        // Over TCP the limit is the 16-bit frame length: a 65,535-byte upstream answer plus the
        // OPT record added for an EDNS client cannot be framed, and sending nothing would leave
        // the client waiting; it gets the records that fit and TC instead (RFC 7766 §8 leaves
        // no other way to say "too big").
        let limit = if proto == Proto::Udp { q.max_udp_reply() } else { MAX_MESSAGE };
        if reply.len() > limit {
            self.metrics.truncated.increment(1);
            let opt = if q.opt.is_some() { find_opt(reply, &header, rq.end).ok().flatten() } else { None };
            let mut out = BytesMut::with_capacity(rq.end + 16);
            truncated_reply(reply, &header, &rq, opt.as_ref(), limit, &mut out);
            reply.clear();
            reply.extend_from_slice(&out);
        }
        Some(header.rcode())
    }

    pub(super) fn servfail(&self, msg: &[u8], q: &ParsedQuery) -> Answer {
        let mut out = BytesMut::with_capacity(q.question.end + 11);
        error_reply(msg, &q.header, Some(&q.question), rcode::SERVFAIL, q.opt.as_ref(), &mut out);
        Answer { bytes: out, rcode: rcode::SERVFAIL, source: Source::Error }
    }

    /// `--max-inflight`: the fast path's table is bounded by it.
    pub fn max_inflight(&self) -> u32 {
        self.max_inflight
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
