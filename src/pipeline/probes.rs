//! What podns has learnt about the cluster's names: whether a label can be the last label of a
//! cluster name (a namespace, or a service in the pod's namespace). The search collapse needs
//! it to know a candidate impossible, the AAAA handling to know a name the bare form of a
//! cluster name; both ask it, and the probes go down the chain from the layer that asks.
//! The names probed and what they mean are in [`crate::policy::search::probe_names`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{Service, ask};
use crate::metrics::Source;
use crate::policy::search::{SearchConfig, probe_names};
use crate::wire::{Header, Name, labels, rcode, rtype};

/// TLD label (lower case) → (may a cluster name end in it, when that was learnt).
type ProbeMemo = HashMap<Box<[u8]>, (bool, Instant)>;

/// The pod's search configuration and what the probes found.
pub struct Probes {
    pub cfg: SearchConfig,
    /// `--namespaces`: when given, replaces the namespace probe.
    namespaces: Option<Vec<Name>>,
    ttl: Duration,
    /// How long one probe is waited for: a slow probe leaves the name undecided rather than
    /// eat the client's budget; it finishes on its own and serves the next query.
    wait: Duration,
    /// Bounded by the number of distinct labels asked about, each a TLD or a namespace.
    memo: Mutex<ProbeMemo>,
}

impl Probes {
    pub fn new(cfg: SearchConfig, namespaces: Option<Vec<Name>>, ttl: Duration, wait: Duration) -> Probes {
        Probes { cfg, namespaces, ttl, wait, memo: Mutex::new(HashMap::new()) }
    }

    /// Whether a cluster name ending in `.<tld>` could exist: `tld` is a namespace, or a service
    /// in our namespace. `None` when the probes failed or were slow (then nothing is assumed).
    /// Also returns how many probe queries went upstream. One probe that finds the label is
    /// enough; both must rule it out.
    pub async fn tld_may_exist<N: Service>(&self, next: &Arc<N>, tld: &[u8]) -> (Option<bool>, u64) {
        let lower: Box<[u8]> = tld.to_ascii_lowercase().into_boxed_slice();
        let now = Instant::now();
        if let Some(&(v, at)) = self.memo.lock().unwrap_or_else(|p| p.into_inner()).get(&lower)
            && now.saturating_duration_since(at) < self.ttl
        {
            return (Some(v), 0);
        }
        let (ns_probe, svc_probe) = probe_names(&lower, &self.cfg);
        // (exists?, went upstream?) of one probe.
        let probe = |name: Name| async move {
            let r = ask(next, name.wire(), rtype::A, 0, Some(self.wait)).await;
            let upstream = r.as_ref().is_ok_and(|r| r.source == Source::Upstream) as u64;
            let v = match r.ok().and_then(|r| Header::parse(&r.reply).ok()).map(|h| h.rcode()) {
                Some(rcode::NOERROR) => Some(true),
                Some(rcode::NXDOMAIN) => Some(false),
                _ => None,
            };
            (v, upstream)
        };
        let listed = self
            .namespaces
            .as_ref()
            .map(|ns| ns.iter().any(|n| labels(n.wire()).next() == Some(&lower[..]) && n.label_count() == 1));
        let ns_fut = async {
            match listed {
                Some(v) => (Some(v), 0),
                None => probe(ns_probe).await,
            }
        };
        let svc_fut = async {
            match svc_probe {
                Some(p) => probe(p).await,
                None => (Some(false), 0),
            }
        };
        let ((ns, ns_up), (svc, svc_up)) = tokio::join!(ns_fut, svc_fut);
        let v = match (ns, svc) {
            (Some(true), _) | (_, Some(true)) => true,
            (Some(false), Some(false)) => false,
            _ => return (None, ns_up + svc_up),
        };
        self.memo.lock().unwrap_or_else(|p| p.into_inner()).insert(lower, (v, now));
        (Some(v), ns_up + svc_up)
    }

    /// What the probes have found and still hold: lower-case label → whether a cluster name can
    /// end in it (for `/debug/explain`).
    pub fn known(&self, now: Instant) -> Vec<(String, bool)> {
        let memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(String, bool)> = memo
            .iter()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) < self.ttl)
            .map(|(l, (v, _))| (String::from_utf8_lossy(l).into_owned(), *v))
            .collect();
        v.sort();
        v
    }

    /// Whether `name` (two labels or more) is the bare form of a cluster name, the last
    /// candidate of a stub's search walk: its last label is the pod's namespace, or a namespace
    /// or service the probes find (`kubernetes.default.`, `db-0.db.lab.`). A name whose last
    /// label is anything else may exist outside the cluster.
    pub async fn cluster_remnant<N: Service>(&self, next: &Arc<N>, name: &[u8]) -> bool {
        let Some(last) = labels(name).last() else { return false };
        if labels(name).count() < 2 || !crate::policy::search::is_dns1123_label(last) {
            return false;
        }
        let ours = self.cfg.namespace().and_then(|ns| labels(ns.wire()).next());
        if ours.is_some_and(|ns| ns.eq_ignore_ascii_case(last)) {
            return true;
        }
        let probe = tokio::time::timeout(self.wait, self.tld_may_exist(next, last));
        probe.await.is_ok_and(|(exists, _)| exists == Some(true))
    }
}
