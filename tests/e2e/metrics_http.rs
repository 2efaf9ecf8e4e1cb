//! The HTTP listener (/metrics, /health, /ready) and the metrics that queries move, including
//! the bound on queries in flight.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::support::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::task::JoinSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_histogram_and_counters_after_queries() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    const N: usize = 5;
    for i in 0..N {
        let reply = udp_query(podns.addr(), &query(&format!("m{i}.example.com"), RecordType::A)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        let reply = tcp_query(podns.addr(), &query(&format!("m{i}.example.com"), RecordType::AAAA)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    }
    let n = N as f64;
    let text = podns.metrics_text().await;
    let buckets: Vec<&str> =
        text.lines().filter(|l| l.starts_with("podns_request_duration_seconds_bucket{") && l.contains("le=")).collect();
    assert!(buckets.len() >= 16, "histogram buckets:\n{text}");
    assert!(buckets.iter().any(|l| l.contains("le=\"+Inf\"")), "+Inf bucket:\n{text}");
    let v = |name: &str, labels: &[(&str, &str)]| metric_sum(&text, name, labels).unwrap_or(0.0);
    assert!(
        v("podns_request_duration_seconds_count", &[("proto", "udp"), ("source", "upstream")]) >= n,
        "udp duration count:\n{text}"
    );
    assert!(
        v("podns_request_duration_seconds_count", &[("proto", "tcp"), ("source", "upstream")]) >= n,
        "tcp duration count:\n{text}"
    );
    assert!(v("podns_requests_total", &[("proto", "udp"), ("type", "A")]) >= n, "requests udp A:\n{text}");
    assert!(v("podns_requests_total", &[("proto", "tcp"), ("type", "AAAA")]) >= n, "requests tcp AAAA:\n{text}");
    assert!(v("podns_requests_total", &[("family", "1")]) >= 2.0 * n, "requests ipv4:\n{text}");
    assert!(
        v("podns_responses_total", &[("rcode", "NOERROR"), ("source", "upstream")]) >= 2.0 * n,
        "responses NOERROR upstream:\n{text}"
    );
    let to = up.addr.to_string();
    assert!(
        v("podns_upstream_requests_total", &[("to", &to), ("proto", "udp")]) >= n,
        "upstream udp requests:\n{text}"
    );
    assert!(
        v("podns_upstream_requests_total", &[("to", &to), ("proto", "tcp")]) >= n,
        "upstream tcp requests:\n{text}"
    );
    assert_eq!(v("podns_upstream_healthy", &[("to", &to)]), 1.0, "upstream healthy:\n{text}");
    assert!(metric_sum(&text, "podns_build_info", &[]).is_some(), "build info:\n{text}");
    assert!(metric_sum(&text, "podns_inflight_queries", &[]).is_some(), "inflight gauge:\n{text}");
    // AAAA latency apart from A latency, and message sizes, as CoreDNS exports them.
    assert!(v("podns_request_duration_seconds_count", &[("type", "AAAA")]) >= n, "AAAA latency:\n{text}");
    assert!(v("podns_request_size_bytes_count", &[("proto", "udp")]) >= n, "request sizes:\n{text}");
    assert!(v("podns_response_size_bytes_count", &[("proto", "tcp")]) >= n, "response sizes:\n{text}");
    assert!(text.contains("podns_build_info{version="), "build info labels:\n{text}");
}

/// Series (sample lines) in a Prometheus text exposition.
fn series(text: &str) -> usize {
    text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pod_exports_a_few_dozen_series_and_a_query_adds_only_its_own() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    let idle = podns.metrics_text().await;
    // Labelled series are registered when first used: before any client query only the
    // unlabelled ones, the upstream's health, and the readiness probe's own exchange exist.
    assert!(series(&idle) <= 60, "{} series while idle:\n{idle}", series(&idle));
    assert!(!idle.contains("podns_requests_total{"), "no request series before a request:\n{idle}");
    let reply = udp_query(podns.addr(), &query("one.example.com", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    let after = podns.metrics_text().await;
    let added = series(&after) - series(&idle);
    eprintln!("series: {} idle, {} after one query", series(&idle), series(&after));
    // One request counter, one response counter, three histograms (duration and the two
    // sizes, each 14 to 17 bucket lines plus sum and count), and the upstream's request and
    // round-trip series.
    assert!(added < 90, "one query added {added} series:\n{after}");
    assert!(after.contains("podns_requests_total{proto=\"udp\",family=\"1\",type=\"A\"} 1"), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_ready() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    let (status, _) = podns.http_get("/health").await;
    assert_eq!(status, 200, "/health");
    // The start-up probe reaches a working upstream: ready.
    podns.wait_ready(REPLY_TIMEOUT).await;
    let (status, _) = podns.http_get("/no-such-page").await;
    assert_eq!(status, 404, "unknown path");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_an_upstream_answered() {
    let up = Upstream::with_default(Action::Drop);
    let podns = PodnsBuilder::new()
        .upstream(up.addr)
        .arg("--attempt-timeout", "200ms")
        .arg("--query-timeout", "400ms")
        .start()
        .await;
    let (status, _) = podns.http_get("/health").await;
    assert_eq!(status, 200, "/health does not depend on upstreams");
    // The start-up probe (cluster.local SOA) has reached the silent upstream...
    up.wait_received("cluster.local", 1, REPLY_TIMEOUT).await;
    let (status, _) = podns.http_get("/ready").await;
    assert_eq!(status, 503, "ready although no upstream ever answered");
    // ... and once the upstream answers, podns becomes ready.
    up.set_default(Action::Auto);
    let reply = udp_query(podns.addr(), &query("wake.example.com", RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![AUTO_V4]);
    podns.wait_ready(REPLY_TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_limit_rejects_excess_with_servfail() {
    const SLOW: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
    let up = Upstream::start();
    let podns = PodnsBuilder::new()
        .upstream(up.addr)
        .arg("--max-inflight", "2")
        .arg("--attempt-timeout", "2s")
        .arg("--query-timeout", "3s")
        .start()
        .await;
    // Make sure the start-up probe is done, so only our queries are in flight.
    podns.wait_ready(REPLY_TIMEOUT).await;
    for i in 0..5 {
        up.on(
            &format!("slow{i}.example.com"),
            RecordType::A,
            Action::delayed(Duration::from_millis(800), Action::Answer(vec![Rec::A(SLOW)])),
        );
    }
    let mut set = JoinSet::new();
    for i in 0..5 {
        let addr = podns.addr();
        set.spawn(async move {
            let reply = udp_query(addr, &query(&format!("slow{i}.example.com"), RecordType::A)).await;
            (reply, Instant::now())
        });
    }
    let mut servfail = Vec::new();
    let mut answered = Vec::new();
    while let Some(r) = set.join_next().await {
        let (reply, at) = r.expect("query task");
        match reply.metadata.response_code {
            ResponseCode::ServFail => servfail.push(at),
            ResponseCode::NoError => {
                assert_eq!(a_records(&reply), vec![SLOW]);
                answered.push(at);
            }
            rc => panic!("unexpected rcode {rc}"),
        }
    }
    assert!(!servfail.is_empty(), "no query was rejected with --max-inflight 2");
    assert!(!answered.is_empty(), "the admitted queries were answered");
    assert!(answered.len() <= 2, "{} answered with --max-inflight 2", answered.len());
    let first_answer = *answered.iter().min().unwrap();
    assert!(servfail.iter().all(|&t| t < first_answer), "rejections come at once, before the slow upstream answered");
    let forwarded = (0..5).filter(|i| !up.received_for(&format!("slow{i}.example.com")).is_empty()).count();
    assert!(forwarded <= 2, "{forwarded} queries forwarded with --max-inflight 2");
    let rejected = podns.wait_metric("podns_inflight_rejected_total", &[], |v| v > 0.0, REPLY_TIMEOUT).await;
    assert!(rejected >= servfail.len() as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_packets_are_counted() {
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).start().await;
    let question = wire_question("drop.example.com", 1);
    // Fire and forget; then wait for the counters (no reply is expected).
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&[1, 2, 3], podns.addr()).await.unwrap();
    sock.send_to(&wire_message(0x4242, 0x8180, [1, 0, 0, 0], &question), podns.addr()).await.unwrap();
    podns.wait_metric("podns_dropped_total", &[("reason", "short")], |v| v >= 1.0, REPLY_TIMEOUT).await;
    podns.wait_metric("podns_dropped_total", &[("reason", "response")], |v| v >= 1.0, REPLY_TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_explain_shows_the_running_proxys_decisions_and_walks_when_asked() {
    let up = Upstream::with_default(Reply::nxdomain(Rr::soa(".", 3600, 86400)).action());
    up.on("pypi.org", RecordType::A, Reply::answer(vec![Rr::a(Ipv4Addr::new(198, 51, 100, 9))]).action());
    let podns = PodnsBuilder::new()
        .upstream(up.addr)
        .arg("--search", "default.svc.cluster.local,svc.cluster.local,cluster.local")
        .arg("--ndots", "5")
        .start()
        .await;
    // A query through the collapse teaches podns's probes about `org`.
    let reply = udp_query(podns.addr(), &query("pypi.org.default.svc.cluster.local", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);

    let (status, body) = podns.http_get("/debug/explain?name=pypi.org").await;
    assert_eq!(status, 200, "{body}");
    let e: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(e["name"], "pypi.org");
    let candidates = e["candidates"].as_array().expect("candidates");
    assert!(candidates.len() >= 3, "{body}");
    assert!(body.contains("default.svc.cluster.local"), "the proxy's own search list: {body}");
    assert!(e["live"].is_null(), "read-only without live=1: {body}");
    assert!(up.received_for("pypi.org").len() <= 2, "a read-only explanation sends nothing");

    let (status, text) = podns.http_get("/debug/explain?name=pypi.org&type=AAAA&format=text").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("pypi.org"), "{text}");

    let before = up.received_for("pypi.org").len();
    let (status, body) = podns.http_get("/debug/explain?name=pypi.org&live=1").await;
    assert_eq!(status, 200, "{body}");
    let e: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert!(!e["live"].is_null(), "live=1 walks: {body}");
    assert!(up.received_for("pypi.org").len() > before, "the direct walk asked the upstream");

    for bad in ["/debug/explain", "/debug/explain?name=", "/debug/explain?name=x&type=BOGUS", "/debug/explain?nope=1"] {
        let (status, body) = podns.http_get(bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}
