//! The query log (`--query-log`): one JSON line per client query on standard output, after its
//! answer is sent — who asked what, what they got, from where, how long it took, and what podns
//! did (forwarded, cached, stale, collapsed to a name, impossible, synthesized and why). Off by
//! default; `--query-log-sample N` logs one query in N, so a busy pod can keep it on.
//!
//! A line is written only for a sampled query, so the unsampled path costs one atomic add.
//! dnstap (framestream over a Unix socket, as CoreDNS's `dnstap` plugin) would plug in at the
//! same point: [`QueryLog::record`] sees the query and the answer bytes.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::Action;
use crate::labels::{Proto, Source};
use crate::wire::{self, Header, Records, Section, parse_question, rtype, to_dotted};

/// One logged query.
#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    client: String,
    proto: &'static str,
    name: String,
    #[serde(rename = "type")]
    qtype: &'static str,
    rcode: &'static str,
    source: &'static str,
    action: &'static str,
    /// The name a collapsed query was answered from.
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    /// Why an answer was synthesized.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    latency_ms: f64,
}

/// What is known of one answered query.
pub struct Served<'a> {
    pub proto: Proto,
    pub client: SocketAddr,
    /// The client's query as received.
    pub query: &'a [u8],
    /// Its type (0 when it could not be read), as admission parsed it.
    pub qtype: u16,
    /// The answer as sent.
    pub reply: &'a [u8],
    pub rcode: u16,
    pub source: Source,
    /// `None` for an error podns answered itself.
    pub action: Option<Action>,
    pub elapsed: Duration,
}

impl<'a> Served<'a> {
    /// An answer the chain produced ([`super::Pipeline::serve`]), sent to `client`.
    pub fn answer(
        proto: Proto,
        client: SocketAddr,
        qtype: u16,
        a: &'a super::Answer,
        started: tokio::time::Instant,
    ) -> Served<'a> {
        Served {
            proto,
            client,
            query: &a.query,
            qtype,
            reply: &a.bytes,
            rcode: a.rcode,
            source: a.source,
            action: a.action,
            elapsed: started.elapsed(),
        }
    }
}

/// The sampled query log.
pub struct QueryLog {
    every: u64,
    seen: AtomicU64,
}

/// The target of the first CNAME in the answer section of `reply`.
fn cname_target(reply: &[u8]) -> Option<String> {
    let h = Header::parse(reply).ok()?;
    let q = parse_question(reply).ok()?;
    let mut recs = Records::new(reply, &h, q.end);
    let r = recs.by_ref().flatten().find(|r| r.section == Section::Answer && r.rtype == rtype::CNAME)?;
    let mut name = Vec::with_capacity(64);
    wire::write_name_expanded(reply, r.rdata_at, &mut name).ok()?;
    Some(to_dotted(&name))
}

impl QueryLog {
    /// Logs one query in `every` (at least 1).
    pub fn new(every: u64) -> QueryLog {
        QueryLog { every: every.max(1), seen: AtomicU64::new(0) }
    }

    /// Logs `s` when it is sampled.
    pub fn record(&self, s: &Served<'_>) {
        if !self.seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(self.every) {
            return;
        }
        let question = parse_question(s.query).ok();
        let (action, reason, to) = match s.action {
            None => ("error", None, None),
            Some(Action::Forwarded) => ("forwarded", None, None),
            Some(Action::Cached) => ("cached", None, None),
            Some(Action::Stale) => ("stale", None, None),
            Some(Action::Collapsed) => ("collapsed", None, cname_target(s.reply)),
            Some(Action::Impossible) => ("impossible", None, None),
            Some(Action::Synthesized(r)) => ("synthesized", Some(r.label()), None),
        };
        let line = Line {
            ts: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            client: s.client.to_string(),
            proto: s.proto.label(),
            name: question.map_or_else(String::new, |q| to_dotted(q.name(s.query))),
            qtype: wire::type_label(s.qtype),
            rcode: wire::rcode_label(s.rcode),
            source: s.source.label(),
            action,
            to,
            reason,
            latency_ms: s.elapsed.as_secs_f64() * 1000.0,
        };
        if let Ok(mut text) = serde_json::to_string(&line) {
            text.push('\n');
            // A closed or full standard output must not stop answering: the line is lost.
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
        }
    }
}
