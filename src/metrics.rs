//! Every metric name, label and bucket podns exports, in one place.
//!
//! Naming follows CoreDNS (`coredns_dns_request_duration_seconds` and friends) under the
//! `podns_` prefix. Handles for every label combination known up front are registered once at
//! start, so the per-packet path only bumps atomics: no string formatting, no registry lookup.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::Notify;

use crate::error::StartError;
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
pub const BUILD_INFO: &str = "podns_build_info";
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

/// Transport a query arrived on (`proto` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp = 0,
    Tcp = 1,
}

impl Proto {
    pub fn label(self) -> &'static str {
        ["udp", "tcp"][self as usize]
    }
}

/// Who produced the answer a client got (`source` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Relayed from an upstream.
    Upstream = 0,
    /// Served from the answer cache.
    Cache = 1,
    /// Served from an expired cache entry because every upstream failed (RFC 8767).
    Stale = 2,
    /// Written by a podns policy (search collapse, AAAA handling).
    Synthesized = 3,
    /// An error podns answered itself: FORMERR, NOTIMP, BADVERS, or SERVFAIL when upstreams
    /// failed or too many queries were in flight.
    Error = 4,
}

const SOURCES: [&str; 5] = ["upstream", "cache", "stale", "synthesized", "error"];
const FAMILIES: [&str; 2] = ["ipv4", "ipv6"];

/// Reasons a packet is dropped without a reply (`reason` label of `podns_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Shorter than a header: nothing to answer to.
    Short = 0,
    /// QR set: a response sent to us; answering could make a reflection loop.
    Response = 1,
    /// The reply could not be sent back to the client.
    SendFailed = 2,
}

const SYNTH_REASONS: [&str; 6] = ["servfail", "refused", "timeout", "rule", "no_ipv6", "root_zone"];

/// Values of the `action` label of `podns_search_total`, in `server::collapse::Action` order.
const SEARCH_ACTIONS: [&str; 3] = ["impossible", "collapsed", "forwarded"];

const DROPS: [&str; 3] = ["short", "response", "send_failed"];

/// Pre-registered handles for the per-packet path.
pub struct Metrics {
    requests: Vec<Counter>,
    responses: Vec<Counter>,
    request_duration: Vec<Histogram>,
    dropped: Vec<Counter>,
    pub inflight: Gauge,
    pub inflight_rejected: Counter,
    pub truncated: Counter,
    pub tcp_fallback: Counter,
    pub tcp_connections: Gauge,
    pub tcp_rejected: Counter,
    pub tcp_evicted: Counter,
    synthesized: Vec<Counter>,
    search: [Counter; 3],
    search_saved: Counter,
    samples: AtomicU64,
    upkeep: Arc<Notify>,
}

/// Histogram samples recorded between two drains of the exporter's sample buffers; bounds the
/// memory that samples take when nobody scrapes, without a timer that wakes an idle process.
const UPKEEP_EVERY: u64 = 8192;

fn index_of(set: &[&str], label: &str) -> usize {
    set.iter().position(|s| *s == label).unwrap_or(set.len() - 1)
}

impl Metrics {
    /// Registers every fixed-label handle with the installed recorder (or no-op handles when
    /// none is installed, as in unit tests).
    pub fn new() -> Metrics {
        let mut requests = Vec::with_capacity(2 * FAMILIES.len() * wire::TYPE_LABELS.len());
        for proto in ["udp", "tcp"] {
            for family in FAMILIES {
                for t in wire::TYPE_LABELS {
                    requests.push(counter!(REQUESTS_TOTAL, "proto" => proto, "family" => family, "type" => t));
                }
            }
        }
        let mut responses = Vec::with_capacity(wire::RCODE_LABELS.len() * SOURCES.len());
        for rc in wire::RCODE_LABELS {
            for s in SOURCES {
                responses.push(counter!(RESPONSES_TOTAL, "rcode" => rc, "source" => s));
            }
        }
        let mut request_duration = Vec::with_capacity(2 * SOURCES.len());
        for proto in ["udp", "tcp"] {
            for s in SOURCES {
                request_duration.push(histogram!(REQUEST_DURATION, "proto" => proto, "source" => s));
            }
        }
        let dropped = DROPS.iter().map(|r| counter!(DROPPED_TOTAL, "reason" => *r)).collect();
        gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        Metrics {
            requests,
            responses,
            request_duration,
            dropped,
            inflight: gauge!(INFLIGHT),
            inflight_rejected: counter!(INFLIGHT_REJECTED_TOTAL),
            truncated: counter!(TRUNCATED_TOTAL),
            tcp_fallback: counter!(TCP_FALLBACK_TOTAL),
            tcp_connections: gauge!(TCP_CONNECTIONS),
            tcp_rejected: counter!(TCP_REJECTED_TOTAL),
            tcp_evicted: counter!(TCP_EVICTED_TOTAL),
            synthesized: wire::TYPE_LABELS
                .iter()
                .flat_map(|t| {
                    SYNTH_REASONS.iter().map(move |r| counter!(SYNTHESIZED_TOTAL, "type" => *t, "reason" => *r))
                })
                .collect(),
            search: SEARCH_ACTIONS.map(|a| counter!(SEARCH_TOTAL, "action" => a)),
            search_saved: counter!(SEARCH_SAVED_TOTAL),
            samples: AtomicU64::new(0),
            upkeep: Arc::new(Notify::new()),
        }
    }

    /// Counts a query that passed admission.
    #[inline]
    pub fn request(&self, proto: Proto, ipv6: bool, qtype: u16) {
        let t = wire::type_index(qtype);
        self.requests[(proto as usize * 2 + ipv6 as usize) * wire::TYPE_LABELS.len() + t].increment(1);
    }

    /// Counts an answer sent to a client and records how long the client waited for it.
    #[inline]
    pub fn response(&self, proto: Proto, source: Source, rcode: u16, elapsed: Duration) {
        let rc = wire::rcode_index(rcode);
        self.responses[rc * SOURCES.len() + source as usize].increment(1);
        self.request_duration[proto as usize * SOURCES.len() + source as usize].record(elapsed.as_secs_f64());
        self.sampled();
    }

    /// Counts an answer the AAAA handling synthesized.
    #[inline]
    pub fn synthesized(&self, qtype: u16, reason: crate::policy::aaaa::Reason) {
        let t = wire::type_index(qtype);
        let r = index_of(&SYNTH_REASONS, reason.label());
        self.synthesized[t * SYNTH_REASONS.len() + r].increment(1);
    }

    /// Counts a search-collapse decision (index into `impossible`, `collapsed`, `forwarded`)
    /// and the upstream queries it saved.
    #[inline]
    pub fn search(&self, action: usize, saved: u64) {
        self.search[action].increment(1);
        if saved > 0 {
            self.search_saved.increment(saved);
        }
    }

    /// Counts a packet dropped without a reply.
    #[inline]
    pub fn dropped(&self, why: Drop) {
        self.dropped[why as usize].increment(1);
    }

    /// Notes one histogram sample; every [`UPKEEP_EVERY`] samples wakes the upkeep task.
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
    pub requests_udp: Counter,
    pub requests_tcp: Counter,
    pub healthy: Gauge,
    errors: Vec<Counter>,
    durations: Vec<Histogram>,
}

const UPSTREAM_REASONS: [&str; 9] =
    ["timeout", "refused", "servfail", "rcode_refused", "rcode", "io", "closed", "malformed", "mismatch"];

impl UpstreamMetrics {
    pub fn new(to: &str) -> UpstreamMetrics {
        let to = to.to_string();
        UpstreamMetrics {
            requests_udp: counter!(UPSTREAM_REQUESTS_TOTAL, "to" => to.clone(), "proto" => "udp"),
            requests_tcp: counter!(UPSTREAM_REQUESTS_TOTAL, "to" => to.clone(), "proto" => "tcp"),
            healthy: gauge!(UPSTREAM_HEALTHY, "to" => to.clone()),
            errors: UPSTREAM_REASONS
                .iter()
                .map(|r| counter!(UPSTREAM_ERRORS_TOTAL, "to" => to.clone(), "reason" => *r))
                .collect(),
            durations: wire::RCODE_LABELS
                .iter()
                .map(|rc| histogram!(UPSTREAM_DURATION, "to" => to.clone(), "rcode" => *rc))
                .collect(),
        }
    }

    /// Counts a failed or rejected exchange; `reason` is one of the `reason` label values.
    pub fn error(&self, reason: &str) {
        self.errors[index_of(&UPSTREAM_REASONS, reason)].increment(1);
    }

    /// Records an upstream reply's round-trip time under its rcode.
    pub fn answered(&self, rcode: u16, rtt: Duration) {
        self.durations[wire::rcode_index(rcode)].record(rtt.as_secs_f64());
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
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| StartError::Metrics(e.to_string()))?;
    describe();
    Ok(handle)
}

fn describe() {
    describe_counter!(
        REQUESTS_TOTAL,
        "Queries received from clients, by transport, client address family and query type."
    );
    describe_counter!(
        RESPONSES_TOTAL,
        "Answers sent to clients, by rcode and by who produced them (upstream, cache, stale, synthesized, error)."
    );
    describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Time from receiving a client query to sending its answer."
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
    describe_gauge!(BUILD_INFO, "Always 1; the version label says which podns runs.");
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
    fn labels_fall_back_to_other() {
        assert_eq!(index_of(&UPSTREAM_REASONS, "mismatch"), UPSTREAM_REASONS.len() - 1);
        assert_eq!(index_of(&SYNTH_REASONS, "no_ipv6"), 4);
    }
}
