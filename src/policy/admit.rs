//! Admission: what to do with a packet a client sent, before any upstream is involved.
//!
//! Never reflect (responses and runts are dropped, RFC 5452 §9.2 spirit), answer what cannot be
//! served with the code RFC 1035 / RFC 6891 prescribe, and hand everything else on parsed.

use crate::labels::Drop;
pub use crate::wire::ParsedQuery;
use crate::wire::{Header, Opt, Question, WireError, find_opt, parse_question, rcode};

/// The outcome of admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send nothing back.
    Drop(Drop),
    /// Answer at once with `rcode`, echoing the question when it could be read and carrying an
    /// OPT record when the query had one.
    Reject { header: Header, rcode: u16, question: Option<Question>, opt: Option<Opt> },
    /// A well-formed standard query.
    Query(ParsedQuery),
}

/// Opcode of a standard query.
const QUERY: u8 = 0;

/// Decides what to do with the packet `msg` from a client.
pub fn admit(msg: &[u8]) -> Admission {
    let Ok(header) = Header::parse(msg) else {
        return Admission::Drop(Drop::Short);
    };
    if header.qr() {
        return Admission::Drop(Drop::Response);
    }
    let reject = |rcode, question, opt| Admission::Reject { header, rcode, question, opt };
    let question = if header.qdcount == 1 { parse_question(msg).ok() } else { None };
    if header.opcode() != QUERY {
        return reject(rcode::NOTIMP, question, None);
    }
    let Some(question) = question else {
        return reject(rcode::FORMERR, None, None);
    };
    let opt = match find_opt(msg, &header, question.end) {
        Ok(opt) => opt,
        Err(WireError::DuplicateOpt | WireError::BadOpt) => {
            return reject(rcode::FORMERR, Some(question), None);
        }
        Err(_) => return reject(rcode::FORMERR, Some(question), None),
    };
    if let Some(o) = opt
        && o.version > 0
    {
        return reject(rcode::BADVERS, Some(question), Some(o));
    }
    Admission::Query(ParsedQuery { header, question, opt })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(flags: u16, qd: u16, ar: u16, tail: &[u8]) -> Vec<u8> {
        let mut m = vec![0x11, 0x22];
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&qd.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(&ar.to_be_bytes());
        m.extend_from_slice(tail);
        m
    }
    const Q: &[u8] = b"\x07example\x03com\x00\x00\x01\x00\x01";
    const OPT0: &[u8] = &[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0];
    const OPT1: &[u8] = &[0, 0, 41, 4, 208, 0, 1, 0, 0, 0, 0];

    fn rcode_of(a: Admission) -> Option<u16> {
        match a {
            Admission::Reject { rcode, .. } => Some(rcode),
            _ => None,
        }
    }

    #[test]
    fn decision_table() {
        let with = |a: &[u8], b: &[u8]| [a, b].concat();
        assert_eq!(admit(&[0; 11]), Admission::Drop(Drop::Short));
        assert_eq!(admit(&query(0x8100, 1, 0, Q)), Admission::Drop(Drop::Response));
        assert_eq!(rcode_of(admit(&query(0x2100, 1, 0, Q))), Some(rcode::NOTIMP), "opcode 4 NOTIFY");
        assert_eq!(rcode_of(admit(&query(0x0100, 0, 0, b""))), Some(rcode::FORMERR), "no question");
        assert_eq!(rcode_of(admit(&query(0x0100, 2, 0, &with(Q, Q)))), Some(rcode::FORMERR), "two questions");
        assert_eq!(rcode_of(admit(&query(0x0100, 1, 0, &Q[..5]))), Some(rcode::FORMERR), "cut question");
        assert_eq!(rcode_of(admit(&query(0x0100, 1, 2, &[Q, OPT0, OPT0].concat()))), Some(rcode::FORMERR));
        assert_eq!(rcode_of(admit(&query(0x0100, 1, 1, Q))), Some(rcode::FORMERR), "missing additional");
        assert_eq!(rcode_of(admit(&query(0x0100, 1, 1, &with(Q, OPT1)))), Some(rcode::BADVERS));
        match admit(&query(0x0100, 1, 1, &with(Q, OPT0))) {
            Admission::Query(p) => {
                assert_eq!(p.question.qtype, 1);
                assert_eq!(p.max_udp_reply(), 1232);
            }
            other => panic!("expected a query, got {other:?}"),
        }
        match admit(&query(0x0100, 1, 0, Q)) {
            Admission::Query(p) => assert_eq!(p.max_udp_reply(), 512),
            other => panic!("expected a query, got {other:?}"),
        }
    }

    #[test]
    fn never_panics_on_prefixes_and_noise() {
        let full = query(0x0100, 1, 1, &[Q, OPT0].concat());
        for n in 0..=full.len() {
            let _ = admit(&full[..n]);
        }
        let mut x: u32 = 12345;
        for _ in 0..20000 {
            let len = (x % 80) as usize;
            let mut m = Vec::with_capacity(len);
            for _ in 0..len {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                m.push((x >> 16) as u8);
            }
            let _ = admit(&m);
        }
    }
}
