//! The EDNS(0) OPT pseudo-record (RFC 6891).

use super::{Header, MIN_UDP_SIZE, Records, WireError, rtype};

/// What a message's OPT record says, and where it lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opt {
    /// Offset of the record (its root owner name) and just past it.
    pub start: usize,
    pub end: usize,
    /// The requestor's UDP payload size, as sent (may be below 512).
    pub udp_size: u16,
    /// High eight bits of the extended response code.
    pub ext_rcode: u8,
    pub version: u8,
    /// The DNSSEC OK bit.
    pub dnssec_ok: bool,
}

impl Opt {
    /// The largest UDP reply the sender accepts: its advertised size, never below 512.
    pub fn max_udp_reply(&self) -> usize {
        (self.udp_size as usize).max(MIN_UDP_SIZE)
    }
}

/// Finds the OPT record. More than one, or one whose owner is not the root, is a format error;
/// an OPT outside the additional section is ignored as any other record there would be.
pub fn find_opt(msg: &[u8], header: &Header, after_question: usize) -> Result<Option<Opt>, WireError> {
    let mut found = None;
    for r in Records::new(msg, header, after_question) {
        let r = r?;
        if r.rtype != rtype::OPT || r.section != super::records::Section::Additional {
            continue;
        }
        if found.is_some() {
            return Err(WireError::DuplicateOpt);
        }
        if msg[r.start] != 0 {
            return Err(WireError::BadOpt);
        }
        found = Some(Opt {
            start: r.start,
            end: r.end(),
            udp_size: r.class,
            ext_rcode: (r.ttl >> 24) as u8,
            version: (r.ttl >> 16) as u8,
            dnssec_ok: r.ttl & 0x8000 != 0,
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse_question;

    fn query(opts: &[&[u8]]) -> Vec<u8> {
        let mut m = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, opts.len() as u8];
        m.extend_from_slice(b"\x01a\x00\x00\x01\x00\x01");
        for o in opts {
            m.extend_from_slice(o);
        }
        m
    }
    const OPT_DO: &[u8] = &[0, 0, 41, 4, 208, 0, 0, 0x80, 0, 0, 0];
    const OPT_V1: &[u8] = &[0, 0, 41, 2, 0, 0, 1, 0, 0, 0, 0];

    fn find(m: &[u8]) -> Result<Option<Opt>, WireError> {
        find_opt(m, &Header::parse(m).unwrap(), parse_question(m).unwrap().end)
    }

    #[test]
    fn reads_opt_fields() {
        let o = find(&query(&[OPT_DO])).unwrap().unwrap();
        assert_eq!((o.udp_size, o.version, o.dnssec_ok, o.max_udp_reply()), (1232, 0, true, 1232));
        let o = find(&query(&[OPT_V1])).unwrap().unwrap();
        assert_eq!((o.version, o.max_udp_reply()), (1, 512));
        assert_eq!(find(&query(&[])), Ok(None));
    }

    #[test]
    fn rejects_two_opts_and_named_opt() {
        assert_eq!(find(&query(&[OPT_DO, OPT_DO])), Err(WireError::DuplicateOpt));
        let named: &[u8] = &[1, b'x', 0, 0, 41, 2, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(find(&query(&[named])), Err(WireError::BadOpt));
    }
}
