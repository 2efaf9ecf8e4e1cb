//! The HTTP endpoint for Prometheus and kubelet probes: `GET /metrics`, `/health`, `/ready`.
//! A deliberately small HTTP/1.1 responder (one request per connection), so the sidecar needs
//! no web framework.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Readiness;

/// Largest request head read.
const MAX_HEAD: usize = 8192;
/// A scrape or probe that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves HTTP on `listener` for the life of the process.
pub async fn serve(listener: TcpListener, metrics: PrometheusHandle, ready: Arc<Readiness>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (metrics, ready) = (metrics.clone(), ready.clone());
        tokio::spawn(async move {
            let _ = respond(stream, &metrics, &ready).await;
        });
    }
}

/// The status line and body for a request line such as `GET /ready HTTP/1.1`.
pub fn route(
    request_line: &str,
    metrics: &PrometheusHandle,
    ready: &Readiness,
) -> (&'static str, &'static str, String) {
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "only GET\n".into());
    }
    match path {
        "/metrics" => {
            metrics.run_upkeep();
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics.render())
        }
        "/health" | "/healthz" => ("200 OK", TEXT, "ok\n".into()),
        "/ready" | "/readyz" => match ready.state() {
            Ok(()) => ("200 OK", TEXT, "ready\n".into()),
            Err(why) => ("503 Service Unavailable", TEXT, format!("{why}\n")),
        },
        _ => ("404 Not Found", TEXT, "not found; try /metrics, /health or /ready\n".into()),
    }
}

async fn respond(mut stream: TcpStream, metrics: &PrometheusHandle, ready: &Readiness) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = tokio::time::timeout(READ_TIMEOUT, stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        if n == 0 || head.len() + n > MAX_HEAD {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next().unwrap_or("");
    let (status, ctype, body) = route(line, metrics, ready);
    let is_head = line.starts_with("HEAD ");
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !is_head {
        resp.push_str(&body);
    }
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}
