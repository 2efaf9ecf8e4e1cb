//! The composition root: parses the flags, builds the typed configuration, assembles the query
//! path from its parts ([`podns::pipeline::build`]) and hands it to the listeners.

use std::process::ExitCode;
use std::sync::Arc;

use podns::cache::Cache;
use podns::cli::{self, Command};
use podns::config::Config;
use podns::metrics::{CacheMetrics, Metrics};
use podns::pipeline::{self, Parts};
use podns::upstream::Upstreams;

fn init_tracing(level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).unwrap_or_else(|e| {
            eprintln!("error: invalid value for --log-level: {e}");
            std::process::exit(2);
        }),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).init();
}

fn main() -> ExitCode {
    let cli = cli::parse();
    match cli.command {
        Some(Command::Inject(args)) => podns::inject::run(args),
        Some(Command::Uninject(args)) => podns::inject::run_uninject(args),
        Some(Command::Webhook(args)) => {
            init_tracing(args.log_level.as_deref());
            podns::k8s::webhook::run(args)
        }
        Some(Command::CaptureInit(args)) => podns::k8s::capture::run(args),
        Some(Command::Explain(args)) => podns::diag::run_explain(args),
        Some(Command::Check(args)) => podns::diag::run_check(args),
        None => {
            let args = cli.run;
            init_tracing(args.log_level.as_deref());
            let prometheus = match args.metrics_listen.0 {
                Some(_) => match podns::metrics::install() {
                    Ok(h) => Some(h),
                    Err(e) => {
                        tracing::error!("{e}");
                        return ExitCode::FAILURE;
                    }
                },
                None => None,
            };
            // One thread: a sidecar's CPU is best spent answering, not synchronising threads.
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let resolv_conf = std::fs::read_to_string(&args.resolv_conf).ok();
            let mut cfg = Config::new(&args, resolv_conf.as_deref());
            let served = rt.block_on(async {
                let metrics = Arc::new(Metrics::new());
                if let Some(p) = &prometheus {
                    tokio::spawn(podns::metrics::upkeep_task(p.clone(), metrics.upkeep_signal()));
                }
                let cache_metrics = CacheMetrics::new();
                let pipeline = pipeline::build(Parts {
                    upstreams: Upstreams::new(&cfg.upstream, metrics.tcp_fallback.clone()),
                    cache: Cache::new(cfg.cache, cache_metrics.clone()),
                    cache_metrics,
                    metrics,
                    servfail_ttl: cfg.servfail_ttl,
                    aaaa: cfg.aaaa.clone(),
                    collapse: cfg.collapse.take(),
                    max_inflight: cfg.max_inflight,
                    max_per_client: cfg.max_per_client,
                    query_log: cfg.query_log,
                });
                podns::server::run(&cfg, pipeline, prometheus).await
            });
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
