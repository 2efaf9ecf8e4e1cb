//! An arbitrary reply from an upstream: everything podns does with one must not panic, and what
//! it writes from one must parse back with the same meaning.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use podns::wire::{
    HEADER_LEN, Header, MAX_MESSAGE, ParsedQuery, RecordRef, Records, Section, WireError, cname_reply, copy_record_expanded,
    effective_ttl, find_opt, for_each_label, min_ttl, parse_question, read_u16, read_u32, restore_question,
    rewrite_ttls, rtype, sanitize_reply, skip_name, strip_opt, truncated_reply, write_name_expanded,
};

/// A client's query as the search collapse sees it (mixed case, EDNS with DO set).
const CLIENT_QUERY: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\
\x05Files\x0cPythonHosted\x03org\x07default\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01\
\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00";
/// The same query without EDNS.
const CLIENT_QUERY_NO_OPT: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\
\x05Files\x0cPythonHosted\x03org\x07default\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01";
/// Target used when the reply's own question cannot be read.
const FALLBACK_TARGET: &[u8] = b"\x05files\x0cpythonhosted\x03org\x00";
const CNAME_TTL: u32 = 77;

fn expand(msg: &[u8], at: usize) -> Result<Vec<u8>, WireError> {
    let mut v = Vec::new();
    write_name_expanded(msg, at, &mut v)?;
    Ok(v)
}

/// Where the records start when every one of `qdcount` questions is skipped (names may be
/// compressed there in what a server sends back, unlike in podns's own parse).
fn skip_questions(msg: &[u8], h: &Header) -> Option<usize> {
    let mut at = HEADER_LEN;
    for _ in 0..h.qdcount {
        at = skip_name(msg, at).ok()? + 4;
        if at > msg.len() {
            return None;
        }
    }
    Some(at)
}

/// Checks the record list of `msg` against what `Records` reports, field by field.
fn check_record(msg: &[u8], r: &RecordRef) {
    assert!(r.start < r.ttl_at && r.ttl_at + 6 == r.rdata_at && r.end() <= msg.len());
    assert_eq!(skip_name(msg, r.start), Ok(r.ttl_at - 4));
    assert_eq!(read_u16(msg, r.ttl_at - 4), Ok(r.rtype));
    assert_eq!(read_u16(msg, r.ttl_at - 2), Ok(r.class));
    assert_eq!(read_u32(msg, r.ttl_at), Ok(r.ttl));
    assert_eq!(read_u16(msg, r.ttl_at + 4), Ok(r.rdlen));
}

/// Offsets of the owner name and of the names in RDATA that `copy_record_expanded` rewrites (the
/// names that lie whole inside the RDATA).
fn name_offsets(msg: &[u8], r: &RecordRef) -> Vec<usize> {
    let mut names = vec![r.start];
    let (lead, count) = match r.rtype {
        rtype::CNAME | rtype::NS | rtype::PTR | 39 => (0, 1),
        rtype::MX => (2, 1),
        rtype::SRV => (6, 1),
        rtype::SOA => (0, 2),
        _ => (0, 0),
    };
    let mut at = r.rdata_at + lead;
    for _ in 0..count {
        match skip_name(msg, at) {
            Ok(end) if end <= r.end() => {
                names.push(at);
                at = end;
            }
            _ => break,
        }
    }
    names
}

/// Those names, expanded.
fn names_of(msg: &[u8], r: &RecordRef) -> Vec<Result<Vec<u8>, WireError>> {
    name_offsets(msg, r).into_iter().map(|at| expand(msg, at)).collect()
}

/// Whether reading the name at `at` (following pointers as `for_each_label` does) reads any
/// octet in `lo..hi`.
fn reads_from(msg: &[u8], mut at: usize, lo: usize, hi: usize) -> bool {
    let hit = |a: usize, b: usize| a < hi && lo < b;
    for _ in 0..200 {
        let Some(&b) = msg.get(at) else { return false };
        match b & 0xc0 {
            0x00 if b == 0 => return hit(at, at + 1),
            0x00 => {
                if hit(at, at + 1 + b as usize) {
                    return true;
                }
                at += 1 + b as usize;
            }
            0xc0 => {
                let Some(&lo8) = msg.get(at + 1) else { return false };
                if hit(at, at + 2) {
                    return true;
                }
                let target = (((b & 0x3f) as usize) << 8) | lo8 as usize;
                if target >= at {
                    return false;
                }
                at = target;
            }
            _ => return false,
        }
    }
    false
}

fn check_cname_reply(reply: &[u8], records: &[RecordRef], client: &[u8]) {
    let ch = Header::parse(client).unwrap();
    let cq = parse_question(client).unwrap();
    let copt = find_opt(client, &ch, cq.end).unwrap();
    let target = match parse_question(reply) {
        Ok(q) => q.name(reply).to_ascii_lowercase(),
        Err(_) => FALLBACK_TARGET.to_vec(),
    };
    let mut out = Vec::new();
    let pq = ParsedQuery { header: ch, question: cq, opt: copt };
    let res = cname_reply(client, &pq, &target, reply, CNAME_TTL, &mut out);
    let Ok(()) = res else {
        return;
    };
    let th = Header::parse(reply).expect("cname_reply succeeded on an unreadable header");
    assert!(out.len() <= MAX_MESSAGE, "cname_reply wrote a {}-byte message (over 65535)", out.len());
    let rh = Header::parse(&out).expect("cname_reply output has a header");
    assert!(rh.qr());
    assert_eq!(rh.id, ch.id);
    assert_eq!(rh.rcode(), th.rcode());
    assert_eq!((rh.qdcount, rh.ancount, rh.nscount), (1, th.ancount.saturating_add(1), th.nscount));
    let rq = parse_question(&out).expect("cname_reply output question parses");
    assert_eq!(&out[HEADER_LEN..rq.end], &client[HEADER_LEN..cq.end], "question echoed as the client sent it");
    let got: Vec<RecordRef> = Records::new(&out, &rh, rq.end)
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("cname_reply output does not parse back: {e:?}"));
    let copied: Vec<&RecordRef> = records.iter().filter(|r| r.section != Section::Additional).collect();
    assert_eq!(got.len(), 1 + copied.len() + copt.is_some() as usize);
    assert_eq!(got.last().unwrap().end(), out.len(), "no bytes after the last record");
    // The CNAME to the target comes first.
    assert_eq!((got[0].rtype, got[0].ttl), (rtype::CNAME, CNAME_TTL));
    assert_eq!(&out[got[0].rdata_at..got[0].end()], &target[..]);
    // Then the target reply's answer and authority records, same type, class and TTL, with
    // the same names once expanded.
    for (o, i) in got[1..].iter().zip(&copied) {
        assert_eq!((o.rtype, o.class, o.ttl), (i.rtype, i.class, i.ttl));
        assert_eq!(names_of(&out, o), names_of(reply, i), "names changed meaning in copy");
    }
    let want_min = copied.iter().filter(|r| r.rtype != rtype::OPT).map(|r| r.ttl).fold(CNAME_TTL, u32::min);
    assert_eq!(min_ttl(&out, &rh, rq.end), Ok(Some(want_min)));
    if copt.is_some() {
        assert_eq!(got.last().unwrap().rtype, rtype::OPT);
    }
}

fuzz_target!(|data: &[u8]| {
    // Re-validation before relaying: never panics; what it accepts walks cleanly to its last
    // octet, every name expands, and only TTL fields with the top bit set change (to 0).
    let mut sane = data.to_vec();
    if sanitize_reply(&mut sane).is_ok() {
        let h = Header::parse(&sane).expect("accepted reply has a header");
        let at = skip_questions(&sane, &h).expect("accepted questions");
        let rs: Vec<RecordRef> = Records::new(&sane, &h, at).collect::<Result<_, _>>().expect("accepted records walk");
        assert_eq!(rs.last().map_or(at, |r| r.end()), sane.len(), "accepted reply has trailing bytes");
        let mut expect = data.to_vec();
        for r in &rs {
            expand(&sane, r.start).expect("accepted owner name expands");
            if r.rtype != rtype::OPT {
                assert_eq!(r.ttl, effective_ttl(read_u32(data, r.ttl_at).unwrap()));
                expect[r.ttl_at..r.ttl_at + 4].copy_from_slice(&r.ttl.to_be_bytes());
            }
        }
        assert_eq!(sane, expect, "sanitize_reply changed more than TTLs");
    }
    let Ok(h) = Header::parse(data) else {
        return;
    };
    // Records after every question, skipped as a server may have written them.
    if let Some(at) = skip_questions(data, &h) {
        for r in Records::new(data, &h, at).flatten() {
            let _ = expand(data, r.start);
        }
    }
    let q = parse_question(data);
    let after_question = q.map_or(HEADER_LEN, |q| q.end);
    let opt = find_opt(data, &h, after_question);

    // Walk every record; compare with what the whole-message helpers say.
    let walked: Result<Vec<RecordRef>, WireError> = Records::new(data, &h, after_question).collect();
    let mut per_record = Vec::new();
    if let Ok(records) = &walked {
        let total = h.ancount as usize + h.nscount as usize + h.arcount as usize;
        assert_eq!(records.len(), total);
        for (n, r) in records.iter().enumerate() {
            check_record(data, r);
            if n > 0 {
                assert_eq!(r.start, records[n - 1].end());
            }
            let mut labels = 0usize;
            if for_each_label(data, r.start, |l| {
                assert!(!l.is_empty() && l.len() <= 63);
                labels += l.len() + 1;
            })
            .is_ok()
            {
                let e = expand(data, r.start).expect("for_each_label accepted the name");
                assert_eq!(e.len(), labels + 1);
            }
            per_record.clear();
            if copy_record_expanded(data, r, &mut per_record).is_ok() {
                // The copy is one record that reads back with the same fields and names.
                let mut msg = vec![0, 0, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0];
                msg.extend_from_slice(&per_record);
                let hh = Header::parse(&msg).unwrap();
                let c = Records::new(&msg, &hh, HEADER_LEN)
                    .next()
                    .unwrap()
                    .unwrap_or_else(|e| panic!("expanded record does not parse: {e:?}"));
                assert_eq!(c.end(), msg.len());
                assert_eq!((c.rtype, c.class, c.ttl), (r.rtype, r.class, r.ttl));
                assert_eq!(names_of(&msg, &c), names_of(data, r));
            }
        }
        let want = records.iter().filter(|r| r.rtype != rtype::OPT).map(|r| r.ttl).min();
        assert_eq!(min_ttl(data, &h, after_question), Ok(want));
        let opts: Vec<_> =
            records.iter().filter(|r| r.rtype == rtype::OPT && r.section == Section::Additional).collect();
        match &opt {
            Ok(Some(o)) => assert!(opts.len() == 1 && opts[0].start == o.start && opts[0].end() == o.end),
            Ok(None) => assert!(opts.is_empty()),
            Err(e) => assert!(matches!(e, WireError::DuplicateOpt | WireError::BadOpt)),
        }
    } else {
        assert!(min_ttl(data, &h, after_question).is_err());
        assert!(opt.is_err());
    }

    // rewrite_ttls patches TTL fields only, and succeeds exactly when the walk does.
    let mut copy = data.to_vec();
    let res = rewrite_ttls(&mut copy, &h, after_question, |t| t ^ 0xa5a5_5a5a);
    assert_eq!(copy.len(), data.len());
    assert_eq!(res.is_ok(), walked.is_ok());
    if let Ok(records) = &walked {
        let mut expect = data.to_vec();
        for r in records.iter().filter(|r| r.rtype != rtype::OPT) {
            expect[r.ttl_at..r.ttl_at + 4].copy_from_slice(&(r.ttl ^ 0xa5a5_5a5a).to_be_bytes());
        }
        assert_eq!(copy, expect, "rewrite_ttls changed more than the TTLs");
    }

    // Search collapse: this reply as the answer for the target name.
    if let Ok(records) = &walked {
        check_cname_reply(data, records, CLIENT_QUERY);
        check_cname_reply(data, records, CLIENT_QUERY_NO_OPT);
    } else {
        let mut out = Vec::new();
        let pq = ParsedQuery {
            header: Header::parse(CLIENT_QUERY).unwrap(),
            question: parse_question(CLIENT_QUERY).unwrap(),
            opt: None,
        };
        let _ = cname_reply(CLIENT_QUERY, &pq, FALLBACK_TARGET, data, CNAME_TTL, &mut out);
    }

    let Ok(q) = q else {
        return;
    };

    // The client's ID and letter case put back.
    let mut restored = data.to_vec();
    let client_name: Vec<u8> = q.name(data).iter().map(|c| c ^ (c.is_ascii_alphabetic() as u8 * 0x20)).collect();
    assert!(restore_question(&mut restored, &q, 0xbeef, &client_name));
    assert_eq!(&restored[..2], &[0xbe, 0xef]);
    assert_eq!(&restored[HEADER_LEN..q.name_end], &client_name[..]);
    assert_eq!(&restored[q.name_end..], &data[q.name_end..]);
    assert_eq!(parse_question(&restored), Ok(q));
    assert!(!restore_question(&mut restored, &q, 1, &client_name[1..]));

    let Ok(opt) = opt else {
        return;
    };

    // Truncated forms for clients with small UDP sizes: the answer and authority records that
    // fit whole, in order, then the OPT; TC set.
    let opt_len = opt.map_or(0, |o| o.end - o.start);
    for limit in [0, 512, data.len() / 2, data.len()] {
        let mut t = Vec::new();
        truncated_reply(data, &h, &q, opt.as_ref(), limit, &mut t);
        let th = Header::parse(&t).expect("truncated reply has a header");
        assert!(th.tc());
        assert_eq!((th.id, th.qdcount), (h.id, h.qdcount));
        assert_eq!(th.arcount, opt.is_some() as u16);
        assert!(t.len() <= limit.max(q.end + opt_len), "truncated reply of {} octets over limit {limit}", t.len());
        assert_eq!(parse_question(&t), Ok(q));
        let kept = usize::from(th.ancount) + usize::from(th.nscount);
        let got: Vec<RecordRef> = Records::new(&t, &th, q.end)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("truncated reply does not parse back: {e:?}"));
        assert_eq!(got.len(), kept + opt.is_some() as usize);
        let kept_end = got[..kept].last().map_or(q.end, |r| r.end());
        assert_eq!(&t[..kept_end][HEADER_LEN..], &data[HEADER_LEN..kept_end], "kept records are a prefix");
        if let Ok(records) = &walked {
            assert!(records[..kept].iter().all(|r| r.section != Section::Additional));
            assert_eq!(th.ancount as usize, records[..kept].iter().filter(|r| r.section == Section::Answer).count());
            if let Some(next) = records.get(kept) {
                assert!(
                    next.section == Section::Additional || next.end() + opt_len > limit,
                    "a record that fits was dropped"
                );
            }
            for (a, b) in got[..kept].iter().zip(records) {
                assert_eq!((a.start, a.rtype, a.class, a.ttl, a.rdlen), (b.start, b.rtype, b.class, b.ttl, b.rdlen));
            }
        }
        let topt = find_opt(&t, &th, q.end).expect("truncated reply's OPT parses");
        let fields = |o: podns::wire::Opt| (o.udp_size, o.ext_rcode, o.version, o.dnssec_ok);
        assert_eq!(topt.map(fields), opt.map(fields));
        assert_eq!(topt.map_or(kept_end, |o| o.end), t.len());
    }

    // The OPT removed for a client that sent none: it and the additional records after it go
    // (moving those would break pointers into them); what precedes keeps its meaning.
    if let (Some(o), Ok(records)) = (opt, &walked) {
        let mut b = BytesMut::from(data);
        let mut hh = h;
        strip_opt(&mut b, &mut hh, &o);
        let kept: Vec<&RecordRef> = records.iter().take_while(|r| r.start < o.start).collect();
        assert_eq!(b.len(), o.start);
        assert!(b[..10] == data[..10] && b[HEADER_LEN..] == data[HEADER_LEN..o.start], "not a prefix but ARCOUNT");
        assert_eq!(hh.arcount as usize, kept.iter().filter(|r| r.section == Section::Additional).count());
        assert_eq!(
            (hh.id, hh.flags, hh.qdcount, hh.ancount, hh.nscount),
            (h.id, h.flags, h.qdcount, h.ancount, h.nscount)
        );
        assert_eq!(Header::parse(&b), Ok(hh));
        assert_eq!(find_opt(&b, &hh, q.end), Ok(None));
        let rest: Vec<RecordRef> = Records::new(&b, &hh, q.end)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("records after strip_opt do not parse: {e:?}"));
        assert_eq!(rest.len(), kept.len());
        for (a, z) in rest.iter().zip(kept) {
            assert_eq!(*a, *z);
            // A name that reads neither what was cut nor the header (whose ARCOUNT changes)
            // must mean the same.
            for x in name_offsets(data, z) {
                let before = expand(data, x);
                if before.is_ok() && !reads_from(data, x, o.start, data.len()) && !reads_from(data, x, 0, HEADER_LEN) {
                    assert_eq!(before, expand(&b, x), "strip_opt changed what a compressed name means");
                }
            }
        }
    }
});
