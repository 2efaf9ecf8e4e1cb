//! Process lifecycle and command line: graceful drain on SIGTERM/SIGINT, exit statuses, and
//! errors for bad flags or a missing upstream.

use std::time::Duration;

use crate::support::*;
use hickory_proto::rr::RecordType;

const GRACE: Duration = Duration::from_millis(1500);

async fn drains_then_exits_zero(sig: i32) {
    let up = Upstream::start();
    let podns = PodnsBuilder::new().upstream(up.addr).arg("--drain-grace", "1500ms").start().await;
    podns.wait_ready(REPLY_TIMEOUT).await;
    // A client connected before the signal.
    let mut early = TcpClient::connect(podns.addr()).await;
    assert_eq!(a_records(&early.query(&query("before.example.com", RecordType::A)).await), vec![AUTO_V4]);

    podns.signal(sig);
    podns.wait_log(&["draining"], REPLY_TIMEOUT).await;
    let (status, body) = podns.http_get("/ready").await;
    assert_eq!(status, 503, "/ready while draining: {body}");

    // Still answering during the grace period, over UDP and TCP, new and old connections.
    let reply = udp_query(podns.addr(), &query("during-udp.example.com", RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![AUTO_V4], "UDP during drain");
    let reply = tcp_query(podns.addr(), &query("during-tcp.example.com", RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![AUTO_V4], "new TCP connection during drain");
    let reply = early.query(&query("during2.example.com", RecordType::A)).await;
    assert_eq!(a_records(&reply), vec![AUTO_V4], "existing TCP connection during drain");
    let (health, _) = podns.http_get("/health").await;
    assert_eq!(health, 200, "/health while draining");

    let exit = podns.wait_exit(GRACE + Duration::from_secs(5)).await;
    assert_eq!(exit.code(), Some(0), "exit status after drain: {exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_exits_zero() {
    drains_then_exits_zero(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_then_exits_zero() {
    drains_then_exits_zero(libc::SIGINT).await;
}

const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn bad_flag_values_exit_2_naming_the_flag() {
    let listen = format!("127.0.0.1:{}", free_port(LOCALHOST_V4));
    let cases: &[(&str, &[&str])] = &[
        ("--attempt-timeout", &["--attempt-timeout", "soon"]),
        ("--query-timeout", &["--query-timeout", "0s"]),
        ("--max-inflight", &["--max-inflight", "0"]),
        ("--tcp-max-connections", &["--tcp-max-connections", "many"]),
        ("--upstream", &["--upstream", "dns.example"]),
        ("--metrics-listen", &["--metrics-listen", "everywhere"]),
        ("--tcp-max-inflight", &["--tcp-max-inflight", "0"]),
        ("--max-inflight-per-client", &["--max-inflight-per-client", "0"]),
        ("--unwanted-reply-threshold", &["--unwanted-reply-threshold", "lots"]),
    ];
    for (flag, bad) in cases {
        let mut args = vec!["--listen", &listen, "--upstream", "127.0.0.1:1"];
        if *flag != "--metrics-listen" {
            args.extend(["--metrics-listen", "off"]);
        }
        args.extend_from_slice(bad);
        let (status, stderr) = run_podns_to_exit(&args, EXIT_TIMEOUT);
        assert_eq!(status.code(), Some(2), "{bad:?}: exit status; stderr:\n{stderr}");
        assert!(stderr.contains(flag), "{bad:?}: stderr does not name {flag}:\n{stderr}");
    }
    // --listen itself.
    let args = ["--listen", "nonsense", "--upstream", "127.0.0.1:1", "--metrics-listen", "off"];
    let (status, stderr) = run_podns_to_exit(&args, EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(2), "--listen nonsense; stderr:\n{stderr}");
    assert!(stderr.contains("--listen"), "stderr does not name --listen:\n{stderr}");
}

#[test]
fn no_upstream_exits_2_mentioning_upstream() {
    let only_self = TempFile::new("resolv.conf", "search default.svc.cluster.local\nnameserver 127.0.0.1\n");
    let none = TempFile::new("resolv.conf", "search default.svc.cluster.local\noptions ndots:5\n");
    let missing = std::env::temp_dir().join(format!("podns-test-{}-no-such-resolv.conf", std::process::id()));
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "resolv.conf naming only our own listener",
            vec!["--resolv-conf", only_self.path_str(), "--listen", "127.0.0.1:53", "--metrics-listen", "off"],
        ),
        (
            "resolv.conf without nameserver",
            vec!["--resolv-conf", none.path_str(), "--listen", "127.0.0.1:53", "--metrics-listen", "off"],
        ),
        (
            "missing resolv.conf",
            vec!["--resolv-conf", missing.to_str().unwrap(), "--listen", "127.0.0.1:53", "--metrics-listen", "off"],
        ),
    ];
    for (what, args) in &cases {
        let (status, stderr) = run_podns_to_exit(args, EXIT_TIMEOUT);
        assert_eq!(status.code(), Some(2), "{what}: exit status; stderr:\n{stderr}");
        assert!(stderr.contains("--upstream"), "{what}: stderr does not mention --upstream:\n{stderr}");
    }
}
