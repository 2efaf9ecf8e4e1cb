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
//! - the accept loop backs off when out of file descriptors instead of spinning.

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
        let (stream, _) = acceptor.accept().await;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            rejected.increment(1);
            drop(stream);
            continue;
        };
        let (metrics, ready) = (metrics.clone(), ready.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let resp = respond(req.method(), req.uri().path(), &metrics, &ready);
                async move { Ok::<_, Infallible>(resp) }
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
        _ => (StatusCode::NOT_FOUND, TEXT, "not found; try /metrics, /health or /ready\n".into()),
    }
}

fn respond(method: &Method, path: &str, metrics: &PrometheusHandle, ready: &Readiness) -> Response<Full<Bytes>> {
    let (status, ctype, body) = route(method, path, metrics, ready);
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}
