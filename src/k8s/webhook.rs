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
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use base64::Engine as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::{Value, json};

use super::annotations;
use super::inject::json::{diff, from_json, to_json};
use super::inject::{self, InjectArgs, Mode, Options, pod};

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
    #[arg(long = "upstream", value_name = "IP[:PORT]", value_delimiter = ',', value_parser = crate::config::parse_upstream)]
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
        upstream = crate::config::resolv_conf_nameservers(&text);
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

/// Self-managed mode: the certificate from [`super::certs::SelfManaged`], checked again every
/// [`super::certs::CHECK_EVERY`] and swapped in when renewed.
async fn start_self_managed(args: &WebhookArgs, secret: String) -> Result<Arc<SharedCert>, String> {
    let client = super::apiserver::ApiClient::in_cluster()?;
    let ns_file = format!("{}/namespace", super::apiserver::SERVICE_ACCOUNT_DIR);
    let namespace = std::fs::read_to_string(&ns_file).map_err(|e| format!("{ns_file}: {e}"))?.trim().to_owned();
    let manager = super::certs::SelfManaged {
        client,
        dns_names: super::certs::service_dns_names(
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
        let mut every = tokio::time::interval(super::certs::CHECK_EVERY);
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

/// A certificate held in memory and replaceable while serving.
#[derive(Debug)]
pub struct SharedCert(Mutex<Arc<CertifiedKey>>);

impl SharedCert {
    pub fn new(ck: CertifiedKey) -> SharedCert {
        SharedCert(Mutex::new(Arc::new(ck)))
    }

    pub fn set(&self, ck: CertifiedKey) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(ck);
    }
}

impl ResolvesServerCert for SharedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
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

/// A TLS server configuration (TLS 1.2 and 1.3, ring, HTTP/1.1) around a certificate source.
pub fn tls_config(resolver: Arc<dyn ResolvesServerCert>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Loads a PEM certificate chain and key into a rustls [`CertifiedKey`].
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate PEM: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in the PEM".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key PEM: {e}"))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| format!("certificate and key: {e}"))
}

/// The serving certificate from --tls-cert/--tls-key, re-read when the certificate file's
/// modification time changes: cert-manager renews into the mounted Secret and kubelet updates
/// the files in place, so renewals take effect without a restart.
#[derive(Debug)]
pub struct FileCert {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<(Option<SystemTime>, Arc<CertifiedKey>)>,
}

impl FileCert {
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<FileCert, String> {
        let (mtime, ck) = Self::load(&cert, &key)?;
        Ok(FileCert { cert, key, current: Mutex::new((mtime, Arc::new(ck))) })
    }

    fn load(cert: &PathBuf, key: &PathBuf) -> Result<(Option<SystemTime>, CertifiedKey), String> {
        let mtime = std::fs::metadata(cert).and_then(|m| m.modified()).ok();
        let c = std::fs::read(cert).map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
        let k = std::fs::read(key).map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
        Ok((mtime, certified_key(&c, &k).map_err(|e| format!("--tls-cert/--tls-key: {e}"))?))
    }
}

impl ResolvesServerCert for FileCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let mtime = std::fs::metadata(&self.cert).and_then(|m| m.modified()).ok();
        if mtime != current.0 {
            match Self::load(&self.cert, &self.key) {
                Ok((m, ck)) => {
                    tracing::info!("serving certificate reloaded");
                    *current = (m, Arc::new(ck));
                }
                // Mid-update (certificate written, key not yet): keep serving the old one.
                Err(e) => tracing::warn!("keeping the previous certificate: {e}"),
            }
        }
        Some(current.1.clone())
    }
}

/// Accepts connections on `listener` forever, each served over TLS by [`handle`].
pub async fn serve(listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>, opts: Arc<Options>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept: {e}");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let opts = opts.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, "TLS handshake: {e}");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let opts = opts.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, &opts).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, "connection: {e}");
            }
        });
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>, json_body: bool) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let ctype = if json_body { "application/json" } else { "text/plain; charset=utf-8" };
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
    r
}

/// One HTTP request: a review on the two review paths, `GET /healthz`, else 404.
pub async fn handle(req: Request<Incoming>, opts: &Options) -> Response<Full<Bytes>> {
    let namespace_enabled = match req.uri().path() {
        PATH_NAMESPACE => true,
        PATH_ANNOTATED => false,
        "/healthz" if req.method() == Method::GET => return reply(StatusCode::OK, "ok\n", false),
        _ => return reply(StatusCode::NOT_FOUND, "not found: reviews go to /mutate or /mutate-annotated\n", false),
    };
    if req.method() != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview\n", false);
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return reply(StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {MAX_BODY} bytes\n"), false);
        }
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("reading the request: {e}\n"), false),
    };
    let review_in: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("not JSON: {e}\n"), false),
    };
    match review(&review_in, opts, namespace_enabled) {
        Ok(out) => reply(StatusCode::OK, out.to_string(), true),
        Err(e) => reply(StatusCode::BAD_REQUEST, format!("{e}\n"), false),
    }
}

/// Answers one AdmissionReview; `Err` (HTTP 400) when it is not one.
pub fn review(review: &Value, opts: &Options, namespace_enabled: bool) -> Result<Value, String> {
    if review.get("apiVersion").and_then(Value::as_str) != Some("admission.k8s.io/v1")
        || review.get("kind").and_then(Value::as_str) != Some("AdmissionReview")
    {
        return Err("not an admission.k8s.io/v1 AdmissionReview".into());
    }
    let request = review.get("request").filter(|r| r.is_object()).ok_or("the AdmissionReview has no request")?;
    let uid = request.get("uid").and_then(Value::as_str).ok_or("the request has no uid")?;
    let response = admit(request, opts, namespace_enabled);
    let mut response = response;
    response.insert("uid".into(), json!(uid));
    Ok(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}))
}

type Fields = serde_json::Map<String, Value>;

fn allowed(warnings: Vec<String>) -> Fields {
    let mut r = Fields::new();
    r.insert("allowed".into(), json!(true));
    if !warnings.is_empty() {
        r.insert("warnings".into(), json!(warnings));
    }
    r
}

/// The response fields (without uid) for one request.
fn admit(request: &Value, opts: &Options, namespace_enabled: bool) -> Fields {
    let field = |path: &[&str]| path.iter().try_fold(request, |v, k| v.get(k)).and_then(Value::as_str);
    let is_pod_create = field(&["kind", "group"]) == Some("")
        && field(&["kind", "kind"]) == Some("Pod")
        && field(&["operation"]) == Some("CREATE")
        && request.get("subResource").is_none_or(Value::is_null);
    let Some(object) = request.get("object").filter(|o| o.is_object()).filter(|_| is_pod_create) else {
        // Not ours to change (the configuration only sends Pod CREATE; be lenient with the rest).
        return allowed(Vec::new());
    };
    // The namespace comes from the request: a pod made by a controller or `kubectl apply`
    // without metadata.namespace has none in the object.
    let namespace = field(&["namespace"])
        .or_else(|| object.pointer("/metadata/namespace").and_then(Value::as_str))
        .unwrap_or("default")
        .to_owned();
    let name = object
        .pointer("/metadata/name")
        .or_else(|| object.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)");
    let what = format!("Pod {namespace}/{name}");
    let mut metadata = from_json(object.get("metadata").unwrap_or(&json!({})));
    let overrides = match annotations::read(&metadata, &what) {
        Ok(o) => o,
        Err(e) => return denied(&e.message),
    };
    if !namespace_enabled && overrides.inject != Some(true) {
        return allowed(Vec::new());
    }
    let Some(spec_json) = object.get("spec") else { return allowed(Vec::new()) };
    let mut spec = from_json(spec_json);
    let mut notes = Vec::new();
    match pod::inject(&mut spec, &mut metadata, &namespace, opts, &what, &mut notes) {
        Ok(pod::Outcome::Injected | pod::Outcome::Updated) => {}
        Ok(pod::Outcome::AlreadyInjected | pod::Outcome::Disabled) => return allowed(notes),
        Err(e) => {
            tracing::warn!("{what}: not injected: {}", e.message);
            notes.push(format!("podns not injected: {}", e.message));
            return allowed(notes);
        }
    }
    let mut after = object.clone();
    after["metadata"] = to_json(&metadata);
    after["spec"] = to_json(&spec);
    let patch = diff(object, &after);
    let dry_run = request.get("dryRun").and_then(Value::as_bool).unwrap_or(false);
    tracing::info!(pod = %what, ops = patch.len(), dry_run, "injected");
    let mut r = allowed(notes);
    r.insert("patchType".into(), json!("JSONPatch"));
    r.insert("patch".into(), json!(base64::engine::general_purpose::STANDARD.encode(Value::Array(patch).to_string())));
    r
}

fn denied(message: &str) -> Fields {
    let mut r = Fields::new();
    r.insert("allowed".into(), json!(false));
    r.insert("status".into(), json!({"code": 400, "reason": "BadRequest", "message": message}));
    r
}
