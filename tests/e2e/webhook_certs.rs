//! `podns webhook --self-signed-secret`: the certificate management against a fake API server
//! on 127.0.0.1 (HTTPS, bearer token, Secrets and one MutatingWebhookConfiguration in memory,
//! JSON patches applied with the json-patch crate), then a TLS handshake with the webhook
//! serving the result, verified against the caBundle the fake ended up with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use podns::k8s::apiserver::{ApiClient, Token};
use podns::k8s::certs::{self, SelfManaged};
use podns::k8s::webhook;
use serde_json::{Value, json};
use time::OffsetDateTime;

const TOKEN: &str = "test-token";

#[derive(Default)]
struct State {
    secrets: HashMap<String, Value>,
    mwc: Value,
    /// "METHOD path" of every request, in order.
    log: Vec<String>,
    /// When set, the next Secret create finds this Secret already there (another replica won).
    race: Option<Value>,
    next_rv: u64,
}

type Shared = Arc<Mutex<State>>;

fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    r
}

fn status(code: u16, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "message": message})
}

async fn fake(req: Request<Incoming>, state: Shared) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let ctype = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let mut st = state.lock().unwrap();
    st.log.push(format!("{method} {path}"));
    if auth != format!("Bearer {TOKEN}") {
        return reply(401, status(401, "Unauthorized"));
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let secrets = "/api/v1/namespaces/podns-system/secrets";
    let mwc = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/podns";
    st.next_rv += 1;
    let rv = st.next_rv.to_string();
    match (method.as_str(), path.as_str()) {
        ("POST", p) if p == secrets => {
            let name = body["metadata"]["name"].as_str().unwrap().to_owned();
            if let Some(mut winner) = st.race.take() {
                winner["metadata"]["resourceVersion"] = json!(rv);
                st.secrets.insert(name, winner);
                return reply(409, status(409, "secrets \"podns-webhook-tls\" already exists"));
            }
            if st.secrets.contains_key(&name) {
                return reply(409, status(409, "already exists"));
            }
            let mut s = body.clone();
            s["metadata"]["resourceVersion"] = json!(rv);
            st.secrets.insert(name, s.clone());
            reply(201, s)
        }
        (m, p) if p.starts_with(&format!("{secrets}/")) => {
            let name = p.rsplit('/').next().unwrap().to_owned();
            match m {
                "GET" => match st.secrets.get(&name) {
                    Some(s) => reply(200, s.clone()),
                    None => reply(404, status(404, "not found")),
                },
                "PUT" => {
                    let current = st.secrets.get(&name).map(|s| s["metadata"]["resourceVersion"].clone());
                    if current != Some(body["metadata"]["resourceVersion"].clone()) {
                        return reply(409, status(409, "the object has been modified"));
                    }
                    let mut s = body.clone();
                    s["metadata"]["resourceVersion"] = json!(rv);
                    st.secrets.insert(name, s.clone());
                    reply(200, s)
                }
                _ => reply(405, status(405, "method")),
            }
        }
        ("GET", p) if p == mwc => reply(200, st.mwc.clone()),
        ("PATCH", p) if p == mwc => {
            if ctype != "application/json-patch+json" {
                return reply(415, status(415, "content type"));
            }
            let patch: json_patch::Patch = serde_json::from_value(body).unwrap();
            let mut doc = st.mwc.clone();
            match json_patch::patch(&mut doc, &patch) {
                Ok(()) => {
                    st.mwc = doc.clone();
                    reply(200, doc)
                }
                Err(e) => reply(422, status(422, &e.to_string())),
            }
        }
        _ => reply(404, status(404, "no such path")),
    }
}

/// A CA-signed certificate for 127.0.0.1, and the CA's PEM.
fn api_server_cert() -> (rustls::sign::CertifiedKey, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
    (webhook::certified_key(leaf.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap(), ca.pem())
}

/// Starts the fake API server on 127.0.0.1; returns its address, CA and state.
async fn start_fake() -> (SocketAddr, String, Shared) {
    let (ck, ca_pem) = api_server_cert();
    let tls = webhook::tls_config(Arc::new(webhook::SharedCert::new(ck)));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state: Shared = Arc::new(Mutex::new(State {
        mwc: json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "podns"},
            "webhooks": [
                {"name": "namespace.inject.podns.io", "clientConfig": {"service": {"name": "podns-webhook", "namespace": "podns-system", "path": "/mutate"}}},
                {"name": "pod.inject.podns.io", "clientConfig": {"service": {"name": "podns-webhook", "namespace": "podns-system", "path": "/mutate-annotated"}}},
            ],
        }),
        ..State::default()
    }));
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let st = st.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper::service::service_fn(move |req| {
                    let st = st.clone();
                    async move { Ok::<_, std::convert::Infallible>(fake(req, st).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, ca_pem, state)
}

fn manager(addr: SocketAddr, ca_pem: &str, token: &str) -> SelfManaged {
    SelfManaged {
        client: ApiClient::new("127.0.0.1", addr.port(), ca_pem.as_bytes(), Token::Static(token.to_owned())).unwrap(),
        namespace: "podns-system".into(),
        secret: "podns-webhook-tls".into(),
        webhook_config: "podns".into(),
        dns_names: certs::service_dns_names("podns-webhook", "podns-system", "cluster.local"),
    }
}

fn ca_bundles(state: &Shared) -> Vec<String> {
    let st = state.lock().unwrap();
    st.mwc["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["clientConfig"]["caBundle"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn log(state: &Shared) -> Vec<String> {
    std::mem::take(&mut state.lock().unwrap().log)
}

/// The webhook serving `bundle` completes a TLS handshake with a client that trusts only the
/// caBundle, for the name the API server uses.
async fn handshake_with_ca_bundle(bundle: &certs::Bundle, ca_bundle_b64: &str) {
    use base64::Engine as _;
    use rustls::pki_types::pem::PemObject;
    let ck = webhook::certified_key(bundle.tls_crt.as_bytes(), bundle.tls_key.as_bytes()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let opts = podns::inject::options(&podns::inject::InjectArgs {
        files: Vec::new(),
        upstream: vec!["10.96.0.10:53".parse().unwrap()],
        mode: podns::inject::Mode::DnsPolicy,
        image: "podns:0.1.0".into(),
        cluster_domain: "cluster.local".into(),
        namespace: None,
        update: false,
        capture_image: None,
        capture_ipv6: false,
    })
    .unwrap();
    tokio::spawn(webhook::serve(listener, webhook::tls_config(Arc::new(webhook::SharedCert::new(ck))), Arc::new(opts)));
    let ca = base64::engine::general_purpose::STANDARD.decode(ca_bundle_b64).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("podns-webhook.podns-system.svc").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("the serving certificate verifies against the caBundle");
}

#[tokio::test]
async fn first_start_creates_the_secret_and_sets_every_ca_bundle() {
    let (addr, ca_pem, state) = start_fake().await;
    let m = manager(addr, &ca_pem, TOKEN);
    let bundle = m.ensure(OffsetDateTime::now_utc()).await.expect("ensure");
    assert_eq!(
        log(&state),
        [
            "GET /api/v1/namespaces/podns-system/secrets/podns-webhook-tls",
            "POST /api/v1/namespaces/podns-system/secrets",
            "GET /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/podns",
            "PATCH /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/podns",
        ]
    );
    let bundles = ca_bundles(&state);
    assert_eq!(bundles.len(), 2);
    assert!(bundles.iter().all(|b| !b.is_empty() && *b == bundles[0]), "{bundles:?}");
    handshake_with_ca_bundle(&bundle, &bundles[0]).await;

    // A second replica (or a restart) reuses the Secret and patches nothing.
    let again = manager(addr, &ca_pem, TOKEN).ensure(OffsetDateTime::now_utc()).await.expect("ensure");
    assert_eq!(again, bundle);
    let requests = log(&state);
    assert!(requests.iter().all(|r| r.starts_with("GET ")), "{requests:?}");
}

#[tokio::test]
async fn losing_the_create_race_uses_the_winners_secret() {
    let (addr, ca_pem, state) = start_fake().await;
    let now = OffsetDateTime::now_utc();
    let winner =
        certs::new_bundle(&certs::service_dns_names("podns-webhook", "podns-system", "cluster.local"), now).unwrap();
    // Another replica creates the Secret between this one's GET (404) and POST.
    state.lock().unwrap().race = Some(certs::secret_body("podns-system", "podns-webhook-tls", &winner, None));
    let got = manager(addr, &ca_pem, TOKEN).ensure(now).await.expect("ensure");
    assert_eq!(got, winner, "the loser serves the winner's certificate");
    let requests = log(&state);
    assert_eq!(requests.iter().filter(|r| r.starts_with("POST")).count(), 1, "{requests:?}");
    assert_eq!(requests.iter().filter(|r| r.starts_with("GET /api/v1")).count(), 2, "{requests:?}");
}

#[tokio::test]
async fn a_certificate_near_expiry_is_reissued_from_the_same_ca() {
    let (addr, ca_pem, state) = start_fake().await;
    let m = manager(addr, &ca_pem, TOKEN);
    let start = OffsetDateTime::now_utc();
    let first = m.ensure(start).await.unwrap();
    log(&state);
    let later = start + certs::CERT_LIFETIME - time::Duration::days(10);
    let renewed = m.ensure(later).await.unwrap();
    assert_eq!(renewed.ca_crt, first.ca_crt, "the CA (and caBundle) stays");
    assert_ne!(renewed.tls_crt, first.tls_crt);
    assert!(renewed.not_after > first.not_after);
    let requests = log(&state);
    assert!(
        requests.contains(&"PUT /api/v1/namespaces/podns-system/secrets/podns-webhook-tls".to_owned()),
        "{requests:?}"
    );
    assert!(!requests.iter().any(|r| r.starts_with("PATCH")), "caBundle unchanged: {requests:?}");
    // (No handshake here: the renewed certificate is valid from the simulated date on.)
}

#[tokio::test]
async fn a_wrong_token_is_reported() {
    let (addr, ca_pem, _state) = start_fake().await;
    let e = manager(addr, &ca_pem, "stolen").ensure(OffsetDateTime::now_utc()).await.unwrap_err();
    assert!(e.contains("HTTP 401") && e.contains("Secret podns-webhook-tls"), "{e}");
}

#[tokio::test]
async fn an_api_server_with_another_ca_is_refused() {
    let (addr, _ca_pem, state) = start_fake().await;
    let (_, other_ca) = api_server_cert();
    let e = manager(addr, &other_ca, TOKEN).ensure(OffsetDateTime::now_utc()).await.unwrap_err();
    assert!(e.contains("TLS"), "{e}");
    assert!(log(&state).is_empty(), "no request reached the server");
}
