//! The reaction to replies nobody asked for (unbound's `unwanted-reply-threshold`).
//!
//! A reply that matches no waiting query — wrong ID, wrong question — is never accepted
//! ([`super::pending`]), but a flood of them is how a forger guesses an ID (RFC 5452 §9.2): a
//! local process that reads podns's source ports from /proc/net/udp and sends forged replies
//! from the upstream's address needs on the order of 65536 / (queries waiting on the port)
//! tries per hit. Legitimate unwanted replies are rare: late answers to queries that already
//! timed out, or duplicates. So podns counts them over all upstreams and, each time the count
//! reaches the threshold, assumes an attack and acts as unbound does: it flushes the cache (a
//! forged answer that got through is gone) and replaces every upstream socket and connection,
//! so the attacker must find the new ports; it also counts the action
//! (`podns_unwanted_reply_actions_total`) and logs a warning.
//!
//! The default, 10,000, is far below unbound's suggested 10 million because podns faces a
//! different attacker: not a blind off-path one who does not know the port, but one who can
//! see it, and for whom 10,000 tries hit with probability of about 10,000 × waiting / 65536 per
//! round before the cache is flushed under them. Legitimate late replies take hours to add up
//! to it even with a degraded upstream at a typical pod's query rate, and a false alarm only
//! costs a cache refill. The count is not decayed (as unbound's is not), so no timer runs.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Counter, counter};

use crate::metrics::UNWANTED_ACTIONS_TOTAL;

/// A callback run when the threshold is reached (the resolver's cache flush).
pub type OnTrip = Box<dyn Fn() + Send + Sync>;

/// Unwanted-reply accounting shared by every upstream socket and connection.
pub struct Unwanted {
    count: AtomicU64,
    threshold: u64,
    /// Bumped at each defensive action; sockets and connections of an older generation are
    /// replaced on their next use.
    generation: AtomicU64,
    on_trip: OnceLock<OnTrip>,
    actions: Counter,
}

impl Unwanted {
    /// Reacts every `threshold` unwanted replies; 0 never reacts.
    pub fn new(threshold: u64) -> Unwanted {
        Unwanted {
            count: AtomicU64::new(0),
            threshold,
            generation: AtomicU64::new(0),
            on_trip: OnceLock::new(),
            actions: counter!(UNWANTED_ACTIONS_TOTAL),
        }
    }

    /// Sets what else to do when the threshold is reached (once; later calls are ignored).
    pub fn on_trip(&self, f: OnTrip) {
        let _ = self.on_trip.set(f);
    }

    /// The current socket generation.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Counts one unwanted reply; reacts when the count reaches the threshold.
    pub fn record(&self) {
        if self.threshold == 0 {
            return;
        }
        let n = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        if n == self.threshold {
            self.count.store(0, Ordering::Release);
            self.trip();
        }
    }

    fn trip(&self) {
        let g = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.actions.increment(1);
        tracing::warn!(
            threshold = self.threshold,
            generation = g,
            "unwanted replies reached the threshold (possible spoofing): cache flushed, upstream sockets replaced"
        );
        if let Some(f) = self.on_trip.get() {
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn reacts_every_threshold_replies() {
        let u = Unwanted::new(3);
        let flushed = Arc::new(AtomicUsize::new(0));
        let f = flushed.clone();
        u.on_trip(Box::new(move || {
            f.fetch_add(1, Ordering::SeqCst);
        }));
        for _ in 0..2 {
            u.record();
        }
        assert_eq!((u.generation(), flushed.load(Ordering::SeqCst)), (0, 0));
        u.record();
        assert_eq!((u.generation(), flushed.load(Ordering::SeqCst)), (1, 1));
        for _ in 0..3 {
            u.record();
        }
        assert_eq!((u.generation(), flushed.load(Ordering::SeqCst)), (2, 2));
        let off = Unwanted::new(0);
        for _ in 0..100 {
            off.record();
        }
        assert_eq!(off.generation(), 0);
    }
}
