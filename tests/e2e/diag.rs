//! Golden-output tests of `podns explain` and `podns check` (issue 14).
//!
//! Every case runs the real binary and compares its standard output with
//! `tests/golden/diag/<case>`; `PODNS_BLESS=1` rewrites the files. Output that varies from run to
//! run is normalized first: latencies are left out (`--no-timing`), loopback ports become
//! `UPSTREAM`/`PODNS`/`LISTEN`, and check's random labels become `podns-check-RANDOM`. Each case
//! also asserts what its output must say, so a wrong blessing fails.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const POD: &str = "search default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n";
const PYPI: Ipv4Addr = Ipv4Addr::new(151, 101, 0, 223);
const PYPI_V6: Ipv6Addr = Ipv6Addr::new(0x2a04, 0x4e42, 0, 0, 0, 0, 0, 0x223);
const KUBERNETES: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/diag")
}

fn bless() -> bool {
    std::env::var_os("PODNS_BLESS").is_some_and(|v| v != "0" && !v.is_empty())
}

/// Compares `got` with the golden file `name` (or rewrites it when blessing).
fn golden(name: &str, got: &str) {
    let path = golden_dir().join(name);
    if bless() {
        std::fs::create_dir_all(golden_dir()).expect("golden dir");
        std::fs::write(&path, got).expect("write golden");
        return;
    }
    let want =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (PODNS_BLESS=1 writes it)", path.display()));
    assert!(
        want == got,
        "{name} differs from its golden file (PODNS_BLESS=1 rewrites):\n--- got\n{got}\n--- want\n{want}"
    );
}

fn podns(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podns")).args(args).env_remove("RUST_LOG").output().expect("run podns")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Replaces the addresses of a run by names, and check's random labels by `RANDOM`.
fn normalize(s: &str, addrs: &[(SocketAddr, &str)]) -> String {
    let mut s = s.to_string();
    for (a, n) in addrs {
        s = s.replace(&a.to_string(), n);
    }
    regex::Regex::new("podns-check-[0-9a-f]{10}").unwrap().replace_all(&s, "podns-check-RANDOM").into_owned()
}

// ---------------------------------------------------------------------------------------------
// explain, static

/// (case, resolv.conf, name, extra flags)
const STATIC: &[(&str, &str, &str, &[&str])] = &[
    ("pypi-org", POD, "pypi.org", &[]),
    (
        "pypi-org-node-domain",
        "search default.svc.cluster.local svc.cluster.local cluster.local ec2.internal\noptions ndots:5\n",
        "pypi.org",
        &[],
    ),
    ("kubernetes-default", POD, "kubernetes.default", &[]),
    (
        "web-dev-in-dev",
        "search dev.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
        "web.dev",
        &[],
    ),
    ("trailing-dot", POD, "pypi.org.", &[]),
    ("single-label", POD, "myapp", &["--type", "AAAA"]),
];

#[test]
fn explain_static_goldens() {
    for (case, resolv, name, extra) in STATIC {
        let f = TempFile::new("resolv.conf", resolv);
        for json in [false, true] {
            let mut args = vec!["explain", name, "--resolv-conf", f.path_str(), "--no-live"];
            args.extend_from_slice(extra);
            if json {
                args.push("--json");
            }
            let out = podns(&args);
            assert!(out.status.success(), "{case}: {:?} {}", out.status, stderr(&out));
            let text = stdout(&out);
            if json {
                let v: serde_json::Value = serde_json::from_str(&text).expect("explain --json is JSON");
                assert_eq!(v["name"], *name);
                assert!(v["live"].is_null(), "{case}: --no-live has no live part");
                golden(&format!("explain-{case}.json"), &text);
            } else {
                golden(&format!("explain-{case}.txt"), &text);
            }
        }
    }
}

/// What the static goldens must say, whatever was blessed.
#[test]
fn explain_static_decisions() {
    let json = |resolv: &str, name: &str| -> serde_json::Value {
        let f = TempFile::new("resolv.conf", resolv);
        let out = podns(&["explain", name, "--resolv-conf", f.path_str(), "--no-live", "--json"]);
        serde_json::from_str(&stdout(&out)).expect("JSON")
    };
    let kinds = |v: &serde_json::Value| -> Vec<(String, String)> {
        v["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap().to_string(), c["action"]["kind"].as_str().unwrap().to_string()))
            .collect()
    };
    let v = json(POD, "pypi.org");
    assert_eq!(
        kinds(&v),
        [
            ("pypi.org.default.svc.cluster.local.".into(), "collapsed-if-probes-allow".into()),
            ("pypi.org.svc.cluster.local.".into(), "collapsed-if-probes-allow".into()),
            ("pypi.org.cluster.local.".into(), "nxdomain-locally".into()),
            ("pypi.org.".into(), "forwarded".into()),
        ]
    );
    assert_eq!(v["candidates"][0]["action"]["to"], serde_json::json!(["pypi.org."]));
    assert!(v["candidates"][2]["why"][0].as_str().unwrap().contains("rule 3"));
    assert_eq!(
        v["candidates"][0]["probe_names"],
        serde_json::json!(["org.svc.cluster.local.", "org.default.svc.cluster.local."])
    );
    // kubernetes.default: every candidate may be real, or is impossible; nothing is collapsed.
    let v = json(POD, "kubernetes.default");
    let k = kinds(&v);
    assert_eq!(k[0], ("kubernetes.default.default.svc.cluster.local.".into(), "forwarded".into()));
    assert_eq!(k[1], ("kubernetes.default.svc.cluster.local.".into(), "forwarded".into()));
    assert_eq!(k[2], ("kubernetes.default.cluster.local.".into(), "nxdomain-locally".into()));
    // web.dev in namespace dev: the probe for `dev` decides; the namespace comes from the search list.
    let v = json("search dev.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n", "web.dev");
    assert_eq!(v["resolv"]["namespace"], "dev");
    assert_eq!(
        v["candidates"][0]["probe_names"],
        serde_json::json!(["dev.svc.cluster.local.", "dev.dev.svc.cluster.local."])
    );
    // A trailing dot: one candidate, for glibc and musl alike.
    let v = json(POD, "pypi.org.");
    assert_eq!(v["rooted"], true);
    assert_eq!(kinds(&v), [("pypi.org.".into(), "forwarded".into())]);
    // A single label: the search list, then the root zone's answer when the upstream fails it.
    let v = json(POD, "myapp");
    let last = v["candidates"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["name"], "myapp.");
    assert!(last["why"][1].as_str().unwrap().contains("root zone"), "{last}");
}

#[test]
fn explain_errors() {
    // An unreadable resolv.conf: exit 2, the file named.
    let out = podns(&["explain", "pypi.org", "--resolv-conf", "/nonexistent/resolv.conf", "--no-live"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--resolv-conf /nonexistent/resolv.conf"), "{}", stderr(&out));
    // An unusable one.
    let f = TempFile::new("resolv.conf", "search a..b\n");
    let out = podns(&["explain", "x", "--resolv-conf", f.path_str(), "--no-live"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(f.path_str()), "{}", stderr(&out));
    // Bad flags: exit 2, the flag named.
    let out = podns(&["explain", "x", "--type", "BOGUS"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--type"), "{}", stderr(&out));
    let out = podns(&["explain", "x", "--via", "nowhere"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--via"), "{}", stderr(&out));
    let f2 = TempFile::new("resolv.conf", POD);
    for sub in [&["explain", "x", "--no-live"][..], &["check"][..]] {
        let mut args = sub.to_vec();
        args.extend(["--resolv-conf", f2.path_str(), "--cluster-domain", "a..b"]);
        let out = podns(&args);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("--cluster-domain"), "{}", stderr(&out));
    }
    let out = podns(&["explain", "x", "--live", "--no-live"]);
    assert_eq!(out.status.code(), Some(2));
    // --live with nothing at --via: exit 1, fast.
    let f = TempFile::new("resolv.conf", POD);
    let nothing = refusing_addr().to_string();
    let t0 = Instant::now();
    let out = podns(&["explain", "pypi.org", "--resolv-conf", f.path_str(), "--live", "--via", &nothing]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("no DNS server answers at --via {nothing}")), "{}", stderr(&out));
    assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());
    // Without --live, the same falls back to the static explanation.
    let out = podns(&["explain", "pypi.org", "--resolv-conf", f.path_str(), "--via", &nothing]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("static explanation only"));
    assert!(!stdout(&out).contains("Live walk"));
}

#[test]
fn explain_never_panics() {
    let f = TempFile::new("resolv.conf", POD);
    let long = "a.".repeat(200);
    for name in ["", ".", "..", "a..b", "1.2.3.4", "::1", long.as_str(), "é.com", "*", "-", "a b"] {
        let out = podns(&["explain", name, "--resolv-conf", f.path_str(), "--no-live", "--json"]);
        assert!(out.status.success(), "{name:?}: {}", stderr(&out));
        serde_json::from_str::<serde_json::Value>(&stdout(&out)).expect("JSON");
    }
}

// ---------------------------------------------------------------------------------------------
// explain, live (loopback)

/// A cluster DNS for a pod in `default`: namespaces default and kube-system, the kubernetes
/// service, pypi.org (A and AAAA); NXDOMAIN elsewhere.
fn cluster_upstream() -> Upstream {
    let soa = || Rr::soa("cluster.local", 30, 30);
    let up = Upstream::with_default(Reply::nxdomain(Rr::soa(".", 3600, 86400)).action());
    up.on_suffix("cluster.local", Reply::nxdomain(soa()).action());
    up.on_name("cluster.local", Reply::nodata(soa()).action());
    up.on("cluster.local", RecordType::SOA, Reply::answer(vec![soa()]).action());
    for ns in ["default", "kube-system"] {
        up.on_name(&format!("{ns}.svc.cluster.local"), Reply::nodata(soa()).action());
    }
    up.on_name("kubernetes.default.svc.cluster.local", Reply::nodata(soa()).action());
    up.on("kubernetes.default.svc.cluster.local", RecordType::A, Reply::answer(vec![Rr::a(KUBERNETES)]).action());
    up.on_name("pypi.org", Reply::nodata(Rr::soa("org", 60, 60)).action());
    up.on("pypi.org", RecordType::A, Reply::answer(vec![Rr::a(PYPI)]).action());
    up.on("pypi.org", RecordType::AAAA, Reply::answer(vec![Rr::aaaa(PYPI_V6)]).action());
    up
}

#[tokio::test]
async fn explain_live_golden() {
    let up = cluster_upstream();
    let resolv = TempFile::new("resolv.conf", &format!("nameserver 127.0.0.1\n{POD}"));
    let p = PodnsBuilder::new().upstream(up.addr).arg("--resolv-conf", resolv.path_str()).start().await;
    let addrs = [(up.addr, "UPSTREAM"), (p.addr(), "PODNS")];
    let (via, upstream) = (p.addr().to_string(), up.addr.to_string());
    // The support harness does not tell podns's metrics address: its upstream count stays `?`
    // here (the pod lab checks it).
    let no_metrics = refusing_addr().to_string();
    for (case, name) in [("pypi-org", "pypi.org"), ("kubernetes-default", "kubernetes.default")] {
        for json in [false, true] {
            let mut args = vec![
                "explain",
                name,
                "--resolv-conf",
                resolv.path_str(),
                "--via",
                &via,
                "--upstream",
                &upstream,
                "--metrics",
                &no_metrics,
                "--no-timing",
            ];
            if json {
                args.push("--json");
            }
            let out = podns(&args);
            assert!(out.status.success(), "{case}: {}", stderr(&out));
            let text = normalize(&stdout(&out), &addrs);
            if json {
                let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
                let live = &v["live"];
                assert_eq!(live["same_result"], true, "{case}: {live}");
                let (direct, through) =
                    (live["direct"]["queries"].as_u64().unwrap(), live["podns"]["queries"].as_u64().unwrap());
                assert!(direct >= through, "{case}: never more queries through podns: {direct} direct vs {through}");
                if name == "pypi.org" {
                    assert_eq!(live["direct"]["addresses"], serde_json::json!([PYPI.to_string(), PYPI_V6.to_string()]));
                    assert_eq!((direct, through), (8, 2), "4 candidates x 2 types, then one CNAME per type");
                    assert_eq!(v["candidates"][0]["action"]["kind"], "collapsed");
                    assert_eq!(v["candidates"][0]["probes"]["verdict"], "absent");
                } else {
                    // Found at its second candidate, which podns forwards: the same walk.
                    assert_eq!((direct, through), (4, 4));
                    assert_eq!(live["podns"]["addresses"], serde_json::json!([KUBERNETES.to_string()]));
                }
                golden(&format!("explain-live-{case}.json"), &text);
            } else {
                golden(&format!("explain-live-{case}.txt"), &text);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// check

const IPV4_ONLY: &str = "00000000000000000000000000000001 01 80 10 80       lo\n";

/// Runs `podns check` against `up` with a resolv.conf holding the node search domain
/// `corp.example`; returns the exit code and the normalized text and JSON outputs.
fn check(upstream: SocketAddr, listen: SocketAddr) -> (Option<i32>, String, serde_json::Value) {
    let resolv = TempFile::new(
        "resolv.conf",
        "search default.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:5\n",
    );
    let ipv6 = TempFile::new("if_inet6", IPV4_ONLY);
    let (u, l) = (upstream.to_string(), listen.to_string());
    let base =
        ["check", "--resolv-conf", resolv.path_str(), "--upstream", &u, "--listen", &l, "--if-inet6", ipv6.path_str()];
    let addrs = [(upstream, "UPSTREAM"), (listen, "LISTEN")];
    let text = podns(&base);
    let mut args = base.to_vec();
    args.push("--json");
    let json = podns(&args);
    assert_eq!(text.status.code(), json.status.code());
    let v = serde_json::from_str(&normalize(&stdout(&json), &addrs)).expect("check --json is JSON");
    (text.status.code(), normalize(&stdout(&text), &addrs), v)
}

fn severity(v: &serde_json::Value, check: &str) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == check)
        .map(|f| f["severity"].as_str().unwrap().to_string())
        .collect()
}

/// A healthy cluster DNS: the SOA, the kubernetes service's AAAA NODATA, NXDOMAIN for names
/// that do not exist (node search domain and single labels alike).
fn healthy() -> Upstream {
    let up = cluster_upstream();
    up.on_suffix("corp.example", Reply::nxdomain(Rr::soa("corp.example", 60, 60)).action());
    up
}

fn free_listen() -> SocketAddr {
    SocketAddr::new(LOCALHOST_V4, free_port(LOCALHOST_V4))
}

#[test]
fn check_healthy() {
    let up = healthy();
    let (code, text, v) = check(up.addr, free_listen());
    assert_eq!(code, Some(0), "{text}");
    for c in ["cluster-dns", "node-domain", "aaaa", "single-label", "listen"] {
        assert_eq!(severity(&v, c), ["ok"], "{c}: {text}");
    }
    assert_eq!(severity(&v, "ipv6"), ["info"]);
    golden("check-healthy.txt", &text);
}

#[test]
fn check_aaaa_servfail() {
    let up = healthy();
    up.on("kubernetes.default.svc.cluster.local", RecordType::AAAA, Action::Rcode(ResponseCode::ServFail));
    let (code, text, v) = check(up.addr, free_listen());
    assert_eq!(code, Some(0), "a quirk podns repairs does not block: {text}");
    assert_eq!(severity(&v, "aaaa"), ["warn"]);
    assert!(text.contains("answers NODATA when A exists (--aaaa fix"), "{text}");
    golden("check-aaaa-servfail.txt", &text);
}

#[test]
fn check_node_domain_nodata() {
    let up = healthy();
    up.on_suffix("corp.example", Reply::nodata(Rr::soa("corp.example", 60, 60)).action());
    let (code, text, v) = check(up.addr, free_listen());
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(severity(&v, "node-domain"), ["warn"]);
    assert!(text.contains("corp.example. answers NODATA for names it lacks"), "{text}");
    assert!(text.contains("skips NODATA candidates as glibc does"), "{text}");
    golden("check-node-domain-nodata.txt", &text);
}

#[test]
fn check_single_label_servfail() {
    // systemd-resolved on the node: every single-label name SERVFAILs.
    let up = healthy();
    up.set_default(Action::Rcode(ResponseCode::ServFail));
    let (code, text, v) = check(up.addr, free_listen());
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(severity(&v, "single-label"), ["warn"]);
    assert!(text.contains("answers as the root zone would"), "{text}");
    golden("check-single-label-servfail.txt", &text);
}

#[test]
fn check_nothing_listening() {
    let t0 = Instant::now();
    let (code, text, v) = check(refusing_addr(), free_listen());
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(severity(&v, "cluster-dns"), ["block"]);
    assert_eq!(v["blocking"], true);
    assert!(t0.elapsed() < Duration::from_secs(5), "bounded: {:?}", t0.elapsed());
    golden("check-nothing-listening.txt", &text);
}

#[test]
fn check_port_conflict() {
    let up = healthy();
    // Held over UDP and TCP alike (another DNS server), so the output does not depend on
    // what else runs on the machine.
    let (udp, _tcp) = loop {
        let udp = std::net::UdpSocket::bind((LOCALHOST_V4, 0)).unwrap();
        if let Ok(tcp) = std::net::TcpListener::bind(udp.local_addr().unwrap()) {
            break (udp, tcp);
        }
    };
    let (code, text, v) = check(up.addr, udp.local_addr().unwrap());
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(severity(&v, "listen"), ["block"]);
    assert!(text.contains("UDP LISTEN is in use") && text.contains("TCP LISTEN is in use"), "{text}");
    golden("check-port-conflict.txt", &text);
}

#[test]
fn check_errors() {
    let out = podns(&["check", "--resolv-conf", "/nonexistent/resolv.conf"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/resolv.conf"));
    let out = podns(&["check", "--listen", "port53"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--listen"), "{}", stderr(&out));
    // No nameserver but our own listener.
    let f = TempFile::new("resolv.conf", "nameserver 127.0.0.1\nsearch default.svc.cluster.local\n");
    let l = free_listen();
    let own = format!("nameserver {}\n", l.ip());
    std::fs::write(&f.path, own).unwrap();
    let out = podns(&["check", "--resolv-conf", f.path_str(), "--listen", &format!("{}:53", l.ip())]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("no upstream nameserver"));
}

/// The flags of explain and check are documented in the README, as the other subcommands' are
/// (tests/docs.rs).
#[test]
fn flags_are_documented() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for sub in ["explain", "check"] {
        let help = stdout(&podns(&[sub, "--help"]));
        let missing: Vec<&str> = help
            .split_whitespace()
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .map(|w| w.trim_end_matches([',', '.', ')', ':']))
            .filter(|w| *w != "--help" && !w.contains('='))
            .filter(|f| !readme.contains(&format!("`{f}")))
            .collect();
        assert!(missing.is_empty(), "podns {sub}: flags missing from README: {missing:?}");
    }
}

/// `podns check -f`: the pods of a namespace's manifests, judged as `podns inject` judges them.
#[test]
fn check_manifests() {
    let input = golden_dir().join("check-manifests.in.yaml");
    let out = podns(&["check", "-f", input.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "pods podns cannot serve block: {}", stderr(&out));
    let text = stdout(&out).replace(&format!("{}/", golden_dir().display()), "");
    for (what, sev) in [
        ("Deployment/api (document 1 of check-manifests.in.yaml): dnsPolicy ClusterFirst", "[ok   ] pod"),
        ("Deployment/resolver (document 2 of check-manifests.in.yaml): podns cannot serve", "[BLOCK] pod"),
        ("DaemonSet/node-agent (document 3 of check-manifests.in.yaml): podns cannot serve", "[BLOCK] pod"),
        ("CronJob/report (document 4 of check-manifests.in.yaml): podns cannot serve", "[BLOCK] pod"),
        ("Pod/exporter (document 5 of check-manifests.in.yaml): podns cannot serve", "[BLOCK] pod"),
        ("Pod/exporter (document 5 of check-manifests.in.yaml): dnsConfig ndots 2", "[info ] ndots"),
        ("Deployment/meshed (document 6 of check-manifests.in.yaml): dnsPolicy ClusterFirst", "[WARN ] pod"),
        ("Deployment/meshed (document 6 of check-manifests.in.yaml): dnsConfig ndots 1", "[info ] ndots"),
    ] {
        assert!(text.contains(&format!("{sev}: {what}")), "missing `{sev}: {what}` in:\n{text}");
    }
    assert!(text.contains("port 53") && text.contains("hostNetwork") && text.contains("dnsPolicy: Default"));
    assert!(text.contains("skip-outbound-ports"), "Linkerd's caveat: {text}");
    assert!(!text.contains("Service/api"), "a Service holds no pod");
    golden("check-manifests.txt", &text);
    // Standard input works too.
    let mut child = Command::new(env!("CARGO_BIN_EXE_podns"))
        .args(["check", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run podns");
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        b"kind: Pod\napiVersion: v1\nmetadata: {name: p}\nspec: {containers: [{name: c, image: i}]}\n",
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("[ok   ] pod: Pod/p (document 1 of standard input)"), "{}", stdout(&out));
    // An unreadable file exits 1 naming it.
    let out = podns(&["check", "-f", "/nonexistent/m.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent/m.yaml"));
}
