//! Pure models of how common stub resolvers walk a name for a `getaddrinfo`-style lookup
//! (A and AAAA), one per stub, each following its source code.
//!
//! podns's first rule is "never worse": a lookup through podns must succeed whenever it
//! succeeds without podns, with the same addresses, and cost no more upstream queries. These
//! models let a property test run the *client's* side of a lookup over any upstream behaviour,
//! directly and through podns, and compare. The pod lab checks the models against the real
//! stubs.
//!
//! [`walk`] drives one lookup: every exchange with the (single) nameserver goes through the
//! `ask` callback and is recorded in [`Walk::queries`], so query counts include retries,
//! retransmissions and TCP fallbacks.
//!
//! Common to all models (and to all the stubs, from their sources):
//! - A name that parses as an IP address is answered without DNS (`Found`, no query).
//! - A name with a trailing dot is asked exactly as is, once per type, with no search list.
//! - Only the answer section is modelled. A record counts as an address when it is an A with
//!   an IPv4 address or an AAAA with an IPv6 address; other combinations are ignored (the real
//!   stubs reject malformed RDATA in various ways, which a well-formed upstream never sends).
//! - Not modelled: `/etc/hosts`, `HOSTALIASES`, special names (`localhost`, `.onion`), several
//!   nameservers, timing (a reply either arrives or is [`Reply::Timeout`] for the whole wait),
//!   the AA/RA bits (the upstream is assumed to be a recursive server setting RA, so glibc's
//!   and Go's "lame referral" rules never fire), EDNS, and names with empty labels (`a..b`,
//!   `.a`), which give `NotFound` without a query.
//! - When two queries are in flight at once (A and AAAA), replies are taken to arrive in the
//!   order sent (A first, except hickory which sends AAAA first); a query that needs more
//!   attempts completes later. Real arrival order varies; where a stub's result depends on it
//!   the model's doc says so.
//!
//! The same facts, as a table, are in `SEARCH_RULES.md` ("Stub models").

use std::collections::{BTreeSet, VecDeque};
use std::net::IpAddr;

use crate::wire::{rcode, rtype};

/// A stub resolver implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stub {
    /// glibc 2.36 (Debian bookworm) `getaddrinfo(AF_UNSPEC)` through nss_dns.
    Glibc,
    /// musl 1.2.3 (Debian bookworm) `getaddrinfo(AF_UNSPEC)`; no TCP fallback.
    Musl,
    /// c-ares >= 1.16 `ares_getaddrinfo(AF_UNSPEC)`, modelled on 1.34.5.
    Cares,
    /// c-ares < 1.16 `ares_gethostbyname(AF_UNSPEC)`, modelled on 1.13.0 (RHEL 8).
    CaresOld,
    /// Go's pure-Go resolver (`net.LookupIP`, `GODEBUG=netdns=go`).
    Go,
    /// hickory-resolver 0.26.3 `lookup_ip` with the system configuration.
    Hickory,
}

impl Stub {
    /// Every modelled stub.
    pub const ALL: [Stub; 6] = [Stub::Glibc, Stub::Musl, Stub::Cares, Stub::CaresOld, Stub::Go, Stub::Hickory];

    /// Short name: `glibc`, `musl`, `cares`, `cares-old`, `go`, `hickory`.
    pub fn name(self) -> &'static str {
        match self {
            Stub::Glibc => "glibc",
            Stub::Musl => "musl",
            Stub::Cares => "cares",
            Stub::CaresOld => "cares-old",
            Stub::Go => "go",
            Stub::Hickory => "hickory",
        }
    }

    /// The stub called `s` (see [`Stub::name`]).
    pub fn parse(s: &str) -> Option<Stub> {
        Stub::ALL.into_iter().find(|st| st.name() == s)
    }
}

/// The resolv.conf settings the models read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conf {
    /// Search list, lower-case, no trailing dot. An empty entry stands for the root (only glibc
    /// gives it a meaning; the other models skip it).
    pub search: Vec<String>,
    /// `options ndots:N`.
    pub ndots: u8,
    /// `options attempts:N` (glibc, musl and Go default to 2, c-ares >= 1.16 to 3 and c-ares
    /// 1.13 to 4 when the line is absent: give the value the stub would use).
    pub attempts: u8,
}

impl Default for Conf {
    fn default() -> Self {
        Conf { search: Vec::new(), ndots: 1, attempts: 2 }
    }
}

/// Record data: an address (A/AAAA) or a name (CNAME and other name-valued types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    Addr(IpAddr),
    Name(String),
}

/// One answer-section record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Lower-case absolute name with the trailing dot.
    pub owner: String,
    pub rtype: u16,
    pub data: RData,
}

impl Record {
    /// An A or AAAA record, by the address family.
    pub fn addr(owner: &str, ip: IpAddr) -> Record {
        let rtype = if ip.is_ipv4() { rtype::A } else { rtype::AAAA };
        Record { owner: owner.to_string(), rtype, data: RData::Addr(ip) }
    }

    /// A CNAME record.
    pub fn cname(owner: &str, target: &str) -> Record {
        Record { owner: owner.to_string(), rtype: rtype::CNAME, data: RData::Name(target.to_string()) }
    }
}

/// What the nameserver does with one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// No reply within the stub's wait.
    Timeout,
    Msg {
        rcode: u16,
        tc: bool,
        answers: Vec<Record>,
    },
}

impl Reply {
    /// NOERROR with these answers (none: NODATA).
    pub fn answer(answers: Vec<Record>) -> Reply {
        Reply::Msg { rcode: rcode::NOERROR, tc: false, answers }
    }

    /// An empty reply with this rcode.
    pub fn rcode(rc: u16) -> Reply {
        Reply::Msg { rcode: rc, tc: false, answers: Vec::new() }
    }
}

/// How the lookup ended, as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The addresses returned (for most stubs those of both types).
    Found(BTreeSet<IpAddr>),
    /// EAI_NONAME / EAI_NODATA / ARES_ENOTFOUND / ARES_ENODATA / "no such host" / no records.
    NotFound,
    /// EAI_AGAIN / EAI_FAIL / EAI_SYSTEM / ARES_ESERVFAIL / ARES_ETIMEOUT / ARES_ECONNREFUSED /
    /// timeouts and server failures.
    Failed,
}

/// One exchange with the nameserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Absolute, trailing dot, lower-case.
    pub name: String,
    pub qtype: u16,
    pub tcp: bool,
}

/// The result of [`walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    pub outcome: Outcome,
    /// Every query sent, in order.
    pub queries: Vec<Query>,
}

/// getaddrinfo-style lookup of `name` (as the application passed it; may end in '.') for A and
/// AAAA.
pub fn walk(stub: Stub, name: &str, conf: &Conf, ask: &mut dyn FnMut(&Query) -> Reply) -> Walk {
    let mut net = Net { ask, queries: Vec::new() };
    let outcome = if let Ok(ip) = name.parse::<IpAddr>() {
        Outcome::Found(BTreeSet::from([ip]))
    } else {
        match Input::parse(name) {
            None => Outcome::NotFound,
            Some(input) => match stub {
                Stub::Glibc => glibc(&mut net, &input, conf),
                Stub::Musl => musl(&mut net, &input, conf),
                Stub::Cares => cares(&mut net, &input, conf),
                Stub::CaresOld => cares_old(&mut net, &input, conf),
                Stub::Go => go(&mut net, &input, conf),
                Stub::Hickory => hickory(&mut net, &input, conf),
            },
        }
    };
    Walk { outcome, queries: net.queries }
}

// ------------------------------------------------------------------------------------------
// Shared plumbing

/// A reply that arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    rcode: u16,
    tc: bool,
    answers: Vec<Record>,
}

impl Msg {
    fn ancount(&self) -> usize {
        self.answers.len()
    }

    /// Every address record in the answer section, whatever its owner.
    fn all_addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.answers.iter().filter_map(ip_of)
    }

    fn has_cname(&self) -> bool {
        self.answers.iter().any(|r| cname_target(r).is_some())
    }
}

struct Net<'a> {
    ask: &'a mut dyn FnMut(&Query) -> Reply,
    queries: Vec<Query>,
}

impl Net<'_> {
    /// One exchange; `None` is a timeout.
    fn send(&mut self, name: &str, qtype: u16, tcp: bool) -> Option<Msg> {
        let q = Query { name: name.to_string(), qtype, tcp };
        let reply = (self.ask)(&q);
        self.queries.push(q);
        match reply {
            Reply::Timeout => None,
            Reply::Msg { rcode, tc, answers } => Some(Msg { rcode, tc, answers }),
        }
    }
}

/// The name as the application passed it.
struct Input {
    /// Lower-case, without the trailing dot.
    base: String,
    /// It ended in a dot.
    rooted: bool,
    /// Dots in `base`.
    dots: usize,
}

impl Input {
    fn parse(name: &str) -> Option<Input> {
        let lower = name.to_ascii_lowercase();
        let rooted = lower.ends_with('.');
        let base = lower.strip_suffix('.').unwrap_or(&lower).to_string();
        if base.is_empty() || base.split('.').any(str::is_empty) {
            return None;
        }
        let dots = base.matches('.').count();
        Some(Input { base, rooted, dots })
    }

    /// The name itself, absolute.
    fn bare(&self) -> String {
        format!("{}.", self.base)
    }

    /// The name below a search domain, absolute.
    fn under(&self, domain: &str) -> String {
        format!("{}.{}.", self.base, domain)
    }

    /// Search-list candidates in list order (root entries skipped).
    fn searched(&self, conf: &Conf) -> Vec<String> {
        conf.search.iter().filter(|d| !d.is_empty()).map(|d| self.under(d)).collect()
    }
}

fn ip_of(r: &Record) -> Option<IpAddr> {
    match (r.rtype, &r.data) {
        (rtype::A, RData::Addr(ip @ IpAddr::V4(_))) | (rtype::AAAA, RData::Addr(ip @ IpAddr::V6(_))) => Some(*ip),
        _ => None,
    }
}

fn cname_target(r: &Record) -> Option<String> {
    match (r.rtype, &r.data) {
        (rtype::CNAME, RData::Name(n)) => Some(absolute(n)),
        _ => None,
    }
}

/// Lower-case, with the trailing dot.
fn absolute(n: &str) -> String {
    let mut s = n.to_ascii_lowercase();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

fn same_name(a: &str, b: &str) -> bool {
    absolute(a) == absolute(b)
}

fn is_server_failure(rc: u16) -> bool {
    matches!(rc, rcode::SERVFAIL | rcode::NOTIMP | rcode::REFUSED)
}

// ------------------------------------------------------------------------------------------
// glibc

/// `h_errno` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Herrno {
    HostNotFound,
    TryAgain,
    NoRecovery,
    NoData,
}

/// Per-thread resolver options that `send_dg` sets for good (`statp->options`).
#[derive(Default)]
struct GlibcState {
    single_request: bool,
    single_request_reopen: bool,
}

/// What one `__res_context_query` gave: the accepted replies (first one first), or h_errno
/// plus the rcode of the reply in the primary answer buffer (`hp->rcode` in
/// `__res_context_search`).
type GlibcQuery = Result<Vec<Msg>, (Herrno, u16)>;

/// glibc 2.36 (Debian bookworm), `getaddrinfo(AF_UNSPEC)`: `sysdeps/posix/getaddrinfo.c`
/// `gaih_inet` → `resolv/nss_dns/dns-host.c` `_nss_dns_gethostbyname4_r` →
/// `resolv/res_query.c` `__res_context_search` (search walk) → `__res_context_query` (one
/// A+AAAA pair, `T_QUERY_A_AND_AAAA`) → `resolv/res_send.c` `__res_context_send` / `send_dg` /
/// `send_vc`; answers parsed by `dns-host.c` `gaih_getanswer` / `gaih_getanswer_slice`.
///
/// Candidates (`__res_context_search`): a trailing dot → the name only. Otherwise, if
/// dots ≥ ndots (ndots capped at 15, `RES_MAXNDOTS`) the name as is first; then every search
/// domain (also after an as-is attempt: `RES_DNSRCH`); then the bare name unless it was tried
/// first or the list holds the root.
///
/// Per candidate, A and AAAA go out together (`sendmmsg`) and `attempts` tries are made
/// (capped at 5, `RES_MAXRETRY`; at least 1 here). In `send_dg`:
/// - SERVFAIL, NOTIMP and REFUSED replies are dropped (`next_ns`): if the other reply was
///   already in, that one alone is returned; if both are dropped the try ends and the pair is
///   sent again (so SERVFAIL *is* retried `attempts` times with one nameserver).
/// - A timeout after one good reply switches to `single-request` (A, then AAAA after A's
///   reply), then `single-request-reopen`, re-sending within the same try; the third time the
///   one reply is used alone. These options stay set for the rest of the walk. In
///   single-request mode a dropped A reply leaves AAAA unsent until the try times out.
/// - A timeout with no good reply ends the try.
/// - TC on either reply: both queries are asked again over TCP (`send_vc`, one try), even if
///   the other UDP reply was fine. A TCP reply is taken whatever its rcode; a TCP timeout
///   fails the pair.
///
/// `__res_context_query`: success when either reply is NOERROR with ANCOUNT > 0 (a CNAME-only
/// answer counts). Otherwise h_errno from the first reply's rcode (the second's if the first
/// is NOERROR): NXDOMAIN → HOST_NOT_FOUND, SERVFAIL → TRY_AGAIN, NOERROR → NO_DATA, others →
/// NO_RECOVERY; a failed send → TRY_AGAIN.
///
/// Stop rule (`__res_context_search`): success ends the walk. NO_DATA (`got_nodata`) and
/// HOST_NOT_FOUND go on; TRY_AGAIN goes on only when the primary answer buffer holds a
/// SERVFAIL (`got_servfail`: all tries dropped a SERVFAIL, or a TCP SERVFAIL); anything else
/// (a timeout, REFUSED, NO_RECOVERY) ends the search list — but the bare name is still tried
/// afterwards if it has not been. Final h_errno: the as-is attempt's if it was made first,
/// else NO_DATA if any candidate had it, else TRY_AGAIN if any had a SERVFAIL, else the last
/// query's.
///
/// Outcome: on success, `gaih_getanswer` takes every A and AAAA record of both replies'
/// answer sections, whatever the owner (2.36 does not check owners); none but a CNAME →
/// HOST_NOT_FOUND (`NotFound`); none and no CNAME → TRYAGAIN/NETDB_INTERNAL, which
/// getaddrinfo reports as EAI_SYSTEM (`Failed`). On failure TRY_AGAIN → EAI_AGAIN (`Failed`);
/// NO_DATA, HOST_NOT_FOUND, NO_RECOVERY → EAI_NODATA/EAI_NONAME (`NotFound`).
///
/// Uncertain: replies are taken to arrive A first; glibc's buffers are filled in arrival
/// order, which can change h_errno for mixed REFUSED/SERVFAIL pairs. A TCP "timeout" is
/// modelled as a failed `send_vc` (a real server that accepts and never answers leaves glibc
/// blocked in `read`).
fn glibc(net: &mut Net, input: &Input, conf: &Conf) -> Outcome {
    let ndots = usize::from(conf.ndots.min(15));
    let attempts = conf.attempts.clamp(1, 5);
    let mut st = GlibcState::default();
    let mut query = |net: &mut Net, name: &str| glibc_query(net, &mut st, name, attempts);

    let mut saved_herrno = None;
    let mut herrno = Herrno::HostNotFound;
    let mut tried_as_is = false;
    if input.dots >= ndots || input.rooted {
        match query(net, &input.bare()) {
            Ok(replies) => return glibc_answer(&replies),
            Err((h, _)) if input.rooted => return glibc_failure(h),
            Err((h, _)) => {
                saved_herrno = Some(h);
                herrno = h;
                tried_as_is = true;
            }
        }
    }
    let (mut got_nodata, mut got_servfail, mut root_on_list) = (false, false, false);
    for domain in &conf.search {
        let name = if domain.is_empty() {
            root_on_list = true;
            input.bare()
        } else {
            input.under(domain)
        };
        match query(net, &name) {
            Ok(replies) => return glibc_answer(&replies),
            Err((h, primary)) => {
                herrno = h;
                match h {
                    Herrno::NoData => got_nodata = true,
                    Herrno::HostNotFound => {}
                    Herrno::TryAgain if primary == rcode::SERVFAIL => got_servfail = true,
                    _ => break,
                }
            }
        }
    }
    if !(tried_as_is || root_on_list) {
        match query(net, &input.bare()) {
            Ok(replies) => return glibc_answer(&replies),
            Err((h, _)) => herrno = h,
        }
    }
    let final_herrno = match saved_herrno {
        Some(h) => h,
        None if got_nodata => Herrno::NoData,
        None if got_servfail => Herrno::TryAgain,
        None => herrno,
    };
    glibc_failure(final_herrno)
}

fn glibc_failure(h: Herrno) -> Outcome {
    match h {
        Herrno::TryAgain => Outcome::Failed,
        Herrno::HostNotFound | Herrno::NoData | Herrno::NoRecovery => Outcome::NotFound,
    }
}

/// `gaih_getanswer` over the replies `__res_context_query` accepted.
fn glibc_answer(replies: &[Msg]) -> Outcome {
    let mut addrs = BTreeSet::new();
    let (mut success, mut try_again) = (false, false);
    for m in replies {
        if m.ancount() == 0 {
            continue; // NOTFOUND
        }
        let had_addr = m.all_addrs().next().is_some();
        addrs.extend(m.all_addrs());
        if had_addr {
            success = true;
        } else if !m.has_cname() {
            try_again = true;
        }
    }
    if success {
        Outcome::Found(addrs)
    } else if try_again {
        Outcome::Failed
    } else {
        Outcome::NotFound
    }
}

/// `__res_context_query` for one candidate.
fn glibc_query(net: &mut Net, st: &mut GlibcState, name: &str, attempts: u8) -> GlibcQuery {
    let mut primary = rcode::NOERROR; // `hp->rcode = NOERROR; /* default */`
    let Some(replies) = glibc_send(net, st, name, attempts, &mut primary) else {
        return Err((Herrno::TryAgain, primary));
    };
    let ok = |m: &Msg| m.rcode == rcode::NOERROR && m.ancount() > 0;
    let hp = &replies[0];
    let hp2 = replies.get(1).unwrap_or(hp);
    if ok(hp) || ok(hp2) {
        return Ok(replies);
    }
    let rc = if hp.rcode == rcode::NOERROR { hp2.rcode } else { hp.rcode };
    let h = match rc {
        rcode::NXDOMAIN => Herrno::HostNotFound,
        rcode::SERVFAIL => Herrno::TryAgain,
        rcode::NOERROR => Herrno::NoData,
        _ => Herrno::NoRecovery,
    };
    Err((h, primary))
}

/// How one `send_dg` round ended.
enum Round {
    /// Return these replies (at least one).
    Done(Vec<Msg>),
    /// TC seen: ask both over TCP.
    Tcp,
    /// Nothing usable: next try.
    NextTry,
    /// Re-send within the same try (single-request switch).
    Again,
}

/// `__res_context_send`: `None` when it returns -1.
fn glibc_send(net: &mut Net, st: &mut GlibcState, name: &str, attempts: u8, primary: &mut u16) -> Option<Vec<Msg>> {
    for _try in 0..attempts {
        loop {
            match glibc_round(net, st, name, primary) {
                Round::Done(replies) => return Some(replies),
                Round::Tcp => return glibc_vc(net, name, primary),
                Round::NextTry => break,
                Round::Again => {}
            }
        }
    }
    None
}

/// `send_vc`: both queries over TCP, one try.
fn glibc_vc(net: &mut Net, name: &str, primary: &mut u16) -> Option<Vec<Msg>> {
    let a = net.send(name, rtype::A, true);
    let aaaa = net.send(name, rtype::AAAA, true);
    if let Some(a) = &a {
        *primary = a.rcode;
    }
    Some(vec![a?, aaaa?])
}

/// Reply bookkeeping of one `send_dg` round.
#[derive(Default)]
struct DgRound {
    /// `recvresp1`, `recvresp2`.
    recv: [bool; 2],
    /// Replies kept, in arrival order.
    kept: Vec<Msg>,
    /// The first reply of the round was kept (`resplen > 1`).
    first_kept: bool,
}

impl DgRound {
    /// Take reply `m` to query `i`; `Some` ends the round.
    fn take(&mut self, i: usize, m: Msg, primary: &mut u16) -> Option<Round> {
        let first = !self.recv[0] && !self.recv[1];
        if first {
            *primary = m.rcode; // received into the primary buffer
        }
        if is_server_failure(m.rcode) {
            if self.recv[0] || self.recv[1] {
                return Some(self.finish());
            }
            self.recv[i] = true;
            return None;
        }
        if m.tc {
            return Some(Round::Tcp);
        }
        self.recv[i] = true;
        self.first_kept |= first;
        self.kept.push(m);
        (self.recv[0] && self.recv[1]).then(|| self.finish())
    }

    fn finish(&mut self) -> Round {
        if self.kept.is_empty() { Round::NextTry } else { Round::Done(std::mem::take(&mut self.kept)) }
    }
}

/// One `send_dg` round (from `retry:` to a return or a `goto retry`).
fn glibc_round(net: &mut Net, st: &mut GlibcState, name: &str, primary: &mut u16) -> Round {
    let mut r = DgRound::default();
    if !st.single_request {
        let a = net.send(name, rtype::A, false);
        let aaaa = net.send(name, rtype::AAAA, false);
        for (i, reply) in [a, aaaa].into_iter().enumerate() {
            if let Some(m) = reply
                && let Some(end) = r.take(i, m, primary)
            {
                return end;
            }
        }
    } else {
        let Some(a) = net.send(name, rtype::A, false) else {
            return Round::NextTry;
        };
        if let Some(end) = r.take(0, a, primary) {
            return end;
        }
        if !r.first_kept {
            // A was dropped: AAAA is never sent and the try times out.
            return Round::NextTry;
        }
        if let Some(m) = net.send(name, rtype::AAAA, false)
            && let Some(end) = r.take(1, m, primary)
        {
            return end;
        }
    }
    // poll timed out
    if r.first_kept {
        if !st.single_request {
            st.single_request = true;
            return Round::Again;
        }
        if !st.single_request_reopen {
            st.single_request_reopen = true;
            return Round::Again;
        }
        return Round::Done(r.kept);
    }
    Round::NextTry
}

// ------------------------------------------------------------------------------------------
// musl

/// musl 1.2.3 (Debian bookworm's `musl` package), `getaddrinfo(AF_UNSPEC)`:
/// `src/network/lookup_name.c` `name_from_dns_search` → `name_from_dns` →
/// `src/network/res_msend.c` `__res_msend_rc`.
///
/// Candidates (`name_from_dns_search`): if dots ≥ ndots (capped at 15) or the name ends in a
/// dot, the name only; otherwise every search domain, then the bare name. Never absolute-first
/// with a search after it.
///
/// Per candidate A and AAAA go out together. `__res_msend_rc`: the unanswered queries are
/// (re)sent at the start of each of `attempts` rounds (the timeout split in `attempts`
/// intervals; capped at 10, at least 1 here). Only NOERROR and NXDOMAIN replies are accepted;
/// a SERVFAIL triggers an immediate re-send, at most `2 × 2` per round for both queries
/// together (`servfail_retry`), and is otherwise ignored like REFUSED and every other rcode.
/// So a query answered only with SERVFAIL/REFUSED ends as "no reply". No TC handling (TCP
/// fallback came in 1.2.4): a truncated reply is used as is.
///
/// Stop rule (`name_from_dns`), checking A's reply before AAAA's: no reply → EAI_AGAIN (ends
/// the walk); NXDOMAIN → next candidate (so A NXDOMAIN skips AAAA's state entirely); another
/// non-zero rcode → EAI_FAIL (unreachable: never accepted). Both NOERROR: every A and AAAA
/// record of both answer sections counts, whatever its owner; any → found, none (NODATA, or a
/// CNAME-only answer) → EAI_NONAME, which ends the walk. The last candidate's NXDOMAIN →
/// EAI_NONAME.
///
/// Outcome: EAI_NONAME → `NotFound`; EAI_AGAIN, EAI_FAIL → `Failed`.
fn musl(net: &mut Net, input: &Input, conf: &Conf) -> Outcome {
    let ndots = usize::from(conf.ndots.min(15));
    let attempts = conf.attempts.clamp(1, 10);
    let mut candidates = if input.dots >= ndots || input.rooted { Vec::new() } else { input.searched(conf) };
    candidates.push(input.bare());
    for name in candidates {
        if let Some(outcome) = musl_name(net, &name, attempts) {
            return outcome;
        }
    }
    Outcome::NotFound
}

/// `name_from_dns`: `None` means NXDOMAIN (return 0, try the next candidate).
fn musl_name(net: &mut Net, name: &str, attempts: u8) -> Option<Outcome> {
    let replies = musl_msend(net, name, attempts);
    for reply in &replies {
        match reply {
            None => return Some(Outcome::Failed),
            Some(m) if m.rcode == rcode::NXDOMAIN => return None,
            Some(m) if m.rcode != rcode::NOERROR => return Some(Outcome::Failed),
            Some(_) => {}
        }
    }
    let addrs: BTreeSet<IpAddr> = replies.iter().flatten().flat_map(Msg::all_addrs).collect();
    Some(if addrs.is_empty() { Outcome::NotFound } else { Outcome::Found(addrs) })
}

/// `__res_msend_rc` with one nameserver: the accepted reply per query (A, AAAA).
fn musl_msend(net: &mut Net, name: &str, attempts: u8) -> [Option<Msg>; 2] {
    const TYPES: [u16; 2] = [rtype::A, rtype::AAAA];
    let mut answers: [Option<Msg>; 2] = [None, None];
    for _round in 0..attempts {
        let mut servfail_retry = 2 * TYPES.len();
        let mut pending = VecDeque::new();
        for (i, qtype) in TYPES.into_iter().enumerate() {
            if answers[i].is_none() {
                pending.push_back((i, net.send(name, qtype, false)));
            }
        }
        while let Some((i, reply)) = pending.pop_front() {
            let Some(m) = reply else { continue };
            if answers[i].is_some() {
                continue;
            }
            match m.rcode {
                rcode::NOERROR | rcode::NXDOMAIN => {
                    answers[i] = Some(m);
                    if answers.iter().all(Option::is_some) {
                        return answers;
                    }
                }
                rcode::SERVFAIL if servfail_retry > 0 => {
                    servfail_retry -= 1;
                    pending.push_back((i, net.send(name, TYPES[i], false)));
                }
                _ => {}
            }
        }
    }
    answers
}

// ------------------------------------------------------------------------------------------
// c-ares >= 1.16

/// c-ares statuses the models use.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ares {
    Success(Msg),
    NoData,
    NotFound,
    ServFail,
    Refused,
    NotImp,
    FormErr,
    Timeout,
    /// ARES_ECONNREFUSED: c-ares 1.13's `error_status` when every try was a dropped reply.
    ConnRefused,
    /// Any other rcode.
    Other,
}

/// rcode → status of an accepted reply (c-ares `ares_query` callback,
/// `ares_dns_query_reply_tostatus`; 1.13 `qcallback`).
fn ares_status(m: Msg) -> Ares {
    match m.rcode {
        rcode::NOERROR if m.ancount() > 0 => Ares::Success(m),
        rcode::NOERROR => Ares::NoData,
        rcode::NXDOMAIN => Ares::NotFound,
        rcode::SERVFAIL => Ares::ServFail,
        rcode::REFUSED => Ares::Refused,
        rcode::NOTIMP => Ares::NotImp,
        rcode::FORMERR => Ares::FormErr,
        _ => Ares::Other,
    }
}

/// One `ares_query` of c-ares 1.34: `src/lib/ares_process.c` `read_answers`/`process_answer`
/// and `ares_requeue_query`.
struct CaresQuery {
    qtype: u16,
    using_tcp: bool,
    try_count: u8,
    error: Ares,
    /// Set by `terminate_retries` once the other query found IPv4 addresses.
    no_retries: bool,
    done: bool,
}

impl CaresQuery {
    fn new(qtype: u16) -> Self {
        CaresQuery { qtype, using_tcp: false, try_count: 0, error: Ares::Timeout, no_retries: false, done: false }
    }

    /// One try; `Some` when the query ended.
    fn step(&mut self, net: &mut Net, name: &str, tries: u8) -> Option<Ares> {
        loop {
            let reply = net.send(name, self.qtype, self.using_tcp);
            self.error = match reply {
                None => Ares::Timeout,
                Some(m) if m.tc && !self.using_tcp => {
                    // "switch the query to TCP": requeued without counting a try
                    self.using_tcp = true;
                    continue;
                }
                Some(m) if m.rcode == rcode::SERVFAIL => Ares::ServFail,
                Some(m) if m.rcode == rcode::NOTIMP => Ares::NotImp,
                Some(m) if m.rcode == rcode::REFUSED => Ares::Refused,
                Some(m) => {
                    self.done = true;
                    return Some(ares_status(m));
                }
            };
            self.try_count += 1;
            if self.try_count < tries && !self.no_retries {
                return None;
            }
            self.done = true;
            return Some(self.error.clone());
        }
    }
}

/// c-ares ≥ 1.16 `ares_getaddrinfo(AF_UNSPEC)`, modelled on c-ares 1.34.5 (the 1.34 series is
/// what pycares 5 bundles): `src/lib/ares_getaddrinfo.c` `ares_getaddrinfo_int` /
/// `next_lookup` / `next_dns_lookup` / `host_callback` / `terminate_retries`,
/// `src/lib/ares_search.c` `ares_search_name_list`, `src/lib/ares_process.c`
/// `process_answer` / `ares_requeue_query`, `src/lib/ares_addrinfo_localhost.c` not modelled.
///
/// Candidates (`ares_search_name_list`): a trailing dot → the name only; dots ≥ ndots → the
/// name as is, then every search domain; otherwise every search domain, then the name.
///
/// Per candidate A and AAAA in parallel. Each query makes up to `attempts` tries (at least 1
/// here): a timeout, SERVFAIL, NOTIMP or REFUSED counts a try and retries, ending with that
/// error (ETIMEOUT, ESERVFAIL, ENOTIMP, EREFUSED) when tries are spent. TC on UDP switches the
/// query to TCP for its remaining tries without counting one. Once one query has returned
/// IPv4 addresses, the other is not retried any more (`terminate_retries`).
///
/// Stop rule (`host_callback`, decided when the *second* query completes, from that query's
/// status): any address collected (every A and AAAA record of the answer sections, whatever
/// the owner, `ares_parse_into_addrinfo`) → success. The last status ENOTFOUND or ENODATA, or
/// an answer with no address (a CNAME-only answer is ENODATA) → next candidate. ESERVFAIL or
/// EREFUSED on a single-label candidate (c-ares issue #852, systemd-resolved; a rooted
/// `db.` counts two labels) → next candidate. Anything else (ETIMEOUT, ESERVFAIL on a
/// multi-label name, …) ends the lookup with that status. After the last candidate the status
/// is ENODATA if any candidate gave NODATA, else the last status.
///
/// Outcome: ENOTFOUND, ENODATA → `NotFound`; every other error → `Failed`.
///
/// Uncertain: which query completes last decides; the model completes A before AAAA when both
/// need the same number of tries (the lab's "A NXDOMAIN, AAAA SERVFAIL → failure" agrees).
fn cares(net: &mut Net, input: &Input, conf: &Conf) -> Outcome {
    let tries = conf.attempts.max(1);
    let candidates = if input.rooted {
        vec![input.bare()]
    } else {
        let mut v = Vec::new();
        let as_is_first = input.dots >= usize::from(conf.ndots);
        if as_is_first {
            v.push(input.bare());
        }
        v.extend(input.searched(conf));
        if !as_is_first {
            v.push(input.bare());
        }
        v
    };
    let mut nodata_cnt = 0;
    let mut status = Ares::ConnRefused;
    for name in &candidates {
        // the name as c-ares holds it: rooted input keeps its dot, the others have none
        let label_cnt = if input.rooted { name.matches('.').count() + 1 } else { name.matches('.').count() };
        let mut nodes = BTreeSet::new();
        let mut queries = [CaresQuery::new(rtype::A), CaresQuery::new(rtype::AAAA)];
        let mut remaining = 2;
        let last = 'rounds: loop {
            for i in 0..2 {
                if queries[i].done {
                    continue;
                }
                let Some(st) = queries[i].step(net, name, tries) else { continue };
                remaining -= 1;
                let mut addinfo_nodata = false;
                if let Ares::Success(m) = &st {
                    if m.all_addrs().next().is_none() {
                        addinfo_nodata = true; // CNAME only, or no address record
                    } else {
                        nodes.extend(m.all_addrs());
                        if nodes.iter().any(IpAddr::is_ipv4) {
                            queries[1 - i].no_retries = true;
                        }
                    }
                }
                if remaining == 0 {
                    break 'rounds (st, addinfo_nodata);
                }
            }
        };
        if !nodes.is_empty() {
            return Outcome::Found(nodes);
        }
        let (st, addinfo_nodata) = last;
        let goes_on = matches!(st, Ares::NotFound | Ares::NoData)
            || addinfo_nodata
            || (matches!(st, Ares::ServFail | Ares::Refused) && label_cnt == 1);
        if !goes_on {
            return Outcome::Failed;
        }
        if st == Ares::NoData || addinfo_nodata {
            nodata_cnt += 1;
        }
        status = if nodata_cnt > 0 { Ares::NoData } else { st };
    }
    match status {
        Ares::NotFound | Ares::NoData => Outcome::NotFound,
        _ => Outcome::Failed,
    }
}

// ------------------------------------------------------------------------------------------
// c-ares < 1.16

/// One `ares_query` of c-ares 1.13 with one server (`ares_process.c` `process_answer`,
/// `next_server`, `process_timeouts`; `ares_query.c` `qcallback`).
fn cares_old_query(net: &mut Net, name: &str, qtype: u16, tries: u8) -> Ares {
    let mut error = Ares::ConnRefused; // `query->error_status = ARES_ECONNREFUSED` (ares_send.c)
    let mut using_tcp = false;
    let mut try_count = 0;
    loop {
        match net.send(name, qtype, using_tcp) {
            None => error = Ares::Timeout,
            Some(m) if m.tc && !using_tcp => {
                using_tcp = true;
                continue;
            }
            Some(m) if is_server_failure(m.rcode) => {}
            Some(m) => return ares_status(m),
        }
        // next_server: with one server a TCP query is never re-sent on the same connection
        try_count += 1;
        if using_tcp || try_count >= tries {
            return error;
        }
    }
}

/// `ares_search` (1.13 `ares_search.c` `ares_search` / `search_callback`).
fn cares_old_search(net: &mut Net, input: &Input, conf: &Conf, qtype: u16, tries: u8) -> (Ares, String) {
    let searched = input.searched(conf);
    if input.rooted || searched.is_empty() {
        let name = input.bare();
        return (cares_old_query(net, &name, qtype, tries), name);
    }
    let as_is_first = input.dots >= usize::from(conf.ndots);
    let mut order: Vec<(String, bool)> = searched.into_iter().map(|n| (n, false)).collect();
    if as_is_first {
        order.insert(0, (input.bare(), true));
    } else {
        order.push((input.bare(), true));
    }
    let mut status_as_is = Ares::ConnRefused;
    let mut ever_got_nodata = false;
    for (name, as_is) in order {
        let st = cares_old_query(net, &name, qtype, tries);
        if !matches!(st, Ares::NoData | Ares::ServFail | Ares::NotFound) {
            return (st, name);
        }
        ever_got_nodata |= st == Ares::NoData;
        if as_is {
            status_as_is = st;
        }
    }
    let end = if status_as_is == Ares::NotFound && ever_got_nodata { Ares::NoData } else { status_as_is };
    (end, input.bare())
}

/// 1.13 `ares_parse_a_reply` / `ares_parse_aaaa_reply`: records of the type whose owner is
/// the current host name, which starts as the question and becomes the target of every CNAME
/// met, in answer order (the CNAME's own owner is not checked). `None`: ENODATA (no address
/// and no CNAME).
fn cares_old_parse(m: &Msg, qname: &str, qtype: u16) -> Option<BTreeSet<IpAddr>> {
    let mut hostname = absolute(qname);
    let mut addrs = BTreeSet::new();
    let mut aliases = 0;
    for r in &m.answers {
        if r.rtype == qtype
            && same_name(&r.owner, &hostname)
            && let Some(ip) = ip_of(r)
        {
            addrs.insert(ip);
        }
        if let Some(target) = cname_target(r) {
            aliases += 1;
            hostname = target;
        }
    }
    (!addrs.is_empty() || aliases > 0).then_some(addrs)
}

/// c-ares < 1.16 `ares_gethostbyname(AF_UNSPEC)`, modelled on c-ares 1.13.0 (RHEL 8; source
/// in pycares 2.4.0's `deps/c-ares/src`): `ares_gethostbyname.c` `next_lookup` /
/// `host_callback`, `ares_search.c` `ares_search` / `search_callback`, `ares_query.c`
/// `qcallback`, `ares_process.c` `process_answer` / `next_server`,
/// `ares_parse_a_reply.c` / `ares_parse_aaaa_reply.c`.
///
/// First a whole AAAA search walk, then — only if it ended in ENODATA or ETIMEOUT (or
/// EBADRESP), or in success without an AAAA address (a CNAME-only answer) — a whole A walk
/// from the first candidate. The walk's other endings (ENOTFOUND everywhere, ECONNREFUSED)
/// end the lookup without asking A.
///
/// Candidates (`ares_search`): a trailing dot or no search list → the name only; dots ≥ ndots
/// → the name as is, then every search domain; otherwise every search domain, then the name.
///
/// Per query (`attempts` tries, at least 1 here; c-ares' own default without the option is
/// 4): a timeout counts a try (error ETIMEOUT). SERVFAIL, NOTIMP and REFUSED are dropped and
/// the query re-sent (`skip_server` does not skip the only server), ending after the tries
/// with `error_status`: ECONNREFUSED — its initial value — unless a try timed out (ETIMEOUT).
/// ESERVFAIL is never reported (only with `ARES_FLAG_NOCHECKRESP`). TC on UDP → the query
/// moves to TCP without counting a try; over TCP a failed try ends the query (`next_server`
/// will not re-send on the same connection).
///
/// Stop rule (`search_callback`): ENODATA, ESERVFAIL and ENOTFOUND go on; anything else ends
/// the walk — success (ANCOUNT > 0, a CNAME-only answer included), ECONNREFUSED (a SERVFAIL or
/// REFUSED candidate!), ETIMEOUT. At the end, the as-is attempt's status, ENODATA instead of
/// ENOTFOUND when some candidate gave NODATA.
///
/// Outcome: AAAA addresses found → `Found` with *only* those (the A walk never runs), else the
/// A walk's addresses (owner on the CNAME chain from the question name, in answer order). A
/// final success without addresses (CNAME-only) → `NotFound` (the callback gets ARES_SUCCESS
/// with an empty address list). ENOTFOUND, ENODATA → `NotFound`; others → `Failed`.
fn cares_old(net: &mut Net, input: &Input, conf: &Conf) -> Outcome {
    let tries = conf.attempts.max(1);
    let (aaaa, qname) = cares_old_search(net, input, conf, rtype::AAAA, tries);
    let go_to_a = match &aaaa {
        Ares::Success(m) => match cares_old_parse(m, &qname, rtype::AAAA) {
            Some(addrs) if !addrs.is_empty() => return Outcome::Found(addrs),
            _ => true,
        },
        Ares::NoData | Ares::Timeout => true,
        _ => false,
    };
    let status = if go_to_a { cares_old_search(net, input, conf, rtype::A, tries) } else { (aaaa, qname) };
    match status {
        (Ares::Success(m), qname) => match cares_old_parse(&m, &qname, rtype::A) {
            Some(addrs) if !addrs.is_empty() => Outcome::Found(addrs),
            _ => Outcome::NotFound,
        },
        (Ares::NotFound | Ares::NoData, _) => Outcome::NotFound,
        _ => Outcome::Failed,
    }
}

// ------------------------------------------------------------------------------------------
// Go

/// Errors of Go's `tryOneName`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GoErr {
    /// `errNoSuchHost`: NXDOMAIN, or no record of the type (NODATA, CNAME only).
    NoSuchHost,
    /// Timeout, SERVFAIL (`errServerTemporarilyMisbehaving`), other rcodes
    /// (`errServerMisbehaving`).
    Temporary,
}

/// One `tryOneName` in steps of one attempt (`exchange`: UDP, and TCP on TC).
struct GoQuery {
    qtype: u16,
    attempt: u8,
    last_err: GoErr,
    done: bool,
}

impl GoQuery {
    fn step(&mut self, net: &mut Net, name: &str, attempts: u8) -> Option<Result<Msg, GoErr>> {
        self.attempt += 1;
        let result = self.attempt_once(net, name);
        if let Some(r) = result {
            self.done = true;
            return Some(r);
        }
        if self.attempt >= attempts {
            self.done = true;
            return Some(Err(self.last_err.clone()));
        }
        None
    }

    /// `None`: this attempt failed, retry.
    fn attempt_once(&mut self, net: &mut Net, name: &str) -> Option<Result<Msg, GoErr>> {
        let mut reply = net.send(name, self.qtype, false);
        if reply.as_ref().is_some_and(|m| m.tc) {
            reply = net.send(name, self.qtype, true);
        }
        let Some(m) = reply else {
            self.last_err = GoErr::Temporary;
            return None;
        };
        // checkHeader
        if m.rcode == rcode::NXDOMAIN {
            return Some(Err(GoErr::NoSuchHost));
        }
        if m.rcode != rcode::NOERROR {
            self.last_err = GoErr::Temporary;
            return None;
        }
        // skipToAnswer
        if !m.answers.iter().any(|r| r.rtype == self.qtype) {
            return Some(Err(GoErr::NoSuchHost));
        }
        Some(Ok(m))
    }
}

/// Go's pure-Go resolver, `net.LookupIP` / `LookupHost` (`GODEBUG=netdns=go`), from Go's
/// `src/net/dnsclient_unix.go` (master as of 2026): `goLookupIPCNAME` (called by
/// `goLookupIPCNAMEOrder`), `tryOneName`, `exchange`, `checkHeader`, `skipToAnswer`,
/// `dnsConfig.nameList`; `src/net/dnsconfig_unix.go` `dnsReadConfig` (ndots default 1,
/// attempts default 2).
///
/// Candidates (`nameList`): a trailing dot → the name only; dots ≥ ndots → the name, then
/// every search domain; otherwise every search domain, then the name.
///
/// Per candidate A and AAAA in parallel, each `tryOneName`: `attempts` attempts (at least 1);
/// an attempt is a UDP exchange, repeated over TCP when the reply has TC (a TCP reply with TC
/// is used). NXDOMAIN → "no such host" at once (no retry); SERVFAIL and other rcodes, and
/// timeouts, → next attempt; NOERROR without a record of the asked type (NODATA, CNAME only)
/// → "no such host" at once.
///
/// Stop rule: the walk goes on after *any* error (`StrictErrors` is off by default) and stops
/// at the first candidate that yields an address: every A and AAAA record from the first
/// record of the asked type on (whatever the owner; records before it are skipped by
/// `skipToAnswer`). The error reported: the first one met, replaced by the bare name's errors
/// (the later of its two wins).
///
/// Outcome: addresses → `Found`; "no such host" → `NotFound`; timeouts and server failures →
/// `Failed`.
fn go(net: &mut Net, input: &Input, conf: &Conf) -> Outcome {
    let attempts = conf.attempts.max(1);
    let candidates = if input.rooted {
        vec![input.bare()]
    } else {
        let has_ndots = input.dots >= usize::from(conf.ndots);
        let mut v = Vec::new();
        if has_ndots {
            v.push(input.bare());
        }
        v.extend(input.searched(conf).into_iter().filter(|n| n.len() <= 254));
        if !has_ndots {
            v.push(input.bare());
        }
        v
    };
    let mut last_err: Option<GoErr> = None;
    for name in &candidates {
        let is_original = !input.rooted && *name == input.bare();
        let mut queries =
            [rtype::A, rtype::AAAA].map(|qtype| GoQuery { qtype, attempt: 0, last_err: GoErr::Temporary, done: false });
        let mut results = Vec::new();
        while results.len() < 2 {
            for q in queries.iter_mut().filter(|q| !q.done) {
                if let Some(r) = q.step(net, name, attempts) {
                    results.push((q.qtype, r));
                }
            }
        }
        let mut addrs = BTreeSet::new();
        for (qtype, result) in results {
            match result {
                Err(e) => {
                    if last_err.is_none() || is_original {
                        last_err = Some(e);
                    }
                }
                Ok(m) => {
                    let first = m.answers.iter().position(|r| r.rtype == qtype).unwrap_or(0);
                    addrs.extend(m.answers[first..].iter().filter_map(ip_of));
                }
            }
        }
        if !addrs.is_empty() {
            return Outcome::Found(addrs);
        }
    }
    match last_err {
        Some(GoErr::Temporary) => Outcome::Failed,
        Some(GoErr::NoSuchHost) | None => Outcome::NotFound,
    }
}

// ------------------------------------------------------------------------------------------
// hickory

/// hickory's error classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HickoryErr {
    /// `NoRecordsFound` (NXDOMAIN, NODATA): never retried.
    NoRecords,
    /// Timeout, `ResponseCode` (SERVFAIL, REFUSED, ...): retried.
    Other,
}

/// One `CachingClient::lookup` (a query plus CNAME follow-ups), stepped one pool try at a
/// time.
struct HickoryLookup {
    qtype: u16,
    /// The name of the current hop.
    name: String,
    depth: u8,
    /// CNAMEs were kept from earlier hops (`preserve_intermediates`, default true).
    preserved: bool,
    /// `RetryDnsHandle::remaining_attempts` of the current hop.
    remaining: u8,
    result: Option<Result<BTreeSet<IpAddr>, HickoryErr>>,
}

impl HickoryLookup {
    fn new(name: &str, qtype: u16, attempts: u8) -> Self {
        HickoryLookup { qtype, name: name.to_string(), depth: 0, preserved: false, remaining: attempts, result: None }
    }

    /// One `NameServerPool` try of the current hop.
    fn step(&mut self, net: &mut Net, attempts: u8) {
        let reply = hickory_pool_try(net, &self.name, self.qtype);
        match reply {
            Err(HickoryErr::NoRecords) => self.result = Some(Err(HickoryErr::NoRecords)),
            Err(e) => {
                if self.remaining == 0 {
                    self.result = Some(Err(e));
                } else {
                    self.remaining -= 1;
                }
            }
            Ok(m) => self.handle_noerror(&m, attempts),
        }
    }

    /// `CachingClient::handle_noerror`.
    fn handle_noerror(&mut self, m: &Msg, attempts: u8) {
        let qname = absolute(&self.name);
        let mut search_name = qname.clone();
        let mut was_cname = false;
        for r in &m.answers {
            if let Some(target) = cname_target(r)
                && same_name(&r.owner, &search_name)
            {
                search_name = target;
                was_cname = true;
            }
        }
        let matches =
            |r: &Record| r.rtype == self.qtype && (same_name(&r.owner, &search_name) || same_name(&r.owner, &qname));
        let found = m.answers.iter().any(matches);
        if found && (!was_cname || !self.preserved) {
            let addrs = if self.preserved {
                m.answers.iter().filter(|r| matches(r)).filter_map(ip_of).collect()
            } else {
                m.all_addrs().collect()
            };
            self.result = Some(Ok(addrs));
            return;
        }
        self.preserved |= m.has_cname();
        // DepthTracker: MAX_QUERY_DEPTH 8, exhausted when depth + 1 >= 8
        if was_cname && self.depth + 1 < 8 {
            self.depth += 1;
            self.name = search_name;
            self.remaining = attempts;
        } else {
            self.result = Some(Err(HickoryErr::NoRecords));
        }
    }
}

/// One `NameServerPool::try_send` to the single server: UDP (retransmitted up to 3 copies
/// while silent), then TCP if the reply is truncated.
fn hickory_pool_try(net: &mut Net, name: &str, qtype: u16) -> Result<Msg, HickoryErr> {
    let mut reply = None;
    for _copy in 0..3 {
        reply = net.send(name, qtype, false);
        if reply.is_some() {
            break;
        }
    }
    let m = hickory_classify(reply)?;
    if !m.tc {
        return Ok(m);
    }
    let m = hickory_classify(net.send(name, qtype, true))?;
    if m.tc {
        // the pool would re-send over TCP until its deadline
        return Err(HickoryErr::Other);
    }
    Ok(m)
}

/// `DnsError::from_response` on a reply.
fn hickory_classify(reply: Option<Msg>) -> Result<Msg, HickoryErr> {
    let m = reply.ok_or(HickoryErr::Other)?;
    match m.rcode {
        rcode::NOERROR | rcode::NXDOMAIN if m.answers.is_empty() && !m.tc => Err(HickoryErr::NoRecords),
        rcode::NOERROR | rcode::NXDOMAIN => Ok(m),
        _ => Err(HickoryErr::Other),
    }
}

/// hickory-resolver 0.26.3 `Resolver::lookup_ip` with the system configuration
/// (`TokioResolver::builder_tokio()`, as the lab client does): `src/resolver.rs`
/// `lookup_ip` / `build_names`, `src/lookup_ip.rs` `LookupIpFuture::poll` / `multi_lookup`
/// (`LookupIpStrategy::Ipv6AndIpv4`, the default), `src/caching_client.rs` `inner_lookup` /
/// `handle_noerror`, `src/name_server_pool.rs` `try_send`, `src/name_server.rs` `send_inner`;
/// hickory-net 0.26.3 `src/xfer/retry_dns_handle.rs`, `src/udp/udp_client_stream.rs` `retry`,
/// `src/error.rs` `DnsError::from_response`; `src/system_conf/unix.rs` (attempts and ndots
/// from resolv.conf).
///
/// Candidates (`build_names`, a stack): a trailing dot → the name only; more labels than
/// ndots (dots ≥ ndots) → the name, then every search domain; otherwise every search domain,
/// then the name. The model has no `domain` (hickory takes it from the host name's domain
/// when resolv.conf has no `domain` line, and tries it before the search list).
///
/// Per candidate AAAA and A in parallel (`join`); each is a `CachingClient` lookup. A reply
/// is classified by `from_response`: SERVFAIL, REFUSED and other rcodes are errors;
/// NOERROR/NXDOMAIN without answers (and no TC) is `NoRecordsFound`; otherwise it is a
/// response. Errors other than `NoRecordsFound` are retried `attempts` more times
/// (`RetryDnsHandle`: `attempts + 1` tries). Within a try, UDP is retransmitted while silent
/// (`retry`: up to 3 copies, 1.2 × SRTT apart with a 333 ms floor, so within the 5 s
/// timeout), and a truncated reply is asked again over TCP (TC on the TCP reply: the pool
/// keeps re-sending until its deadline; modelled as a failed try).
///
/// `handle_noerror`: the CNAMEs whose owner is the current chain name are followed, in
/// answer order. If a record of the asked type is owned by the chain's end or by the query
/// name, that is the answer: every A/AAAA record of the answer section (first hop) or only
/// those matching records (after a follow-up). Otherwise, if there was a CNAME, hickory asks
/// for the chain's end itself (a new query, up to 8 hops in all); else `NoRecordsFound`.
///
/// Stop rule (`LookupIpFuture::poll`): a candidate with any address ends the walk (one family
/// failing does not matter); both failing → next candidate, keeping the AAAA lookup's error.
///
/// Outcome: addresses → `Found`; `NoRecordsFound` → `NotFound`; other errors → `Failed`.
///
/// Not modelled: the response cache (a CNAME follow-up to a name asked earlier in the walk
/// could be served from it; negative answers without SOA get TTL 0 and are not cached).
fn hickory(net: &mut Net, input: &Input, conf: &Conf) -> Outcome {
    let attempts = conf.attempts;
    let candidates = if input.rooted {
        vec![input.bare()]
    } else {
        let raw_first = input.dots >= usize::from(conf.ndots);
        let mut v: Vec<String> = Vec::new();
        if raw_first {
            v.push(input.bare());
        }
        for name in input.searched(conf) {
            if !v.contains(&name) {
                v.push(name);
            }
        }
        if !raw_first {
            v.push(input.bare());
        }
        v
    };
    let mut last = HickoryErr::NoRecords;
    for name in &candidates {
        let mut lookups =
            [HickoryLookup::new(name, rtype::AAAA, attempts), HickoryLookup::new(name, rtype::A, attempts)];
        while lookups.iter().any(|l| l.result.is_none()) {
            for l in lookups.iter_mut().filter(|l| l.result.is_none()) {
                l.step(net, attempts);
            }
        }
        let [aaaa, a] = lookups.map(|l| l.result.unwrap_or(Err(HickoryErr::Other)));
        let addrs: BTreeSet<IpAddr> =
            [&aaaa, &a].into_iter().filter_map(|r| r.as_ref().ok()).flatten().copied().collect();
        if !addrs.is_empty() {
            return Outcome::Found(addrs);
        }
        last = match (aaaa, a) {
            (Err(e), Err(_)) => e,
            // an empty successful lookup: retried with the next name, and returned if last
            _ => HickoryErr::NoRecords,
        };
    }
    match last {
        HickoryErr::NoRecords => Outcome::NotFound,
        HickoryErr::Other => Outcome::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u16 = rtype::A;
    const AAAA: u16 = rtype::AAAA;

    /// An upstream: replies per (name, type, transport), NXDOMAIN for anything not listed.
    #[derive(Default)]
    struct Zone(Vec<(String, u16, Option<bool>, Reply)>);

    impl Zone {
        fn set(mut self, name: &str, qtype: u16, reply: Reply) -> Self {
            self.0.push((name.to_string(), qtype, None, reply));
            self
        }
        fn on(mut self, name: &str, qtype: u16, tcp: bool, reply: Reply) -> Self {
            self.0.push((name.to_string(), qtype, Some(tcp), reply));
            self
        }
        /// The same reply for A and AAAA.
        fn both(self, name: &str, reply: Reply) -> Self {
            self.set(name, A, reply.clone()).set(name, AAAA, reply)
        }
        /// A host with one address of each family.
        fn host(self, name: &str, v4: &str, v6: &str) -> Self {
            self.set(name, A, data(&[rec(name, v4)])).set(name, AAAA, data(&[rec(name, v6)]))
        }
        fn reply(&self, q: &Query) -> Reply {
            self.0
                .iter()
                .rev()
                .find(|(n, t, tcp, _)| *n == q.name && *t == q.qtype && tcp.is_none_or(|tcp| tcp == q.tcp))
                .map_or_else(|| Reply::rcode(rcode::NXDOMAIN), |e| e.3.clone())
        }
    }

    fn rec(owner: &str, ip: &str) -> Record {
        Record::addr(owner, ip.parse().unwrap())
    }
    fn data(recs: &[Record]) -> Reply {
        Reply::answer(recs.to_vec())
    }
    fn nodata() -> Reply {
        Reply::answer(Vec::new())
    }
    fn servfail() -> Reply {
        Reply::rcode(rcode::SERVFAIL)
    }
    fn truncated(recs: &[Record]) -> Reply {
        Reply::Msg { rcode: rcode::NOERROR, tc: true, answers: recs.to_vec() }
    }
    fn found(ips: &[&str]) -> Outcome {
        Outcome::Found(ips.iter().map(|s| s.parse().unwrap()).collect())
    }

    /// kubelet's ClusterFirst list plus a node domain.
    fn k8s() -> Conf {
        Conf {
            search: ["default.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"]
                .map(String::from)
                .to_vec(),
            ndots: 5,
            attempts: 2,
        }
    }

    fn run(stub: Stub, name: &str, conf: &Conf, zone: &Zone) -> Walk {
        walk(stub, name, conf, &mut |q| zone.reply(q))
    }

    fn names(w: &Walk) -> Vec<&str> {
        w.queries.iter().map(|q| q.name.as_str()).collect()
    }

    /// Runs every stub and checks its outcome (and query count where given).
    fn check(name: &str, conf: &Conf, zone: &Zone, expect: &[(Stub, Outcome, Option<usize>)]) {
        for (stub, outcome, count) in expect {
            let w = run(*stub, name, conf, zone);
            assert_eq!(&w.outcome, outcome, "{} outcome; queries {:?}", stub.name(), w.queries);
            if let Some(n) = count {
                assert_eq!(w.queries.len(), *n, "{} query count: {:?}", stub.name(), w.queries);
            }
        }
    }

    #[test]
    fn stub_names_round_trip() {
        for s in Stub::ALL {
            assert_eq!(Stub::parse(s.name()), Some(s));
        }
        assert_eq!(Stub::parse("cares-old"), Some(Stub::CaresOld));
        assert_eq!(Stub::parse("bind"), None);
    }

    #[test]
    fn ip_literal_asks_nothing() {
        for s in Stub::ALL {
            let w = run(s, "10.0.0.1", &k8s(), &Zone::default());
            assert_eq!(w.outcome, found(&["10.0.0.1"]), "{}", s.name());
            assert!(w.queries.is_empty());
        }
    }

    /// Issue 10, case 1: a node search domain answers NODATA for everything.
    #[test]
    fn nodata_candidate_glibc_skips_musl_stops() {
        let zone = Zone::default().both("pypi.org.corp.example.", nodata()).host("pypi.org.", "198.19.1.1", "fd00::1");
        let both = found(&["198.19.1.1", "fd00::1"]);
        check(
            "pypi.org",
            &k8s(),
            &zone,
            &[
                (Stub::Glibc, both.clone(), Some(10)),
                (Stub::Musl, Outcome::NotFound, Some(8)),
                (Stub::Cares, both.clone(), Some(10)),
                // AAAA walk only: it found an AAAA, so A is never asked
                (Stub::CaresOld, found(&["fd00::1"]), Some(5)),
                (Stub::Go, both.clone(), Some(10)),
                (Stub::Hickory, both, Some(10)),
            ],
        );
        let w = run(Stub::Glibc, "pypi.org", &k8s(), &zone);
        assert_eq!(w.queries[0], Query { name: "pypi.org.default.svc.cluster.local.".into(), qtype: A, tcp: false });
        assert_eq!(names(&w)[8], "pypi.org.");
    }

    /// An answer with ANCOUNT > 0 ends glibc's walk even when it is only a CNAME.
    #[test]
    fn cname_only_answer() {
        let first = "pypi.org.default.svc.cluster.local.";
        let zone = Zone::default().both(first, data(&[Record::cname(first, "pypi.org.corp.example.")])).host(
            "pypi.org.",
            "198.19.1.1",
            "fd00::1",
        );
        let both = found(&["198.19.1.1", "fd00::1"]);
        check(
            "pypi.org",
            &k8s(),
            &zone,
            &[
                (Stub::Glibc, Outcome::NotFound, Some(2)),
                (Stub::Musl, Outcome::NotFound, Some(2)),
                (Stub::Cares, both.clone(), Some(10)),
                // the CNAME answer ends both walks; A's success has no address
                (Stub::CaresOld, Outcome::NotFound, Some(2)),
                (Stub::Go, both.clone(), Some(10)),
                // follows the CNAME itself (NXDOMAIN), then walks on
                (Stub::Hickory, both, Some(12)),
            ],
        );
        let w = run(Stub::Hickory, "pypi.org", &k8s(), &zone);
        assert!(w.queries.iter().any(|q| q.name == "pypi.org.corp.example." && q.qtype == AAAA));
    }

    /// hickory asks for a CNAME's target when the answer stops at the alias.
    #[test]
    fn hickory_follows_cname_to_its_target() {
        let zone = Zone::default().both("www.example.", data(&[Record::cname("www.example.", "cdn.example.")])).host(
            "cdn.example.",
            "198.19.2.2",
            "fd00::2",
        );
        let w = run(Stub::Hickory, "www.example.", &Conf::default(), &zone);
        assert_eq!(w.outcome, found(&["198.19.2.2", "fd00::2"]));
        assert_eq!(names(&w), ["www.example.", "www.example.", "cdn.example.", "cdn.example."]);
        assert_eq!(run(Stub::Glibc, "www.example.", &Conf::default(), &zone).outcome, Outcome::NotFound);
    }

    /// Issue 10, case 2 (pgbouncer on c-ares 1.13): the AAAA walk reaches the bare name,
    /// which the node resolver SERVFAILs, and the A of the first candidate is never asked.
    #[test]
    fn cares_old_aaaa_walk_ends_in_servfail() {
        let conf = Conf { search: k8s().search[..3].to_vec(), ..k8s() };
        let svc = "postgresql-primary.default.svc.cluster.local.";
        let zone = Zone::default()
            .set(svc, A, data(&[rec(svc, "10.96.0.7")]))
            .set(svc, AAAA, nodata())
            .both("postgresql-primary.", servfail());
        let v4 = found(&["10.96.0.7"]);
        check(
            "postgresql-primary",
            &conf,
            &zone,
            &[
                (Stub::CaresOld, Outcome::Failed, Some(5)),
                (Stub::Glibc, v4.clone(), Some(2)),
                (Stub::Musl, v4.clone(), Some(2)),
                (Stub::Cares, v4.clone(), Some(2)),
                (Stub::Go, v4.clone(), Some(2)),
                (Stub::Hickory, v4, Some(2)),
            ],
        );
        let w = run(Stub::CaresOld, "postgresql-primary", &conf, &zone);
        assert!(w.queries.iter().all(|q| q.qtype == AAAA), "{:?}", w.queries);
        assert_eq!(names(&w)[3..], ["postgresql-primary.", "postgresql-primary."]);
    }

    /// A SERVFAIL in the middle of the search list.
    #[test]
    fn servfail_on_middle_candidate() {
        let zone =
            Zone::default().both("pypi.org.svc.cluster.local.", servfail()).host("pypi.org.", "198.19.1.1", "fd00::1");
        let both = found(&["198.19.1.1", "fd00::1"]);
        check(
            "pypi.org",
            &k8s(),
            &zone,
            &[
                // dropped SERVFAILs: the pair is sent `attempts` times, then the walk goes on
                (Stub::Glibc, both.clone(), Some(2 + 4 + 2 + 2 + 2)),
                // 2 rounds of (2 sends + 4 immediate SERVFAIL re-sends), then EAI_AGAIN
                (Stub::Musl, Outcome::Failed, Some(2 + 12)),
                (Stub::Cares, Outcome::Failed, Some(2 + 4)),
                (Stub::CaresOld, Outcome::Failed, Some(1 + 2)),
                (Stub::Go, both.clone(), Some(2 + 4 + 2 + 2 + 2)),
                // attempts + 1 tries per type
                (Stub::Hickory, both, Some(2 + 6 + 2 + 2 + 2)),
            ],
        );
    }

    /// glibc: a SERVFAIL candidate makes the final answer EAI_AGAIN unless one gave NODATA.
    #[test]
    fn glibc_final_herrno() {
        let conf = Conf { search: vec!["a.example".into(), "b.example".into()], ndots: 1, attempts: 1 };
        let sf = Zone::default().both("web.a.example.", servfail());
        assert_eq!(run(Stub::Glibc, "web", &conf, &sf).outcome, Outcome::Failed);
        let sf_nodata = Zone::default().both("web.a.example.", servfail()).both("web.b.example.", nodata());
        assert_eq!(run(Stub::Glibc, "web", &conf, &sf_nodata).outcome, Outcome::NotFound);
        // REFUSED is not SERVFAIL: the list stops, the bare name is still asked
        let refused = Zone::default().both("web.a.example.", Reply::rcode(rcode::REFUSED));
        let w = run(Stub::Glibc, "web", &conf, &refused);
        assert_eq!(names(&w), ["web.a.example.", "web.a.example.", "web.", "web."]);
        assert_eq!(w.outcome, Outcome::NotFound);
    }

    /// A timeout ends glibc's search list, yet it asks the bare name; musl fails at once.
    #[test]
    fn timeout_on_first_candidate() {
        let zone = Zone::default().both("pypi.org.default.svc.cluster.local.", Reply::Timeout).host(
            "pypi.org.svc.cluster.local.",
            "10.0.0.9",
            "fd00::9",
        );
        let glibc = run(Stub::Glibc, "pypi.org", &k8s(), &zone);
        assert_eq!(glibc.outcome, Outcome::NotFound);
        assert_eq!(names(&glibc)[4..], ["pypi.org.", "pypi.org."]);
        assert_eq!(glibc.queries.len(), 6);
        check(
            "pypi.org",
            &k8s(),
            &zone,
            &[
                (Stub::Musl, Outcome::Failed, Some(4)),
                (Stub::Cares, Outcome::Failed, Some(4)),
                // AAAA timed out: c-ares 1.13 starts the A walk, which times out too
                (Stub::CaresOld, Outcome::Failed, Some(4)),
                (Stub::Go, found(&["10.0.0.9", "fd00::9"]), Some(6)),
                // 3 UDP copies per try, 3 tries, per type
                (Stub::Hickory, found(&["10.0.0.9", "fd00::9"]), Some(18 + 2)),
            ],
        );
    }

    /// Only the AAAA query times out.
    #[test]
    fn aaaa_timeout_with_a_answered() {
        let zone = Zone::default().set("db.example.", A, data(&[rec("db.example.", "10.1.1.1")])).set(
            "db.example.",
            AAAA,
            Reply::Timeout,
        );
        let v4 = found(&["10.1.1.1"]);
        check(
            "db.example.",
            &Conf::default(),
            &zone,
            &[
                // timeout after one reply: single-request, then single-request-reopen, then A alone
                (Stub::Glibc, v4.clone(), Some(6)),
                (Stub::Musl, Outcome::Failed, Some(3)),
                // A found IPv4: AAAA is not retried (terminate_retries)
                (Stub::Cares, v4.clone(), Some(2)),
                (Stub::CaresOld, v4.clone(), Some(2 + 1)),
                (Stub::Go, v4.clone(), Some(3)),
                (Stub::Hickory, v4, Some(9 + 1)),
            ],
        );
    }

    /// Truncated UDP answers: everyone but musl 1.2.3 asks again over TCP.
    #[test]
    fn truncation_and_tcp() {
        let n = "big.example.";
        let full = [rec(n, "198.19.0.1"), rec(n, "198.19.0.2")];
        let full6 = [rec(n, "fd00::1"), rec(n, "fd00::2")];
        let zone = Zone::default()
            .on(n, A, false, truncated(&full[..1]))
            .on(n, A, true, data(&full))
            .on(n, AAAA, false, truncated(&full6[..1]))
            .on(n, AAAA, true, data(&full6));
        let all = found(&["198.19.0.1", "198.19.0.2", "fd00::1", "fd00::2"]);
        check(
            n,
            &Conf::default(),
            &zone,
            &[
                (Stub::Glibc, all.clone(), Some(4)),
                (Stub::Musl, found(&["198.19.0.1", "fd00::1"]), Some(2)),
                (Stub::Cares, all.clone(), Some(4)),
                (Stub::CaresOld, found(&["fd00::1", "fd00::2"]), Some(2)),
                (Stub::Go, all.clone(), Some(4)),
                (Stub::Hickory, all, Some(4)),
            ],
        );
        let glibc = run(Stub::Glibc, n, &Conf::default(), &zone);
        let tcp: Vec<bool> = glibc.queries.iter().map(|q| q.tcp).collect();
        assert_eq!(tcp, [false, false, true, true]);
        assert!(run(Stub::Musl, n, &Conf::default(), &zone).queries.iter().all(|q| !q.tcp));
    }

    #[test]
    fn absolute_name_asks_no_search_candidate() {
        let zone = Zone::default();
        for s in Stub::ALL {
            let w = run(s, "pypi.org.", &k8s(), &zone);
            assert_eq!(w.outcome, Outcome::NotFound, "{}", s.name());
            assert!(!w.queries.is_empty());
            assert!(w.queries.iter().all(|q| q.name == "pypi.org."), "{}: {:?}", s.name(), w.queries);
        }
    }

    #[test]
    fn enough_dots_asks_the_name_first() {
        let conf = Conf { ndots: 1, ..k8s() };
        let zone = Zone::default().host("pypi.org.", "198.19.1.1", "fd00::1");
        for s in Stub::ALL {
            let w = run(s, "pypi.org", &conf, &zone);
            // c-ares 1.13 stops after the AAAA it found
            let asked: &[&str] = if s == Stub::CaresOld { &["pypi.org."] } else { &["pypi.org.", "pypi.org."] };
            assert_eq!(names(&w), asked, "{}", s.name());
            let expect = if s == Stub::CaresOld { found(&["fd00::1"]) } else { found(&["198.19.1.1", "fd00::1"]) };
            assert_eq!(w.outcome, expect, "{}", s.name());
        }
        // The name missing: glibc, c-ares, Go and hickory walk the search list after it, musl does not.
        let empty = Zone::default();
        let musl = run(Stub::Musl, "pypi.org", &conf, &empty);
        assert_eq!(names(&musl), ["pypi.org.", "pypi.org."]);
        for s in [Stub::Glibc, Stub::Cares, Stub::Go, Stub::Hickory] {
            let w = run(s, "pypi.org", &conf, &empty);
            assert_eq!(w.queries.len(), 10, "{}", s.name());
            assert_eq!(names(&w).last(), Some(&"pypi.org.corp.example."), "{}", s.name());
        }
    }

    /// c-ares >= 1.16 walks on after SERVFAIL only for a single-label name (systemd-resolved).
    #[test]
    fn cares_single_label_servfail_goes_on() {
        let conf = Conf { search: vec!["corp.example".into()], ndots: 0, attempts: 1 };
        let zone = Zone::default().both("db.", servfail()).both("db.x.", servfail()).host(
            "db.corp.example.",
            "10.2.2.2",
            "fd00::22",
        );
        assert_eq!(run(Stub::Cares, "db", &conf, &zone).outcome, found(&["10.2.2.2", "fd00::22"]));
        let zone = zone.host("db.x.corp.example.", "10.3.3.3", "fd00::33");
        assert_eq!(run(Stub::Cares, "db.x", &conf, &zone).outcome, Outcome::Failed);
    }

    /// c-ares >= 1.16: the query that completes last decides (the lab's "aaaa-servfail-missing").
    #[test]
    fn cares_a_nxdomain_aaaa_servfail_fails() {
        let zone = Zone::default().set("gone.example.", AAAA, servfail());
        let w = run(Stub::Cares, "gone.example.", &Conf::default(), &zone);
        assert_eq!(w.outcome, Outcome::Failed);
        assert_eq!(w.queries.len(), 1 + 2);
        // glibc drops the SERVFAIL and keeps the NXDOMAIN
        assert_eq!(run(Stub::Glibc, "gone.example.", &Conf::default(), &zone).outcome, Outcome::NotFound);
    }

    /// musl checks A's reply first: NXDOMAIN there moves on whatever AAAA did.
    #[test]
    fn musl_a_nxdomain_moves_on() {
        let conf = Conf { search: vec!["a.example".into()], ndots: 1, attempts: 1 };
        let zone = Zone::default().set("web.a.example.", AAAA, Reply::Timeout).host("web.", "10.4.4.4", "fd00::44");
        let w = run(Stub::Musl, "web", &conf, &zone);
        assert_eq!(w.outcome, found(&["10.4.4.4", "fd00::44"]));
        assert_eq!(names(&w), ["web.a.example.", "web.a.example.", "web.", "web."]);
        // AAAA NXDOMAIN but A SERVFAIL: A never gets an accepted reply → EAI_AGAIN
        let zone = Zone::default().set("web.a.example.", A, servfail()).host("web.", "10.4.4.4", "fd00::44");
        assert_eq!(run(Stub::Musl, "web", &conf, &zone).outcome, Outcome::Failed);
    }

    /// An address record whose owner is not on the CNAME chain.
    #[test]
    fn address_off_the_chain() {
        let n = "app.example.";
        let zone =
            Zone::default().both(n, data(&[rec("other.example.", "10.5.5.5"), rec("other.example.", "fd00::55")]));
        let any = found(&["10.5.5.5", "fd00::55"]);
        check(
            n,
            &Conf::default(),
            &zone,
            &[
                (Stub::Glibc, any.clone(), None),
                (Stub::Musl, any.clone(), None),
                (Stub::Cares, any.clone(), None),
                // owner must be the question (or a CNAME target): AAAA success without address,
                // then A the same → success with no address
                (Stub::CaresOld, Outcome::NotFound, Some(2)),
                (Stub::Go, any, None),
                // no record of the type at the name and no CNAME: NoRecordsFound
                (Stub::Hickory, Outcome::NotFound, Some(2)),
            ],
        );
        // ... and one reached through a CNAME
        let chained = Zone::default().both(
            n,
            data(&[
                Record::cname(n, "edge.example."),
                rec("edge.example.", "10.6.6.6"),
                rec("edge.example.", "fd00::66"),
            ]),
        );
        for s in Stub::ALL {
            let expect = if s == Stub::CaresOld { found(&["fd00::66"]) } else { found(&["10.6.6.6", "fd00::66"]) };
            let w = run(s, n, &Conf::default(), &chained);
            assert_eq!(w.outcome, expect, "{}", s.name());
            assert_eq!(w.queries.len(), if s == Stub::CaresOld { 1 } else { 2 }, "{}", s.name());
        }
    }

    /// Query counts when every reply is SERVFAIL, with attempts:3.
    #[test]
    fn servfail_retries() {
        let conf = Conf { attempts: 3, ..Conf::default() };
        let zone = Zone::default().both("down.example.", servfail());
        check(
            "down.example.",
            &conf,
            &zone,
            &[
                (Stub::Glibc, Outcome::Failed, Some(6)),
                (Stub::Musl, Outcome::Failed, Some(3 * 6)),
                (Stub::Cares, Outcome::Failed, Some(6)),
                // ECONNREFUSED after the AAAA tries; no A walk
                (Stub::CaresOld, Outcome::Failed, Some(3)),
                (Stub::Go, Outcome::Failed, Some(6)),
                (Stub::Hickory, Outcome::Failed, Some(8)),
            ],
        );
    }

    /// c-ares 1.13 asks A after an AAAA walk that ended in NODATA, from the first candidate.
    #[test]
    fn cares_old_a_walk_after_nodata() {
        let conf = Conf { search: vec!["a.example".into(), "b.example".into()], ndots: 1, attempts: 1 };
        let zone = Zone::default().set("web.a.example.", AAAA, nodata()).set(
            "web.a.example.",
            A,
            data(&[rec("web.a.example.", "10.7.7.7")]),
        );
        let w = run(Stub::CaresOld, "web", &conf, &zone);
        assert_eq!(w.outcome, found(&["10.7.7.7"]));
        let asked: Vec<(&str, u16)> = w.queries.iter().map(|q| (q.name.as_str(), q.qtype)).collect();
        assert_eq!(asked, [("web.a.example.", AAAA), ("web.b.example.", AAAA), ("web.", AAAA), ("web.a.example.", A)]);
        // NXDOMAIN everywhere for AAAA: the lookup ends ENOTFOUND without asking A
        let w = run(Stub::CaresOld, "web", &conf, &Zone::default());
        assert_eq!(w.outcome, Outcome::NotFound);
        assert!(w.queries.iter().all(|q| q.qtype == AAAA));
    }

    /// Go reports the bare name's error: a SERVFAIL candidate then NXDOMAIN is "no such host".
    #[test]
    fn go_prefers_the_original_names_error() {
        let conf = Conf { search: vec!["a.example".into()], ndots: 1, attempts: 1 };
        let zone = Zone::default().both("web.a.example.", servfail());
        assert_eq!(run(Stub::Go, "web", &conf, &zone).outcome, Outcome::NotFound);
        let zone = Zone::default().both("web.", servfail());
        assert_eq!(run(Stub::Go, "web", &conf, &zone).outcome, Outcome::Failed);
    }
}
