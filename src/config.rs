//! The proxy's configuration, typed and built once from the validated flags ([`crate::cli`]):
//! what each part of the program is made with. resolv.conf is read here, once
//! ([`crate::resolv_conf`]), for both the upstreams and the search list.

use std::net::SocketAddr;
use std::time::Duration;

use crate::cache::CacheConfig;
use crate::cli::RunArgs;
use crate::pipeline::{CollapseConfig, CollapseMode};
use crate::policy::aaaa::AaaaPolicy;
use crate::policy::search::SearchConfig;
use crate::resolv_conf::ResolvConf;
use crate::upstream::UpstreamConfig;
use crate::wire::Name;

/// Limits of the TCP listener.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    pub max_connections: u32,
    pub idle: Duration,
    /// Queries in flight per connection at most.
    pub max_inflight: u32,
}

/// Everything the proxy runs with.
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub upstream: UpstreamConfig,
    pub cache: CacheConfig,
    pub servfail_ttl: Duration,
    pub aaaa: AaaaPolicy,
    /// The search collapse; `None` when off or without a search list.
    pub collapse: Option<CollapseConfig>,
    pub max_inflight: u32,
    pub max_per_client: u32,
    pub tcp: TcpLimits,
    pub cluster_domain: Name,
    pub drain_grace: Duration,
    /// `--query-log`: log one query in this many.
    pub query_log: Option<u64>,
}

impl Config {
    /// Builds the configuration from validated flags (`args.validate()` has resolved the
    /// upstreams) and the text of `--resolv-conf` (`None` when unreadable).
    pub fn new(args: &RunArgs, resolv_conf: Option<&str>) -> Config {
        let rc = resolv_conf.map(ResolvConf::parse);
        let collapse = collapse(args, rc.as_ref());
        Config {
            listen: args.listen.clone(),
            metrics_listen: args.metrics_listen.0,
            upstream: UpstreamConfig {
                addrs: args.upstream.clone(),
                attempt_timeout: args.attempt_timeout,
                query_timeout: args.query_timeout,
                sockets: args.upstream_sockets as usize,
                rotate: args.socket_rotate,
                tcp_idle: args.tcp_idle_timeout,
                unwanted_threshold: args.unwanted_reply_threshold,
            },
            cache: CacheConfig {
                max_bytes: args.cache_size.0,
                min_ttl: args.cache_min_ttl,
                max_ttl: args.cache_max_ttl,
                max_negative_ttl: args.cache_max_negative_ttl,
                serve_stale: args.serve_stale,
            },
            servfail_ttl: args.servfail_ttl,
            aaaa: AaaaPolicy {
                mode: args.aaaa,
                types: args.synthesize_types.clone(),
                nodata_for: args.aaaa_nodata_for.clone(),
                synth_ttl: args.synth_ttl,
                timeout: args.aaaa_timeout,
            },
            collapse,
            max_inflight: args.max_inflight,
            max_per_client: args.max_inflight_per_client.unwrap_or(args.max_inflight / 2).clamp(1, args.max_inflight),
            tcp: TcpLimits {
                max_connections: args.tcp_max_connections,
                idle: args.tcp_idle_timeout,
                max_inflight: args.tcp_max_inflight,
            },
            cluster_domain: Name::from_dotted(&args.cluster_domain).expect("validated"),
            drain_grace: args.drain_grace,
            query_log: args.query_log.then_some(args.query_log_sample),
        }
    }
}

/// The search collapse as configured: search list and ndots from --search/--ndots, else from
/// resolv.conf; off when neither gives a search list.
fn collapse(args: &RunArgs, rc: Option<&ResolvConf>) -> Option<CollapseConfig> {
    if args.collapse == CollapseMode::Off {
        return None;
    }
    let (search, ndots) = match (args.search.is_empty(), rc) {
        (false, _) => (args.search.clone(), args.ndots.or(rc.map(|r| r.ndots)).unwrap_or(5)),
        (true, Some(rc)) => (rc.search.clone(), args.ndots.unwrap_or(rc.ndots)),
        (true, None) => return None,
    };
    let cfg = SearchConfig::new(&search, ndots, &args.cluster_domain).ok()?;
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
    Some(CollapseConfig {
        search: cfg,
        mode: args.collapse,
        namespaces,
        probe_ttl: args.probe_ttl,
        synth_ttl: args.synth_ttl.as_secs() as u32,
    })
}
