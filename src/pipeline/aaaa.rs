//! The AAAA handling ([`crate::policy::aaaa`] decides): a query of a synthesized type whose
//! upstream fails, or stays silent past `--aaaa-timeout` while the name's A record is known to
//! exist, is answered from the name's A outcome, asked through `next`; `--aaaa nodata` rules
//! and `--aaaa auto` on a pod without IPv6 answer from the A outcome without asking at all.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

use super::{Action, Probes, Reply, Request, Resolved, Service, ask};
use crate::cache::{Cache, KeyRef};
use crate::error::{ResolveError, UpstreamError};
use crate::metrics::{Metrics, Source};
use crate::policy::aaaa::{AOutcome, AaaaMode, AaaaPolicy, Plan, Reason, Verdict};
use crate::wire::{CLASS_IN, Header, NameBuf, Soa, negative_reply, rcode, rtype};

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

/// Why the upstream's own answer is not used, from how resolution failed.
fn reason_of(e: &ResolveError) -> Reason {
    match e {
        ResolveError::Exhausted(UpstreamError::Rcode(_, rcode::REFUSED) | UpstreamError::Refused(_)) => Reason::Refused,
        ResolveError::Exhausted(UpstreamError::Timeout(_)) | ResolveError::Budget | ResolveError::Abandoned => {
            Reason::Timeout
        }
        _ => Reason::Servfail,
    }
}

/// The AAAA handling in front of `next`.
pub struct Aaaa<N> {
    policy: AaaaPolicy,
    ipv6: Ipv6State,
    /// The search configuration and probes, to know the bare form of a cluster name.
    probes: Option<Arc<Probes>>,
    /// Read only: whether the A record is known to exist, without asking.
    cache: Option<Arc<Cache>>,
    metrics: Arc<Metrics>,
    next: Arc<N>,
}

impl<N: Service> Aaaa<N> {
    pub fn new(
        policy: AaaaPolicy,
        probes: Option<Arc<Probes>>,
        cache: Option<Arc<Cache>>,
        metrics: Arc<Metrics>,
        next: Arc<N>,
    ) -> Aaaa<N> {
        Aaaa { policy, ipv6: Ipv6State::default(), probes, cache, metrics, next }
    }

    /// The policy's plan for `name` and `qtype`, reading the pod's IPv6 state only in
    /// `--aaaa auto`.
    fn plan(&self, name: &[u8], qtype: u16) -> Plan {
        let v6 = self.policy.mode == AaaaMode::Auto && self.ipv6.has_global(Instant::now());
        self.policy.plan(name, qtype, v6)
    }

    /// `--aaaa fix`: forward; if the upstream fails the query, or stays silent past
    /// `--aaaa-timeout` while the A record is known to exist, answer from the A outcome.
    async fn forward_fixing(&self, req: &mut Request) -> Reply {
        let name = NameBuf::new(req.name());
        let flags = req.q.key_flags();
        let result = {
            let exchange = self.next.call(req);
            tokio::pin!(exchange);
            tokio::select! {
                r = &mut exchange => r,
                _ = tokio::time::sleep(self.policy.timeout) => {
                    if self.a_known_to_exist(name.get(), flags) {
                        Err(ResolveError::Budget)
                    } else {
                        exchange.await
                    }
                }
            }
        };
        match result {
            Ok(r) => Ok(r),
            Err(e) => self.answer_from_a(req, reason_of(&e)).await,
        }
    }

    /// True when a live cache entry says the A query for `name` answered NOERROR.
    fn a_known_to_exist(&self, name: &[u8], flags: u8) -> bool {
        let key = KeyRef { name, qtype: rtype::A, qclass: CLASS_IN, flags };
        self.cache
            .as_ref()
            .and_then(|c| c.peek_fresh(&key, Instant::now()))
            .is_some_and(|e| e.rcode() == rcode::NOERROR)
    }

    /// The denial (rcode, SOA TTL) to synthesize for `qtype` at `name` from what the A query for
    /// the same name says (in flight, cached, or asked now); `None` for SERVFAIL. Counts it.
    async fn denial_from_a(&self, name: &[u8], qtype: u16, flags: u8, reason: Reason) -> Option<(u16, u32)> {
        let a = match ask(&self.next, name, rtype::A, flags, None).await {
            Ok(Resolved { reply, .. }) => {
                Header::parse(&reply).map_or(AOutcome::Failed, |h| AOutcome::from_rcode(h.rcode()))
            }
            Err(ResolveError::Exhausted(UpstreamError::Rcode(..))) if self.cluster_remnant(name).await => {
                AOutcome::Remnant
            }
            Err(_) => AOutcome::Failed,
        };
        let denial = match self.policy.verdict(a, reason) {
            Verdict::NoData { ttl } => (rcode::NOERROR, ttl),
            Verdict::NxDomain { ttl } => (rcode::NXDOMAIN, ttl),
            Verdict::ServFail => return None,
        };
        self.metrics.synthesized(qtype, reason);
        Some(denial)
    }

    async fn cluster_remnant(&self, name: &[u8]) -> bool {
        match &self.probes {
            Some(p) => p.cluster_remnant(&self.next, name).await,
            None => false,
        }
    }

    /// Answers the request from the A outcome for its name (a synthesized denial), or fails.
    async fn answer_from_a(&self, req: &Request, reason: Reason) -> Reply {
        let q = &req.q;
        let Some((rc, ttl)) = self.denial_from_a(req.name(), q.question.qtype, q.key_flags(), reason).await else {
            return Err(ResolveError::Declined);
        };
        let mut reply = BytesMut::with_capacity(q.question.end + 80);
        negative_reply(&req.msg, q, rc, ttl, Soa::Synthesized, &mut reply);
        Ok(Resolved { reply, source: Source::Synthesized, action: Action::Synthesized(reason) })
    }
}

impl<N: Service> Service for Aaaa<N> {
    /// Types it does not cover skip the IPv6 state (a lock in `--aaaa auto`).
    fn passes(&self, name: &[u8], qtype: u16) -> bool {
        (!self.policy.types.contains(&qtype) || self.plan(name, qtype) == Plan::Forward)
            && self.next.passes(name, qtype)
    }

    async fn call(&self, req: &mut Request) -> Reply {
        match self.plan(req.name(), req.q.question.qtype) {
            Plan::Forward => self.next.call(req).await,
            Plan::Fix => self.forward_fixing(req).await,
            Plan::FromA(reason) => self.answer_from_a(req, reason).await,
        }
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
