//! The closed sets podns counts by. Each is an enum whose metric label values are generated
//! with it ([`labelled!`]), so a label can neither drift from its variant nor be looked up by
//! string: the per-packet path indexes an array by the variant. Pure: no metrics crate here,
//! so the policies can name these without depending on the exporter.

/// Declares an enum with a label per variant: `ALL`, `COUNT`, `label()` and `index()`.
#[macro_export]
macro_rules! labelled {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($(#[$vm:meta])* $v:ident => $l:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name { $($(#[$vm])* $v),+ }
        impl $name {
            /// Every variant, in declaration order (`index()` is the position here).
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            pub const COUNT: usize = Self::ALL.len();
            /// The metric label value.
            pub const fn label(self) -> &'static str {
                match self { $($name::$v => $l),+ }
            }
            pub const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

labelled! {
    /// Transport a query arrived on (`proto` label).
    pub enum Proto {
        Udp => "udp",
        Tcp => "tcp",
    }
}

labelled! {
    /// Who produced the answer a client got (`source` label).
    pub enum Source {
        /// Relayed from an upstream.
        Upstream => "upstream",
        /// Served from the answer cache.
        Cache => "cache",
        /// Served from an expired cache entry because every upstream failed (RFC 8767).
        Stale => "stale",
        /// Written by a podns policy (search collapse, AAAA handling, root-zone denial).
        Synthesized => "synthesized",
        /// An error podns answered itself: FORMERR, NOTIMP, BADVERS, or SERVFAIL when upstreams
        /// failed or too many queries were in flight.
        Error => "error",
    }
}

labelled! {
    /// Why a packet is dropped without a reply (`reason` label of `podns_dropped_total`).
    pub enum Drop {
        /// Shorter than a header: nothing to answer to.
        Short => "short",
        /// QR set: a response sent to us; answering could make a reflection loop.
        Response => "response",
        /// The reply could not be sent back to the client.
        SendFailed => "send_failed",
    }
}

labelled! {
    /// What the search collapse did with a query in the search walk (`action` label of
    /// `podns_search_total`).
    pub enum SearchAction {
        /// A candidate the cluster's naming rules exclude, denied without asking.
        Impossible => "impossible",
        /// A candidate answered from the walk's remaining candidates.
        Collapsed => "collapsed",
        /// A candidate that might exist, forwarded unchanged.
        Forwarded => "forwarded",
    }
}

labelled! {
    /// Why an upstream exchange failed or a packet from it was rejected (`reason` label of
    /// `podns_upstream_errors_total`).
    pub enum UpstreamReason {
        Timeout => "timeout",
        /// The connection was refused or the port is closed (ICMP).
        Refused => "refused",
        /// It answered SERVFAIL.
        Servfail => "servfail",
        /// It answered REFUSED.
        RcodeRefused => "rcode_refused",
        /// It answered another error rcode (FORMERR to an EDNS query, NOTIMP).
        Rcode => "rcode",
        Io => "io",
        Closed => "closed",
        Malformed => "malformed",
        /// A reply whose ID or question matches no query in flight (late, or spoofed).
        Mismatch => "mismatch",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_their_variants() {
        assert_eq!(Source::COUNT, 5);
        assert_eq!(Source::Stale.label(), "stale");
        for (i, s) in Source::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
        }
        assert_eq!(UpstreamReason::Mismatch.label(), "mismatch");
        assert_eq!(UpstreamReason::ALL.last(), Some(&UpstreamReason::Mismatch));
    }
}
