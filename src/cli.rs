//! The command line: a clap-derived, validated configuration.
//!
//! Every flag can also be given as an environment variable `PODNS_<FLAG>` (upper case, `-` as
//! `_`); repeatable flags take a comma-separated list there. Parsing errors and failed
//! validations exit with status 2 and name the flag, as clap does for its own errors.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};

use crate::policy::aaaa::AaaaMode;
use crate::policy::collapse::CollapseMode;

/// A value parser for a flag whose values are `names` (with their help) and stand for `all`,
/// in the same order: the policy enums stay free of clap.
fn one_of<E: Copy + Send + Sync + 'static>(
    names: &'static [(&'static str, &'static str)],
    all: &'static [E],
) -> impl TypedValueParser<Value = E> {
    PossibleValuesParser::new(names.iter().map(|(n, h)| PossibleValue::new(*n).help(*h)))
        .map(move |s| all[names.iter().position(|(n, _)| *n == s).expect("clap checked the value")])
}

/// The proxy's flags alone, as a parser: what an annotation that sets a flag is checked
/// against ([`crate::k8s::annotations`]). The whole command line, subcommands included, is
/// assembled in `main.rs`, so that this module does not depend on the subcommands' modules.
#[derive(Debug, Parser)]
#[command(name = "podns", version, about, long_about = None)]
pub struct ProxyFlags {
    #[command(flatten)]
    pub run: RunArgs,
}

/// Flags of the proxy.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Address to answer DNS on, over UDP and TCP (repeatable; IPv6 as [::1]:53).
    #[arg(long = "listen", env = "PODNS_LISTEN", value_delimiter = ',', default_value = "127.0.0.1:53")]
    pub listen: Vec<SocketAddr>,

    /// Upstream DNS server, IP or IP:PORT (repeatable). Default: the nameservers of --resolv-conf
    /// that are not one of our own --listen addresses.
    #[arg(long = "upstream", env = "PODNS_UPSTREAM", value_delimiter = ',', value_parser = parse_upstream)]
    pub upstream: Vec<SocketAddr>,

    /// resolv.conf to read upstreams from when --upstream is not given.
    #[arg(long, env = "PODNS_RESOLV_CONF", default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,

    /// Time to wait for one upstream attempt before trying the next upstream.
    #[arg(long, env = "PODNS_ATTEMPT_TIMEOUT", default_value = "800ms", value_parser = parse_duration)]
    pub attempt_timeout: Duration,

    /// Overall time budget of one client query across all attempts; SERVFAIL after it.
    #[arg(long, env = "PODNS_QUERY_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub query_timeout: Duration,

    /// Connected UDP sockets kept per upstream; each query leaves from a random one (RFC 5452).
    #[arg(long, env = "PODNS_UPSTREAM_SOCKETS", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub upstream_sockets: u16,

    /// Age after which an upstream UDP socket is replaced by one with a new source port, so
    /// conntrack spreads traffic to a Service IP over its endpoints.
    #[arg(long, env = "PODNS_SOCKET_ROTATE", default_value = "5s", value_parser = parse_duration)]
    pub socket_rotate: Duration,

    /// Queries in flight at most; beyond that podns answers SERVFAIL at once.
    #[arg(long, env = "PODNS_MAX_INFLIGHT", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_inflight: u32,

    /// TCP client connections at most; further connections are closed at once.
    #[arg(long, env = "PODNS_TCP_MAX_CONNECTIONS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub tcp_max_connections: u32,

    /// Queries in flight per TCP client connection at most; podns stops reading from a
    /// connection at this cap until one is answered (RFC 7766 §6.2.1.1).
    #[arg(long, env = "PODNS_TCP_MAX_INFLIGHT", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub tcp_max_inflight: u32,

    /// Queries in flight per client (source IP, UDP and TCP counted apart) at most; beyond it
    /// the client gets SERVFAIL at once. Default: half of --max-inflight.
    #[arg(long, env = "PODNS_MAX_INFLIGHT_PER_CLIENT", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_inflight_per_client: Option<u32>,

    /// Replies that match no query (wrong ID, question or source) counted before podns assumes a
    /// spoofing attempt: it then flushes the cache and replaces every upstream socket (unbound's
    /// unwanted-reply-threshold). 0 disables.
    #[arg(long, env = "PODNS_UNWANTED_REPLY_THRESHOLD", default_value_t = 10_000)]
    pub unwanted_reply_threshold: u64,

    /// A TCP client connection with nothing in flight is closed after this long (RFC 7766).
    #[arg(long, env = "PODNS_TCP_IDLE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub tcp_idle_timeout: Duration,

    /// Address for /metrics, /health and /ready over HTTP; "off" disables it.
    #[arg(long, env = "PODNS_METRICS_LISTEN", default_value = "0.0.0.0:9153", value_parser = parse_optional_addr)]
    pub metrics_listen: OptionalAddr,

    /// After SIGTERM/SIGINT: /ready turns 503 and listeners keep answering this long before exit.
    #[arg(long, env = "PODNS_DRAIN_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub drain_grace: Duration,

    /// Write one JSON line per client query to standard output: client, name, type, rcode,
    /// source, latency and what podns did (forwarded, cached, collapsed to a name, synthesized
    /// and why).
    #[arg(long, env = "PODNS_QUERY_LOG")]
    pub query_log: bool,

    /// With --query-log, log one query in N.
    #[arg(long, env = "PODNS_QUERY_LOG_SAMPLE", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub query_log_sample: u64,

    /// Log level or filter (error, warn, info, debug, trace, or a tracing filter); RUST_LOG when unset.
    #[arg(long, env = "PODNS_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// Bytes the answer cache may hold (e.g. 8MiB, 512KiB, 1000000); 0 disables the cache.
    #[arg(long, env = "PODNS_CACHE_SIZE", default_value = "8MiB", value_parser = parse_size)]
    pub cache_size: ByteSize,

    /// Longest time an answer is cached, whatever its TTL says.
    #[arg(long, env = "PODNS_CACHE_MAX_TTL", default_value = "1h", value_parser = parse_duration)]
    pub cache_max_ttl: Duration,

    /// Shortest time an answer is cached (raises lower TTLs).
    #[arg(long, env = "PODNS_CACHE_MIN_TTL", default_value = "0s", value_parser = parse_duration)]
    pub cache_min_ttl: Duration,

    /// Longest time NXDOMAIN/NODATA is cached (RFC 2308: min(SOA TTL, SOA MINIMUM), capped here).
    #[arg(long, env = "PODNS_CACHE_MAX_NEGATIVE_TTL", default_value = "5m", value_parser = parse_duration)]
    pub cache_max_negative_ttl: Duration,

    /// How long a resolution failure (every upstream failed) is remembered, so repeats and
    /// search walks fail at once instead of going upstream again (RFC 9520: at least 1s, at most
    /// 5m); 0 = not at all.
    #[arg(long, env = "PODNS_SERVFAIL_TTL", default_value = "5s", value_parser = parse_duration)]
    pub servfail_ttl: Duration,

    /// How long past expiry a cached answer may be served (TTL 30) when every upstream fails
    /// (RFC 8767); 0 disables serve-stale.
    #[arg(long, env = "PODNS_SERVE_STALE", default_value = "1h", value_parser = parse_duration)]
    pub serve_stale: Duration,

    /// AAAA handling: fix (answer from the A outcome when upstream fails AAAA), nodata (never
    /// ask AAAA; NODATA, or NXDOMAIN where the name does not exist), auto (nodata without global
    /// IPv6, else fix), forward (plain forwarding).
    #[arg(long, env = "PODNS_AAAA", default_value = "fix", value_parser = one_of(&AaaaMode::NAMES, &AaaaMode::ALL))]
    pub aaaa: AaaaMode,

    /// In fix mode: once the A query for the name has succeeded, wait this long for the
    /// upstream's AAAA answer before answering NODATA.
    #[arg(long, env = "PODNS_AAAA_TIMEOUT", default_value = "400ms", value_parser = parse_duration)]
    pub aaaa_timeout: Duration,

    /// TTL (and SOA MINIMUM) of synthesized NODATA/NXDOMAIN answers (5s when the cause was a
    /// timeout).
    #[arg(long, env = "PODNS_SYNTH_TTL", default_value = "30s", value_parser = parse_duration)]
    pub synth_ttl: Duration,

    /// Names that always get NODATA for the synthesized types: a domain suffix (example.com) or
    /// a regex (^postgresql-primary\.) over the lower-case name (repeatable).
    #[arg(long = "aaaa-nodata-for", env = "PODNS_AAAA_NODATA_FOR", value_delimiter = ',', value_parser = crate::policy::aaaa::NamePattern::parse)]
    pub aaaa_nodata_for: Vec<crate::policy::aaaa::NamePattern>,

    /// Query types the AAAA handling applies to (AAAA, HTTPS, SVCB, or TYPEnnn).
    #[arg(long, env = "PODNS_SYNTHESIZE_TYPES", value_delimiter = ',', default_value = "AAAA", value_parser = parse_qtype)]
    pub synthesize_types: Vec<u16>,

    /// Search-domain collapse: on (answer FQDN-like names for the whole search walk in one round
    /// trip), aggressive (also skip non-cluster search domains), off.
    #[arg(long, env = "PODNS_COLLAPSE", default_value = "on", value_parser = one_of(&CollapseMode::NAMES, &CollapseMode::ALL))]
    pub collapse: CollapseMode,

    /// Search list to assume (repeatable); default: the search line of --resolv-conf.
    #[arg(long, env = "PODNS_SEARCH", value_delimiter = ',')]
    pub search: Vec<String>,

    /// ndots to assume; default: options ndots of --resolv-conf (5 with --search alone).
    #[arg(long, env = "PODNS_NDOTS", value_parser = clap::value_parser!(u8).range(0..=15))]
    pub ndots: Option<u8>,

    /// The cluster's namespaces (repeatable); when given, podns does not probe whether a TLD
    /// label is a namespace.
    #[arg(long, env = "PODNS_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// How long the answer of a TLD probe (is L a namespace or a service of ours?) is kept.
    #[arg(long, env = "PODNS_PROBE_TTL", default_value = "5m", value_parser = parse_duration)]
    pub probe_ttl: Duration,

    /// Cluster domain of the Kubernetes cluster; its SOA is what the readiness probe asks.
    #[arg(long, env = "PODNS_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
}

/// Parses a query type name (A, AAAA, HTTPS, SVCB, MX, TXT, ...) or `TYPEnnn`.
pub fn parse_qtype(s: &str) -> Result<u16, String> {
    use crate::wire::rtype;
    let u = s.trim().to_ascii_uppercase();
    let t = match u.as_str() {
        "A" => rtype::A,
        "AAAA" => rtype::AAAA,
        "HTTPS" => rtype::HTTPS,
        "SVCB" => rtype::SVCB,
        "MX" => rtype::MX,
        "TXT" => rtype::TXT,
        "SRV" => rtype::SRV,
        "PTR" => rtype::PTR,
        "CNAME" => rtype::CNAME,
        "NS" => rtype::NS,
        "SOA" => rtype::SOA,
        _ => u
            .strip_prefix("TYPE")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("`{s}` is not a query type like AAAA, HTTPS or TYPE65"))?,
    };
    if t == rtype::A {
        return Err("A is the reference the synthesized answers are derived from; it cannot be synthesized".into());
    }
    Ok(t)
}

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// Parses `8MiB`, `512KiB`, `1GiB`, `64kB`, `1000` (bytes).
pub fn parse_size(s: &str) -> Result<ByteSize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size like 8MiB or 1000000"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "k" | "kB" | "K" => 1000,
        "KiB" | "Ki" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "MiB" | "Mi" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "GiB" | "Gi" => 1 << 30,
        u => {
            return Err(format!("`{s}`: unknown unit `{u}` (use B, KiB, MiB, GiB, kB, MB, GB)"));
        }
    };
    n.checked_mul(mult).map(ByteSize).ok_or_else(|| format!("`{s}` is too large"))
}

/// A socket address that may be switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

fn parse_optional_addr(s: &str) -> Result<OptionalAddr, String> {
    match s {
        "off" | "none" | "" => Ok(OptionalAddr(None)),
        _ => s.parse().map(|a| OptionalAddr(Some(a))).map_err(|e| format!("`{s}` is not IP:PORT or \"off\": {e}")),
    }
}

/// Parses `IP` (port 53) or `IP:PORT` / `[IPv6]:PORT`.
pub fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("`{s}` is not an IP address or IP:PORT"))
}

/// Parses durations such as `800ms`, `2s`, `5m`; zero is allowed only where it makes sense, so
/// callers that need a positive value check it in [`RunArgs::validate`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration like 800ms or 2s: {e}"))
}

/// The `nameserver` addresses of a resolv.conf text, in order ([`crate::resolv_conf`]).
pub fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    crate::resolv_conf::ResolvConf::parse(text).nameservers
}

/// True when `addr` would be ourselves: the same IP and port as a listen address, or a
/// wildcard listener on the same port that covers it.
fn is_own_listener(addr: &SocketAddr, listen: &[SocketAddr]) -> bool {
    listen.iter().any(|l| {
        l.port() == addr.port() && (l.ip() == addr.ip() || (l.ip().is_unspecified() && l.is_ipv4() == addr.is_ipv4()))
    })
}

impl RunArgs {
    /// Checks what clap cannot, and resolves the upstream list. On error, returns the flag and
    /// message to report (exit status 2).
    pub fn validate(mut self) -> Result<Self, (&'static str, String)> {
        for (flag, d) in [
            ("--attempt-timeout", self.attempt_timeout),
            ("--query-timeout", self.query_timeout),
            ("--tcp-idle-timeout", self.tcp_idle_timeout),
            ("--socket-rotate", self.socket_rotate),
        ] {
            if d.is_zero() {
                return Err((flag, "must be greater than zero".into()));
            }
        }
        if self.attempt_timeout > self.query_timeout {
            return Err((
                "--attempt-timeout",
                format!(
                    "{} is longer than --query-timeout {}",
                    humantime::format_duration(self.attempt_timeout),
                    humantime::format_duration(self.query_timeout)
                ),
            ));
        }
        if !self.search.is_empty()
            && let Err(e) =
                crate::policy::search::SearchConfig::new(&self.search, self.ndots.unwrap_or(5), &self.cluster_domain)
        {
            return Err(("--search", e));
        }
        if self.synth_ttl.is_zero() {
            return Err(("--synth-ttl", "must be greater than zero".into()));
        }
        if self.cache_min_ttl > self.cache_max_ttl {
            return Err(("--cache-min-ttl", "is longer than --cache-max-ttl".into()));
        }
        if crate::wire::Name::from_dotted(&self.cluster_domain).is_none() {
            return Err(("--cluster-domain", format!("`{}` is not a domain name", self.cluster_domain)));
        }
        self.cluster_domain = self.cluster_domain.trim_end_matches('.').to_ascii_lowercase();
        if self.upstream.is_empty() {
            let text = std::fs::read_to_string(&self.resolv_conf).map_err(|e| {
                (
                    "--upstream",
                    format!(
                        "none given and --resolv-conf {} cannot be read ({e}); pass --upstream IP[:PORT]",
                        self.resolv_conf.display()
                    ),
                )
            })?;
            self.upstream =
                resolv_conf_nameservers(&text).into_iter().filter(|a| !is_own_listener(a, &self.listen)).collect();
            if self.upstream.is_empty() {
                return Err((
                    "--upstream",
                    format!(
                        "none given and {} has no nameserver other than our own listen address; pass --upstream IP[:PORT] (the cluster DNS Service IP)",
                        self.resolv_conf.display()
                    ),
                ));
            }
        } else if let Some(own) = self.upstream.iter().find(|a| is_own_listener(a, &self.listen)) {
            return Err(("--upstream", format!("{own} is one of our own --listen addresses")));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<RunArgs, (&'static str, String)> {
        let mut v = vec!["podns"];
        v.extend_from_slice(extra);
        ProxyFlags::try_parse_from(v).expect("parses").run.validate()
    }

    #[test]
    fn upstream_forms() {
        assert_eq!(parse_upstream("10.0.0.10").unwrap(), "10.0.0.10:53".parse().unwrap());
        assert_eq!(parse_upstream("10.0.0.10:5353").unwrap(), "10.0.0.10:5353".parse().unwrap());
        assert_eq!(parse_upstream("[fd00::a]:54").unwrap(), "[fd00::a]:54".parse().unwrap());
        assert_eq!(parse_upstream("fd00::a").unwrap(), "[fd00::a]:53".parse().unwrap());
        assert!(parse_upstream("dns.example").is_err());
    }

    #[test]
    fn resolv_conf_skips_own_listener() {
        let dir = std::env::temp_dir().join(format!("podns-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        std::fs::write(
            &path,
            "search default.svc.cluster.local\nnameserver 127.0.0.1\nnameserver 10.96.0.10\n# nameserver 1.1.1.1\nnameserver fe80::1%eth0\n",
        )
        .unwrap();
        let a = args(&["--resolv-conf", path.to_str().unwrap()]).unwrap();
        assert_eq!(a.upstream, vec!["10.96.0.10:53".parse().unwrap(), "[fe80::1]:53".parse().unwrap()]);
        std::fs::write(&path, "nameserver 127.0.0.1\n").unwrap();
        let err = args(&["--resolv-conf", path.to_str().unwrap()]).unwrap_err();
        assert_eq!(err.0, "--upstream");
        assert!(err.1.contains("pass --upstream"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wildcard_listener_counts_as_own() {
        let err = args(&["--listen", "0.0.0.0:53", "--upstream", "10.1.2.3"]).unwrap_err();
        assert_eq!(err.0, "--upstream");
        assert!(args(&["--listen", "0.0.0.0:5353", "--upstream", "10.1.2.3"]).is_ok());
    }

    #[test]
    fn timeouts_are_checked() {
        let err = args(&["--upstream", "10.1.2.3", "--attempt-timeout", "3s"]).unwrap_err();
        assert_eq!(err.0, "--attempt-timeout");
        let err = args(&["--upstream", "10.1.2.3", "--query-timeout", "0s"]).unwrap_err();
        assert_eq!(err.0, "--query-timeout");
        assert!(ProxyFlags::try_parse_from(["podns", "--attempt-timeout", "soon"]).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8MiB"), Ok(ByteSize(8 << 20)));
        assert_eq!(parse_size("0"), Ok(ByteSize(0)));
        assert_eq!(parse_size("64kB"), Ok(ByteSize(64_000)));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("8 parsecs").is_err());
    }

    #[test]
    fn metrics_can_be_switched_off() {
        let a = args(&["--upstream", "10.1.2.3", "--metrics-listen", "off"]).unwrap();
        assert_eq!(a.metrics_listen, OptionalAddr(None));
    }
}
