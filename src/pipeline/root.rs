//! Single-label names an upstream refuses: the root zone's answer instead of a failure
//! ([`crate::policy::root`] says when and why). systemd-resolved answers SERVFAIL for every
//! single-label name; a stub that gets SERVFAIL for `pypi` retries, and c-ares 1.13 gives up
//! its whole lookup, where the root zone would have said NXDOMAIN.

use std::sync::Arc;

use bytes::BytesMut;

use super::{Action, Reply, Request, Resolved, Service};
use crate::error::{ResolveError, UpstreamError};
use crate::metrics::{Metrics, Source};
use crate::policy::aaaa::Reason;
use crate::policy::root::{self, RootDenial};
use crate::wire::{Soa, negative_reply, rcode};

/// TTL of a root-zone denial given in place of a failure: short, as the failure may pass.
pub const ROOT_DENIAL_TTL: u32 = 5;

/// The root-zone denial in front of `next`.
pub struct Root<N> {
    metrics: Arc<Metrics>,
    next: Arc<N>,
}

impl<N: Service> Root<N> {
    pub fn new(metrics: Arc<Metrics>, next: Arc<N>) -> Root<N> {
        Root { metrics, next }
    }
}

impl<N: Service> Service for Root<N> {
    /// Acts on failures only, which the fast path hands back to the chain.
    fn passes(&self, name: &[u8], qtype: u16) -> bool {
        self.next.passes(name, qtype)
    }

    async fn call(&self, req: &mut Request) -> Reply {
        let e = match self.next.call(req).await {
            Ok(r) => return Ok(r),
            Err(e) => e,
        };
        // Only when an upstream *answered* with a failure (systemd-resolved's SERVFAIL for
        // single-label names): silence cannot be told from an outage, and claiming a name
        // missing while cluster DNS is down would turn the application's "try again"
        // (EAI_AGAIN) into "no such name" (EAI_NONAME), which some cache.
        if !matches!(e, ResolveError::Exhausted(UpstreamError::Rcode(..))) {
            return Err(e);
        }
        let Some(denial) = root::denial(req.name()) else { return Err(e) };
        let rc = match denial {
            RootDenial::NxDomain => rcode::NXDOMAIN,
            RootDenial::NoData => rcode::NOERROR,
        };
        let q = &req.q;
        let mut reply = BytesMut::with_capacity(q.question.end + 96);
        negative_reply(&req.msg, q, rc, ROOT_DENIAL_TTL, Soa::Root, &mut reply);
        self.metrics.synthesized(q.question.qtype, Reason::RootZone);
        Ok(Resolved { reply, source: Source::Synthesized, action: Action::Synthesized(Reason::RootZone) })
    }
}
