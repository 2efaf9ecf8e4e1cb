//! The live half of `podns explain` and `podns check`: a small blocking DNS client with bounded
//! timeouts, and a stub's search walk performed for real through it.
//!
//! The walk itself is the pure stub model of [`crate::policy::stubs`]: its `ask` callback sends
//! each query to a server and turns the reply into the model's [`Reply`]. So the live walk asks
//! exactly what glibc (or musl) would ask, in its order, and stops where it would stop.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::policy::stubs::{self, Conf, Outcome, RData, Record, Reply, Stub};
use crate::wire::{
    Header, Name, Records, Section, parse_question, rcode, rtype, to_dotted, write_name_expanded, write_query,
};

/// The reply to one query, as far as explain and check need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: u16,
    pub tc: bool,
    /// Answer-section records, in order.
    pub records: Vec<Record>,
    /// The authority section holds an SOA.
    pub soa: bool,
}

impl Answer {
    /// The addresses of the answer section.
    pub fn addrs(&self) -> Vec<IpAddr> {
        self.records
            .iter()
            .filter_map(|r| match r.data {
                RData::Addr(ip) if r.rtype == rtype::A || r.rtype == rtype::AAAA => Some(ip),
                _ => None,
            })
            .collect()
    }

    /// Whether the answer holds records of `qtype`.
    pub fn has(&self, qtype: u16) -> bool {
        self.records.iter().any(|r| r.rtype == qtype)
    }

    /// The target of the first CNAME of the answer section.
    pub fn cname(&self) -> Option<String> {
        self.records.iter().find_map(|r| match (&r.data, r.rtype) {
            (RData::Name(n), rtype::CNAME) => Some(n.clone()),
            _ => None,
        })
    }
}

/// Why a query got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// Nothing came back in time.
    Timeout,
    /// The server refused the connection (ICMP port unreachable, TCP RST).
    Refused,
    /// A reply that does not parse or does not match the query.
    Garbled(String),
    /// The name cannot be put on the wire.
    BadName,
    Io(String),
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryError::Timeout => write!(f, "timeout"),
            QueryError::Refused => write!(f, "connection refused"),
            QueryError::Garbled(e) => write!(f, "bad reply: {e}"),
            QueryError::BadName => write!(f, "not a valid name"),
            QueryError::Io(e) => write!(f, "{e}"),
        }
    }
}

fn io_err(e: std::io::Error) -> QueryError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => QueryError::Timeout,
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset => QueryError::Refused,
        _ => QueryError::Io(e.to_string()),
    }
}

/// Sends one query for `name` (dotted, trailing dot optional) and `qtype` to `server`, over UDP
/// or TCP, and waits at most `timeout` in all.
pub fn query(server: SocketAddr, name: &str, qtype: u16, tcp: bool, timeout: Duration) -> Result<Answer, QueryError> {
    let wire = Name::from_dotted(name).ok_or(QueryError::BadName)?;
    let id: u16 = rand::random();
    let mut msg = Vec::with_capacity(wire.wire().len() + 16);
    write_query(id, wire.wire(), qtype, &mut msg);
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let raw = if tcp {
        let mut s = TcpStream::connect_timeout(&server, left()).map_err(io_err)?;
        s.set_read_timeout(Some(left())).map_err(io_err)?;
        s.set_write_timeout(Some(left())).map_err(io_err)?;
        let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&msg);
        s.write_all(&framed).map_err(io_err)?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).map_err(io_err)?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf).map_err(io_err)?;
        buf
    } else {
        let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
        let s = UdpSocket::bind(bind).map_err(io_err)?;
        s.connect(server).map_err(io_err)?;
        s.send(&msg).map_err(io_err)?;
        let mut buf = vec![0u8; 65535];
        loop {
            s.set_read_timeout(Some(left())).map_err(io_err)?;
            let n = s.recv(&mut buf).map_err(io_err)?;
            // A reply to another query (a late one): keep waiting for ours.
            if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                buf.truncate(n);
                break buf;
            }
            if Instant::now() >= deadline {
                return Err(QueryError::Timeout);
            }
        }
    };
    parse_answer(&raw, id)
}

/// The name at `at` in `raw`, expanded, dotted and in lower case.
fn name_at(raw: &[u8], at: usize) -> Result<String, QueryError> {
    let mut wire = Vec::with_capacity(64);
    write_name_expanded(raw, at, &mut wire).map_err(|e| QueryError::Garbled(e.to_string()))?;
    Ok(to_dotted(&wire).to_ascii_lowercase())
}

/// Reads a reply with podns's own wire view ([`crate::wire`]): rcode, TC, the answer records
/// (addresses and CNAME targets; other types by type only) and whether the authority section
/// holds an SOA.
fn parse_answer(raw: &[u8], id: u16) -> Result<Answer, QueryError> {
    let garbled = |e: crate::wire::WireError| QueryError::Garbled(e.to_string());
    let h = Header::parse(raw).map_err(garbled)?;
    if h.id != id {
        return Err(QueryError::Garbled("reply ID does not match".into()));
    }
    if h.qdcount != 1 {
        return Err(QueryError::Garbled(format!("{} questions in the reply", h.qdcount)));
    }
    let q = parse_question(raw).map_err(garbled)?;
    let mut records = Vec::new();
    let mut soa = false;
    for r in Records::new(raw, &h, q.end) {
        let r = r.map_err(garbled)?;
        match r.section {
            Section::Answer => {
                let owner = name_at(raw, r.start)?;
                let data = &raw[r.rdata_at..r.end()];
                records.push(match (r.rtype, data.len()) {
                    (rtype::A, 4) => Record::addr(&owner, IpAddr::from(<[u8; 4]>::try_from(data).expect("4 octets"))),
                    (rtype::AAAA, 16) => {
                        Record::addr(&owner, IpAddr::from(<[u8; 16]>::try_from(data).expect("16 octets")))
                    }
                    (rtype::CNAME, _) => Record::cname(&owner, &name_at(raw, r.rdata_at)?),
                    (t, _) => Record { owner, rtype: t, data: RData::Name(String::new()) },
                });
            }
            Section::Authority => soa |= r.rtype == rtype::SOA,
            Section::Additional => {}
        }
    }
    Ok(Answer { rcode: h.rcode(), tc: h.tc(), records, soa })
}

/// One exchange of a live walk.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// Absolute, lower case, trailing dot.
    pub name: String,
    pub qtype: u16,
    pub tcp: bool,
    /// The reply, or why there was none.
    pub result: Result<Answer, QueryError>,
    pub elapsed: Duration,
}

impl Exchange {
    /// The rcode's name, or the failure (`timeout`, `refused`).
    pub fn status(&self) -> String {
        match &self.result {
            Ok(a) if a.rcode == rcode::NOERROR && a.records.iter().all(|r| r.rtype == rtype::CNAME) => {
                if a.records.is_empty() { "NODATA".into() } else { "NOERROR (CNAME only)".into() }
            }
            Ok(a) => crate::wire::rcode_label(a.rcode).to_ascii_uppercase(),
            Err(QueryError::Timeout) => "timeout".into(),
            Err(QueryError::Refused) => "refused".into(),
            Err(e) => format!("error: {e}"),
        }
    }
}

/// A stub's walk performed against one server.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveWalk {
    pub server: SocketAddr,
    pub exchanges: Vec<Exchange>,
    pub outcome: Outcome,
    pub wall: Duration,
}

/// Walks `name` the way `stub` does (A and AAAA, getaddrinfo style) against `server`, each
/// exchange waiting at most `timeout`.
pub fn live_walk(stub: Stub, name: &str, conf: &Conf, server: SocketAddr, timeout: Duration) -> LiveWalk {
    let start = Instant::now();
    let mut exchanges = Vec::new();
    let walk = stubs::walk(stub, name, conf, &mut |q| {
        let t0 = Instant::now();
        let result = query(server, &q.name, q.qtype, q.tcp, timeout);
        let reply = match &result {
            Ok(a) => Reply::Msg { rcode: a.rcode, tc: a.tc, answers: a.records.clone() },
            Err(_) => Reply::Timeout,
        };
        exchanges.push(Exchange { name: q.name.clone(), qtype: q.qtype, tcp: q.tcp, result, elapsed: t0.elapsed() });
        reply
    });
    LiveWalk { server, exchanges, outcome: walk.outcome, wall: start.elapsed() }
}

/// Whether a DNS server answers at `addr` (any reply to an SOA query for `zone`, over UDP).
pub fn answers(addr: SocketAddr, zone: &str, timeout: Duration) -> bool {
    matches!(query(addr, zone, rtype::SOA, false, timeout), Ok(_) | Err(QueryError::Garbled(_)))
}

/// The text of podns's `/metrics` at `metrics`, `None` when it does not answer in time.
fn metrics_text(metrics: SocketAddr, timeout: Duration) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&metrics, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {metrics}\r\n\r\n").as_bytes()).ok()?;
    let mut body = Vec::new();
    s.take(4 << 20).read_to_end(&mut body).ok()?;
    let text = String::from_utf8_lossy(&body).into_owned();
    let status_ok = text.lines().next().is_some_and(|l| l.starts_with("HTTP/1.") && l.split(' ').nth(1) == Some("200"));
    status_ok.then_some(text)
}

/// Asks podns's metrics endpoint (`http://ADDR/metrics`) which upstreams it uses: the `to`
/// labels of `podns_upstream_healthy`. Empty when it does not answer in time.
pub fn podns_upstreams(metrics: SocketAddr, timeout: Duration) -> Vec<SocketAddr> {
    metrics_text(metrics, timeout).map(|t| parse_upstreams(&t)).unwrap_or_default()
}

/// podns's count of queries sent upstream so far (`podns_upstream_requests_total`, summed),
/// `None` when its metrics cannot be had.
pub fn podns_upstream_requests(metrics: SocketAddr, timeout: Duration) -> Option<u64> {
    metrics_text(metrics, timeout).and_then(|t| sum_metric(&t, crate::metrics::UPSTREAM_REQUESTS_TOTAL))
}

/// The sum of the samples of counter `name` in a Prometheus text; `None` when it has none.
pub fn sum_metric(text: &str, name: &str) -> Option<u64> {
    let mut found = false;
    let mut sum = 0f64;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            found = true;
            sum += v;
        }
    }
    found.then_some(sum as u64)
}

/// The `to` labels of the `podns_upstream_healthy` samples of a Prometheus text.
pub fn parse_upstreams(text: &str) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for line in text.lines().filter(|l| l.starts_with(crate::metrics::UPSTREAM_HEALTHY)) {
        if let Some(rest) = line.split("to=\"").nth(1)
            && let Some(addr) = rest.split('"').next().and_then(|a| a.parse().ok())
            && !out.contains(&addr)
        {
            out.push(addr);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_from_metrics() {
        let text = "# HELP podns_upstream_healthy x\npodns_upstream_healthy{to=\"10.96.0.10:53\"} 1\n\
                    podns_upstream_healthy{to=\"[fd00::a]:53\"} 0\npodns_requests_total{to=\"1.2.3.4:53\"} 3\n";
        assert_eq!(parse_upstreams(text), ["10.96.0.10:53".parse().unwrap(), "[fd00::a]:53".parse().unwrap()]);
        assert!(parse_upstreams("garbage{to=\"x").is_empty());
        let text = "podns_upstream_requests_total{to=\"a\",proto=\"udp\"} 7\n\
                    podns_upstream_requests_total{to=\"a\",proto=\"tcp\"} 2\npodns_upstream_requests_totalx 5\n";
        assert_eq!(sum_metric(text, "podns_upstream_requests_total"), Some(9));
        assert_eq!(sum_metric("", "podns_upstream_requests_total"), None);
    }

    #[test]
    fn garbage_replies_are_errors_not_panics() {
        assert!(parse_answer(&[], 1).is_err());
        assert!(parse_answer(&[0; 12], 1).is_err(), "wrong id");
        assert!(parse_answer(&[0xff; 40], 0xffff).is_err());
    }
}
