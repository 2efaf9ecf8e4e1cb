//! The lookup: identical questions in flight share one upstream exchange (coalescing), a
//! failure is remembered for `--servfail-ttl` (RFC 9520), and everything else goes to the
//! upstreams ([`crate::upstream::Upstreams::resolve`]: attempts, failover, TCP and EDNS
//! retries). The bottom of the chain: it has no `next`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Action, Reply, Request, Resolved, Service};
use crate::cache::{Cache, Key, KeyRef};
use crate::error::ResolveError;
use crate::metrics::{CacheMetrics, Source};
use crate::upstream::{FastKeys, Upstreams};
use crate::wire::Header;

type Shared = Result<Bytes, ResolveError>;

/// What podns knows about a query key beyond the cache: an exchange in flight (its followers
/// wait on the receiver), or a recent failure (RFC 9520 §3.2: a resolver MUST cache a resolution
/// failure for at least 1 s, and may for up to 5 min, so that clients' retries and search walks
/// do not multiply the load on an upstream that is already failing). A truncated reply whose
/// TCP retry failed counts as a failure here: it must not be cached as an answer, and asking
/// again would only meet the same broken TCP.
enum Slot {
    Busy(watch::Receiver<Option<Shared>>),
    Failed { until: Instant, result: Shared },
}

/// Slots by key and transport.
type InflightMap = Mutex<HashMap<(Key, bool), Slot>>;

/// Failures remembered at most; past this a new failure is not remembered (a flood of distinct
/// failing names cannot grow memory), and expired ones are swept first.
const MAX_FAILURES: usize = 4096;

/// Removes a coalescing slot when its leader finishes (leaving a failure behind when
/// configured) or is cancelled.
struct SlotGuard<'a> {
    map: &'a InflightMap,
    key: Option<(Key, bool)>,
    /// When the exchange started, and after how long a cancelled exchange counts as having met
    /// silence: a client's budget that runs out while the upstream has said nothing for a
    /// quarter of an attempt (200 ms by default, a hundred times a cluster DNS round trip) is
    /// a failure to remember like any other, or the client's retries would ask again.
    started: Instant,
    silent_after: Duration,
    memo: Duration,
}

impl SlotGuard<'_> {
    /// Ends the exchange with `result`: remembers it for `memo` when it is a failure (an error,
    /// or a truncated UDP reply, whose TCP retry failed), else frees the slot.
    fn finish(mut self, result: &Shared) {
        let Some(k) = self.key.take() else { return };
        let failed = match result {
            _ if self.memo.is_zero() => false,
            Err(_) => true,
            // Truncated although the upstream layer retried over TCP: that retry failed.
            Ok(reply) => !k.1 && Header::parse(reply).is_ok_and(|h| h.tc()),
        };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if failed {
            remember(&mut map, k, result, Instant::now() + self.memo);
        } else {
            map.remove(&k);
        }
    }
}

impl Drop for SlotGuard<'_> {
    /// A cancelled exchange (the client's budget ran out first) that has met silence long enough
    /// is remembered as a failure; a younger one just frees the slot.
    fn drop(&mut self) {
        let Some(k) = self.key.take() else { return };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if !self.memo.is_zero() && now >= self.started + self.silent_after {
            remember(&mut map, k, &Err(ResolveError::Abandoned), now + self.memo);
        } else {
            map.remove(&k);
        }
    }
}

/// Remembers the failure `result` of `key` until `until` (and, for a truncated UDP reply whose
/// TCP retry failed, the failure of the same question over TCP). Expired failures are swept
/// when the map is full; past [`MAX_FAILURES`] nothing more is remembered.
fn remember(map: &mut HashMap<(Key, bool), Slot>, key: (Key, bool), result: &Shared, until: Instant) {
    if map.len() >= MAX_FAILURES {
        let now = Instant::now();
        map.retain(|_, s| !matches!(s, Slot::Failed { until, .. } if *until <= now));
    }
    if map.len() + 1 >= MAX_FAILURES {
        map.remove(&key);
        return;
    }
    if result.is_ok() && !key.1 {
        map.entry((key.0.clone(), true)).or_insert(Slot::Failed { until, result: Err(ResolveError::Truncated) });
    }
    map.insert(key, Slot::Failed { until, result: result.clone() });
}

/// Coalescing, the failure memo and the upstreams.
pub struct Lookup {
    upstreams: Arc<Upstreams>,
    inflight: InflightMap,
    servfail_ttl: Duration,
    metrics: CacheMetrics,
    cache: Option<Arc<Cache>>,
    /// Keys the UDP fast path is asking upstream now (`server::fast`): an exchange for one of
    /// them waits for it and takes its answer from the cache instead of asking too.
    fast: Arc<FastKeys>,
}

impl Lookup {
    /// `cache` is read only, for the answer of a fast-path exchange this one waited for.
    pub fn new(
        upstreams: Arc<Upstreams>,
        cache: Option<Arc<Cache>>,
        servfail_ttl: Duration,
        metrics: CacheMetrics,
    ) -> Lookup {
        let fast = Arc::new(FastKeys::new(metrics.coalesced.clone()));
        Lookup { upstreams, cache, inflight: Mutex::new(HashMap::new()), servfail_ttl, metrics, fast }
    }

    /// The keys the UDP fast path is asking upstream.
    pub fn fast_keys(&self) -> &Arc<FastKeys> {
        &self.fast
    }

    /// True when an exchange for `key` over UDP is in flight here, or its failure is still
    /// remembered: such a query must come here (which follows that exchange or answers from
    /// that failure) rather than ask upstream a second time. Allocates only when the map is
    /// not empty.
    pub fn is_engaged(&self, key: &KeyRef<'_>) -> bool {
        let map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if map.is_empty() {
            return false;
        }
        match map.get(&(key.to_owned(), false)) {
            Some(Slot::Busy(_)) => true,
            Some(Slot::Failed { until, .. }) => Instant::now() < *until,
            None => false,
        }
    }

    /// Asks upstream, sharing one exchange among identical questions in flight. A failure is
    /// remembered for `--servfail-ttl`: the same question meanwhile fails at once, without
    /// going upstream. The cache layer above checked for a live entry in the same step as this
    /// joins or starts an exchange (nothing runs in between on podns's one thread), so an
    /// exchange that just finished has its answer in the cache, not lost between the two.
    async fn coalesced(&self, req: &mut Request) -> (Shared, Source) {
        let owned = (KeyRef::of(&req.msg, &req.q).to_owned(), req.tcp);
        let leader = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&owned) {
                Some(Slot::Busy(rx)) => Err(rx.clone()),
                Some(Slot::Failed { until, result }) if Instant::now() < *until => {
                    return (result.clone(), Source::Upstream);
                }
                _ => {
                    let (tx, rx) = watch::channel(None);
                    map.insert(owned.clone(), Slot::Busy(rx));
                    Ok(tx)
                }
            }
        };
        let tx = match leader {
            Ok(tx) => tx,
            Err(mut rx) => {
                self.metrics.coalesced.increment(1);
                let result = match rx.wait_for(|v| v.is_some()).await {
                    Ok(v) => v.clone().expect("checked"),
                    // The leader went away without an answer.
                    Err(_) => Err(ResolveError::Abandoned),
                };
                return (result, Source::Upstream);
            }
        };
        let slot = SlotGuard {
            map: &self.inflight,
            key: Some(owned),
            started: Instant::now(),
            silent_after: self.upstreams.attempt_timeout() / 4,
            memo: self.servfail_ttl,
        };
        // The UDP fast path may be asking upstream for this key now: wait for it and take its
        // answer from the cache rather than ask too (read only: the fast path stored it through
        // the cache layer's own function).
        if !req.refresh
            && self.fast.wait_for(&KeyRef::of(&req.msg, &req.q), self.upstreams.attempt_timeout()).await
            && let Some(entry) =
                self.cache.as_ref().and_then(|c| c.peek_fresh(&KeyRef::of(&req.msg, &req.q), Instant::now()))
        {
            let result: Shared = Ok(entry.reply_at(Instant::now(), false).freeze());
            slot.finish(&result);
            let _ = tx.send(Some(result.clone()));
            return (result, Source::Cache);
        }
        let handoff = req.handoff.take();
        let result = self.upstreams.resolve(&mut req.msg, &req.q, req.tcp, handoff).await.map(|ex| ex.reply.freeze());
        slot.finish(&result);
        let _ = tx.send(Some(result.clone()));
        (result, Source::Upstream)
    }
}

impl Service for Lookup {
    fn passes(&self, _name: &[u8], _qtype: u16) -> bool {
        true
    }

    async fn call(&self, req: &mut Request) -> Reply {
        let (result, source) = self.coalesced(req).await;
        let action = if source == Source::Cache { Action::Cached } else { Action::Forwarded };
        Ok(Resolved { reply: BytesMut::from(&result?[..]), source, action })
    }
}
