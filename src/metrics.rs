//! Every metric name, label and bucket podns exports, in one place.
//!
//! Naming follows CoreDNS (`coredns_dns_request_duration_seconds` and friends) under the
//! `podns_` prefix. Handles for every label combination known up front are registered once at
//! start, so the per-packet path only bumps atomics: no string formatting, no registry lookup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::Notify;

use crate::error::StartError;
pub use crate::labels::{Drop, Proto, SearchAction, Source, UpstreamReason};
use crate::policy::aaaa::Reason;
use crate::wire;

pub const REQUESTS_TOTAL: &str = "podns_requests_total";
pub const RESPONSES_TOTAL: &str = "podns_responses_total";
pub const REQUEST_DURATION: &str = "podns_request_duration_seconds";
pub const UPSTREAM_REQUESTS_TOTAL: &str = "podns_upstream_requests_total";
pub const UPSTREAM_DURATION: &str = "podns_upstream_request_duration_seconds";
pub const UPSTREAM_ERRORS_TOTAL: &str = "podns_upstream_errors_total";
pub const UPSTREAM_HEALTHY: &str = "podns_upstream_healthy";
pub const INFLIGHT: &str = "podns_inflight_queries";
pub const INFLIGHT_REJECTED_TOTAL: &str = "podns_inflight_rejected_total";
pub const DROPPED_TOTAL: &str = "podns_dropped_total";
pub const TRUNCATED_TOTAL: &str = "podns_truncated_total";
pub const TCP_FALLBACK_TOTAL: &str = "podns_upstream_tcp_fallback_total";
pub const TCP_CONNECTIONS: &str = "podns_tcp_connections";
pub const TCP_REJECTED_TOTAL: &str = "podns_tcp_connections_rejected_total";
pub const TCP_EVICTED_TOTAL: &str = "podns_tcp_connections_evicted_total";
pub const UNWANTED_ACTIONS_TOTAL: &str = "podns_unwanted_reply_actions_total";
pub const HTTP_REJECTED_TOTAL: &str = "podns_http_connections_rejected_total";
pub const REQUEST_SIZE: &str = "podns_request_size_bytes";
pub const RESPONSE_SIZE: &str = "podns_response_size_bytes";
pub const BUILD_INFO: &str = "podns_build_info";

/// The git revision podns was built from (`PODNS_REVISION` at build time, as the image build
/// sets it; "unknown" otherwise).
pub const REVISION: &str = match option_env!("PODNS_REVISION") {
    Some(r) => r,
    None => "unknown",
};
pub const CACHE_ENTRIES: &str = "podns_cache_entries";
pub const CACHE_BYTES: &str = "podns_cache_bytes";
pub const CACHE_HITS_TOTAL: &str = "podns_cache_hits_total";
pub const CACHE_MISSES_TOTAL: &str = "podns_cache_misses_total";
pub const CACHE_EVICTIONS_TOTAL: &str = "podns_cache_evictions_total";
pub const CACHE_PREFETCH_TOTAL: &str = "podns_cache_prefetch_total";
pub const COALESCED_TOTAL: &str = "podns_coalesced_total";
pub const SYNTHESIZED_TOTAL: &str = "podns_synthesized_total";
pub const SEARCH_TOTAL: &str = "podns_search_total";
pub const SEARCH_SAVED_TOTAL: &str = "podns_search_upstream_saved_total";

/// CoreDNS's latency buckets: 0.25 ms · 2ⁿ for n = 0..15, up to 8.192 s.
pub fn duration_buckets() -> Vec<f64> {
    (0..16).map(|n| 0.00025 * f64::from(1u32 << n)).collect()
}

/// CoreDNS's message size buckets (`coredns_dns_request_size_bytes`), in octets.
pub const SIZE_BUCKETS: [f64; 14] =
    [0.0, 100.0, 200.0, 300.0, 400.0, 511.0, 1023.0, 2047.0, 4095.0, 8291.0, 16e3, 32e3, 48e3, 64e3];

/// `family` label values, as CoreDNS: "1" for IPv4, "2" for IPv6 (the address family numbers
/// of RFC 1700 / IANA).
const FAMILIES: [&str; 2] = ["1", "2"];

/// Handles registered when first used: an idle pod exports only the series something has
/// happened to, not every combination of labels (at a thousand pods the difference is half a
/// million series for Prometheus to hold). After the first use a handle is an atomic.
struct Lazy<T> {
    slots: Box<[OnceLock<T>]>,
}

impl<T> Lazy<T> {
    fn new(n: usize) -> Lazy<T> {
        Lazy { slots: (0..n).map(|_| OnceLock::new()).collect() }
    }

    #[inline]
    fn get(&self, i: usize, make: impl FnOnce() -> T) -> &T {
        self.slots[i].get_or_init(make)
    }
}

/// Handles for the per-packet path.
pub struct Metrics {
    requests: Lazy<Counter>,
    responses: Lazy<Counter>,
    request_duration: Lazy<Histogram>,
    request_size: Lazy<Histogram>,
    response_size: Lazy<Histogram>,
    dropped: Lazy<Counter>,
    pub inflight: Gauge,
    pub inflight_rejected: Counter,
    pub truncated: Counter,
    pub tcp_fallback: Counter,
    pub tcp_connections: Gauge,
    pub tcp_rejected: Counter,
    pub tcp_evicted: Counter,
    synthesized: Lazy<Counter>,
    search: Lazy<Counter>,
    search_saved: Counter,
    samples: AtomicU64,
    upkeep: Arc<Notify>,
}

/// Histogram samples recorded between two drains of the exporter's sample buffers; bounds the
/// memory that samples take when nobody scrapes, without a timer that wakes an idle process.
const UPKEEP_EVERY: u64 = 8192;

const TYPES: usize = wire::TYPE_LABELS.len();

impl Metrics {
    /// Creates the handles; the few unlabelled series are registered now, labelled ones when
    /// first used (no-op handles when no recorder is installed, as in unit tests).
    pub fn new() -> Metrics {
        gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "revision" => REVISION).set(1.0);
        Metrics {
            requests: Lazy::new(Proto::COUNT * FAMILIES.len() * TYPES),
            responses: Lazy::new(wire::RCODE_LABELS.len() * Source::COUNT),
            request_duration: Lazy::new(Proto::COUNT * Source::COUNT * TYPES),
            request_size: Lazy::new(Proto::COUNT),
            response_size: Lazy::new(Proto::COUNT),
            dropped: Lazy::new(Drop::COUNT),
            inflight: gauge!(INFLIGHT),
            inflight_rejected: counter!(INFLIGHT_REJECTED_TOTAL),
            truncated: counter!(TRUNCATED_TOTAL),
            tcp_fallback: counter!(TCP_FALLBACK_TOTAL),
            tcp_connections: gauge!(TCP_CONNECTIONS),
            tcp_rejected: counter!(TCP_REJECTED_TOTAL),
            tcp_evicted: counter!(TCP_EVICTED_TOTAL),
            synthesized: Lazy::new(TYPES * Reason::COUNT),
            search: Lazy::new(SearchAction::COUNT),
            search_saved: counter!(SEARCH_SAVED_TOTAL),
            samples: AtomicU64::new(0),
            upkeep: Arc::new(Notify::new()),
        }
    }

    /// Counts a query that passed admission, `size` octets long.
    #[inline]
    pub fn request(&self, proto: Proto, ipv6: bool, qtype: u16, size: usize) {
        let t = wire::type_index(qtype);
        let i = (proto.index() * 2 + ipv6 as usize) * TYPES + t;
        self.requests
            .get(i, || {
                counter!(REQUESTS_TOTAL, "proto" => proto.label(), "family" => FAMILIES[ipv6 as usize], "type" => wire::TYPE_LABELS[t])
            })
            .increment(1);
        self.request_size.get(proto.index(), || histogram!(REQUEST_SIZE, "proto" => proto.label())).record(size as f64);
    }

    /// Counts an answer of `size` octets sent to a client for a query of type `qtype` (0 when
    /// the query could not be read), and records how long the client waited for it.
    #[inline]
    pub fn response(&self, proto: Proto, source: Source, rcode: u16, qtype: u16, size: usize, elapsed: Duration) {
        let rc = wire::rcode_index(rcode);
        self.responses
            .get(
                rc * Source::COUNT + source.index(),
                || counter!(RESPONSES_TOTAL, "rcode" => wire::RCODE_LABELS[rc], "source" => source.label()),
            )
            .increment(1);
        let t = wire::type_index(qtype);
        self.request_duration
            .get((proto.index() * Source::COUNT + source.index()) * TYPES + t, || {
                histogram!(REQUEST_DURATION, "proto" => proto.label(), "source" => source.label(), "type" => wire::TYPE_LABELS[t])
            })
            .record(elapsed.as_secs_f64());
        self.response_size
            .get(proto.index(), || histogram!(RESPONSE_SIZE, "proto" => proto.label()))
            .record(size as f64);
        self.sampled();
    }

    /// Counts an answer a policy synthesized.
    #[inline]
    pub fn synthesized(&self, qtype: u16, reason: Reason) {
        let t = wire::type_index(qtype);
        self.synthesized
            .get(
                t * Reason::COUNT + reason.index(),
                || counter!(SYNTHESIZED_TOTAL, "type" => wire::TYPE_LABELS[t], "reason" => reason.label()),
            )
            .increment(1);
    }

    /// Counts a search-collapse decision and the upstream queries it saved.
    #[inline]
    pub fn search(&self, action: SearchAction, saved: u64) {
        self.search.get(action.index(), || counter!(SEARCH_TOTAL, "action" => action.label())).increment(1);
        if saved > 0 {
            self.search_saved.increment(saved);
        }
    }

    /// Counts a packet dropped without a reply.
    #[inline]
    pub fn dropped(&self, why: Drop) {
        self.dropped.get(why.index(), || counter!(DROPPED_TOTAL, "reason" => why.label())).increment(1);
    }

    /// Notes histogram samples; every [`UPKEEP_EVERY`] wakes the upkeep task.
    #[inline]
    pub fn sampled(&self) {
        if self.samples.fetch_add(1, Ordering::Relaxed) % UPKEEP_EVERY == UPKEEP_EVERY - 1 {
            self.upkeep.notify_one();
        }
    }

    /// The signal the upkeep task waits for.
    pub fn upkeep_signal(&self) -> Arc<Notify> {
        self.upkeep.clone()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Handles for one upstream, labelled with its address (`to`).
pub struct UpstreamMetrics {
    to: String,
    requests: Lazy<Counter>,
    pub healthy: Gauge,
    errors: Lazy<Counter>,
    durations: Lazy<Histogram>,
}

impl UpstreamMetrics {
    pub fn new(to: &str) -> UpstreamMetrics {
        UpstreamMetrics {
            to: to.to_string(),
            requests: Lazy::new(Proto::COUNT),
            // Registered at once: "no healthy upstream" is an alert, which needs the series.
            healthy: gauge!(UPSTREAM_HEALTHY, "to" => to.to_string()),
            errors: Lazy::new(UpstreamReason::COUNT),
            durations: Lazy::new(wire::RCODE_LABELS.len()),
        }
    }

    /// Counts `n` queries sent to this upstream.
    #[inline]
    pub fn requests(&self, proto: Proto, n: u64) {
        self.requests
            .get(proto.index(), || counter!(UPSTREAM_REQUESTS_TOTAL, "to" => self.to.clone(), "proto" => proto.label()))
            .increment(n);
    }

    /// Counts a failed or rejected exchange.
    pub fn error(&self, reason: UpstreamReason) {
        self.errors
            .get(
                reason.index(),
                || counter!(UPSTREAM_ERRORS_TOTAL, "to" => self.to.clone(), "reason" => reason.label()),
            )
            .increment(1);
    }

    /// Records an upstream reply's round-trip time under its rcode.
    pub fn answered(&self, rcode: u16, rtt: Duration) {
        let rc = wire::rcode_index(rcode);
        self.durations
            .get(rc, || histogram!(UPSTREAM_DURATION, "to" => self.to.clone(), "rcode" => wire::RCODE_LABELS[rc]))
            .record(rtt.as_secs_f64());
    }
}

/// Handles of the answer cache.
#[derive(Clone)]
pub struct CacheMetrics {
    /// `podns_cache_entries{kind="success"|"denial"}`.
    pub entries: [Gauge; 2],
    pub bytes: Gauge,
    /// `podns_cache_hits_total{kind="success"|"denial"}`; stale hits are [`CacheMetrics::stale`].
    pub hits: [Counter; 2],
    pub stale: Counter,
    pub misses: Counter,
    pub evictions: Counter,
    pub prefetch: Counter,
    pub coalesced: Counter,
}

impl CacheMetrics {
    pub fn new() -> CacheMetrics {
        CacheMetrics {
            entries: [gauge!(CACHE_ENTRIES, "kind" => "success"), gauge!(CACHE_ENTRIES, "kind" => "denial")],
            bytes: gauge!(CACHE_BYTES),
            hits: [counter!(CACHE_HITS_TOTAL, "kind" => "success"), counter!(CACHE_HITS_TOTAL, "kind" => "denial")],
            stale: counter!(CACHE_HITS_TOTAL, "kind" => "stale"),
            misses: counter!(CACHE_MISSES_TOTAL),
            evictions: counter!(CACHE_EVICTIONS_TOTAL),
            prefetch: counter!(CACHE_PREFETCH_TOTAL),
            coalesced: counter!(COALESCED_TOTAL),
        }
    }
}

impl Default for CacheMetrics {
    fn default() -> Self {
        CacheMetrics::new()
    }
}

/// Installs the Prometheus recorder with every histogram's buckets and the help texts, and
/// returns the handle that renders `/metrics`.
pub fn install() -> Result<PrometheusHandle, StartError> {
    let buckets = duration_buckets();
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        .map_err(|e| StartError::Metrics(e.to_string()))?
        .set_buckets_for_metric(Matcher::Suffix("_bytes".into()), &SIZE_BUCKETS)
        .map_err(|e| StartError::Metrics(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| StartError::Metrics(e.to_string()))?;
    describe();
    Ok(handle)
}

fn describe() {
    describe_counter!(
        REQUESTS_TOTAL,
        "Queries received from clients, by transport, client address family (1 IPv4, 2 IPv6) and query type."
    );
    describe_counter!(
        RESPONSES_TOTAL,
        "Answers sent to clients, by rcode and by who produced them (upstream, cache, stale, synthesized, error)."
    );
    describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Time from receiving a client query to sending its answer, by transport, source and query type."
    );
    describe_counter!(UPSTREAM_REQUESTS_TOTAL, "Queries sent to each upstream, by transport.");
    describe_histogram!(
        UPSTREAM_DURATION,
        metrics::Unit::Seconds,
        "Round-trip time of upstream exchanges that got a reply, by upstream and rcode."
    );
    describe_counter!(
        UPSTREAM_ERRORS_TOTAL,
        "Failed upstream exchanges and rejected upstream packets, by upstream and reason."
    );
    describe_gauge!(UPSTREAM_HEALTHY, "1 while an upstream is considered healthy, 0 while it is skipped.");
    describe_gauge!(INFLIGHT, "Client queries currently waiting for an answer.");
    describe_counter!(
        INFLIGHT_REJECTED_TOTAL,
        "Queries answered SERVFAIL at once because --max-inflight queries were in flight."
    );
    describe_counter!(DROPPED_TOTAL, "Packets dropped without a reply, by reason.");
    describe_counter!(TRUNCATED_TOTAL, "UDP answers sent truncated (TC) because they exceed the client's UDP size.");
    describe_counter!(TCP_FALLBACK_TOTAL, "Truncated UDP replies from upstream retried over TCP.");
    describe_gauge!(TCP_CONNECTIONS, "Open TCP client connections.");
    describe_counter!(
        TCP_REJECTED_TOTAL,
        "TCP client connections closed at once because --tcp-max-connections were open."
    );
    describe_histogram!(REQUEST_SIZE, metrics::Unit::Bytes, "Size of client queries, by transport.");
    describe_histogram!(RESPONSE_SIZE, metrics::Unit::Bytes, "Size of answers sent to clients, by transport.");
    describe_gauge!(BUILD_INFO, "Always 1; the version and revision labels say which podns runs.");
    describe_gauge!(CACHE_ENTRIES, "Entries in the answer cache, by kind (success, denial).");
    describe_gauge!(CACHE_BYTES, "Bytes held by the answer cache (replies, keys and per-entry overhead).");
    describe_counter!(CACHE_HITS_TOTAL, "Answers served from the cache, by kind (success, denial, stale).");
    describe_counter!(CACHE_MISSES_TOTAL, "Cache lookups that found no live entry.");
    describe_counter!(CACHE_EVICTIONS_TOTAL, "Cache entries evicted to stay within --cache-size.");
    describe_counter!(CACHE_PREFETCH_TOTAL, "Background refreshes of popular entries in the last tenth of their TTL.");
    describe_counter!(
        COALESCED_TOTAL,
        "Queries that joined an identical upstream query already in flight instead of sending their own."
    );
}

/// Drains histogram sample buffers whenever [`Metrics::sampled`] signals; sleeps otherwise.
pub async fn upkeep_task(handle: PrometheusHandle, signal: Arc<Notify>) {
    loop {
        signal.notified().await;
        handle.run_upkeep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_coredns() {
        let b = duration_buckets();
        assert_eq!(b.len(), 16);
        assert!((b[0] - 0.00025).abs() < 1e-12);
        assert!((b[15] - 8.192).abs() < 1e-9);
    }

    #[test]
    fn sizes_use_coredns_buckets() {
        assert_eq!(SIZE_BUCKETS[5], 511.0);
        assert_eq!(SIZE_BUCKETS.len(), 14);
    }
}
