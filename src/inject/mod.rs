//! `podns inject`: adds the podns sidecar to Kubernetes workload manifests.

use std::process::ExitCode;

/// Arguments of `podns inject`.
#[derive(Debug, Clone, clap::Args)]
pub struct InjectArgs {}

/// Runs `podns inject`.
pub fn run(_args: InjectArgs) -> ExitCode {
    eprintln!("podns inject: not available in this build");
    ExitCode::from(2)
}
