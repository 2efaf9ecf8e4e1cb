//! The HTTPS side of the webhook: TLS configuration and certificate sources (files that
//! cert-manager renews, or a certificate held in memory), and the hyper server with its
//! routes and request-size limit.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::review::review;
use super::{MAX_BODY, PATH_ANNOTATED, PATH_NAMESPACE};
use crate::inject::Options;

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
    let review_in: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("not JSON: {e}\n"), false),
    };
    match review(&review_in, opts, namespace_enabled) {
        Ok(out) => reply(StatusCode::OK, out.to_string(), true),
        Err(e) => reply(StatusCode::BAD_REQUEST, format!("{e}\n"), false),
    }
}
