//! Every packet a client sends goes through `policy::admit`. Beyond "no panic", check that each
//! outcome is consistent with the packet, and that the reply podns writes for a `Reject` is a
//! well-formed response.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podns::policy::{Admission, admit};
use podns::wire::{
    HEADER_LEN, Header, Records, Soa, error_reply, find_opt, negative_reply, parse_question, rcode, rtype,
};

fuzz_target!(|msg: &[u8]| {
    match admit(msg) {
        Admission::Drop(_) => {
            // Dropped only when there is no header or it is a response: never a query.
            if let Ok(h) = Header::parse(msg) {
                assert!(h.qr(), "a query without QR was dropped");
            }
        }
        Admission::Reject { header, rcode: rc, question, opt } => {
            assert_eq!(Header::parse(msg), Ok(header));
            assert!(!header.qr());
            if let Some(q) = &question {
                assert_eq!(parse_question(msg).as_ref(), Ok(q));
                assert!(q.end <= msg.len());
            }
            let mut out = Vec::new();
            error_reply(msg, &header, question.as_ref(), rc, opt.as_ref(), &mut out);
            let rh = Header::parse(&out).expect("error reply has a header");
            assert!(rh.qr(), "error reply without QR");
            assert_eq!(rh.id, header.id);
            assert_eq!(rh.rcode(), rc & 0xf);
            assert_eq!((rh.ancount, rh.nscount), (0, 0));
            let after_question = match &question {
                Some(q) => {
                    let rq = parse_question(&out).expect("echoed question parses");
                    assert_eq!(rq.end, q.end, "echoed question has the client's length");
                    assert_eq!(&out[HEADER_LEN..rq.end], &msg[HEADER_LEN..q.end]);
                    assert_eq!(rh.qdcount, 1);
                    rq.end
                }
                None => {
                    assert_eq!(rh.qdcount, 0);
                    HEADER_LEN
                }
            };
            let ropt = find_opt(&out, &rh, after_question).expect("error reply's records parse");
            assert_eq!(ropt.is_some(), opt.is_some(), "OPT in the reply exactly when the query had one");
            if let Some(o) = ropt {
                // Extended rcode bits round-trip (BADVERS = 16 is 1 in the OPT, 0 in the header).
                assert_eq!((u16::from(o.ext_rcode) << 4) | rh.rcode(), rc);
                assert_eq!(o.end, out.len());
            } else {
                assert_eq!(after_question, out.len());
            }
            if rc == rcode::BADVERS {
                assert!(opt.is_some_and(|o| o.version > 0));
            }
        }
        Admission::Query(p) => {
            let h = Header::parse(msg).expect("an admitted query has a header");
            assert_eq!(h, p.header);
            assert!(!h.qr() && h.opcode() == 0 && h.qdcount == 1);
            let q = parse_question(msg).expect("an admitted query's question parses");
            assert_eq!(q, p.question);
            assert!(q.end <= msg.len());
            assert!(q.name_end > HEADER_LEN && q.name_end < q.end);
            // Every record the header announces can be walked.
            assert!(Records::new(msg, &h, q.end).all(|r| r.is_ok()));
            assert_eq!(find_opt(msg, &h, q.end), Ok(p.opt));
            if let Some(o) = p.opt {
                assert_eq!(o.version, 0);
                assert!(o.start >= q.end && o.end <= msg.len());
                assert!(p.max_udp_reply() >= 512);
            } else {
                assert_eq!(p.max_udp_reply(), 512);
            }
            // The negative answers podns synthesizes for it parse, carry the question as sent
            // and an SOA whose TTL and MINIMUM are the given TTL.
            for (rc, soa) in [
                (rcode::NOERROR, Soa::Synthesized),
                (rcode::NXDOMAIN, Soa::Cluster(&b"\x07cluster\x05local\x00"[..])),
                (rcode::NXDOMAIN, Soa::Root),
            ] {
                let mut out = Vec::new();
                negative_reply(msg, &p, rc, 42, soa, &mut out);
                let rh = Header::parse(&out).unwrap();
                assert!(rh.qr() && !rh.tc());
                assert_eq!((rh.id, rh.rcode(), rh.qdcount, rh.ancount, rh.nscount), (h.id, rc, 1, 0, 1));
                let rq = parse_question(&out).expect("negative reply's question parses");
                assert_eq!(&out[HEADER_LEN..rq.end], &msg[HEADER_LEN..q.end]);
                let rs: Vec<_> = Records::new(&out, &rh, rq.end)
                    .collect::<Result<_, _>>()
                    .unwrap_or_else(|e| panic!("negative reply does not parse back: {e:?}"));
                assert_eq!(rs.len(), 1 + p.opt.is_some() as usize);
                assert_eq!((rs[0].rtype, rs[0].ttl), (rtype::SOA, 42));
                assert_eq!(podns::wire::read_u32(&out, rs[0].end() - 4), Ok(42), "SOA MINIMUM");
                assert_eq!(rs.last().unwrap().end(), out.len());
                let ropt = find_opt(&out, &rh, rq.end).unwrap();
                assert_eq!(ropt.map(|o| o.dnssec_ok), p.opt.map(|o| o.dnssec_ok));
            }
        }
    }
});
