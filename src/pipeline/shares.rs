//! Per-client shares of `--max-inflight`, so that one client cannot take the whole budget and
//! leave every other client with SERVFAIL.
//!
//! A client is a source address and a transport: UDP clients by source IP, and TCP as its own
//! set of buckets, so TCP clients — which can pipeline thousands of queries on a connection
//! (RFC 7766 §6.2.1.1) — never take the share UDP clients, the stub resolvers' normal path, can
//! use. Each client may hold at most its share (by default half of `--max-inflight`) of the
//! queries in flight; further queries from it get SERVFAIL at once, as queries beyond
//! `--max-inflight` do. This is the role dnsdist's per-connection `maxInFlight` and
//! `setMaxTCPConnectionsPerClient` and unbound's per-IP limits play.
//!
//! Counting is lock-free: clients hash into a fixed array of counters, one atomic add and one
//! subtract per forwarded query. Two clients that share a bucket share a share, which can only
//! make the limit stricter for them, never looser. Inside a pod every application connects
//! from 127.0.0.1, so there the share separates UDP from TCP (and the per-connection cap of
//! the TCP listener separates TCP connections); a podns listening on a pod address also keeps
//! remote clients apart.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::metrics::Proto;

/// Buckets per transport: enough that distinct remote clients rarely share one.
const BUCKETS: usize = 64;

/// The in-flight counters of every client bucket.
pub struct ClientShares {
    counts: Box<[AtomicU32]>,
    share: u32,
}

/// A cheap, well-mixed hash of an address (SplitMix64's finaliser over its octets).
fn mix(ip: IpAddr) -> u64 {
    let mut x: u64 = match ip {
        IpAddr::V4(a) => u64::from(u32::from(a)),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            (v as u64) ^ ((v >> 64) as u64).rotate_left(17)
        }
    };
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl ClientShares {
    /// Shares of `share` queries each (at least 1).
    pub fn new(share: u32) -> ClientShares {
        ClientShares { counts: (0..2 * BUCKETS).map(|_| AtomicU32::new(0)).collect(), share: share.max(1) }
    }

    fn bucket(ip: IpAddr, proto: Proto) -> usize {
        let base = if proto == Proto::Tcp { BUCKETS } else { 0 };
        base + (mix(ip) % BUCKETS as u64) as usize
    }

    /// Takes one query of the client's share; `None` when the share is used up. The returned
    /// bucket is handed back with [`ClientShares::release`].
    pub fn take(&self, ip: IpAddr, proto: Proto) -> Option<usize> {
        let b = Self::bucket(ip, proto);
        let n = self.counts[b].fetch_add(1, Ordering::AcqRel);
        if n >= self.share {
            self.counts[b].fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(b)
    }

    pub fn release(&self, bucket: usize) {
        self.counts[bucket].fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_cannot_take_more_than_its_share() {
        let s = ClientShares::new(3);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let taken: Vec<usize> = (0..3).map(|_| s.take(lo, Proto::Tcp).expect("within share")).collect();
        assert!(s.take(lo, Proto::Tcp).is_none(), "share used up");
        // The same address over UDP is another client.
        assert!(s.take(lo, Proto::Udp).is_some());
        s.release(taken[0]);
        assert!(s.take(lo, Proto::Tcp).is_some(), "released");
    }

    #[test]
    fn addresses_spread_over_buckets() {
        let used: std::collections::HashSet<usize> =
            (0..=255u8).map(|i| ClientShares::bucket(IpAddr::from([10, 0, 0, i]), Proto::Udp)).collect();
        assert!(used.len() > BUCKETS / 2, "only {} buckets used", used.len());
        assert!(used.iter().all(|&b| b < BUCKETS));
    }
}
