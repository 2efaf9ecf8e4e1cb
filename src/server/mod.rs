//! Listeners and the process lifecycle: bind, serve, become ready, drain on SIGTERM.

mod fast;
pub mod http;
#[cfg(test)]
mod never_worse;
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

pub use crate::config::TcpLimits;

use crate::config::Config;
use crate::error::StartError;

use crate::pipeline::Pipeline;
use crate::wire::{Name, rtype};

/// What `/ready` reports: listeners bound, an upstream has answered, not draining.
pub struct Readiness {
    bound: AtomicBool,
    draining: AtomicBool,
    pipeline: Arc<Pipeline>,
    /// Where `/debug/explain?live=1` walks: this podns, its first upstream, its metrics.
    live: Option<crate::diag::LiveArgs>,
}

/// `addr` as a client reaches it: a wildcard address becomes the loopback of its family.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        ip if !ip.is_unspecified() => addr,
        std::net::IpAddr::V4(_) => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        std::net::IpAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port())),
    }
}

impl Readiness {
    /// `Ok` when ready, else why not.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Where a live explanation walks, when this podns can walk at all.
    pub fn live(&self) -> Option<crate::diag::LiveArgs> {
        self.live
    }

    pub fn state(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Acquire) {
            Err("draining")
        } else if !self.bound.load(Ordering::Acquire) {
            Err("listeners not bound yet")
        } else if !self.pipeline.upstreams.has_answered() {
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
async fn probe_until_answered(pipeline: Arc<Pipeline>, cluster_domain: Name) {
    while !pipeline.upstreams.has_answered() {
        let _ = pipeline.ask(cluster_domain.wire(), rtype::SOA).await;
        if !pipeline.upstreams.has_answered() {
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

/// Serves `pipeline` on the configured listeners until SIGTERM/SIGINT, then drains and returns.
pub async fn run(
    cfg: &Config,
    pipeline: Arc<Pipeline>,
    prometheus: Option<PrometheusHandle>,
) -> Result<(), StartError> {
    let ready = Arc::new(Readiness {
        bound: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        pipeline: pipeline.clone(),
        live: match (cfg.listen.first(), cfg.upstream.addrs.first(), cfg.metrics_listen) {
            (Some(&via), Some(&upstream), Some(metrics)) => Some(crate::diag::LiveArgs {
                via: reachable(via),
                upstream,
                metrics: reachable(metrics),
                timeout: cfg.upstream.attempt_timeout,
            }),
            _ => None,
        },
    });

    if let (Some(addr), Some(p)) = (cfg.metrics_listen, prometheus) {
        let l = bind_tcp(addr).map_err(|source| StartError::Bind { proto: "http", addr, source })?;
        tracing::info!(proto = %"http", addr = %l.local_addr().unwrap_or(addr), "listening");
        tokio::spawn(http::serve(l, p, ready.clone()));
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let limits = cfg.tcp;
    let mut tasks = Vec::new();
    for &addr in &cfg.listen {
        let u = bind_udp(addr).map_err(|source| StartError::Bind { proto: "udp", addr, source })?;
        let t = bind_tcp(addr).map_err(|source| StartError::Bind { proto: "tcp", addr, source })?;
        tracing::info!(proto = %"udp", addr = %u.local_addr().unwrap_or(addr), "listening");
        tracing::info!(proto = %"tcp", addr = %t.local_addr().unwrap_or(addr), "listening");
        tasks.push(tokio::spawn(udp::serve(Arc::new(u), pipeline.clone(), stop_rx.clone())));
        tasks.push(tokio::spawn(tcp::serve(t, pipeline.clone(), limits, stop_rx.clone())));
    }
    for up in &cfg.upstream.addrs {
        tracing::info!(addr = %up, "upstream");
    }
    ready.bound.store(true, Ordering::Release);
    let prober = tokio::spawn(probe_until_answered(pipeline.clone(), cfg.cluster_domain.clone()));

    shutdown_signal().await;
    ready.draining.store(true, Ordering::Release);
    prober.abort();
    // Keep answering while endpoints and clients move away, then stop taking queries and let
    // the ones in flight finish (bounded by their own query budget).
    tokio::time::sleep(cfg.drain_grace).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let _ = tokio::time::timeout(cfg.upstream.query_timeout + Duration::from_millis(100), pipeline.wait_idle()).await;
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
        let t = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        s.set_reuse_port(true).unwrap();
        s.set_reuse_address(true).unwrap();
        assert!(s.bind(&t.local_addr().unwrap().into()).is_err(), "a stranger could join our TCP listener");
    }
}
