//! Domain names in wire format (RFC 1035 §3.1, §4.1.4).

use super::WireError;

/// Longest name in wire format, length octets and root label included.
pub const MAX_NAME: usize = 255;

/// Most compression pointers followed while walking one name; more means a loop.
const MAX_POINTERS: usize = 64;

/// Returns the offset just past the name that starts at `at`, following no pointer but
/// accepting one as the name's end (what record walking needs).
pub fn skip_name(msg: &[u8], mut at: usize) -> Result<usize, WireError> {
    let mut len = 0usize;
    loop {
        let b = *msg.get(at).ok_or(WireError::Short)?;
        match b & 0xc0 {
            0x00 => {
                let l = b as usize;
                len += l + 1;
                if len > MAX_NAME {
                    return Err(WireError::NameTooLong);
                }
                at += 1 + l;
                if at > msg.len() {
                    return Err(WireError::Short);
                }
                if l == 0 {
                    return Ok(at);
                }
            }
            0xc0 => {
                msg.get(at + 1).ok_or(WireError::Short)?;
                return Ok(at + 2);
            }
            _ => return Err(WireError::BadLabel),
        }
    }
}

/// Reads an uncompressed name at `at`, returning the offset past it. Question names are read
/// with this: a pointer there could only point forward or into the header.
pub fn read_plain_name(msg: &[u8], mut at: usize) -> Result<usize, WireError> {
    let start = at;
    loop {
        let b = *msg.get(at).ok_or(WireError::Short)?;
        match b & 0xc0 {
            0x00 => {
                at += 1 + b as usize;
                if at - start > MAX_NAME {
                    return Err(WireError::NameTooLong);
                }
                if at > msg.len() {
                    return Err(WireError::Short);
                }
                if b == 0 {
                    return Ok(at);
                }
            }
            0xc0 => return Err(WireError::UnexpectedPointer),
            _ => return Err(WireError::BadLabel),
        }
    }
}

/// Compares two uncompressed wire names ASCII case-insensitively (RFC 4343). Length octets are
/// at most 63, below any ASCII letter, so comparing the whole byte strings is exact.
#[inline]
pub fn name_eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Walks the possibly compressed name at `at`, calling `f` with each label (without its
/// length octet). Used where a name in an answer must be compared or copied.
pub fn for_each_label(msg: &[u8], mut at: usize, mut f: impl FnMut(&[u8])) -> Result<(), WireError> {
    let mut pointers = 0;
    let mut total = 0usize;
    loop {
        let b = *msg.get(at).ok_or(WireError::Short)?;
        match b & 0xc0 {
            0x00 => {
                if b == 0 {
                    return Ok(());
                }
                let label = msg.get(at + 1..at + 1 + b as usize).ok_or(WireError::Short)?;
                total += b as usize + 1;
                // The root octet that ends the name counts too.
                if total + 1 > MAX_NAME {
                    return Err(WireError::NameTooLong);
                }
                f(label);
                at += 1 + b as usize;
            }
            0xc0 => {
                let lo = *msg.get(at + 1).ok_or(WireError::Short)? as usize;
                let target = (((b & 0x3f) as usize) << 8) | lo;
                pointers += 1;
                if target >= at || pointers > MAX_POINTERS {
                    return Err(WireError::BadPointer);
                }
                at = target;
            }
            _ => return Err(WireError::BadLabel),
        }
    }
}

/// An owned name in lower-case, uncompressed wire format, for configuration values and keys
/// built once; the per-packet path works on slices of the message instead.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name(Vec<u8>);

impl Name {
    /// Parses a dotted name (`svc.cluster.local`, trailing dot optional, `.` for the root).
    pub fn from_dotted(s: &str) -> Option<Name> {
        let s = s.strip_suffix('.').unwrap_or(s);
        let mut out = Vec::with_capacity(s.len() + 2);
        if !s.is_empty() {
            for label in s.split('.') {
                if label.is_empty() || label.len() > 63 || !label.is_ascii() {
                    return None;
                }
                out.push(label.len() as u8);
                out.extend(label.bytes().map(|c| c.to_ascii_lowercase()));
            }
        }
        out.push(0);
        (out.len() <= MAX_NAME).then_some(Name(out))
    }

    /// The wire bytes.
    pub fn wire(&self) -> &[u8] {
        &self.0
    }

    /// Number of labels, the root not counted.
    pub fn label_count(&self) -> usize {
        labels(&self.0).count()
    }

    /// Dotted text form, with a trailing dot.
    pub fn to_dotted(&self) -> String {
        to_dotted(&self.0)
    }
}

/// Iterates the labels of an uncompressed wire name.
pub fn labels(wire: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let l = *wire.get(at)? as usize;
        if l == 0 || l & 0xc0 != 0 {
            return None;
        }
        let label = wire.get(at + 1..at + 1 + l)?;
        at += 1 + l;
        Some(label)
    })
}

/// Dotted text form of an uncompressed wire name, for logs and tests.
pub fn to_dotted(wire: &[u8]) -> String {
    let mut s = String::new();
    for label in labels(wire) {
        for &c in label {
            if c.is_ascii_graphic() && c != b'.' && c != b'\\' {
                s.push(c as char);
            } else {
                s.push_str(&format!("\\{c:03}"));
            }
        }
        s.push('.');
    }
    if s.is_empty() {
        s.push('.');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_roundtrip() {
        let n = Name::from_dotted("PyPI.org.").unwrap();
        assert_eq!(n.wire(), b"\x04pypi\x03org\x00");
        assert_eq!(n.to_dotted(), "pypi.org.");
        assert_eq!(n.label_count(), 2);
        assert_eq!(Name::from_dotted(".").unwrap().wire(), b"\x00");
        assert!(Name::from_dotted("a..b").is_none());
        assert!(Name::from_dotted(&"x".repeat(64)).is_none());
        let long = vec!["abcdefghi"; 26].join(".");
        assert!(Name::from_dotted(&long).is_none(), "260 octets is over the limit");
    }

    #[test]
    fn plain_names() {
        let msg = b"\x03www\x07example\x03com\x00rest";
        assert_eq!(read_plain_name(msg, 0), Ok(17));
        assert_eq!(skip_name(msg, 0), Ok(17));
        assert_eq!(read_plain_name(b"\x03ww", 0), Err(WireError::Short));
        assert_eq!(read_plain_name(b"\xc0\x0c", 0), Err(WireError::UnexpectedPointer));
        assert_eq!(read_plain_name(b"\x40abc", 0), Err(WireError::BadLabel));
        assert_eq!(skip_name(b"\x01a\xc0\x0c", 0), Ok(4));
        assert_eq!(skip_name(b"\x01a\xc0", 0), Err(WireError::Short));
    }

    #[test]
    fn long_names_are_refused() {
        let mut msg = Vec::new();
        for _ in 0..5 {
            msg.push(63);
            msg.extend(std::iter::repeat_n(b'a', 63));
        }
        msg.push(0);
        assert_eq!(read_plain_name(&msg, 0), Err(WireError::NameTooLong));
        assert_eq!(skip_name(&msg, 0), Err(WireError::NameTooLong));
    }

    #[test]
    fn pointers_are_followed_backwards_only() {
        // "a" at 0, then a name at 3 that is "b" + pointer to 0.
        let msg = b"\x01a\x00\x01b\xc0\x00";
        let mut got = Vec::new();
        for_each_label(msg, 3, |l| got.push(l.to_vec())).unwrap();
        assert_eq!(got, vec![b"b".to_vec(), b"a".to_vec()]);
        // 255 octets of labels plus the root is one too many.
        let mut long = vec![2u8, b'x', b'x'];
        for _ in 0..4 {
            long.push(62);
            long.extend(std::iter::repeat_n(b'a', 62));
        }
        long.push(0);
        assert_eq!(long.len(), 256);
        assert_eq!(for_each_label(&long, 0, |_| ()), Err(WireError::NameTooLong));
        assert_eq!(for_each_label(&long[3..], 0, |_| ()), Ok(()), "253 octets fit");
        long[0] = 1;
        long.remove(1);
        assert_eq!(for_each_label(&long, 0, |_| ()), Ok(()), "255 octets fit");
        // A pointer to itself loops.
        assert_eq!(for_each_label(b"\xc0\x00", 0, |_| ()), Err(WireError::BadPointer));
    }

    #[test]
    fn case_insensitive_compare() {
        assert!(name_eq_ignore_case(b"\x04PyPi\x03ORG\x00", b"\x04pypi\x03org\x00"));
        assert!(!name_eq_ignore_case(b"\x04pypa\x03org\x00", b"\x04pypi\x03org\x00"));
    }
}
