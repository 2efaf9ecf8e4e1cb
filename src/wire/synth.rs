//! Answers podns composes from other answers: the search collapse answers `P.S` with a CNAME to
//! the name that exists, followed by that name's records. Records copied from another message
//! have their names written out in full, since compression pointers are offsets into the
//! message they came from.

use bytes::BufMut;

use super::name::for_each_label;
use super::{
    CLASS_IN, HEADER_LEN, Header, OUR_UDP_SIZE, ParsedQuery, RecordRef, Records, Section, WireError, parse_question,
    rtype, skip_name, write_opt,
};

/// Writes the (possibly compressed) name at `at` in `msg` uncompressed; returns the offset
/// just past the name in `msg`.
pub fn write_name_expanded(msg: &[u8], at: usize, out: &mut impl BufMut) -> Result<usize, WireError> {
    let end = skip_name(msg, at)?;
    for_each_label(msg, at, |l| {
        out.put_u8(l.len() as u8);
        out.put_slice(l);
    })?;
    out.put_u8(0);
    Ok(end)
}

/// Writes record `r` of `msg` with every name in its owner and RDATA expanded. RDATA of types
/// defined to hold compressible names (RFC 1035 §3.3; MX, SOA, SRV) is rewritten; any other
/// type is copied as is (RFC 3597 forbids compression in newer types).
pub fn copy_record_expanded(msg: &[u8], r: &RecordRef, out: &mut Vec<u8>) -> Result<(), WireError> {
    write_name_expanded(msg, r.start, out)?;
    out.put_u16(r.rtype);
    out.put_u16(r.class);
    out.put_u32(r.ttl);
    let len_at = out.len();
    out.put_u16(0);
    let rdata = r.rdata_at;
    let rdend = r.end();
    let names_then_raw = |lead: usize, names: usize, out: &mut Vec<u8>| -> Result<(), WireError> {
        if rdata + lead > rdend {
            return Err(WireError::Short);
        }
        out.put_slice(&msg[rdata..rdata + lead]);
        let mut at = rdata + lead;
        for _ in 0..names {
            at = write_name_expanded(msg, at, out)?;
        }
        if at > rdend {
            return Err(WireError::Short);
        }
        out.put_slice(&msg[at..rdend]);
        Ok(())
    };
    match r.rtype {
        rtype::CNAME | rtype::NS | rtype::PTR | 39 /* DNAME */ => names_then_raw(0, 1, out)?,
        rtype::MX => names_then_raw(2, 1, out)?,
        rtype::SRV => names_then_raw(6, 1, out)?,
        rtype::SOA => names_then_raw(0, 2, out)?,
        _ => out.put_slice(&msg[rdata..rdend]),
    }
    let rdlen = out.len() - len_at - 2;
    if rdlen > u16::MAX as usize {
        return Err(WireError::Short);
    }
    out[len_at..len_at + 2].copy_from_slice(&(rdlen as u16).to_be_bytes());
    Ok(())
}

/// Writes the answer to the client's query `msg` (question `question`, header `header`) as a
/// CNAME from the question name to `target` (uncompressed wire) with `cname_ttl`, followed by
/// the answer and authority records of `target_reply` (the reply for `target`), whose rcode
/// the answer takes; an OPT record exactly when the query had one.
#[allow(clippy::too_many_arguments)]
pub fn cname_reply(
    msg: &[u8],
    q: &ParsedQuery,
    target: &[u8],
    target_reply: &[u8],
    cname_ttl: u32,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let (header, question, query_opt) = (&q.header, &q.question, q.opt.as_ref());
    let th = Header::parse(target_reply)?;
    let tq = parse_question(target_reply)?;
    Header::reply_to(header, th.rcode(), 1, th.ancount.saturating_add(1), th.nscount, query_opt.is_some() as u16)
        .put(out);
    out.put_slice(&msg[HEADER_LEN..question.end]);
    out.put_u16(0xc000 | HEADER_LEN as u16);
    out.put_u16(rtype::CNAME);
    out.put_u16(CLASS_IN);
    out.put_u32(cname_ttl);
    out.put_u16(target.len() as u16);
    out.put_slice(target);
    for r in Records::new(target_reply, &th, tq.end) {
        let r = r?;
        if r.section != Section::Additional {
            copy_record_expanded(target_reply, &r, out)?;
        }
    }
    if let Some(o) = query_opt {
        write_opt(out, OUR_UDP_SIZE, 0, o.dnssec_ok);
    }
    // Expanded names can make the composed answer longer than any DNS message may be.
    if out.len() > super::MAX_MESSAGE {
        return Err(WireError::TooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Name, find_opt, min_ttl};

    /// files.pythonhosted.org. A reply: a CNAME (compressed target) and an A record.
    fn target_reply() -> Vec<u8> {
        let mut m = vec![0, 9, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
        m.extend_from_slice(b"\x05files\x0cpythonhosted\x03org\x00\x00\x01\x00\x01");
        // files.pythonhosted.org CNAME dualstack.python.map.fastly.net (partly compressed: ".org" no)
        m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 120]);
        let target = b"\x09dualstack\x06python\x03map\x06fastly\x03net\x00";
        m.extend_from_slice(&(target.len() as u16).to_be_bytes());
        let cname_target_at = m.len();
        m.extend_from_slice(target);
        m.extend_from_slice(&[0xc0, cname_target_at as u8, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 151, 101, 0, 223]);
        m
    }

    #[test]
    fn cname_then_expanded_records() {
        let target = Name::from_dotted("files.pythonhosted.org").unwrap();
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
        q.extend_from_slice(
            b"\x05Files\x0cPythonHosted\x03org\x07default\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01",
        );
        q.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
        let h = Header::parse(&q).unwrap();
        let qq = parse_question(&q).unwrap();
        let opt = find_opt(&q, &h, qq.end).unwrap();
        let mut out = Vec::new();
        let pq = ParsedQuery { header: h, question: qq, opt };
        cname_reply(&q, &pq, target.wire(), &target_reply(), 60, &mut out).unwrap();
        let rh = Header::parse(&out).unwrap();
        assert_eq!((rh.id, rh.rcode(), rh.ancount, rh.nscount, rh.arcount), (0x1234, 0, 3, 0, 1));
        assert_eq!(&out[12..qq.end], &q[12..qq.end], "question in the client's case");
        let rq = parse_question(&out).unwrap();
        let rs: Vec<_> = Records::new(&out, &rh, rq.end).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            rs.iter().map(|r| r.rtype).collect::<Vec<_>>(),
            vec![rtype::CNAME, rtype::CNAME, rtype::A, rtype::OPT]
        );
        assert_eq!(&out[rs[0].rdata_at..rs[0].end()], target.wire());
        // The second CNAME's owner and target were pointers into the other message; now full.
        let mut owner = Vec::new();
        write_name_expanded(&out, rs[1].start, &mut owner).unwrap();
        assert_eq!(owner, target.wire());
        let mut a_owner = Vec::new();
        write_name_expanded(&out, rs[2].start, &mut a_owner).unwrap();
        assert_eq!(a_owner, b"\x09dualstack\x06python\x03map\x06fastly\x03net\x00");
        assert_eq!(min_ttl(&out, &rh, rq.end), Ok(Some(60)));
    }

    #[test]
    fn soa_and_mx_names_are_expanded() {
        let mut m = vec![0, 1, 0x81, 0x83, 0, 1, 0, 1, 0, 1, 0, 0];
        m.extend_from_slice(b"\x01x\x03org\x00\x00\x0f\x00\x01");
        m.extend_from_slice(&[0xc0, 12, 0, 15, 0, 1, 0, 0, 0, 5, 0, 4, 0, 10, 0xc0, 14]);
        m.extend_from_slice(&[0xc0, 14, 0, 6, 0, 1, 0, 0, 0, 7, 0, 24, 0xc0, 14, 0xc0, 14]);
        m.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5]);
        let h = Header::parse(&m).unwrap();
        let q = parse_question(&m).unwrap();
        let rs: Vec<_> = Records::new(&m, &h, q.end).collect::<Result<_, _>>().unwrap();
        let mut mx = Vec::new();
        copy_record_expanded(&m, &rs[0], &mut mx).unwrap();
        assert_eq!(mx.len(), 7 + 10 + 2 + 5);
        assert_eq!(&mx[mx.len() - 7..], &[0, 10, 3, b'o', b'r', b'g', 0]);
        assert_eq!(u16::from_be_bytes([mx[15], mx[16]]), 7, "RDLENGTH recomputed");
        let mut soa = Vec::new();
        copy_record_expanded(&m, &rs[1], &mut soa).unwrap();
        // owner org. (5) + fixed 10 + two names org. (5 each) + 20.
        assert_eq!(soa.len(), 5 + 10 + 5 + 5 + 20);
        assert_eq!(&soa[soa.len() - 4..], &[0, 0, 0, 5]);
        // A truncated SOA is an error, never a panic.
        let cut = &m[..m.len() - 3];
        assert!(Records::new(cut, &h, q.end).any(|r| r.is_err()));
    }
}
