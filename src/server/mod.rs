//! Listeners and the process lifecycle: bind, serve, become ready, drain on SIGTERM.

mod aaaa;
mod collapse;
mod fast;
mod handler;
pub mod http;
#[cfg(test)]
mod never_worse;
mod shares;
mod tcp;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

pub use collapse::{Collapse, CollapseMode};
pub use handler::{Admitted, Answer, Handler, InflightGuard};
pub use tcp::TcpLimits;

use crate::cache::{Cache, CacheConfig};
use crate::config::RunArgs;
use crate::error::StartError;
use crate::metrics::{CacheMetrics, Metrics};
use crate::policy::aaaa::AaaaPolicy;
use crate::policy::search::SearchConfig;

use crate::resolver::Resolver;
use crate::upstream::{UpstreamConfig, Upstreams};
use crate::wire::{Name, rtype};

/// What `/ready` reports: listeners bound, an upstream has answered, not draining.
pub struct Readiness {
    bound: AtomicBool,
    draining: AtomicBool,
    handler: Arc<Handler>,
}

impl Readiness {
    /// `Ok` when ready, else why not.
    pub fn state(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Acquire) {
            Err("draining")
        } else if !self.bound.load(Ordering::Acquire) {
            Err("listeners not bound yet")
        } else if !self.handler.resolver.upstreams.has_answered() {
            Err("no upstream has answered yet")
        } else {
            Ok(())
        }
    }
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // No SO_REUSEPORT: with it, any process of the same UID (distroless applications run as
    // 65532 like podns's image) could bind the same address and take part of the queries. Not
    // setting it makes a second bind fail with EADDRINUSE, as a DNS listener should.
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}

/// Asks the cluster domain's SOA until some upstream answers, so `/ready` turns 200 without
/// waiting for client traffic. Stops at the first answer: an idle ready pod sends nothing.
async fn probe_until_answered(handler: Arc<Handler>, cluster_domain: Name) {
    while !handler.resolver.upstreams.has_answered() {
        let _ = handler.resolver.lookup(cluster_domain.wire(), rtype::SOA, 0).await;
        if !handler.resolver.upstreams.has_answered() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    tracing::info!("an upstream answered; ready");
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "draining"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "draining"),
    }
}

/// The search collapse as configured: search list and ndots from --search/--ndots, else from
/// --resolv-conf; off when neither gives a search list.
fn collapse_from(args: &RunArgs) -> Option<Collapse> {
    if args.collapse == CollapseMode::Off {
        return None;
    }
    let text = std::fs::read_to_string(&args.resolv_conf).unwrap_or_default();
    let from_file = SearchConfig::from_resolv_conf(&text, &args.cluster_domain).ok();
    let cfg = if args.search.is_empty() {
        let mut c = from_file?;
        if let Some(n) = args.ndots {
            c = SearchConfig::new(&c.search().iter().map(Name::to_dotted).collect::<Vec<_>>(), n, &args.cluster_domain)
                .ok()?;
        }
        c
    } else {
        let ndots = args.ndots.or(from_file.map(|c| c.ndots())).unwrap_or(5);
        SearchConfig::new(&args.search, ndots, &args.cluster_domain).ok()?
    };
    if cfg.search().is_empty() {
        tracing::info!("no search list: search collapse off");
        return None;
    }
    tracing::info!(
        search = %cfg.search().iter().map(Name::to_dotted).collect::<Vec<_>>().join(" "),
        ndots = cfg.ndots(),
        namespace = %cfg.namespace().map(Name::to_dotted).unwrap_or_default(),
        "search collapse"
    );
    let namespaces =
        (!args.namespaces.is_empty()).then(|| args.namespaces.iter().filter_map(|n| Name::from_dotted(n)).collect());
    Some(Collapse::new(cfg, args.collapse, namespaces, args.probe_ttl, args.synth_ttl.as_secs() as u32))
}

/// Runs the proxy until SIGTERM/SIGINT, then drains and returns.
pub async fn run(args: RunArgs, prometheus: Option<PrometheusHandle>) -> Result<(), StartError> {
    let metrics = Arc::new(Metrics::new());
    if let Some(p) = &prometheus {
        tokio::spawn(crate::metrics::upkeep_task(p.clone(), metrics.upkeep_signal()));
    }
    let upstreams = Upstreams::new(
        &UpstreamConfig {
            addrs: args.upstream.clone(),
            attempt_timeout: args.attempt_timeout,
            query_timeout: args.query_timeout,
            sockets: args.upstream_sockets as usize,
            rotate: args.socket_rotate,
            tcp_idle: args.tcp_idle_timeout,
            unwanted_threshold: args.unwanted_reply_threshold,
        },
        metrics.tcp_fallback.clone(),
    );
    let cache_metrics = CacheMetrics::new();
    let cache = Cache::new(
        CacheConfig {
            max_bytes: args.cache_size.0,
            min_ttl: args.cache_min_ttl,
            max_ttl: args.cache_max_ttl,
            max_negative_ttl: args.cache_max_negative_ttl,
            serve_stale: args.serve_stale,
        },
        cache_metrics.clone(),
    );
    let resolver = Arc::new(Resolver::new(upstreams, cache, args.servfail_ttl, cache_metrics, metrics.clone()));
    let aaaa = AaaaPolicy {
        mode: args.aaaa,
        types: args.synthesize_types.clone(),
        nodata_for: args.aaaa_nodata_for.clone(),
        synth_ttl: args.synth_ttl,
        timeout: args.aaaa_timeout,
    };
    let collapse = collapse_from(&args);
    let per_client = args.max_inflight_per_client.unwrap_or(args.max_inflight / 2).clamp(1, args.max_inflight);
    let handler = Arc::new(Handler::new(resolver, metrics.clone(), args.max_inflight, per_client, aaaa, collapse));
    let ready = Arc::new(Readiness {
        bound: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        handler: handler.clone(),
    });

    if let (Some(addr), Some(p)) = (args.metrics_listen.0, prometheus) {
        let l = bind_tcp(addr).map_err(|source| StartError::Bind { proto: "http", addr, source })?;
        tracing::info!(proto = %"http", addr = %l.local_addr().unwrap_or(addr), "listening");
        tokio::spawn(http::serve(l, p, ready.clone()));
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let limits = TcpLimits {
        max_connections: args.tcp_max_connections,
        idle: args.tcp_idle_timeout,
        max_inflight: args.tcp_max_inflight,
    };
    let mut tasks = Vec::new();
    for &addr in &args.listen {
        let u = bind_udp(addr).map_err(|source| StartError::Bind { proto: "udp", addr, source })?;
        let t = bind_tcp(addr).map_err(|source| StartError::Bind { proto: "tcp", addr, source })?;
        tracing::info!(proto = %"udp", addr = %u.local_addr().unwrap_or(addr), "listening");
        tracing::info!(proto = %"tcp", addr = %t.local_addr().unwrap_or(addr), "listening");
        tasks.push(tokio::spawn(udp::serve(Arc::new(u), handler.clone(), stop_rx.clone())));
        tasks.push(tokio::spawn(tcp::serve(t, handler.clone(), limits, stop_rx.clone())));
    }
    for up in &args.upstream {
        tracing::info!(addr = %up, "upstream");
    }
    ready.bound.store(true, Ordering::Release);
    let cluster_domain = Name::from_dotted(&args.cluster_domain).expect("validated");
    let prober = tokio::spawn(probe_until_answered(handler.clone(), cluster_domain));

    shutdown_signal().await;
    ready.draining.store(true, Ordering::Release);
    prober.abort();
    // Keep answering while endpoints and clients move away, then stop taking queries and let
    // the ones in flight finish (bounded by their own query budget).
    tokio::time::sleep(args.drain_grace).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let _ = tokio::time::timeout(args.query_timeout + Duration::from_millis(100), handler.wait_idle()).await;
    tracing::info!("drained; exiting");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_bind_to_a_listen_address_fails() {
        let u = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = u.local_addr().unwrap();
        assert!(bind_udp(addr).is_err(), "a stranger could join our UDP listener");
        // Not even with SO_REUSEPORT set on its own side, as an intruder would.
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_port(true).unwrap();
        assert!(s.bind(&addr.into()).is_err());
        let t = bind_tcp(addr).unwrap();
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        s.set_reuse_port(true).unwrap();
        s.set_reuse_address(true).unwrap();
        assert!(s.bind(&t.local_addr().unwrap().into()).is_err(), "a stranger could join our TCP listener");
    }
}
