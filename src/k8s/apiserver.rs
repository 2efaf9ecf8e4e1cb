//! A minimal Kubernetes API client for the webhook's self-managed certificate: JSON requests
//! over HTTPS (hyper's HTTP/1 client over tokio-rustls), authenticated with the pod's
//! service-account token.
//!
//! Why not the `kube` crate: the webhook makes four kinds of request (get/create/update a
//! Secret, get/patch its MutatingWebhookConfiguration) at start and on renewal; kube and
//! k8s-openapi would add minutes of compile time on the CI machines for that. The in-cluster
//! configuration follows client-go's `rest.InClusterConfig`: the API server at
//! `KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT`, verified with the cluster CA at
//! `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`, the bearer token re-read from `token`
//! on every request (kubelet rotates bound tokens, client-go re-reads them the same way).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

/// Where a pod finds its service account's credentials.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The bearer token: fixed (tests) or a file re-read per request.
#[derive(Debug, Clone)]
pub enum Token {
    Static(String),
    File(PathBuf),
}

/// An API server endpoint with its credentials.
#[derive(Clone)]
pub struct ApiClient {
    /// `host:port` to connect to.
    authority: String,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    token: Token,
}

/// An HTTP answer: status and JSON body (Null when empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl ApiClient {
    /// A client for `host:port`, trusting the CA certificates in `ca_pem`.
    pub fn new(host: &str, port: u16, ca_pem: &[u8], token: Token) -> Result<ApiClient, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(cert.map_err(|e| format!("CA PEM: {e}"))?).map_err(|e| format!("CA certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("no CA certificate for the API server".into());
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_owned()).map_err(|e| format!("API server host `{host}`: {e}"))?,
        };
        let authority = match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
            _ => format!("{host}:{port}"),
        };
        Ok(ApiClient { authority, server_name, tls: Arc::new(tls), token })
    }

    /// The in-cluster client (client-go's InClusterConfig).
    pub fn in_cluster() -> Result<ApiClient, String> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .map_err(|_| "KUBERNETES_SERVICE_HOST is not set: not running in a pod".to_owned())?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT")
            .map_err(|_| "KUBERNETES_SERVICE_PORT is not set".to_owned())?
            .parse::<u16>()
            .map_err(|e| format!("KUBERNETES_SERVICE_PORT: {e}"))?;
        let dir = PathBuf::from(SERVICE_ACCOUNT_DIR);
        let ca = std::fs::read(dir.join("ca.crt")).map_err(|e| format!("{SERVICE_ACCOUNT_DIR}/ca.crt: {e}"))?;
        ApiClient::new(&host, port, &ca, Token::File(dir.join("token")))
    }

    /// One request; `body` is sent as `content_type`.
    pub async fn request(&self, method: &str, path: &str, body: Option<(&str, &Value)>) -> Result<Answer, String> {
        let token = match &self.token {
            Token::Static(t) => t.clone(),
            Token::File(p) => std::fs::read_to_string(p).map_err(|e| format!("token {}: {e}", p.display()))?,
        };
        let tcp = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("connecting to the API server {}: {e}", self.authority))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS with the API server {}: {e}", self.authority))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP with the API server: {e}"))?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority)
            .header("accept", "application/json")
            .header("authorization", format!("Bearer {}", token.trim()))
            .header("user-agent", concat!("podns-webhook/", env!("CARGO_PKG_VERSION")));
        let bytes = match body {
            Some((content_type, value)) => {
                req = req.header("content-type", content_type);
                Bytes::from(value.to_string())
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(bytes)).map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| format!("{method} {path}: {e}"))?.to_bytes();
        Ok(Answer { status, body: serde_json::from_slice(&body).unwrap_or(Value::Null) })
    }
}

impl Answer {
    /// The API server's message of a failed request (a `Status` object), or the status code.
    pub fn message(&self) -> String {
        let msg = self.body.get("message").and_then(Value::as_str).unwrap_or("");
        format!("HTTP {}{}{msg}", self.status, if msg.is_empty() { "" } else { ": " })
    }
}
