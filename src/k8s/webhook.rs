//! placeholder
use std::process::ExitCode;
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    #[arg(long)]
    pub log_level: Option<String>,
}
pub fn run(_a: WebhookArgs) -> ExitCode {
    ExitCode::SUCCESS
}
