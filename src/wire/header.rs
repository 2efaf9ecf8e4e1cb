//! The fixed 12-byte message header (RFC 1035 §4.1.1).

use super::{WireError, read_u16};

/// Length of the header.
pub const HEADER_LEN: usize = 12;

const QR: u16 = 0x8000;
const AA: u16 = 0x0400;
const TC: u16 = 0x0200;
const RD: u16 = 0x0100;
const RA: u16 = 0x0080;
const AD: u16 = 0x0020;
const CD: u16 = 0x0010;

/// A decoded copy of the header: plain integers, so it is `Copy` and costs nothing to pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    pub flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

impl Header {
    /// Reads the header of `msg`.
    pub fn parse(msg: &[u8]) -> Result<Header, WireError> {
        if msg.len() < HEADER_LEN {
            return Err(WireError::Short);
        }
        Ok(Header {
            id: read_u16(msg, 0)?,
            flags: read_u16(msg, 2)?,
            qdcount: read_u16(msg, 4)?,
            ancount: read_u16(msg, 6)?,
            nscount: read_u16(msg, 8)?,
            arcount: read_u16(msg, 10)?,
        })
    }

    /// Writes this header into the first 12 bytes of `out`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.id.to_be_bytes());
        out[2..4].copy_from_slice(&self.flags.to_be_bytes());
        out[4..6].copy_from_slice(&self.qdcount.to_be_bytes());
        out[6..8].copy_from_slice(&self.ancount.to_be_bytes());
        out[8..10].copy_from_slice(&self.nscount.to_be_bytes());
        out[10..12].copy_from_slice(&self.arcount.to_be_bytes());
    }

    /// Appends this header to `out`.
    pub fn put(&self, out: &mut impl bytes::BufMut) {
        let mut raw = [0u8; HEADER_LEN];
        self.write(&mut raw);
        out.put_slice(&raw);
    }

    /// The header of a reply podns writes to a query with header `query`: its ID, response
    /// flags (see [`Header::response_flags`]) with `rcode`'s low bits, and the given counts.
    pub fn reply_to(query: &Header, rcode: u16, qdcount: u16, ancount: u16, nscount: u16, arcount: u16) -> Header {
        Header { id: query.id, flags: Header::response_flags(query, rcode & 0xf), qdcount, ancount, nscount, arcount }
    }

    pub fn qr(&self) -> bool {
        self.flags & QR != 0
    }
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xf) as u8
    }
    pub fn aa(&self) -> bool {
        self.flags & AA != 0
    }
    pub fn tc(&self) -> bool {
        self.flags & TC != 0
    }
    pub fn rd(&self) -> bool {
        self.flags & RD != 0
    }
    pub fn ra(&self) -> bool {
        self.flags & RA != 0
    }
    pub fn ad(&self) -> bool {
        self.flags & AD != 0
    }
    pub fn cd(&self) -> bool {
        self.flags & CD != 0
    }
    /// The low four bits of the response code (the OPT record holds the high eight).
    pub fn rcode(&self) -> u16 {
        self.flags & 0xf
    }

    /// Flags of a response to a query with header `query`: QR and RA set, opcode, RD and CD
    /// copied, the given low rcode bits.
    pub fn response_flags(query: &Header, rcode_low: u16) -> u16 {
        QR | (query.flags & (0x7800 | RD | CD)) | RA | (rcode_low & 0xf)
    }

    pub fn set_tc(&mut self) {
        self.flags |= TC;
    }
}

/// Overwrites the message ID in place. Returns false when `msg` is too short.
#[inline]
pub fn set_id(msg: &mut [u8], id: u16) -> bool {
    match msg.get_mut(0..2) {
        Some(b) => {
            b.copy_from_slice(&id.to_be_bytes());
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_flags() {
        let raw = [0x12, 0x34, 0x81, 0x83, 0, 1, 0, 2, 0, 3, 0, 4];
        let h = Header::parse(&raw).unwrap();
        assert_eq!(h.id, 0x1234);
        assert!(h.qr() && h.rd() && h.ra() && !h.tc() && !h.aa());
        assert_eq!(h.rcode(), 3);
        assert_eq!((h.qdcount, h.ancount, h.nscount, h.arcount), (1, 2, 3, 4));
        let mut out = [0u8; 12];
        h.write(&mut out);
        assert_eq!(out, raw);
        assert_eq!(Header::parse(&raw[..11]), Err(WireError::Short));
    }

    #[test]
    fn response_flags_copy_what_they_must() {
        // opcode 0, RD and CD set in the query, AA and TC must not leak into the response.
        let q =
            Header { id: 1, flags: 0x0100 | 0x0010 | 0x0400 | 0x0200, qdcount: 1, ancount: 0, nscount: 0, arcount: 0 };
        let f = Header::response_flags(&q, 2);
        let r = Header { flags: f, ..q };
        assert!(r.qr() && r.rd() && r.cd() && r.ra() && !r.aa() && !r.tc());
        assert_eq!(r.rcode(), 2);
    }

    #[test]
    fn set_id_bounds() {
        let mut m = [0u8; 12];
        assert!(set_id(&mut m, 0xbeef));
        assert_eq!(&m[..2], &[0xbe, 0xef]);
        assert!(!set_id(&mut [0u8; 1], 1));
    }
}
