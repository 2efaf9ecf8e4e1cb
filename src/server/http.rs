//! The HTTP endpoint for Prometheus and kubelet probes: `GET /metrics`, `/health`, `/ready`.
//!
//! `--metrics-listen` defaults to `0.0.0.0:9153`, reachable from every pod of the cluster, so
//! this listener is exposed to strangers and is served by hyper (a maintained HTTP/1.1
//! implementation) rather than by hand, with bounds on what a client can hold:
//! - at most [`MAX_CONNECTIONS`] connections; more are closed at once (a scraper and two probes
//!   need three);
//! - the request head must be complete within [`HEADER_TIMEOUT`] of the connection opening
//!   (hyper's `header_read_timeout`: one deadline per request, not per read, so a client
//!   trickling a byte every few seconds is cut off), and a whole connection lives at most
//!   [`CONNECTION_TIMEOUT`];
//! - one request per connection (`Connection: close`), as before, so an idle keep-alive
//!   connection holds nothing;
//! - the accept loop backs off when out of file descriptors instead of spinning;
//! - `/debug/explain` answers loopback clients only.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::counter;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::Readiness;
use crate::metrics::HTTP_REJECTED_TOTAL;
use crate::net::Acceptor;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Time for a client to send its whole request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of a connection, response included.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head buffered (hyper's minimum is 8 KiB).
const MAX_HEAD: usize = 16 * 1024;

/// Serves HTTP on `listener` for the life of the process.
pub async fn serve(listener: TcpListener, metrics: PrometheusHandle, ready: Arc<Readiness>) {
    let acceptor = Acceptor::new(listener, "http");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let rejected = counter!(HTTP_REJECTED_TOTAL);
    loop {
        let (stream, peer) = acceptor.accept().await;
        // `/debug/*` answers only on the pod's own loopback (`kubectl exec`, `kubectl
        // port-forward`): the listener is reachable from the whole cluster, and an explanation
        // shows the pod's search list and what its probes found, and `live=1` sends queries.
        let local = peer.ip().is_loopback();
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            rejected.increment(1);
            drop(stream);
            continue;
        };
        let (metrics, ready) = (metrics.clone(), ready.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (method, uri) = (req.method().clone(), req.uri().clone());
                let (metrics, ready) = (metrics.clone(), ready.clone());
                async move {
                    let resp = if uri.path() == "/debug/explain" && (method == Method::GET || method == Method::HEAD) {
                        let (status, ctype, body) = if local {
                            explain(uri.query().unwrap_or(""), ready).await
                        } else {
                            let why = "/debug/explain answers on loopback only: kubectl exec or port-forward\n";
                            (StatusCode::FORBIDDEN, "text/plain; charset=utf-8", why.into())
                        };
                        response(status, ctype, body)
                    } else {
                        respond(&method, uri.path(), &metrics, &ready)
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(slot);
        });
    }
}

/// The status, content type and body for a request (HEAD gets the same head, hyper leaves the
/// body out).
pub fn route(
    method: &Method,
    path: &str,
    metrics: &PrometheusHandle,
    ready: &Readiness,
) -> (StatusCode, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET\n".into());
    }
    match path {
        "/metrics" => {
            metrics.run_upkeep();
            (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", metrics.render())
        }
        "/health" | "/healthz" => (StatusCode::OK, TEXT, "ok\n".into()),
        "/ready" | "/readyz" => match ready.state() {
            Ok(()) => (StatusCode::OK, TEXT, "ready\n".into()),
            Err(why) => (StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{why}\n")),
        },
        _ => (
            StatusCode::NOT_FOUND,
            TEXT,
            "not found; try /metrics, /health, /ready or /debug/explain?name=NAME\n".into(),
        ),
    }
}

fn respond(method: &Method, path: &str, metrics: &PrometheusHandle, ready: &Readiness) -> Response<Full<Bytes>> {
    let (status, ctype, body) = route(method, path, metrics, ready);
    response(status, ctype, body)
}

/// Decodes one `application/x-www-form-urlencoded` value (`+` and `%XX`).
fn form_decode(v: &str) -> Option<String> {
    let mut out = Vec::with_capacity(v.len());
    let mut bytes = v.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// `GET /debug/explain?name=NAME[&type=T][&live=1][&format=text]`: `podns explain` from the
/// running proxy, with its own search list and what its probes have found. Read-only unless
/// `live=1`, which walks the name for real (directly against the first upstream and through
/// this podns, each query bounded by `--attempt-timeout`) on a blocking thread.
async fn explain(query: &str, ready: Arc<Readiness>) -> (StatusCode, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let mut name = None;
    let (mut qtype, mut live, mut text) = (crate::wire::rtype::A, false, false);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(v) = form_decode(v) else {
            return (StatusCode::BAD_REQUEST, TEXT, format!("bad encoding in `{k}`\n"));
        };
        match k {
            "name" => name = Some(v),
            "type" => match crate::cli::parse_qtype(&v) {
                Ok(t) => qtype = t,
                Err(e) => return (StatusCode::BAD_REQUEST, TEXT, format!("type: {e}\n")),
            },
            "live" => live = v == "1" || v == "true",
            "format" => text = v == "text",
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    TEXT,
                    format!("unknown parameter `{k}`; use name, type, live, format\n"),
                );
            }
        }
    }
    let Some(name) = name.filter(|n| !n.is_empty() && n.len() <= 254) else {
        return (StatusCode::BAD_REQUEST, TEXT, "name=NAME is required\n".into());
    };
    let Some(crate::pipeline::SearchState { cfg, known, aggressive }) = ready.pipeline().search_state() else {
        return (StatusCode::NOT_FOUND, TEXT, "the search collapse is off: nothing to explain\n".into());
    };
    let cfg = cfg.clone();
    let probes = crate::diag::known_probes(&known);
    let walk = if live {
        match ready.live() {
            Some(l) => Some(l),
            None => return (StatusCode::NOT_FOUND, TEXT, "live=1 needs a listen address and an upstream\n".into()),
        }
    } else {
        None
    };
    let explained =
        tokio::task::spawn_blocking(move || crate::diag::explain_name(&cfg, &name, qtype, aggressive, probes, walk))
            .await;
    match explained {
        Ok(e) if text => (StatusCode::OK, TEXT, crate::diag::render_text(&e)),
        Ok(e) => (StatusCode::OK, "application/json", crate::diag::render_json(&e)),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, TEXT, "explain failed\n".into()),
    }
}

fn response(status: StatusCode, ctype: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}
