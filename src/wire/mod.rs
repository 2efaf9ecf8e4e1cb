//! A zero-copy view of DNS messages (RFC 1035) over byte slices.
//!
//! Decoding is staged: most packets need only the 12-byte [`Header`] and the [`Question`], so
//! those are read first and the rest of the message is walked only when something needs it
//! (the OPT record, TTLs). Nothing here allocates except the functions that build a reply into
//! a caller-provided buffer, and nothing panics on any input: every offset is bounds-checked
//! and every failure is a [`WireError`].

mod header;
mod name;
mod opt;
mod query;
mod question;
mod records;
mod reply;
mod synth;
mod validate;

pub use header::{HEADER_LEN, Header, set_id};
pub use name::{Name, for_each_label, labels, name_eq_ignore_case, skip_name, to_dotted};
pub use opt::{Opt, find_opt};
pub use query::{FLAG_CD, FLAG_DO, NameBuf, ParsedQuery, internal_query};
pub use question::{Question, parse_question, write_query};
pub use records::{RecordRef, Records, Section, answers_type, min_ttl, rewrite_ttls};
pub use reply::{
    OUR_UDP_SIZE, Soa, error_reply, negative_reply, restore_question, strip_opt, truncated_reply, write_opt,
};
pub use synth::{cname_reply, copy_record_expanded, write_name_expanded};
pub use validate::{check_name, effective_ttl, sanitize_reply};

/// Record and query types podns refers to by name.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const SVCB: u16 = 64;
    pub const HTTPS: u16 = 65;
}

/// Response codes (the low four bits in the header; BADVERS needs the OPT extension).
pub mod rcode {
    pub const NOERROR: u16 = 0;
    pub const FORMERR: u16 = 1;
    pub const SERVFAIL: u16 = 2;
    pub const NXDOMAIN: u16 = 3;
    pub const NOTIMP: u16 = 4;
    pub const REFUSED: u16 = 5;
    pub const BADVERS: u16 = 16;
}

/// The class IN.
pub const CLASS_IN: u16 = 1;

/// The largest UDP reply a client without EDNS may receive (RFC 1035 §4.2.1).
pub const MIN_UDP_SIZE: usize = 512;

/// The largest DNS message (TCP framing is a 16-bit length).
pub const MAX_MESSAGE: usize = 65535;

/// Why a message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message shorter than its header or a field")]
    Short,
    #[error("label longer than 63 octets or of a reserved kind")]
    BadLabel,
    #[error("name longer than 255 octets")]
    NameTooLong,
    #[error("compression pointer loops or points forward")]
    BadPointer,
    #[error("compression pointer where none is allowed")]
    UnexpectedPointer,
    #[error("more than one OPT record")]
    DuplicateOpt,
    #[error("OPT record with a non-root owner")]
    BadOpt,
    #[error("message longer than 65535 octets")]
    TooLong,
    #[error("record data does not match its type or length")]
    BadRdata,
    #[error("bytes after the last record")]
    Trailing,
}

/// Reads a big-endian u16 at `at`.
#[inline]
pub fn read_u16(msg: &[u8], at: usize) -> Result<u16, WireError> {
    match msg.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(WireError::Short),
    }
}

/// Reads a big-endian u32 at `at`.
#[inline]
pub fn read_u32(msg: &[u8], at: usize) -> Result<u32, WireError> {
    match msg.get(at..at + 4) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(WireError::Short),
    }
}

/// Metric labels for query types: a fixed set so label cardinality stays bounded.
pub const TYPE_LABELS: [&str; 12] =
    ["A", "AAAA", "CNAME", "HTTPS", "MX", "NS", "PTR", "SOA", "SRV", "SVCB", "TXT", "other"];

/// Index of a query type's label in [`TYPE_LABELS`] (a match, not a search: it runs per packet).
pub fn type_index(qtype: u16) -> usize {
    match qtype {
        rtype::A => 0,
        rtype::AAAA => 1,
        rtype::CNAME => 2,
        rtype::HTTPS => 3,
        rtype::MX => 4,
        rtype::NS => 5,
        rtype::PTR => 6,
        rtype::SOA => 7,
        rtype::SRV => 8,
        rtype::SVCB => 9,
        rtype::TXT => 10,
        _ => 11,
    }
}

/// The metric label for a query type.
pub fn type_label(qtype: u16) -> &'static str {
    TYPE_LABELS[type_index(qtype)]
}

/// Metric labels for response codes (extended codes included).
pub const RCODE_LABELS: [&str; 8] =
    ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", "other"];

/// Index of a response code's label in [`RCODE_LABELS`].
pub fn rcode_index(rc: u16) -> usize {
    match rc {
        0..=5 => rc as usize,
        rcode::BADVERS => 6,
        _ => 7,
    }
}

/// The metric label for a response code.
pub fn rcode_label(rc: u16) -> &'static str {
    RCODE_LABELS[rcode_index(rc)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_indexes_agree_with_labels() {
        for (t, l) in [(1, "A"), (28, "AAAA"), (65, "HTTPS"), (64, "SVCB"), (16, "TXT"), (999, "other")] {
            assert_eq!(type_label(t), l);
        }
        for (r, l) in [(0, "NOERROR"), (3, "NXDOMAIN"), (5, "REFUSED"), (16, "BADVERS"), (9, "other")] {
            assert_eq!(rcode_label(r), l);
        }
    }
}
