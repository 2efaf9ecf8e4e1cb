//! `podns webhook`: AdmissionReviews as the API server sends them, in and out (golden files),
//! and the HTTPS server on loopback.
//!
//! Golden files: `tests/golden/webhook/<case>.in.json` is an AdmissionReview request;
//! `<case>.out.json` the expected response with the base64 patch decoded into `patchOps` for
//! review. Cases named `annotated-*` go to /mutate-annotated, the others to /mutate.
//! `PODNS_BLESS=1 cargo test --test webhook` rewrites the outputs; review the diff.
//! tests/k8s/check.py applies every patch and validates the pods against the Kubernetes schemas.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use podns::inject::{InjectArgs, Mode, Options};
use podns::k8s::webhook;
use serde_json::{Value, json};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/webhook")
}

fn opts() -> Options {
    podns::inject::options(&InjectArgs {
        files: Vec::new(),
        upstream: vec!["10.96.0.10:53".parse().unwrap()],
        mode: Mode::DnsPolicy,
        image: "podns:0.1.0".into(),
        cluster_domain: "cluster.local".into(),
        namespace: None,
        update: false,
        capture_image: None,
        capture_ipv6: false,
    })
    .expect("options")
}

fn cases() -> Vec<(String, Value)> {
    let mut cases: Vec<_> = std::fs::read_dir(golden_dir())
        .expect("golden dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".in.json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().trim_end_matches(".in.json").to_owned();
            (name, serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).expect("JSON review"))
        })
        .collect();
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(cases.len() >= 9, "golden cases missing");
    cases
}

/// The response of a review with its patch decoded (None when there is no patch).
fn answer(name: &str, review: &Value) -> (Value, Option<Vec<Value>>) {
    let out = webhook::review(review, &opts(), !name.starts_with("annotated-")).expect("a review");
    let mut response = out["response"].clone();
    let ops = response.as_object_mut().unwrap().remove("patch").map(|p| {
        let bytes = base64::engine::general_purpose::STANDARD.decode(p.as_str().unwrap()).expect("base64");
        serde_json::from_slice::<Vec<Value>>(&bytes).expect("JSON patch")
    });
    (response, ops)
}

#[test]
fn golden_responses() {
    let mut failed = Vec::new();
    for (name, review) in cases() {
        let (mut response, ops) = answer(&name, &review);
        assert_eq!(response["uid"], review["request"]["uid"], "{name}: the uid is echoed");
        if let Some(ops) = ops {
            response["patchOps"] = Value::Array(ops);
        }
        let got = serde_json::to_string_pretty(&response).unwrap() + "\n";
        let path = golden_dir().join(format!("{name}.out.json"));
        if std::env::var_os("PODNS_BLESS").is_some() {
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if got != expected {
            failed.push(format!("=== {name}: got\n{got}"));
        }
    }
    assert!(failed.is_empty(), "golden mismatch (PODNS_BLESS=1 rewrites):\n{}", failed.join("\n"));
}

/// What each case must do, from the structure of the answer (so a wrong blessing fails here).
#[test]
fn patches_inject_and_reinvocation_changes_nothing() {
    let mut injected = 0;
    for (name, review) in cases() {
        let (response, ops) = answer(&name, &review);
        let expect_patch =
            !["disabled", "bad-annotation", "hostnetwork", "absent", "port-conflict"].iter().any(|s| name.contains(s));
        assert_eq!(ops.is_some(), expect_patch, "{name}: {response}");
        if name.contains("bad-annotation") {
            assert_eq!(response["allowed"], json!(false), "{name}");
            assert!(response["status"]["message"].as_str().unwrap().contains("podns.io/aaaa"), "{name}");
            continue;
        }
        assert_eq!(response["allowed"], json!(true), "{name}");
        if name.contains("hostnetwork") || name.contains("port-conflict") {
            let w = response["warnings"].to_string();
            assert!(w.contains("podns not injected"), "{name}: {w}");
        }
        for w in response["warnings"].as_array().into_iter().flatten() {
            assert!(w.as_str().unwrap().chars().count() <= webhook::MAX_WARNING, "{name}: {w}");
        }
        let Some(ops) = ops else { continue };
        injected += 1;
        let mut pod = review["request"]["object"].clone();
        json_patch::patch(&mut pod, &serde_json::from_value::<json_patch::Patch>(Value::Array(ops)).unwrap())
            .unwrap_or_else(|e| panic!("{name}: the patch does not apply: {e}"));
        let init = pod["spec"]["initContainers"].as_array().expect("initContainers");
        let podns = init.iter().position(|c| c["name"] == "podns").expect("podns container");
        assert_eq!(init[podns]["restartPolicy"], "Always", "{name}");
        if name.contains("capture") {
            // Capture mode forwards to the pod's own resolv.conf, not the webhook's upstream.
            let args = init[podns]["args"].to_string();
            assert!(!args.contains("--upstream"), "{name}: {args}");
            assert_eq!(init[0]["name"], "podns-capture-init", "{name}");
        }
        assert_eq!(pod["metadata"]["labels"]["podns/injected"], "true", "{name}");
        let ns = review["request"]["namespace"].as_str().unwrap();
        if pod["spec"]["dnsPolicy"] == "None" && !name.contains("own-nameservers") {
            assert_eq!(pod["spec"]["dnsConfig"]["searches"][0], format!("{ns}.svc.cluster.local"), "{name}");
        }
        // Reinvocation (reinvocationPolicy: IfNeeded) sees the injected pod: no second patch.
        let mut again = review.clone();
        again["request"]["object"] = pod.clone();
        let (r2, ops2) = answer(&name, &again);
        assert!(ops2.is_none(), "{name}: reinvocation patched again: {r2}");
        assert!(r2.get("warnings").is_none(), "{name}: podns's own ports are no conflict: {r2}");
        // A later webhook added Istio with DNS capture: reinvoked, podns says so.
        let mut meshed = pod.clone();
        meshed["spec"]["containers"].as_array_mut().unwrap().push(json!({
            "name": "istio-proxy", "image": "istio/proxyv2:1.22.0",
            "env": [{"name": "ISTIO_META_DNS_CAPTURE", "value": "true"}],
        }));
        again["request"]["object"] = meshed;
        let (r3, ops3) = answer(&name, &again);
        assert!(ops3.is_none(), "{name}");
        assert!(r3["warnings"].to_string().contains("ISTIO_META_DNS_CAPTURE"), "{name}: {r3}");
        // Uninject restores the original spec and metadata (an empty securityContext and an
        // absent one are the same pod).
        let mut spec = podns::inject::json::from_json(&pod["spec"]);
        let mut meta = podns::inject::json::from_json(&pod["metadata"]);
        assert!(podns::inject::restore::uninject(&mut spec, &mut meta, &name).unwrap());
        let mut original = review["request"]["object"].clone();
        strip_empty(&mut original);
        let mut restored =
            json!({"spec": podns::inject::json::to_json(&spec), "metadata": podns::inject::json::to_json(&meta)});
        strip_empty(&mut restored);
        assert_eq!(restored["spec"], original["spec"], "{name}: uninject");
        assert_eq!(restored["metadata"], original["metadata"], "{name}: uninject");
    }
    assert!(injected >= 4, "only {injected} cases injected");
}

fn strip_empty(v: &mut Value) {
    if let Value::Object(m) = v {
        for x in m.values_mut() {
            strip_empty(x);
        }
        m.retain(|_, x| !(x.as_object().is_some_and(|o| o.is_empty())));
    } else if let Value::Array(a) = v {
        a.iter_mut().for_each(strip_empty);
    }
}

#[test]
fn not_a_review_is_an_error() {
    assert!(webhook::review(&json!({"kind": "Pod"}), &opts(), true).is_err());
    assert!(
        webhook::review(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}), &opts(), true)
            .is_err()
    );
    // Another kind or operation is admitted unchanged.
    let mut r: Value = cases().remove(0).1;
    r["request"]["operation"] = json!("UPDATE");
    let out = webhook::review(&r, &opts(), true).unwrap();
    assert_eq!(out["response"]["allowed"], json!(true));
    assert!(out["response"].get("patch").is_none());
}

// ---------------------------------------------------------------- HTTPS on loopback ---------

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki(name: &str) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "podns test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
    Pki { ca_pem: ca.pem(), cert_pem: leaf.pem(), key_pem: key.serialize_pem() }
}

const SERVER_NAME: &str = "podns-webhook.podns-system.svc";

/// Starts the webhook on 127.0.0.1 (an ephemeral port) with a fresh certificate.
async fn start() -> (std::net::SocketAddr, Pki) {
    let pki = pki(SERVER_NAME);
    let dir = std::env::temp_dir().join(format!(
        "podns-webhook-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tls.crt"), &pki.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &pki.key_pem).unwrap();
    let cert = webhook::FileCert::new(dir.join("tls.crt"), dir.join("tls.key")).expect("certificate loads");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(webhook::serve(listener, webhook::tls_config(Arc::new(cert)), Arc::new(opts())));
    (addr, pki)
}

fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    ca_pem: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).unwrap();
    tokio_rustls::TlsConnector::from(client_config(ca_pem)).connect(name, tcp).await
}

/// One HTTPS request; (status, body).
async fn request(addr: std::net::SocketAddr, ca_pem: &str, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let tls = tls_connect(addr, ca_pem).await.expect("TLS handshake with a certificate the CA signed");
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", SERVER_NAME)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    match send.send_request(req).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (status, resp.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default())
        }
        // The server may answer 413 and close before reading the whole body.
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

#[tokio::test]
async fn https_reviews_and_errors() {
    let (addr, pki) = start().await;
    let review = std::fs::read(golden_dir().join("namespace-pod.in.json")).unwrap();
    let (status, body) = request(addr, &pki.ca_pem, "POST", "/mutate", review).await;
    assert_eq!(status, 200);
    let out: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(out["response"]["patchType"], "JSONPatch");
    assert_eq!(out["response"]["allowed"], true);

    let (status, _) = request(addr, &pki.ca_pem, "POST", "/inject", b"{}".to_vec()).await;
    assert_eq!(status, 404, "wrong path");
    let (status, body) = request(addr, &pki.ca_pem, "POST", "/mutate", b"{\"apiVersion\": ".to_vec()).await;
    assert_eq!(status, 400, "malformed body: {}", String::from_utf8_lossy(&body));
    let (status, _) = request(addr, &pki.ca_pem, "POST", "/mutate", b"{\"kind\": \"Pod\"}".to_vec()).await;
    assert_eq!(status, 400, "JSON that is not a review");
    let (status, _) = request(addr, &pki.ca_pem, "GET", "/mutate", Vec::new()).await;
    assert_eq!(status, 405);
    let (status, _) = request(addr, &pki.ca_pem, "GET", "/healthz", Vec::new()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let (addr, pki) = start().await;
    let mut body = b"{\"pad\": \"".to_vec();
    body.resize(webhook::MAX_BODY + 1, b'a');
    let (status, _) = request(addr, &pki.ca_pem, "POST", "/mutate", body).await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn certificate_from_another_ca_is_rejected_by_the_client() {
    let (addr, _pki) = start().await;
    let other = pki(SERVER_NAME);
    let err = tls_connect(addr, &other.ca_pem).await.expect_err("a foreign CA must not verify");
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");
}

// ---------------------------------------------------------------- the binary ----------------

/// `podns webhook` as deployed: the real binary with certificate files, on 127.0.0.1 with a
/// port the kernel picks (read from its "webhook listening" log line), answering a review.
#[tokio::test]
async fn the_binary_serves_reviews() {
    use std::io::BufRead;
    let pki = pki(SERVER_NAME);
    let dir = std::env::temp_dir().join(format!("podns-webhook-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tls.crt"), &pki.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &pki.key_pem).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_podns"))
        .args(["webhook", "--listen", "127.0.0.1:0", "--upstream", "10.96.0.10", "--log-level", "info"])
        .arg("--tls-cert")
        .arg(dir.join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.join("tls.key"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("podns webhook starts");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: std::net::SocketAddr = loop {
        let line = lines.next().expect("a log line before exit").expect("stderr");
        if line.contains("webhook listening") {
            let at = line.find("addr=").expect("addr field") + 5;
            break line[at..].split_whitespace().next().unwrap().parse().expect("socket address");
        }
    };
    assert!(addr.ip().is_loopback());
    let review = std::fs::read(golden_dir().join("namespace-pod.in.json")).unwrap();
    let (status, body) = request(addr, &pki.ca_pem, "POST", "/mutate", review).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200);
    let out: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(out["response"]["uid"], "a5f1b0a2-0c55-4f0b-9d6e-01a1c1d1e101");
    assert_eq!(out["response"]["patchType"], "JSONPatch");
}

#[test]
fn bad_webhook_flags_exit_2_naming_them() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_podns")).arg("webhook").args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["--tls-cert", "/nonexistent/tls.crt", "--tls-key", "/nonexistent/tls.key"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--tls-cert /nonexistent/tls.crt"), "{err}");
    let (code, err) = run(&["--tls-cert", "a"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--tls-key"), "{err}");
    let (code, err) = run(&["--self-signed-secret", "s", "--tls-cert", "a", "--tls-key", "b"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--self-signed-secret"), "{err}");
    let (code, err) = run(&["--tls-cert", "a", "--tls-key", "b", "--upstream", "kube-dns"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--upstream"), "{err}");
    let (code, err) =
        run(&["--tls-cert", "a", "--tls-key", "b", "--upstream", "10.96.0.10", "--cluster-domain", "a..b"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--cluster-domain"), "{err}");
}
