//! Re-validation of an upstream reply before it is relayed or cached.
//!
//! podns passes replies through as bytes, so whatever an upstream (or a forger) puts in them
//! reaches every client that asks until the TTL ends. A reply is accepted only when the whole
//! message reads as RFC 1035 says: every name decompresses within the message through pointers
//! that point strictly backwards (RFC 1035 §4.1.4: "a prior occurance of the same name") and
//! never into the header, without loops and within 255 octets; every record's RDATA lies within
//! the message and, for the types whose RDATA holds names, is exactly those names and fields;
//! and nothing follows the last record. unbound answers SERVFAIL for such replies and caches
//! nothing; podns does the same by treating them as an upstream error.
//!
//! The same walk zeroes TTLs with the most significant bit set: RFC 2181 §8 says a TTL is an
//! unsigned number of at most 2³¹ − 1 and one with the top bit set is to be treated as zero, so
//! clients never see a TTL of 2³¹ s and the cache never keeps such a record.

use super::{HEADER_LEN, Header, MAX_MESSAGE, WireError, read_u16, read_u32, rtype};

/// Most compression pointers followed in one name; RFC 1035 names have at most 127 labels, so
/// more is a loop whatever the pointers look like.
const MAX_HOPS: usize = 128;

/// The TTL a client and the cache should see for a TTL field value (RFC 2181 §8).
#[inline]
pub fn effective_ttl(ttl: u32) -> u32 {
    if ttl & 0x8000_0000 != 0 { 0 } else { ttl }
}

/// Checks that the (possibly compressed) name at `at` decompresses within `msg`; returns the
/// offset just past it where it stands (after its first pointer or its root label).
pub fn check_name(msg: &[u8], at: usize) -> Result<usize, WireError> {
    let mut pos = at;
    let mut end = None;
    let mut len = 0usize;
    let mut hops = 0;
    // Pointers must go strictly backwards from the lowest offset reached so far: a chain that
    // always moves back cannot loop.
    let mut floor = at;
    loop {
        let b = *msg.get(pos).ok_or(WireError::Short)?;
        match b & 0xc0 {
            0x00 => {
                let l = b as usize;
                len += l + 1;
                if len > super::name::MAX_NAME {
                    return Err(WireError::NameTooLong);
                }
                if pos + 1 + l > msg.len() {
                    return Err(WireError::Short);
                }
                pos += 1 + l;
                if l == 0 {
                    return Ok(end.unwrap_or(pos));
                }
            }
            0xc0 => {
                let lo = *msg.get(pos + 1).ok_or(WireError::Short)? as usize;
                let target = (((b & 0x3f) as usize) << 8) | lo;
                hops += 1;
                if target >= floor || target < HEADER_LEN || hops > MAX_HOPS {
                    return Err(WireError::BadPointer);
                }
                end.get_or_insert(pos + 2);
                floor = target;
                pos = target;
            }
            _ => return Err(WireError::BadLabel),
        }
    }
}

/// How the RDATA of a type is laid out around its names: octets before the names, the number
/// of names, and octets after them; `None` for types whose RDATA podns does not look into.
fn rdata_names(t: u16) -> Option<(usize, usize, usize)> {
    match t {
        // NS, MD, MF, CNAME, MB, MG, MR, PTR, DNAME: one name (RFC 1035 §3.3, RFC 6672).
        rtype::NS | 3 | 4 | rtype::CNAME | 7 | 8 | 9 | rtype::PTR | 39 => Some((0, 1, 0)),
        // MX, AFSDB, RT, KX: a 16-bit preference, then a name.
        rtype::MX | 18 | 21 | 36 => Some((2, 1, 0)),
        // SRV: priority, weight, port, target (RFC 2782).
        rtype::SRV => Some((6, 1, 0)),
        // SOA: MNAME, RNAME, then five 32-bit fields.
        rtype::SOA => Some((0, 2, 20)),
        _ => None,
    }
}

/// Validates `msg` as a reply (see the module documentation) and zeroes TTLs with the top bit
/// set, in place. Lengths never change.
pub fn sanitize_reply(msg: &mut [u8]) -> Result<(), WireError> {
    if msg.len() > MAX_MESSAGE {
        return Err(WireError::TooLong);
    }
    let h = Header::parse(msg)?;
    let mut at = HEADER_LEN;
    for _ in 0..h.qdcount {
        at = check_name(msg, at)? + 4;
        if at > msg.len() {
            return Err(WireError::Short);
        }
    }
    let records = usize::from(h.ancount) + usize::from(h.nscount) + usize::from(h.arcount);
    for _ in 0..records {
        let fixed = check_name(msg, at)?;
        let t = read_u16(msg, fixed)?;
        let ttl = read_u32(msg, fixed + 4)?;
        let rdlen = usize::from(read_u16(msg, fixed + 8)?);
        let rdata = fixed + 10;
        let end = rdata + rdlen;
        if end > msg.len() {
            return Err(WireError::Short);
        }
        match t {
            rtype::A if rdlen != 4 => return Err(WireError::BadRdata),
            rtype::AAAA if rdlen != 16 => return Err(WireError::BadRdata),
            _ => {}
        }
        if let Some((lead, names, tail)) = rdata_names(t) {
            let mut p = rdata + lead;
            for _ in 0..names {
                if p >= end {
                    return Err(WireError::BadRdata);
                }
                p = check_name(&msg[..end], p)?;
            }
            if p + tail != end {
                return Err(WireError::BadRdata);
            }
        }
        if t != rtype::OPT && effective_ttl(ttl) != ttl {
            msg[fixed + 4..fixed + 8].copy_from_slice(&0u32.to_be_bytes());
        }
        at = end;
    }
    if at != msg.len() {
        return Err(WireError::Trailing);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply for `www.example.com` A (question at 12) with the given answer records.
    fn reply(answers: &[&[u8]]) -> Vec<u8> {
        let mut m = vec![0, 1, 0x81, 0x80, 0, 1, 0, answers.len() as u8, 0, 0, 0, 0];
        m.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
        for a in answers {
            m.extend_from_slice(a);
        }
        m
    }

    const A_REC: &[u8] = &[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1];

    #[test]
    fn good_replies_pass_unchanged() {
        let mut m = reply(&[A_REC, &[0xc0, 16, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 12]]);
        let before = m.clone();
        assert_eq!(sanitize_reply(&mut m), Ok(()));
        assert_eq!(m, before);
        // SOA with compressed names, MX and SRV with their fixed fields.
        let mut soa = vec![0xc0, 16, 0, 6, 0, 1, 0, 0, 0, 60, 0, 24, 0xc0, 12, 0xc0, 16];
        soa.extend_from_slice(&[0; 20]);
        let mx = [0xc0, 12, 0, 15, 0, 1, 0, 0, 0, 60, 0, 4, 0, 10, 0xc0, 12];
        let srv = [0xc0, 12, 0, 33, 0, 1, 0, 0, 0, 60, 0, 8, 0, 1, 0, 2, 0, 53, 0xc0, 12];
        assert_eq!(sanitize_reply(&mut reply(&[&soa, &mx, &srv])), Ok(()));
    }

    #[test]
    fn bad_pointers_are_malformed() {
        // Forward pointer (to the answer's own rdata), pointer to itself, into the header.
        let fwd = [0xc0, 40, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1];
        assert_eq!(sanitize_reply(&mut reply(&[&fwd])), Err(WireError::BadPointer));
        let selfp = [0xc0, 33, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1];
        assert_eq!(sanitize_reply(&mut reply(&[&selfp])), Err(WireError::BadPointer));
        let header = [0xc0, 2, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1];
        assert_eq!(sanitize_reply(&mut reply(&[&header])), Err(WireError::BadPointer));
        // A loop through two CNAME targets: 33 → 47 would be forward; 47 → 45 → 47 loops.
        let a = [0x01, b'a', 0xc0, 49, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 33];
        assert!(sanitize_reply(&mut reply(&[&a])).is_err());
        // Out of bounds.
        let oob = [0xc0, 0xff, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1];
        assert!(sanitize_reply(&mut reply(&[&oob])).is_err());
    }

    #[test]
    fn bad_lengths_and_trailing_bytes_are_malformed() {
        let mut trailing = reply(&[A_REC]);
        trailing.push(0);
        assert_eq!(sanitize_reply(&mut trailing), Err(WireError::Trailing));
        let short_a = [0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 3, 192, 0, 2];
        assert_eq!(sanitize_reply(&mut reply(&[&short_a])), Err(WireError::BadRdata));
        // A CNAME whose RDLENGTH claims more than its name.
        let cname = [0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 3, 0xc0, 12, 0];
        assert_eq!(sanitize_reply(&mut reply(&[&cname])), Err(WireError::BadRdata));
        // A CNAME whose name runs past its RDATA.
        let over = [0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 1, 0xc0, 12];
        assert!(sanitize_reply(&mut reply(&[&over])).is_err());
        let mut cut = reply(&[A_REC]);
        cut.truncate(cut.len() - 1);
        assert_eq!(sanitize_reply(&mut cut), Err(WireError::Short));
    }

    #[test]
    fn ttls_with_the_top_bit_set_become_zero() {
        let mut big = A_REC.to_vec();
        big[6..10].copy_from_slice(&0x8000_0005u32.to_be_bytes());
        let mut max = A_REC.to_vec();
        max[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
        let mut m = reply(&[&big, &max, A_REC]);
        assert_eq!(sanitize_reply(&mut m), Ok(()));
        let h = Header::parse(&m).unwrap();
        let q = super::super::parse_question(&m).unwrap();
        let ttls: Vec<u32> = super::super::Records::new(&m, &h, q.end).map(|r| r.unwrap().ttl).collect();
        assert_eq!(ttls, vec![0, 0, 60]);
        assert_eq!((effective_ttl(0x7fff_ffff), effective_ttl(0x8000_0000)), (0x7fff_ffff, 0));
    }

    #[test]
    fn random_input_never_panics() {
        let base = reply(&[A_REC]);
        let mut seed = 0x1234_5678_9abc_def0u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut m = base.clone();
            let at = (seed as usize) % m.len();
            m[at] = (seed >> 32) as u8;
            m.truncate(((seed >> 16) as usize) % (m.len() + 1));
            let _ = sanitize_reply(&mut m);
        }
    }
}
