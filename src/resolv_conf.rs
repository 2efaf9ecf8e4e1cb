//! resolv.conf, read as glibc's `res_init` reads it (resolv/res_init.c), once, by one parser:
//! the upstreams podns forwards to, the search list and ndots the collapse assumes, and the
//! nameservers capture mode and the webhook look at all come from here.
//!
//! - A keyword counts only at the start of a line and followed by a space or tab; tokens are
//!   separated by spaces and tabs; anything else (comments with `#` or `;`) is ignored.
//! - `nameserver`: at most three are used (MAXNS); a scope suffix (`fe80::1%eth0`) is dropped;
//!   an address that does not parse is skipped.
//! - `search` and `domain`: the last such line wins; `domain` sets a one-entry search list; a
//!   line without a value is ignored. Without either, glibc falls back to the host name's
//!   domain, which a pure parser cannot know: the search list is then empty.
//! - `options ndots:N` (read like `atoi`, capped at 15; default 1), `attempts:N` (capped at 5;
//!   default 2), `timeout:N` (capped at 30; default 5).

use std::net::{IpAddr, SocketAddr};

/// glibc's MAXNS.
pub const MAX_NAMESERVERS: usize = 3;

/// What a resolv.conf says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// At most [`MAX_NAMESERVERS`], port 53.
    pub nameservers: Vec<SocketAddr>,
    pub search: Vec<String>,
    pub ndots: u8,
    pub attempts: u8,
    pub timeout_secs: u8,
}

/// The rest of `line` after `word` and a space or tab, when the line starts with it.
fn keyword<'a>(line: &'a str, word: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(word)?;
    rest.starts_with([' ', '\t']).then_some(rest)
}

fn tokens(rest: &str) -> impl Iterator<Item = &str> {
    rest.split([' ', '\t']).filter(|t| !t.is_empty())
}

/// glibc's `RES_MAXNDOTS`.
const MAX_NDOTS: u8 = 15;

/// `ndots:` value as glibc reads it: `atoi`, values above 15 become 15, and a negative value
/// lands in the 4-bit field `ndots` as its low four bits.
pub fn parse_ndots(s: &str) -> u8 {
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let v = digits
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0u64, |v, d| v.saturating_mul(10).saturating_add(u64::from(d - b'0')));
    if neg { (v.wrapping_neg() & 0xf) as u8 } else { v.min(u64::from(MAX_NDOTS)) as u8 }
}

/// `atoi`: leading digits, 0 without any; capped at `max`.
fn atoi(s: &str, max: u8) -> u8 {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    digits.parse::<u64>().map_or(if digits.is_empty() { 0 } else { max }, |n| n.min(u64::from(max)) as u8)
}

impl ResolvConf {
    pub fn parse(text: &str) -> ResolvConf {
        let mut rc = ResolvConf { nameservers: Vec::new(), search: Vec::new(), ndots: 1, attempts: 2, timeout_secs: 5 };
        for line in text.lines() {
            if let Some(rest) = keyword(line, "nameserver") {
                if rc.nameservers.len() < MAX_NAMESERVERS
                    && let Some(addr) = tokens(rest).next().and_then(|a| a.split('%').next())
                    && let Ok(ip) = addr.parse::<IpAddr>()
                {
                    rc.nameservers.push(SocketAddr::new(ip, 53));
                }
            } else if let Some(rest) = keyword(line, "domain") {
                if let Some(d) = tokens(rest).next() {
                    rc.search = vec![d.to_string()];
                }
            } else if let Some(rest) = keyword(line, "search") {
                let list: Vec<String> = tokens(rest).map(str::to_string).collect();
                if !list.is_empty() {
                    rc.search = list;
                }
            } else if let Some(rest) = keyword(line, "options") {
                for opt in tokens(rest) {
                    if let Some(n) = opt.strip_prefix("ndots:") {
                        rc.ndots = parse_ndots(n);
                    } else if let Some(n) = opt.strip_prefix("attempts:") {
                        rc.attempts = atoi(n, 5);
                    } else if let Some(n) = opt.strip_prefix("timeout:") {
                        rc.timeout_secs = atoi(n, 30);
                    }
                }
            }
        }
        rc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_glibc() {
        let rc = ResolvConf::parse(
            "# comment\nnameserver 10.96.0.10\nnameserver\tfe80::1%eth0\nnameserver bogus\nnameserver 1.1.1.1\n\
             nameserver 8.8.8.8\nsearch a.svc.cluster.local svc.cluster.local\nsearch\n\
             options ndots:5 attempts:9 timeout:1x\n searchx nope\n",
        );
        let ns: Vec<String> = rc.nameservers.iter().map(|a| a.to_string()).collect();
        assert_eq!(ns, ["10.96.0.10:53", "[fe80::1]:53", "1.1.1.1:53"], "three at most, bad ones skipped");
        assert_eq!(rc.search, ["a.svc.cluster.local", "svc.cluster.local"], "an empty search line is ignored");
        assert_eq!((rc.ndots, rc.attempts, rc.timeout_secs), (5, 5, 1));
        let rc = ResolvConf::parse("search a b\ndomain corp.example\noptions ndots:99 ndots:x\n");
        assert_eq!(rc.search, ["corp.example"], "the last search/domain line wins");
        assert_eq!(rc.ndots, 0, "atoi of x");
        assert_eq!(ResolvConf::parse("options ndots:99").ndots, 15);
        assert_eq!(ResolvConf::parse("").ndots, 1);
    }
}
