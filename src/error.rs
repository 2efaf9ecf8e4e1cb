//! Error types, each saying which side failed: the client, an upstream, or podns itself.

use std::net::SocketAddr;

use crate::labels::UpstreamReason;

/// A client connection that cannot be served (malformed queries are answered, not errors).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("TCP message of {0} bytes is below the 12-byte header")]
    ShortFrame(usize),
}

/// One failed exchange with an upstream; the metric label is [`UpstreamError::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {0} did not answer in time")]
    Timeout(SocketAddr),
    #[error("upstream {0} refused the connection or the port is closed")]
    Refused(SocketAddr),
    #[error("upstream {0} answered with rcode {1}")]
    Rcode(SocketAddr, u16),
    #[error("upstream {0} connection failed: {1:?}")]
    Io(SocketAddr, std::io::ErrorKind),
    #[error("upstream {0} closed the connection")]
    Closed(SocketAddr),
    #[error("upstream {0} sent a reply that cannot be read")]
    Malformed(SocketAddr),
}

impl UpstreamError {
    /// The `reason` label of `podns_upstream_errors_total`.
    pub fn reason(&self) -> UpstreamReason {
        match self {
            UpstreamError::Timeout(_) => UpstreamReason::Timeout,
            UpstreamError::Refused(_) => UpstreamReason::Refused,
            UpstreamError::Rcode(_, 2) => UpstreamReason::Servfail,
            UpstreamError::Rcode(_, 5) => UpstreamReason::RcodeRefused,
            UpstreamError::Rcode(..) => UpstreamReason::Rcode,
            UpstreamError::Io(..) => UpstreamReason::Io,
            UpstreamError::Closed(_) => UpstreamReason::Closed,
            UpstreamError::Malformed(_) => UpstreamReason::Malformed,
        }
    }
}

/// Why podns could not produce an answer from upstream for a query (it then says SERVFAIL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("every upstream attempt failed; last: {0}")]
    Exhausted(UpstreamError),
    /// The client's `--query-timeout`, or a layer's wait for a sub-query, ran out first.
    #[error("the time budget ran out")]
    Budget,
    /// The exchange this query joined ended without a result (its leader was cancelled after
    /// meeting silence), or such an end is remembered.
    #[error("the shared exchange ended without an answer")]
    Abandoned,
    /// The reply was truncated and its TCP retry failed (remembered, not asked again).
    #[error("truncated reply and the TCP retry failed")]
    Truncated,
    /// A policy found no answer to give: the AAAA handling when the name's A lookup failed
    /// too, so that SERVFAIL is the honest answer.
    #[error("no answer can be synthesized")]
    Declined,
    /// A task of podns's own failed; never expected.
    #[error("internal error")]
    Internal,
}

/// A failure of podns itself at startup.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {proto} listener on {addr}: {source}")]
    Bind { proto: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("cannot set up metrics: {0}")]
    Metrics(String),
}
