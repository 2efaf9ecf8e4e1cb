//! The composition root: parses the flags, builds the typed configuration, assembles the query
//! path from its parts ([`podns::pipeline::build`]) and hands it to the listeners.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand};
use podns::cache::Cache;
use podns::cli;
use podns::config::Config;
use podns::metrics::{CacheMetrics, Metrics};
use podns::pipeline::{self, Parts};
use podns::upstream::Upstreams;

/// podns: a DNS proxy for the applications of one Kubernetes pod.
#[derive(Debug, Parser)]
#[command(name = "podns", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: cli::RunArgs,
}

/// Subcommands besides the proxy itself (which runs when none is given).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add the podns sidecar to Kubernetes manifests (file or stdin) and print them.
    Inject(podns::k8s::inject::InjectArgs),
    /// Remove podns from manifests that `podns inject` changed, restoring each pod's original
    /// DNS settings, and print them.
    Uninject(podns::k8s::inject::UninjectArgs),
    /// Serve the mutating admission webhook that injects podns into new pods (HTTPS).
    Webhook(podns::k8s::webhook::WebhookArgs),
    /// Redirect the pod's DNS traffic (UDP and TCP port 53) to podns on a local port, except
    /// podns's own: the init container of capture mode (needs root and CAP_NET_ADMIN).
    CaptureInit(podns::k8s::capture::CaptureInitArgs),
    /// Explain what a pod's stub resolver walks for a name and what podns does with each
    /// candidate, and why; with --live, walk it directly and through podns.
    Explain(podns::diag::ExplainArgs),
    /// Pre-flight for a pod: cluster DNS, search list, upstream quirks, port conflicts, IPv6,
    /// each with what podns does about it (exit 1 when something blocks).
    Check(podns::diag::CheckArgs),
    /// Show the search collapse and the AAAA fix on this machine, without root or a cluster: a
    /// stand-in cluster DNS on loopback, podns in front of it, and stub walks through both.
    Demo(podns::diag::demo::DemoArgs),
}

/// Parses the process arguments; exits 2 with a message naming the flag on any error.
fn parse() -> Cli {
    let mut cli = Cli::parse();
    if cli.command.is_none() {
        cli.run = match cli.run.clone().validate() {
            Ok(run) => run,
            Err((flag, msg)) => Cli::command()
                .error(clap::error::ErrorKind::ValueValidation, format!("invalid value for {flag}: {msg}"))
                .exit(),
        };
    }
    cli
}

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
    let cli = parse();
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
        Some(Command::Demo(args)) => podns::diag::demo::run(args),
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
