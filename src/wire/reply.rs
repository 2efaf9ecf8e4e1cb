//! Replies podns writes itself: error answers, truncated answers, and the in-place patches
//! that give a client its own ID and question case back.

use bytes::BufMut;

use super::{HEADER_LEN, Header, Opt, ParsedQuery, Question, rtype};

/// The UDP payload size podns advertises in OPT records it writes (the DNS Flag Day 2020 value).
pub const OUR_UDP_SIZE: u16 = 1232;

/// Appends an OPT record (version 0) with the given extended-rcode bits and DO flag.
pub fn write_opt(out: &mut impl BufMut, udp_size: u16, ext_rcode: u8, dnssec_ok: bool) {
    out.put_u8(0); // root owner
    out.put_u16(rtype::OPT);
    out.put_u16(udp_size);
    out.put_u8(ext_rcode);
    out.put_u8(0); // version
    out.put_u16(if dnssec_ok { 0x8000 } else { 0 });
    out.put_u16(0); // no options
}

/// Writes a reply with no records to the query `msg`: `rcode` (extended codes such as BADVERS
/// go partly into the OPT record), the question echoed when it could be read, and an OPT
/// record exactly when the query had one (`query_opt`).
pub fn error_reply(
    msg: &[u8],
    header: &Header,
    question: Option<&Question>,
    rcode: u16,
    query_opt: Option<&Opt>,
    out: &mut impl BufMut,
) {
    Header::reply_to(header, rcode, question.is_some() as u16, 0, 0, query_opt.is_some() as u16).put(out);
    if let Some(q) = question {
        out.put_slice(&msg[HEADER_LEN..q.end]);
    }
    if let Some(o) = query_opt {
        write_opt(out, OUR_UDP_SIZE, (rcode >> 4) as u8, o.dnssec_ok);
    }
}

/// Primary server named in synthesized SOA records: a name that can never exist (RFC 6761).
const SYNTH_MNAME: &[u8] = b"\x05podns\x07invalid\x00";
/// Responsible mailbox named in synthesized SOA records.
const SYNTH_RNAME: &[u8] = b"\x0ahostmaster\x05podns\x07invalid\x00";
/// The root zone's SOA MNAME and RNAME.
const ROOT_MNAME: &[u8] = b"\x01a\x0croot-servers\x03net\x00";
const ROOT_RNAME: &[u8] = b"\x05nstld\x0cverisign-grs\x03com\x00";

/// Whose SOA a synthesized denial carries (RFC 2308 §3: the SOA of the zone that denies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Soa<'a> {
    /// The query name's own, with names under `podns.invalid` (RFC 6761) that can never be
    /// mistaken for data: podns speaks for no zone.
    Synthesized,
    /// The cluster domain's, shaped like CoreDNS's: `ns.dns.<zone>`, `hostmaster.<zone>`.
    Cluster(&'a [u8]),
    /// The root zone's (`a.root-servers.net.`, `nstld.verisign-grs.com.`), for what the root
    /// zone would answer about a single-label name.
    Root,
}

/// Writes a negative answer podns synthesizes (NODATA as NOERROR, or NXDOMAIN) to the query
/// `msg`: the question echoed in the client's case, no answers, and in the authority section
/// `soa` with TTL and MINIMUM `ttl`, so resolvers cache the denial for that long (RFC 2308 §5);
/// an OPT record exactly when the query had one.
#[allow(clippy::too_many_arguments)]
pub fn negative_reply(msg: &[u8], q: &ParsedQuery, rcode: u16, ttl: u32, soa: Soa<'_>, out: &mut impl BufMut) {
    let (header, question, query_opt) = (&q.header, &q.question, q.opt.as_ref());
    Header::reply_to(header, rcode, 1, 0, 1, query_opt.is_some() as u16).put(out);
    out.put_slice(&msg[HEADER_LEN..question.end]);
    let (mname, rname): (&[&[u8]], &[&[u8]]) = match soa {
        Soa::Cluster(z) => {
            out.put_slice(z);
            (&[b"\x02ns\x03dns", z], &[b"\x0ahostmaster", z])
        }
        Soa::Synthesized => {
            out.put_u16(0xc000 | HEADER_LEN as u16); // owner: the question name
            (&[SYNTH_MNAME], &[SYNTH_RNAME])
        }
        Soa::Root => {
            out.put_u8(0);
            (&[ROOT_MNAME], &[ROOT_RNAME])
        }
    };
    out.put_u16(rtype::SOA);
    out.put_u16(super::CLASS_IN);
    out.put_u32(ttl);
    let names: usize = mname.iter().chain(rname).map(|p| p.len()).sum();
    out.put_u16((names + 20) as u16);
    for part in mname.iter().chain(rname) {
        out.put_slice(part);
    }
    for field in [1u32, 7200, 1800, 86400, ttl] {
        out.put_u32(field); // serial, refresh, retry, expire, minimum
    }
    if let Some(o) = query_opt {
        write_opt(out, OUR_UDP_SIZE, 0, o.dnssec_ok);
    }
}

/// Writes the truncated form of `reply` for a client whose UDP size `limit` it exceeds: TC set,
/// the answer and authority records that fit whole (in order, so the compression pointers they
/// hold still point into the kept prefix), no additional records but the OPT. Clients that retry
/// over TCP do so (RFC 1035 §4.2.1, RFC 6891 §7); those that cannot, such as musl, still get the
/// records that fit, as CoreDNS gives them.
pub fn truncated_reply(
    reply: &[u8],
    header: &Header,
    question: &Question,
    opt: Option<&Opt>,
    limit: usize,
    out: &mut impl BufMut,
) {
    let opt_len = opt.map_or(0, |o| o.end - o.start);
    let mut kept_end = question.end;
    let (mut an, mut ns) = (0u16, 0u16);
    for r in super::Records::new(reply, header, question.end) {
        let Ok(r) = r else { break };
        if r.section == super::Section::Additional || r.end() + opt_len > limit {
            break;
        }
        match r.section {
            super::Section::Answer => an += 1,
            _ => ns += 1,
        }
        kept_end = r.end();
    }
    let mut h = Header { ancount: an, nscount: ns, arcount: opt.is_some() as u16, ..*header };
    h.set_tc();
    h.put(out);
    out.put_slice(&reply[HEADER_LEN..kept_end]);
    if let Some(o) = opt {
        out.put_slice(&reply[o.start..o.end]);
    }
}

/// Removes the OPT record `opt` from `reply` in place (for a client that sent none: RFC 6891 §7
/// forbids an OPT in the response then, and some servers add one anyway on reused TCP
/// connections). Additional records after the OPT go too: moving them would break compression
/// pointers into them, and additional data is optional.
pub fn strip_opt(reply: &mut bytes::BytesMut, header: &mut Header, opt: &Opt) {
    if opt.end > reply.len() || opt.start < HEADER_LEN || header.arcount == 0 {
        return;
    }
    let mut before = 0u16;
    let mut q_end = None;
    if let Ok(q) = super::parse_question(reply) {
        q_end = Some(q.end);
        for r in super::Records::new(reply, header, q.end).flatten() {
            if r.start >= opt.start {
                break;
            }
            before += (r.section == super::Section::Additional) as u16;
        }
    }
    if q_end.is_none() {
        return;
    }
    reply.truncate(opt.start);
    header.arcount = before;
    reply[10..12].copy_from_slice(&header.arcount.to_be_bytes());
}

/// Gives the client its ID and the exact letter case of its question name back. The reply's
/// question was checked to be the same name case-insensitively, so lengths agree.
pub fn restore_question(reply: &mut [u8], reply_question: &Question, client_id: u16, client_name: &[u8]) -> bool {
    let name = &mut reply[HEADER_LEN..reply_question.name_end];
    if name.len() != client_name.len() {
        return false;
    }
    name.copy_from_slice(client_name);
    super::header::set_id(reply, client_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{find_opt, parse_question, rcode};

    fn query_with_opt() -> Vec<u8> {
        let mut m = vec![0xab, 0xcd, 0x01, 0x10, 0, 1, 0, 0, 0, 0, 0, 1];
        m.extend_from_slice(b"\x03WwW\x00\x00\x1c\x00\x01");
        m.extend_from_slice(&[0, 0, 41, 16, 0, 0, 1, 0x80, 0, 0, 0]);
        m
    }

    #[test]
    fn badvers_splits_the_rcode() {
        let q = query_with_opt();
        let h = Header::parse(&q).unwrap();
        let qq = parse_question(&q).unwrap();
        let opt = find_opt(&q, &h, qq.end).unwrap().unwrap();
        let mut out = Vec::new();
        error_reply(&q, &h, Some(&qq), rcode::BADVERS, Some(&opt), &mut out);
        let rh = Header::parse(&out).unwrap();
        assert_eq!(rh.id, 0xabcd);
        assert!(rh.qr() && rh.rd() && rh.cd() && rh.ra());
        assert_eq!((rh.rcode(), rh.qdcount, rh.arcount), (0, 1, 1));
        let ropt = find_opt(&out, &rh, parse_question(&out).unwrap().end).unwrap().unwrap();
        assert_eq!((ropt.ext_rcode, ropt.version, ropt.dnssec_ok), (1, 0, true));
        assert_eq!(&out[12..qq.end], &q[12..qq.end], "question echoed with its case");
    }

    #[test]
    fn formerr_without_question_or_opt() {
        let q = query_with_opt();
        let h = Header::parse(&q).unwrap();
        let mut out = Vec::new();
        error_reply(&q, &h, None, rcode::FORMERR, None, &mut out);
        assert_eq!(out.len(), 12);
        let rh = Header::parse(&out).unwrap();
        assert_eq!((rh.rcode(), rh.qdcount, rh.arcount), (1, 0, 0));
    }

    /// A reply to `WwW` AAAA with `n` A-sized answers (16 bytes each, compressed owner) and an OPT.
    fn reply_with_answers(n: u8) -> Vec<u8> {
        let mut r = query_with_opt();
        r[2] |= 0x80;
        let opt = r.split_off(r.len() - 11);
        r[7] = n;
        for i in 0..n {
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, i]);
        }
        r.extend_from_slice(&opt);
        r
    }

    #[test]
    fn truncation_keeps_whole_records_that_fit() {
        let r = reply_with_answers(40);
        let h = Header::parse(&r).unwrap();
        let qq = parse_question(&r).unwrap();
        let opt = find_opt(&r, &h, qq.end).unwrap().unwrap();
        for limit in [0, qq.end + 11, qq.end + 11 + 15, qq.end + 11 + 16, 512] {
            let mut out = Vec::new();
            truncated_reply(&r, &h, &qq, Some(&opt), limit, &mut out);
            let th = Header::parse(&out).unwrap();
            let fit = (limit.saturating_sub(qq.end + 11) / 16) as u16;
            assert!(th.tc());
            assert_eq!((th.ancount, th.arcount), (fit, 1), "limit {limit}");
            assert_eq!(out.len(), qq.end + 16 * fit as usize + 11);
            assert!(out.len() <= limit.max(qq.end + 11));
            let o = find_opt(&out, &th, qq.end).unwrap().unwrap();
            assert_eq!(o.udp_size, 4096);
        }
        let mut out = Vec::new();
        truncated_reply(&r, &h, &qq, None, 512, &mut out);
        assert_eq!(Header::parse(&out).unwrap().ancount, ((512 - qq.end) / 16) as u16);
    }

    #[test]
    fn negative_reply_carries_a_cacheable_soa() {
        let q = query_with_opt();
        let h = Header::parse(&q).unwrap();
        let qq = parse_question(&q).unwrap();
        let opt = find_opt(&q, &h, qq.end).unwrap().unwrap();
        let mut out = Vec::new();
        let pq = ParsedQuery { header: h, question: qq, opt: Some(opt) };
        negative_reply(&q, &pq, rcode::NOERROR, 30, Soa::Synthesized, &mut out);
        let rh = Header::parse(&out).unwrap();
        assert_eq!((rh.rcode(), rh.ancount, rh.nscount, rh.arcount, rh.id), (0, 0, 1, 1, 0xabcd));
        let rs: Vec<_> = crate::wire::Records::new(&out, &rh, qq.end).collect::<Result<_, _>>().unwrap();
        assert_eq!((rs[0].rtype, rs[0].ttl), (rtype::SOA, 30));
        assert_eq!(crate::wire::read_u32(&out, rs[0].end() - 4), Ok(30), "MINIMUM");
        assert_eq!(rs[1].end(), out.len());
        assert_eq!(&out[12..qq.end], &q[12..qq.end]);
        let mut nx = Vec::new();
        let plain = ParsedQuery { opt: None, ..pq };
        negative_reply(&q, &plain, rcode::NXDOMAIN, 5, Soa::Cluster(b"\x07cluster\x05local\x00"), &mut nx);
        let nh = Header::parse(&nx).unwrap();
        assert_eq!((nh.rcode(), nh.arcount), (3, 0));
        let soa = crate::wire::Records::new(&nx, &nh, qq.end).next().unwrap().unwrap();
        assert_eq!(&nx[soa.start..soa.start + 15], b"\x07cluster\x05local\x00");
        assert_eq!(soa.end(), nx.len());
        assert_eq!(&nx[soa.rdata_at..soa.rdata_at + 22], b"\x02ns\x03dns\x07cluster\x05local\x00");
    }

    #[test]
    fn strip_opt_removes_only_the_opt() {
        let q = query_with_opt();
        let mut h = Header::parse(&q).unwrap();
        let qq = parse_question(&q).unwrap();
        let opt = find_opt(&q, &h, qq.end).unwrap().unwrap();
        let mut b = bytes::BytesMut::from(&q[..]);
        strip_opt(&mut b, &mut h, &opt);
        assert_eq!(b.len(), qq.end);
        assert_eq!(Header::parse(&b).unwrap().arcount, 0);
        assert_eq!(find_opt(&b, &h, qq.end), Ok(None));
    }

    #[test]
    fn strip_opt_drops_what_follows_it_and_keeps_what_precedes() {
        // Additional: A (owner www), OPT, AAAA whose owner points at the A record's owner.
        let mut m = vec![0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 3];
        m.extend_from_slice(b"\x03www\x00\x00\x01\x00\x01");
        let a_at = m.len();
        m.extend_from_slice(b"\x02ns\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x0a\x00\x00\x01");
        m.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(&[0xc0, a_at as u8, 0, 28, 0, 1, 0, 0, 0, 60, 0, 16]);
        m.extend_from_slice(&[0u8; 16]);
        let mut h = Header::parse(&m).unwrap();
        let q = parse_question(&m).unwrap();
        let opt = find_opt(&m, &h, q.end).unwrap().unwrap();
        let mut b = bytes::BytesMut::from(&m[..]);
        strip_opt(&mut b, &mut h, &opt);
        assert_eq!(h.arcount, 1);
        assert_eq!(Header::parse(&b).unwrap().arcount, 1);
        let rs: Vec<_> = crate::wire::Records::new(&b, &h, q.end).collect::<Result<_, _>>().unwrap();
        assert_eq!(rs.len(), 1);
        assert_eq!(rs[0].rtype, rtype::A);
        assert_eq!(rs[0].end(), b.len());
    }

    #[test]
    fn restore_case_and_id() {
        let mut r = query_with_opt();
        let qq = parse_question(&r).unwrap();
        assert!(restore_question(&mut r, &qq, 7, b"\x03www\x00"));
        assert_eq!(&r[..2], &[0, 7]);
        assert_eq!(&r[12..17], b"\x03www\x00");
        assert!(!restore_question(&mut r, &qq, 7, b"\x02ww\x00"));
    }
}
