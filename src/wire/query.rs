//! A query as podns handles it: where its question and OPT record lie in the message, read
//! once (staged decoding, as hickory-proto's `MessageHead` then `Query`), and the queries podns
//! builds for itself, written directly rather than parsed back.

use bytes::BytesMut;

use super::{HEADER_LEN, Header, OUR_UDP_SIZE, Opt, Question, find_opt, parse_question, write_opt, write_query};

/// A query that passed admission: its header, its one question and its OPT record. Offsets
/// into the message it was read from, so it is `Copy` and allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedQuery {
    pub header: Header,
    pub question: Question,
    pub opt: Option<Opt>,
}

/// The DO bit in [`ParsedQuery::key_flags`].
pub const FLAG_DO: u8 = 1;
/// The CD bit in [`ParsedQuery::key_flags`].
pub const FLAG_CD: u8 = 2;

impl ParsedQuery {
    /// The largest UDP reply this client accepts: 512 without EDNS, else its advertised size.
    pub fn max_udp_reply(&self) -> usize {
        self.opt.map_or(super::MIN_UDP_SIZE, |o| o.max_udp_reply())
    }

    /// The DO and CD bits, the flags that change what an answer contains and so part of every
    /// cache and coalescing key ([`FLAG_DO`], [`FLAG_CD`]).
    pub fn key_flags(&self) -> u8 {
        (self.opt.is_some_and(|o| o.dnssec_ok) as u8 * FLAG_DO) | (self.header.cd() as u8 * FLAG_CD)
    }

    /// The question name in `msg` (the message this was parsed from), in the sender's case.
    pub fn name<'a>(&self, msg: &'a [u8]) -> &'a [u8] {
        self.question.name(msg)
    }

    /// The query type.
    pub fn qtype(&self) -> u16 {
        self.question.qtype
    }
}

/// A name copied out of a message (at most 255 octets, on the stack), so the message can be
/// lent mutably to an exchange meanwhile.
#[derive(Clone, Copy)]
pub struct NameBuf {
    buf: [u8; 255],
    len: u8,
}

impl NameBuf {
    pub fn new(name: &[u8]) -> NameBuf {
        let mut buf = [0u8; 255];
        let len = name.len().min(255);
        buf[..len].copy_from_slice(&name[..len]);
        NameBuf { buf, len: len as u8 }
    }

    pub fn get(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

/// A query podns sends for itself (search collapse candidates and probes, the AAAA handling's
/// A lookups, prefetch): ID `id`, RD, CD and DO as `flags` says ([`ParsedQuery::key_flags`]),
/// and EDNS so that answers up to our UDP size come back without a TCP retry. `name` is an
/// uncompressed wire name of at most 255 octets, in any case.
pub fn internal_query(id: u16, name: &[u8], qtype: u16, flags: u8) -> (BytesMut, ParsedQuery) {
    let mut msg = BytesMut::with_capacity(name.len() + 32);
    write_query(id, name, qtype, &mut msg);
    if flags & FLAG_CD != 0 {
        msg[3] |= 0x10;
    }
    write_opt(&mut msg, OUR_UDP_SIZE, 0, flags & FLAG_DO != 0);
    msg[11] = 1; // ARCOUNT
    // What was just written reads back; the expects document that, they cannot fire for a
    // name of at most 255 octets.
    let header = Header::parse(&msg).expect("header just written");
    let question = parse_question(&msg).expect("question just written");
    let opt = find_opt(&msg, &header, question.end).expect("OPT just written");
    debug_assert_eq!(question.name_end - HEADER_LEN, name.len());
    (msg, ParsedQuery { header, question, opt })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_queries_carry_their_flags() {
        let (msg, q) = internal_query(7, b"\x04PyPi\x03org\x00", 28, FLAG_DO | FLAG_CD);
        assert_eq!(q.header.id, 7);
        assert!(q.header.cd() && q.header.rd());
        assert_eq!(q.key_flags(), FLAG_DO | FLAG_CD);
        assert_eq!(q.name(&msg), b"\x04PyPi\x03org\x00");
        assert_eq!(q.qtype(), 28);
        assert_eq!(q.max_udp_reply(), OUR_UDP_SIZE as usize);
        let (_, plain) = internal_query(1, b"\x00", 1, 0);
        assert_eq!(plain.key_flags(), 0);
    }
}
