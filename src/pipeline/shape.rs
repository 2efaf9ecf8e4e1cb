//! The answer made the client's: its ID and question case, an OPT record exactly when the query
//! had one, and TC when it does not fit (`domain`'s mandatory middleware does the same work).

use bytes::BytesMut;

use super::Action;
use crate::metrics::{Metrics, Proto, Source};
use crate::wire::{
    HEADER_LEN, Header, MAX_MESSAGE, OUR_UDP_SIZE, ParsedQuery, error_reply, find_opt, parse_question, rcode,
    restore_question, strip_opt, truncated_reply, write_opt,
};

/// An answer ready to send to a client.
pub struct Answer {
    pub bytes: BytesMut,
    pub rcode: u16,
    pub source: Source,
    /// What decided it; `None` for an error podns answered itself.
    pub action: Option<Action>,
    /// The client's query, handed back (its ID may have been overwritten on the way).
    pub query: BytesMut,
}

impl Answer {
    /// SERVFAIL for the client query `q` in `msg`.
    pub fn servfail(msg: &[u8], q: &ParsedQuery) -> Answer {
        let mut bytes = BytesMut::with_capacity(q.question.end + 11);
        error_reply(msg, &q.header, Some(&q.question), rcode::SERVFAIL, q.opt.as_ref(), &mut bytes);
        Answer { bytes, rcode: rcode::SERVFAIL, source: Source::Error, action: None, query: BytesMut::new() }
    }
}

/// Makes `reply` the answer to the client query `q` in `msg`, in place: its ID and question
/// case, an OPT record exactly when the query had one (RFC 6891 §7), and TC when it exceeds the
/// client's UDP size (or, over TCP, the 65,535-octet maximum).
/// Returns the rcode, or `None` when the reply does not answer the question.
pub fn shape(reply: &mut BytesMut, msg: &[u8], q: &ParsedQuery, proto: Proto, metrics: &Metrics) -> Option<u16> {
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
        metrics.truncated.increment(1);
        let opt = if q.opt.is_some() { find_opt(reply, &header, rq.end).ok().flatten() } else { None };
        let mut out = BytesMut::with_capacity(rq.end + 16);
        truncated_reply(reply, &header, &rq, opt.as_ref(), limit, &mut out);
        reply.clear();
        reply.extend_from_slice(&out);
    }
    Some(header.rcode())
}
