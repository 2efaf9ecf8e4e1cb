//! Entry point: parses the configuration and wires the pieces together.

use std::process::ExitCode;

use podns::config::{self, Command};

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
    let cli = config::parse();
    match cli.command {
        Some(Command::Inject(args)) => podns::inject::run(args),
        Some(Command::Uninject(args)) => podns::inject::run_uninject(args),
        Some(Command::Webhook(args)) => {
            init_tracing(args.log_level.as_deref());
            podns::k8s::webhook::run(args)
        }
        Some(Command::CaptureInit(args)) => podns::capture::run(args),
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
            match rt.block_on(podns::server::run(args, prometheus)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
