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
use crate::cache::{Key, KeyRef};
use crate::error::ResolveError;
use crate::metrics::{CacheMetrics, Source};
use crate::upstream::Upstreams;
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
}

impl Lookup {
    pub fn new(upstreams: Arc<Upstreams>, servfail_ttl: Duration, metrics: CacheMetrics) -> Lookup {
        Lookup { upstreams, inflight: Mutex::new(HashMap::new()), servfail_ttl, metrics }
    }

    /// Asks upstream, sharing one exchange among identical questions in flight. A failure is
    /// remembered for `--servfail-ttl`: the same question meanwhile fails at once, without
    /// going upstream. The cache layer above checked for a live entry in the same step as this
    /// joins or starts an exchange (nothing runs in between on podns's one thread), so an
    /// exchange that just finished has its answer in the cache, not lost between the two.
    async fn coalesced(&self, req: &mut Request) -> Shared {
        let owned = (KeyRef::of(&req.msg, &req.q).to_owned(), req.tcp);
        let leader = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&owned) {
                Some(Slot::Busy(rx)) => Err(rx.clone()),
                Some(Slot::Failed { until, result }) if Instant::now() < *until => return result.clone(),
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
                return match rx.wait_for(|v| v.is_some()).await {
                    Ok(v) => v.clone().expect("checked"),
                    // The leader went away without an answer.
                    Err(_) => Err(ResolveError::Abandoned),
                };
            }
        };
        let slot = SlotGuard {
            map: &self.inflight,
            key: Some(owned),
            started: Instant::now(),
            silent_after: self.upstreams.attempt_timeout() / 4,
            memo: self.servfail_ttl,
        };
        let result = self.upstreams.resolve(&mut req.msg, &req.q, req.tcp).await.map(|ex| ex.reply.freeze());
        slot.finish(&result);
        let _ = tx.send(Some(result.clone()));
        result
    }
}

impl Service for Lookup {
    async fn call(&self, req: &mut Request) -> Reply {
        let bytes = self.coalesced(req).await?;
        Ok(Resolved { reply: BytesMut::from(&bytes[..]), source: Source::Upstream, action: Action::Forwarded })
    }
}
