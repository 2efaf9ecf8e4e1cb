//! Walking resource records past the question, for the few jobs that need them: finding the
//! OPT record, reading and patching TTLs.

use super::{Header, WireError, read_u16, read_u32, rtype, skip_name};

/// Which section a record is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Answer,
    Authority,
    Additional,
}

/// Where one record lies in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef {
    pub section: Section,
    /// Offset of the owner name (also the start of the record).
    pub start: usize,
    pub rtype: u16,
    pub class: u16,
    /// Offset of the 32-bit TTL field.
    pub ttl_at: usize,
    pub ttl: u32,
    pub rdata_at: usize,
    pub rdlen: u16,
}

impl RecordRef {
    /// Offset just past the record.
    pub fn end(&self) -> usize {
        self.rdata_at + self.rdlen as usize
    }
}

/// Iterator over the records of a message, starting after the question(s). Stops at the
/// first error, which it yields.
pub struct Records<'a> {
    msg: &'a [u8],
    at: usize,
    left: [u16; 3],
    failed: bool,
}

impl<'a> Records<'a> {
    /// Records of `msg`, whose question section ends at `after_question`.
    pub fn new(msg: &'a [u8], header: &Header, after_question: usize) -> Records<'a> {
        Records { msg, at: after_question, left: [header.ancount, header.nscount, header.arcount], failed: false }
    }

    fn read(&mut self, section: Section) -> Result<RecordRef, WireError> {
        let start = self.at;
        let fixed = skip_name(self.msg, start)?;
        let rtype = read_u16(self.msg, fixed)?;
        let class = read_u16(self.msg, fixed + 2)?;
        let ttl = read_u32(self.msg, fixed + 4)?;
        let rdlen = read_u16(self.msg, fixed + 8)?;
        let rdata_at = fixed + 10;
        if rdata_at + rdlen as usize > self.msg.len() {
            return Err(WireError::Short);
        }
        self.at = rdata_at + rdlen as usize;
        Ok(RecordRef { section, start, rtype, class, ttl_at: fixed + 4, ttl, rdata_at, rdlen })
    }
}

impl Iterator for Records<'_> {
    type Item = Result<RecordRef, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let idx = self.left.iter().position(|&n| n > 0)?;
        self.left[idx] -= 1;
        let section = [Section::Answer, Section::Authority, Section::Additional][idx];
        let r = self.read(section);
        self.failed = r.is_err();
        Some(r)
    }
}

/// The smallest TTL over all records but OPT, or `None` when there are none.
pub fn min_ttl(msg: &[u8], header: &Header, after_question: usize) -> Result<Option<u32>, WireError> {
    let mut min = None;
    for r in Records::new(msg, header, after_question) {
        let r = r?;
        if r.rtype != rtype::OPT {
            min = Some(min.map_or(r.ttl, |m: u32| m.min(r.ttl)));
        }
    }
    Ok(min)
}

/// The rcode of a whole, readable reply and whether its answer section holds a record of
/// `rtype`; `None` when it cannot be read, or is truncated without such a record (it says
/// nothing about the name then). A record of the type anywhere in the answer counts: recursive
/// resolvers put the chain's end there, and stubs take it from there.
pub fn answers_type(msg: &[u8], rtype: u16) -> Option<(u16, bool)> {
    let header = Header::parse(msg).ok()?;
    let q = super::parse_question(msg).ok()?;
    let mut found = false;
    for r in Records::new(msg, &header, q.end) {
        let r = r.ok()?;
        found |= r.section == Section::Answer && r.rtype == rtype;
    }
    (found || !header.tc()).then_some((header.rcode(), found))
}

/// Replaces every TTL but OPT's by `f(ttl)`, in place. Lengths never change, so each record
/// is read, patched, and the walk goes on from its end.
pub fn rewrite_ttls(
    msg: &mut [u8],
    header: &Header,
    after_question: usize,
    mut f: impl FnMut(u32) -> u32,
) -> Result<(), WireError> {
    let mut at = after_question;
    let total = header.ancount as usize + header.nscount as usize + header.arcount as usize;
    for _ in 0..total {
        let r = Records { msg, at, left: [1, 0, 0], failed: false }.read(Section::Answer)?;
        at = r.end();
        if r.rtype != rtype::OPT {
            msg[r.ttl_at..r.ttl_at + 4].copy_from_slice(&f(r.ttl).to_be_bytes());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse_question;

    /// A reply for example.com A with one answer (TTL 300, compressed owner) and an OPT.
    fn reply() -> Vec<u8> {
        let mut m = vec![0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 1];
        m.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 192, 0, 2, 1]);
        m.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
        m
    }

    #[test]
    fn walks_sections() {
        let m = reply();
        let h = Header::parse(&m).unwrap();
        let q = parse_question(&m).unwrap();
        let rs: Vec<_> = Records::new(&m, &h, q.end).collect::<Result<_, _>>().unwrap();
        assert_eq!(rs.len(), 2);
        assert_eq!((rs[0].section, rs[0].rtype, rs[0].ttl), (Section::Answer, 1, 300));
        assert_eq!((rs[1].section, rs[1].rtype), (Section::Additional, 41));
        assert_eq!(rs[1].end(), m.len());
        assert_eq!(min_ttl(&m, &h, q.end), Ok(Some(300)));
    }

    #[test]
    fn ttl_rewrite_skips_opt() {
        let mut m = reply();
        let h = Header::parse(&m).unwrap();
        let q = parse_question(&m).unwrap();
        rewrite_ttls(&mut m, &h, q.end, |t| t - 100).unwrap();
        assert_eq!(min_ttl(&m, &h, q.end), Ok(Some(200)));
        // OPT's TTL field (extended rcode, version, flags) is untouched.
        assert_eq!(&m[m.len() - 6..m.len() - 2], &[0, 0, 0, 0]);
    }

    #[test]
    fn truncated_records_are_errors() {
        let m = reply();
        let h = Header::parse(&m).unwrap();
        let q = parse_question(&m).unwrap();
        let cut = &m[..m.len() - 3];
        assert!(Records::new(cut, &h, q.end).any(|r| r.is_err()));
        let mut c = cut.to_vec();
        assert!(rewrite_ttls(&mut c, &h, q.end, |t| t).is_err());
    }
}
