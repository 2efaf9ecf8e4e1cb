//! A scripted upstream for in-process tests: everything above the socket (the attempt loop,
//! failover, the TCP and EDNS retries, the cache, the policies) runs for real against replies
//! a test computes from each query. Test-only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use metrics::Counter;

use super::{Health, Transport, Upstream, UpstreamConfig, Upstreams};
use crate::error::UpstreamError;
use crate::metrics::UpstreamMetrics;

/// How a scripted upstream answers one attempt.
pub trait Script: Send + Sync {
    /// The reply to `query` (sent over TCP when `tcp`), or `None` for silence: the attempt then
    /// times out, after its timeout on the (usually paused) tokio clock.
    fn reply(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>>;
}

impl dyn Script {
    pub(super) async fn exchange(&self, query: &[u8], tcp: bool, timeout: Duration) -> Result<BytesMut, UpstreamError> {
        let addr: SocketAddr = ([198, 18, 0, 10], 53).into();
        match self.reply(query, tcp) {
            Some(r) => Ok(BytesMut::from(&r[..])),
            None => {
                tokio::time::sleep(timeout).await;
                Err(UpstreamError::Timeout(addr))
            }
        }
    }
}

impl UpstreamConfig {
    /// The defaults of the flags, for in-process tests (no addresses: scripts answer).
    pub fn test_defaults() -> UpstreamConfig {
        UpstreamConfig {
            addrs: Vec::new(),
            attempt_timeout: Duration::from_millis(800),
            query_timeout: Duration::from_secs(2),
            sockets: 1,
            rotate: Duration::from_secs(60),
            tcp_idle: Duration::from_secs(10),
            unwanted_threshold: 0,
        }
    }
}

impl Upstreams {
    /// Upstreams answered by `scripts` (one upstream each) instead of sockets.
    pub fn scripted(cfg: &UpstreamConfig, scripts: Vec<Arc<dyn Script>>) -> Upstreams {
        let mut u = Upstreams::new(&UpstreamConfig { addrs: Vec::new(), ..cfg.clone() }, Counter::noop());
        u.list = scripts
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let addr: SocketAddr = ([198, 18, 0, 10 + i as u8], 53).into();
                let metrics = Arc::new(UpstreamMetrics::new(&addr.to_string()));
                Upstream { addr, transport: Transport::Scripted(s), health: Health::new(), metrics }
            })
            .collect();
        u
    }
}
