//! `podns webhook`: the mutating admission webhook. An HTTPS server (hyper over tokio-rustls)
//! that answers `admission.k8s.io/v1` AdmissionReviews for Pod CREATE with a JSON patch adding
//! podns, computed by the same [`crate::inject::pod::inject`] as `podns inject`.
//!
//! Paths, one per webhook entry of the MutatingWebhookConfiguration (k8s/install): an
//! AdmissionReview does not say which entry sent it, so the entry's opt-in rule is in its path.
//! - [`PATH_NAMESPACE`] (`/mutate`): the entry whose namespaceSelector matches namespaces
//!   labelled `podns.io/inject=enabled`. Every pod is injected unless annotated
//!   `podns.io/inject: disabled`.
//! - [`PATH_ANNOTATED`] (`/mutate-annotated`): the entry for the other namespaces. Only pods
//!   annotated `podns.io/inject: enabled` are injected; annotations cannot be selected by an
//!   objectSelector (labels only), so this entry sees every pod there and answers most with an
//!   empty "allowed".
//!
//! Istio's injector does the same split (`namespace.sidecar-injector.istio.io` and
//! `object.sidecar-injector.istio.io`). A bad `podns.io/` annotation denies the pod with a
//! message naming it ([`crate::k8s::annotations`]); a pod podns cannot serve (hostNetwork,
//! dnsPolicy Default, a port conflict) is admitted unchanged with a warning, because refusing
//! it would take down, say, a hostNetwork DaemonSet in a labelled namespace. The webhook has no
//! side effects (`sideEffects: None`), so `dryRun` requests are answered like any other.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use rustls::server::ResolvesServerCert;

use super::inject::{self, InjectArgs, Mode, Options};

mod review;
mod server;

pub use review::{MAX_WARNING, review};
pub use server::{FileCert, SharedCert, certified_key, handle, serve, tls_config};

/// The review path of namespaces labelled `podns.io/inject=enabled`.
pub const PATH_NAMESPACE: &str = "/mutate";
/// The review path of the other namespaces: only pods annotated `podns.io/inject: enabled`.
pub const PATH_ANNOTATED: &str = "/mutate-annotated";
/// Largest request body read. The API server sends the pod (at most etcd's 1.5 MiB object
/// limit) inside the review, plus request metadata; anything larger is not a real review.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Arguments of `podns webhook`.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// Serving certificate chain, PEM (cert-manager's tls.crt). Re-read when the file changes.
    #[arg(long, value_name = "PEM", requires = "tls_key", required_unless_present = "self_signed_secret")]
    pub tls_cert: Option<PathBuf>,

    /// Private key of --tls-cert, PEM (tls.key).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Instead of --tls-cert: manage the certificate itself. Keep a CA and a serving
    /// certificate in this Secret of the webhook's namespace (created when missing, renewed 30
    /// days before expiry) and set the CA as caBundle of --webhook-config, through the API
    /// server with the pod's service-account token.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["tls_cert", "tls_key"])]
    pub self_signed_secret: Option<String>,

    /// With --self-signed-secret: the MutatingWebhookConfiguration whose caBundle to set.
    #[arg(long, value_name = "NAME", default_value = "podns")]
    pub webhook_config: String,

    /// With --self-signed-secret: the webhook's Service, for the certificate's DNS names.
    #[arg(long, value_name = "NAME", default_value = "podns-webhook")]
    pub service: String,

    /// Cluster DNS service IP that injected pods forward to, IP or IP:PORT (repeatable).
    /// Default: the nameservers of the webhook's own /etc/resolv.conf, which for a ClusterFirst
    /// pod (the webhook's Deployment) is the cluster DNS Service.
    #[arg(long = "upstream", value_name = "IP[:PORT]", value_delimiter = ',', value_parser = crate::cli::parse_upstream)]
    pub upstream: Vec<SocketAddr>,

    /// How injected pods' DNS reaches podns (pods override it with podns.io/mode).
    #[arg(long, value_enum, default_value_t = Mode::DnsPolicy)]
    pub mode: Mode,

    /// podns container image of injected pods.
    #[arg(long, default_value = inject::DEFAULT_IMAGE)]
    pub image: String,

    /// Cluster domain, for the search list and podns's --cluster-domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,

    /// The capture-init image (capture mode). Default: --image with `-capture-init` appended.
    #[arg(long)]
    pub capture_image: Option<String>,

    /// Capture mode: capture IPv6 DNS too.
    #[arg(long)]
    pub capture_ipv6: bool,

    /// Log level or filter (error, warn, info, debug, trace); RUST_LOG when unset.
    #[arg(long)]
    pub log_level: Option<String>,
}

/// The injection settings of the webhook, checked like `podns inject`'s flags.
pub fn options(args: &WebhookArgs) -> Result<Options, inject::InjectError> {
    let mut upstream = args.upstream.clone();
    if upstream.is_empty() && args.mode == Mode::DnsPolicy {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        upstream = crate::cli::resolv_conf_nameservers(&text);
        upstream.retain(|u| !u.ip().is_loopback());
    }
    inject::options(&InjectArgs {
        files: Vec::new(),
        upstream,
        mode: args.mode,
        image: args.image.clone(),
        cluster_domain: args.cluster_domain.clone(),
        namespace: None,
        update: false,
        capture_image: args.capture_image.clone(),
        capture_ipv6: args.capture_ipv6,
    })
}

/// Runs `podns webhook` until SIGTERM or SIGINT.
pub fn run(args: WebhookArgs) -> ExitCode {
    let opts = match options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("podns webhook: {e}");
            return ExitCode::from(e.status);
        }
    };
    let file_cert = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match FileCert::new(cert.clone(), key.clone()) {
            Ok(r) => Some(Arc::new(r)),
            Err(e) => {
                eprintln!("podns webhook: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("podns webhook: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let resolver: Arc<dyn ResolvesServerCert> = match file_cert {
            Some(r) => r,
            None => {
                let secret = args.self_signed_secret.clone().expect("clap requires one of the two");
                match start_self_managed(&args, secret).await {
                    Ok(shared) => shared,
                    Err(e) => {
                        tracing::error!("self-managed certificate: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
        };
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot listen on {}: {e}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        // The bound address (with --listen 127.0.0.1:0 the port is the kernel's choice).
        let bound = listener.local_addr().map_or_else(|_| args.listen.to_string(), |a| a.to_string());
        tracing::info!(addr = %bound, "webhook listening");
        let server = serve(listener, tls_config(resolver), Arc::new(opts));
        tokio::select! {
            () = server => ExitCode::SUCCESS,
            () = shutdown_signal() => {
                tracing::info!("shutting down");
                ExitCode::SUCCESS
            }
        }
    })
}

/// Self-managed mode: the certificate from [`crate::k8s::certs::SelfManaged`], checked again every
/// [`crate::k8s::certs::CHECK_EVERY`] and swapped in when renewed.
async fn start_self_managed(args: &WebhookArgs, secret: String) -> Result<Arc<SharedCert>, String> {
    let client = crate::k8s::apiserver::ApiClient::in_cluster()?;
    let ns_file = format!("{}/namespace", crate::k8s::apiserver::SERVICE_ACCOUNT_DIR);
    let namespace = std::fs::read_to_string(&ns_file).map_err(|e| format!("{ns_file}: {e}"))?.trim().to_owned();
    let manager = crate::k8s::certs::SelfManaged {
        client,
        dns_names: crate::k8s::certs::service_dns_names(
            &args.service,
            &namespace,
            args.cluster_domain.trim_end_matches('.'),
        ),
        namespace,
        secret,
        webhook_config: args.webhook_config.clone(),
    };
    let bundle = manager.ensure(time::OffsetDateTime::now_utc()).await?;
    let shared = Arc::new(SharedCert::new(certified_key(bundle.tls_crt.as_bytes(), bundle.tls_key.as_bytes())?));
    let handle = shared.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(crate::k8s::certs::CHECK_EVERY);
        every.tick().await;
        loop {
            every.tick().await;
            match manager.ensure(time::OffsetDateTime::now_utc()).await {
                Ok(b) => match certified_key(b.tls_crt.as_bytes(), b.tls_key.as_bytes()) {
                    Ok(ck) => handle.set(ck),
                    Err(e) => tracing::error!("self-managed certificate: {e}"),
                },
                // The current certificate has at least 30 days left when this first fails.
                Err(e) => tracing::error!("self-managed certificate check: {e}"),
            }
        }
    });
    Ok(shared)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
