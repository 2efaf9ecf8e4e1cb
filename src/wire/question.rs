//! The question section: the one question a query carries (RFC 1035 §4.1.2).

use super::name::read_plain_name;
use super::{HEADER_LEN, WireError, read_u16};

/// Where the first question of a message lies, and what it asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Question {
    /// Offset just past the question name (the name starts at [`HEADER_LEN`]).
    pub name_end: usize,
    pub qtype: u16,
    pub qclass: u16,
    /// Offset just past the question.
    pub end: usize,
}

impl Question {
    /// The question name as it stands in `msg`, in the sender's letter case.
    #[inline]
    pub fn name<'a>(&self, msg: &'a [u8]) -> &'a [u8] {
        &msg[HEADER_LEN..self.name_end]
    }

    /// True when `other` (a question in `other_msg`) asks the same as this one in `msg`:
    /// name compared case-insensitively, type and class exactly.
    pub fn same_as(&self, msg: &[u8], other: &Question, other_msg: &[u8]) -> bool {
        self.qtype == other.qtype
            && self.qclass == other.qclass
            && super::name_eq_ignore_case(self.name(msg), other.name(other_msg))
    }
}

/// Reads the first question, which starts right after the header. Its name must not be
/// compressed: there is nothing before it to point to.
pub fn parse_question(msg: &[u8]) -> Result<Question, WireError> {
    let name_end = read_plain_name(msg, HEADER_LEN)?;
    let qtype = read_u16(msg, name_end)?;
    let qclass = read_u16(msg, name_end + 2)?;
    Ok(Question { name_end, qtype, qclass, end: name_end + 4 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_compares() {
        let mut m = vec![0u8; 12];
        m.extend_from_slice(b"\x04PyPi\x03org\x00\x00\x1c\x00\x01");
        let q = parse_question(&m).unwrap();
        assert_eq!((q.qtype, q.qclass, q.end), (28, 1, m.len()));
        assert_eq!(q.name(&m), b"\x04PyPi\x03org\x00");
        let mut n = vec![0u8; 12];
        n.extend_from_slice(b"\x04pypi\x03ORG\x00\x00\x1c\x00\x01");
        assert!(q.same_as(&m, &parse_question(&n).unwrap(), &n));
        n[m.len() - 3] = 1; // qtype A
        assert!(!q.same_as(&m, &parse_question(&n).unwrap(), &n));
        assert_eq!(parse_question(&m[..m.len() - 1]), Err(WireError::Short));
    }
}

/// Writes a standard query (RD set, class IN, no EDNS) for `name_wire` (uncompressed) and `qtype`.
pub fn write_query(id: u16, name_wire: &[u8], qtype: u16, out: &mut impl bytes::BufMut) {
    out.put_u16(id);
    out.put_u16(0x0100);
    out.put_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.put_slice(name_wire);
    out.put_u16(qtype);
    out.put_u16(super::CLASS_IN);
}

#[cfg(test)]
mod write_tests {
    use super::*;

    #[test]
    fn written_query_parses() {
        let mut m = Vec::new();
        write_query(9, b"\x07cluster\x05local\x00", 6, &mut m);
        let q = parse_question(&m).unwrap();
        assert_eq!((q.qtype, q.qclass, q.end), (6, 1, m.len()));
    }
}
