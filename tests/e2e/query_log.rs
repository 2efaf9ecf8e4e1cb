//! The query log (`--query-log`): one JSON line per client query, naming what podns did. One
//! test per action: forwarded, cached, stale, collapsed (and to what), impossible, synthesized
//! (and why), error; and sampling.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::support::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const PYPI: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 80);

/// An upstream where everything is NXDOMAIN but `pypi.org` (A) and `v4only.example.org` (A, and
/// SERVFAIL for AAAA), and `short.example.org` (A with a one-second TTL).
fn upstream() -> Upstream {
    let up = Upstream::with_default(Reply::nxdomain(Rr::soa(".", 3600, 86400)).action());
    up.on("pypi.org", RecordType::A, Reply::answer(vec![Rr::a(PYPI)]).action());
    up.on("v4only.example.org", RecordType::A, Reply::answer(vec![Rr::a(PYPI)]).action());
    up.on("v4only.example.org", RecordType::AAAA, Action::Rcode(ResponseCode::ServFail));
    up.on("short.example.org", RecordType::A, Reply::answer(vec![Rr::a(PYPI).ttl(1)]).action());
    up
}

/// podns with the query log on, for a pod in `default`.
async fn logging(up: &Upstream, extra: &[(&str, &str)]) -> Podns {
    let mut b = PodnsBuilder::new()
        .upstream(up.addr)
        .flag("--query-log")
        .arg("--search", "default.svc.cluster.local,svc.cluster.local,cluster.local")
        .arg("--ndots", "5")
        .arg("--attempt-timeout", "200ms")
        .arg("--query-timeout", "500ms");
    for (f, v) in extra {
        b = b.arg(f, v);
    }
    b.start().await
}

/// The query-log line for `name` whose action is `action`, parsed.
async fn line(podns: &Podns, name: &str, action: &str) -> serde_json::Value {
    let needle_name = format!("\"name\":\"{name}\"");
    let needle_action = format!("\"action\":\"{action}\"");
    let l = podns.wait_stdout(&[&needle_name, &needle_action], Duration::from_secs(5)).await;
    serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_then_cached() {
    let up = upstream();
    let podns = logging(&up, &[]).await;
    for _ in 0..2 {
        let r = udp_query(podns.addr(), &query("pypi.org", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    }
    let first = line(&podns, "pypi.org.", "forwarded").await;
    assert_eq!(first["source"], "upstream");
    assert_eq!(first["type"], "A");
    assert_eq!(first["rcode"], "NOERROR");
    assert_eq!(first["proto"], "udp");
    assert!(first["client"].as_str().unwrap().starts_with("127.0.0.1:"), "{first}");
    assert!(first["latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(first["ts"].as_str().unwrap().ends_with('Z'));
    let second = line(&podns, "pypi.org.", "cached").await;
    assert_eq!(second["source"], "cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collapsed_names_the_candidate_it_answered_from() {
    let up = upstream();
    let podns = logging(&up, &[]).await;
    let r = udp_query(podns.addr(), &query("pypi.org.default.svc.cluster.local", RecordType::A)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    let l = line(&podns, "pypi.org.default.svc.cluster.local.", "collapsed").await;
    assert_eq!(l["to"], "pypi.org.");
    assert_eq!(l["source"], "synthesized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_cluster_names() {
    let up = upstream();
    let podns = logging(&up, &[]).await;
    let r = udp_query(podns.addr(), &query("under_score.default.svc.cluster.local", RecordType::A)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    let l = line(&podns, "under_score.default.svc.cluster.local.", "impossible").await;
    assert_eq!(l["rcode"], "NXDOMAIN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthesized_says_why() {
    let up = upstream();
    let podns = logging(&up, &[]).await;
    let r = udp_query(podns.addr(), &query("v4only.example.org", RecordType::AAAA)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    let l = line(&podns, "v4only.example.org.", "synthesized").await;
    assert_eq!(l["reason"], "servfail");
    assert_eq!(l["type"], "AAAA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_answers() {
    let up = upstream();
    let podns = logging(&up, &[]).await;
    let r = udp_query(podns.addr(), &query("short.example.org", RecordType::A)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    up.on("short.example.org", RecordType::A, Action::Drop);
    // The one-second entry has to expire: time is what is under test.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = udp_query(podns.addr(), &query("short.example.org", RecordType::A)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    let l = line(&podns, "short.example.org.", "stale").await;
    assert_eq!(l["source"], "stale");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_podns_answers_itself() {
    let up = upstream();
    let podns = logging(&up, &[]).await;
    let mut m = query("two.example.org", RecordType::A);
    m.add_query(query("three.example.org", RecordType::A).queries[0].clone());
    let r = udp_query(podns.addr(), &m).await;
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    let l = podns.wait_stdout(&["\"action\":\"error\"", "\"rcode\":\"FORMERR\""], Duration::from_secs(5)).await;
    assert!(l.contains("\"source\":\"error\""), "{l}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_query_in_n_is_logged_and_none_without_the_flag() {
    let up = upstream();
    let sampled = logging(&up, &[("--query-log-sample", "3")]).await;
    for i in 0..6 {
        let r = udp_query(sampled.addr(), &query(&format!("s{i}.example.org"), RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
    sampled.wait_stdout(&["\"name\":\"s3.example.org.\""], Duration::from_secs(5)).await;
    let lines = sampled.stdout_lines();
    assert_eq!(lines.len(), 2, "one in three of six: {lines:?}");
    assert!(lines[0].contains("\"name\":\"s0.example.org.\""), "{lines:?}");
    let quiet = PodnsBuilder::new().upstream(up.addr).arg("--collapse", "off").start().await;
    let r = udp_query(quiet.addr(), &query("pypi.org", RecordType::A)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    let text = quiet.metrics_text().await;
    assert!(text.contains("podns_responses_total"), "the query was answered");
    assert!(quiet.stdout_lines().is_empty(), "no query log without --query-log: {:?}", quiet.stdout_lines());
}
