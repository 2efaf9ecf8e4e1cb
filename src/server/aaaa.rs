//! The I/O half of the AAAA handling ([`crate::policy::aaaa`] holds the decisions): forwarding
//! with a fallback on the A outcome, the lookups that outcome needs, and the pod's IPv6 check.

use std::sync::Mutex;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

use super::handler::{Answer, Handler};
use crate::cache::{KeyRef, key_flags};
use crate::error::{ResolveError, UpstreamError};
use crate::metrics::{Proto, Source};
use crate::policy::ParsedQuery;
use crate::policy::aaaa::{AOutcome, AaaaMode, Plan, Reason, Verdict};
use crate::resolver::Resolved;
use crate::wire::{Header, Soa, negative_reply, rcode, rtype};

/// How often `--aaaa auto` re-reads the pod's IPv6 addresses (lazily, on AAAA queries only).
const IPV6_RECHECK: Duration = Duration::from_secs(60);

/// Whether the pod has a global IPv6 address, re-read at most every [`IPV6_RECHECK`].
#[derive(Default)]
pub struct Ipv6State {
    last: Mutex<Option<(Instant, bool)>>,
}

impl Ipv6State {
    pub fn has_global(&self, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some((at, v)) if now.saturating_duration_since(at) < IPV6_RECHECK => v,
            _ => {
                let v = std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|t| has_global_ipv6(&t));
                *last = Some((now, v));
                v
            }
        }
    }
}

/// True when `/proc/net/if_inet6` text lists an address of global scope (scope 00; ULAs count,
/// as dual-stack clusters use them) that is not tentative or failed DAD.
pub fn has_global_ipv6(if_inet6: &str) -> bool {
    if_inet6.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 6
            && f[3] == "00"
            && u8::from_str_radix(f[4], 16).is_ok_and(|flags| flags & (0x40 | 0x08) == 0)
            && f[5] != "lo"
    })
}

/// The name of a question copied out of the message, so the message can be lent mutably to
/// an exchange meanwhile.
struct NameCopy {
    buf: [u8; 255],
    len: usize,
}

impl NameCopy {
    fn of(msg: &[u8], q: &ParsedQuery) -> NameCopy {
        let name = q.question.name(msg);
        let mut buf = [0u8; 255];
        let len = name.len().min(255);
        buf[..len].copy_from_slice(&name[..len]);
        NameCopy { buf, len }
    }
    fn get(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Why the upstream's own answer is not used, from how resolution failed.
pub(super) fn reason_of(e: &ResolveError) -> Reason {
    match e {
        ResolveError::Exhausted(UpstreamError::Rcode(_, rcode::REFUSED) | UpstreamError::Refused(_)) => Reason::Refused,
        ResolveError::Exhausted(UpstreamError::Timeout(_)) | ResolveError::Budget => Reason::Timeout,
        _ => Reason::Servfail,
    }
}

impl Handler {
    /// `--aaaa fix`: forward; if the upstream fails the query, or stays silent past
    /// `--aaaa-timeout` while the A record is known to exist, answer from the A outcome.
    pub(super) async fn forward_fixing(&self, msg: &mut BytesMut, q: &ParsedQuery, proto: Proto) -> Answer {
        let name = NameCopy::of(msg, q);
        let flags = key_flags(q.opt.is_some_and(|o| o.dnssec_ok), q.header.cd());
        let result = {
            let exchange = self.resolver.resolve_miss(msg, q, proto == Proto::Tcp);
            tokio::pin!(exchange);
            tokio::select! {
                r = &mut exchange => r,
                _ = tokio::time::sleep(self.aaaa.timeout) => {
                    if self.a_known_to_exist(name.get(), flags) {
                        Err(ResolveError::Budget)
                    } else {
                        exchange.await
                    }
                }
            }
        };
        match result {
            Ok(r) => self.answer(r, msg, q, proto),
            Err(e) => self.answer_from_a(msg, q, reason_of(&e)).await,
        }
    }

    /// True when a live cache entry says the A query for `name` answered NOERROR.
    fn a_known_to_exist(&self, name: &[u8], flags: u8) -> bool {
        let key = KeyRef { name, qtype: rtype::A, qclass: crate::wire::CLASS_IN, flags };
        self.resolver
            .cache()
            .and_then(|c| c.peek_fresh(&key, Instant::now()))
            .is_some_and(|e| e.rcode() == rcode::NOERROR)
    }

    /// The AAAA policy's plan for `name` and `qtype`, reading the pod's IPv6 state only in
    /// `--aaaa auto`.
    pub(super) fn aaaa_plan(&self, name: &[u8], qtype: u16) -> Plan {
        let v6 = self.aaaa.mode == AaaaMode::Auto && self.ipv6.has_global(Instant::now());
        self.aaaa.plan(name, qtype, v6)
    }

    /// The denial (rcode, SOA TTL) to synthesize for `qtype` at `name` from what the A query for
    /// the same name says (in flight, cached, or asked now); `None` for SERVFAIL. Counts it.
    pub(super) async fn denial_from_a(&self, name: &[u8], qtype: u16, flags: u8, reason: Reason) -> Option<(u16, u32)> {
        let a = match self.resolver.lookup(name, rtype::A, flags).await {
            Ok(Resolved { reply, .. }) => {
                Header::parse(&reply).map_or(AOutcome::Failed, |h| AOutcome::from_rcode(h.rcode()))
            }
            Err(ResolveError::Exhausted(UpstreamError::Rcode(..))) if self.cluster_remnant(name).await => {
                AOutcome::Remnant
            }
            Err(_) => AOutcome::Failed,
        };
        let denial = match self.aaaa.verdict(a, reason) {
            Verdict::NoData { ttl } => (rcode::NOERROR, ttl),
            Verdict::NxDomain { ttl } => (rcode::NXDOMAIN, ttl),
            Verdict::ServFail => return None,
        };
        self.metrics.synthesized(qtype, reason);
        Some(denial)
    }

    /// Whether `name` (two labels or more) is the bare form of a cluster name, the last candidate
    /// of a stub's search walk: its last label is the pod's namespace, or a namespace or service
    /// the collapse's probes found (`kubernetes.default.`, `db-0.db.lab.`). A name whose last
    /// label is anything else may exist outside the cluster.
    async fn cluster_remnant(&self, name: &[u8]) -> bool {
        let Some(c) = &self.collapse else { return false };
        let Some(last) = crate::wire::labels(name).last() else { return false };
        if crate::wire::labels(name).count() < 2 || !crate::policy::search::is_dns1123_label(last) {
            return false;
        }
        let ours = c.cfg.namespace().and_then(|ns| crate::wire::labels(ns.wire()).next());
        if ours.is_some_and(|ns| ns.eq_ignore_ascii_case(last)) {
            return true;
        }
        let wait = self.resolver.upstreams.attempt_timeout() / 2;
        let probe = tokio::time::timeout(wait, c.tld_may_exist(&self.resolver, last));
        probe.await.is_ok_and(|(exists, _)| exists == Some(true))
    }

    /// Answers a query of a synthesized type from the A outcome for its name, and caches the
    /// answer.
    pub(super) async fn answer_from_a(&self, msg: &[u8], q: &ParsedQuery, reason: Reason) -> Answer {
        let flags = key_flags(q.opt.is_some_and(|o| o.dnssec_ok), q.header.cd());
        let Some((rc, ttl)) = self.denial_from_a(q.question.name(msg), q.question.qtype, flags, reason).await else {
            return self.servfail(msg, q);
        };
        let mut out = BytesMut::with_capacity(q.question.end + 80);
        negative_reply(msg, &q.header, &q.question, rc, ttl, Soa::Synthesized, q.opt.as_ref(), &mut out);
        if let Some(cache) = self.resolver.cache() {
            cache.insert(&crate::resolver::key_of(msg, q), &out, Instant::now());
        }
        Answer { bytes: out, rcode: rc, source: Source::Synthesized }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_ipv6_detection() {
        let lo = "00000000000000000000000000000001 01 80 10 80       lo\n";
        let ll = "fe800000000000000000000000000001 02 40 20 80     eth0\n";
        let global = "20010db8000000000000000000000001 02 40 00 80     eth0\n";
        let tentative = "20010db8000000000000000000000001 02 40 00 40     eth0\n";
        assert!(!has_global_ipv6(""));
        assert!(!has_global_ipv6(&format!("{lo}{ll}")));
        assert!(has_global_ipv6(&format!("{lo}{ll}{global}")));
        assert!(!has_global_ipv6(&format!("{lo}{tentative}")));
    }
}
