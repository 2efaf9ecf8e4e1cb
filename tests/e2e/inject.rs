//! `podns inject`, run as the real binary.
//!
//! Golden files: each `tests/golden/inject/<case>.in.yaml` starts with a `# args: ...` line (the
//! flags to pass) and `<case>.out.yaml` is the expected output. `PODNS_BLESS=1 cargo test --test
//! inject` rewrites the outputs from the current binary; review the diff before committing it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use podns::inject::yaml::{self, Node};

const BIN: &str = env!("CARGO_BIN_EXE_podns");

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/inject")
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs `podns inject ARGS`, feeding `stdin` when given.
fn inject(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .arg("inject")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("podns runs");
    if let Some(text) = stdin {
        // A refusal may exit before reading its input: a closed pipe is not the test's concern.
        match child.stdin.take().expect("stdin").write_all(text.as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => panic!("writing stdin: {e}"),
        }
    }
    child.wait_with_output().expect("podns exits")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One golden case: `<name>.in.yaml` starts with `# args: FLAGS`, optionally followed by
/// `# command: uninject` (default `inject`) and `# exit: N` (default 0). Expected outputs:
/// `<name>.out.yaml` (standard output, when the exit status is 0) and `<name>.err.txt`
/// (standard error, the golden directory's path removed).
struct Case {
    name: String,
    flags: Vec<String>,
    path: PathBuf,
    command: String,
    exit: i32,
}

fn all_cases() -> Vec<Case> {
    let mut cases: Vec<Case> = std::fs::read_dir(golden_dir())
        .expect("golden dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".in.yaml"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("reads input");
            let header = |key: &str| text.lines().take(3).find_map(|l| l.strip_prefix(key)).map(str::trim);
            let flags = header("# args:")
                .unwrap_or_else(|| panic!("{} must start with `# args:`", path.display()))
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            let name = path.file_name().expect("name").to_string_lossy().trim_end_matches(".in.yaml").to_owned();
            let command = header("# command:").unwrap_or("inject").to_owned();
            let exit = header("# exit:").map_or(0, |e| e.parse().expect("exit status"));
            Case { name, flags, path, command, exit }
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(cases.len() >= 30, "golden cases missing: {}", cases.len());
    cases
}

/// The golden cases that inject un-injected input successfully: (name, flags, input path).
/// (`--update` cases start from injected input; golden_outputs checks them.)
fn cases() -> Vec<(String, Vec<String>, PathBuf)> {
    all_cases()
        .into_iter()
        .filter(|c| c.command == "inject" && c.exit == 0 && !c.flags.iter().any(|f| f == "--update"))
        .map(|c| (c.name, c.flags, c.path))
        .collect()
}

fn run_case(flags: &[String], input: &Path) -> Output {
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.push(input.to_str().expect("UTF-8 path"));
    inject(&args, None)
}

fn blessing() -> bool {
    std::env::var_os("PODNS_BLESS").is_some_and(|v| v != "0" && !v.is_empty())
}

#[test]
fn golden_outputs() {
    let mut failed = Vec::new();
    let dir = format!("{}/", golden_dir().display());
    for case in all_cases() {
        let name = &case.name;
        let out = Command::new(BIN)
            .arg(&case.command)
            .args(&case.flags)
            .arg(&case.path)
            .stdin(Stdio::null())
            .output()
            .expect("podns runs");
        assert_eq!(out.status.code(), Some(case.exit), "{name}: {}", stderr(&out));
        let got_err = stderr(&out).replace(&dir, "");
        let mut expected = vec![(golden_dir().join(format!("{name}.err.txt")), got_err)];
        if case.exit == 0 {
            expected.push((golden_dir().join(format!("{name}.out.yaml")), stdout(&out)));
        } else {
            assert!(out.stdout.is_empty(), "{name}: a refusal wrote to standard output");
        }
        for (path, got) in expected {
            if blessing() {
                std::fs::write(&path, &got).expect("writes golden");
                continue;
            }
            let want = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (PODNS_BLESS=1 writes it)", path.display()));
            if got != want {
                failed.push(format!("=== {name}: got\n{got}\n=== expected ({})\n{want}", path.display()));
            }
        }
    }
    assert!(failed.is_empty(), "golden mismatch (PODNS_BLESS=1 rewrites):\n{}", failed.join("\n"));
}

/// Injecting an injected stream changes nothing, byte for byte.
#[test]
fn injecting_twice_changes_nothing() {
    for (name, flags, input) in cases() {
        let once = run_case(&flags, &input);
        assert!(once.status.success(), "{name}: {}", stderr(&once));
        let args: Vec<&str> = flags.iter().map(String::as_str).collect();
        let twice = inject(&args, Some(&stdout(&once)));
        assert!(twice.status.success(), "{name}: {}", stderr(&twice));
        assert_eq!(stdout(&twice), stdout(&once), "{name}: second injection changed the output");
        let workloads = documents(&stdout(&once)).iter().flat_map(pod_specs).count();
        if workloads > 0 {
            assert!(stderr(&twice).contains("already has a `podns` container"), "{name}: {}", stderr(&twice));
        }
    }
}

/// Every YAML document of a stream.
fn documents(text: &str) -> Vec<Node> {
    yaml::parse(text).unwrap_or_else(|e| panic!("output is not YAML: {e:?}\n{text}"))
}

/// (namespace, pod spec, pod metadata) of every workload in a document, Lists included.
fn pod_specs(doc: &Node) -> Vec<(Option<String>, Node, Node)> {
    let kind = doc.get_str("kind").unwrap_or_default();
    let ns = doc.path(&["metadata", "namespace"]).and_then(Node::as_str).map(str::to_owned);
    if kind == "List" {
        return match doc.get("items") {
            Some(Node::Seq(items)) => items.iter().flat_map(pod_specs).collect(),
            _ => Vec::new(),
        };
    }
    // Objects podns leaves alone: controlled by another object, running pods.
    let owned = matches!(doc.path(&["metadata", "ownerReferences"]), Some(Node::Seq(o)) if o.iter().any(|r| r.get("controller").is_some_and(Node::is_true)));
    let running = kind == "Pod" && (doc.get("status").is_some() || doc.path(&["spec", "nodeName"]).is_some());
    if owned || running {
        return Vec::new();
    }
    let has_pod = |t: &&Node| matches!(t.path(&["spec", "containers"]), Some(Node::Seq(_)));
    let template = match kind {
        "Pod" => Some(doc),
        "PodTemplate" => doc.get("template"),
        "CronJob" => doc.path(&["spec", "jobTemplate", "spec", "template"]),
        _ => doc.path(&["spec", "template"]),
    }
    .filter(has_pod);
    template
        .filter(|t| t.path(&["metadata", "annotations", "podns.io/inject"]).and_then(Node::as_str) != Some("disabled"))
        .map(|t| {
            let spec = t.get("spec").cloned().expect("pod spec");
            let meta = t.get("metadata").cloned().unwrap_or(Node::Map(Vec::new()));
            vec![(ns, spec, meta)]
        })
        .unwrap_or_default()
}

fn strs(node: Option<&Node>) -> Vec<String> {
    match node {
        Some(Node::Seq(items)) => items.iter().map(|i| i.as_str().expect("string").to_owned()).collect(),
        _ => Vec::new(),
    }
}

fn flag<'a>(flags: &'a [String], name: &str) -> Vec<&'a str> {
    flags.windows(2).filter(|w| w[0] == name).map(|w| w[1].as_str()).collect()
}

/// What the golden outputs must say, checked from their structure (so a wrong blessing fails
/// here): the sidecar first among the init containers as a native sidecar, the DNS settings,
/// the sysctl, and the application's containers exactly as they were. Capture-mode cases are
/// checked by `capture_mode_pods_keep_their_dns`.
#[test]
fn injected_pods_are_wired_to_podns() {
    let mut checked = 0;
    for (name, flags, input) in cases() {
        if is_capture(&flags) {
            continue;
        }
        let out = run_case(&flags, &input);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let before: Vec<_> =
            documents(&std::fs::read_to_string(&input).expect("input")).iter().flat_map(pod_specs).collect();
        let after: Vec<_> = documents(&stdout(&out)).iter().flat_map(pod_specs).collect();
        assert_eq!(before.len(), after.len(), "{name}: workloads appeared or vanished");
        let cluster_domain =
            flag(&flags, "--cluster-domain").first().map_or("cluster.local", |d| d.trim_end_matches('.'));
        for ((ns, old, old_meta), (_, spec, meta)) in before.iter().zip(&after) {
            let annotation = |k: &str| old_meta.path(&["annotations", k]).and_then(Node::as_str);
            if annotation("podns.io/mode") == Some("capture") {
                continue;
            }
            // Upstreams from the pod itself (its own nameservers, or podns.io/upstream).
            let own_upstreams = annotation("podns.io/upstream").is_some()
                || (old.get_str("dnsPolicy") == Some("None") && old.path(&["dnsConfig", "nameservers"]).is_some());
            let ns =
                ns.clone().unwrap_or_else(|| flag(&flags, "--namespace").first().unwrap_or(&"default").to_string());
            let Some(Node::Seq(init)) = spec.get("initContainers") else { panic!("{name}: no initContainers") };
            let sidecar = &init[0];
            assert_eq!(sidecar.get_str("name"), Some("podns"), "{name}");
            assert_eq!(sidecar.get_str("restartPolicy"), Some("Always"), "{name}");
            assert_eq!(sidecar.get_str("image"), flag(&flags, "--image").first().copied(), "{name}");
            let args = strs(sidecar.get("args"));
            for up in flag(&flags, "--upstream").into_iter().filter(|_| !own_upstreams) {
                let bare = up.strip_suffix(":53").unwrap_or(up);
                assert!(args.contains(&format!("--upstream={bare}")), "{name}: {args:?} lacks {up}");
            }
            assert!(args.contains(&format!("--cluster-domain={cluster_domain}")), "{name}: {args:?}");
            for probe in ["startupProbe", "readinessProbe"] {
                assert_eq!(sidecar.path(&[probe, "httpGet", "path"]).and_then(Node::as_str), Some("/ready"), "{name}");
            }
            assert_eq!(sidecar.path(&["securityContext", "runAsNonRoot"]).map(Node::is_true), Some(true), "{name}");
            assert_eq!(
                sidecar.path(&["securityContext", "allowPrivilegeEscalation"]).and_then(Node::as_str),
                Some("false"),
                "{name}"
            );
            // The other init containers and the containers are untouched, in order.
            let old_init: Vec<Node> = match old.get("initContainers") {
                Some(Node::Seq(items)) => items.clone(),
                _ => Vec::new(),
            };
            assert_eq!(&init[1..], &old_init[..], "{name}: init containers changed");
            assert_eq!(spec.get("containers"), old.get("containers"), "{name}: containers changed");

            assert_eq!(spec.get_str("dnsPolicy"), Some("None"), "{name}");
            let nameservers = strs(spec.path(&["dnsConfig", "nameservers"]));
            assert_eq!(nameservers.first().map(String::as_str), Some("127.0.0.1"), "{name}");
            assert!(nameservers.len() <= 3, "{name}: {nameservers:?}");
            let searches = strs(spec.path(&["dnsConfig", "searches"]));
            let options = match spec.path(&["dnsConfig", "options"]) {
                Some(Node::Seq(o)) => o.clone(),
                _ => Vec::new(),
            };
            let ndots: Vec<_> = options.iter().filter(|o| o.get_str("name") == Some("ndots")).collect();
            if old.get_str("dnsPolicy") == Some("None") {
                // The pod's own searches and options are kept as they were.
                assert_eq!(spec.path(&["dnsConfig", "searches"]), old.path(&["dnsConfig", "searches"]), "{name}");
                assert_eq!(spec.path(&["dnsConfig", "options"]), old.path(&["dnsConfig", "options"]), "{name}");
            } else {
                let kubelet =
                    [format!("{ns}.svc.{cluster_domain}"), format!("svc.{cluster_domain}"), cluster_domain.to_owned()];
                assert_eq!(&searches[..3], &kubelet[..], "{name}: search list");
                for s in strs(old.path(&["dnsConfig", "searches"])) {
                    assert!(searches.contains(&s), "{name}: lost search {s}");
                }
                let mut unique = searches.clone();
                unique.dedup();
                assert_eq!(unique.len(), searches.len(), "{name}: duplicate searches {searches:?}");
                assert_eq!(ndots.len(), 1, "{name}: {options:?}");
                let old_ndots = match old.path(&["dnsConfig", "options"]) {
                    Some(Node::Seq(o)) => {
                        o.iter().find(|o| o.get_str("name") == Some("ndots")).and_then(|o| o.get_str("value"))
                    }
                    _ => None,
                };
                assert_eq!(ndots[0].get_str("value"), Some(old_ndots.unwrap_or("5")), "{name}: ndots");
            }
            let Some(Node::Seq(sysctls)) = spec.path(&["securityContext", "sysctls"]) else {
                panic!("{name}: no sysctls")
            };
            let port_start: Vec<u32> = sysctls
                .iter()
                .filter(|s| s.get_str("name") == Some("net.ipv4.ip_unprivileged_port_start"))
                .map(|s| s.get_str("value").expect("value").parse().expect("number"))
                .collect();
            assert!(matches!(port_start[..], [v] if v <= 53), "{name}: {port_start:?}");
            assert_eq!(meta.path(&["labels", "podns/injected"]).and_then(Node::as_str), Some("true"), "{name}");
            checked += 1;
        }
    }
    assert!(checked >= 9, "only {checked} workloads checked");
}

fn is_capture(flags: &[String]) -> bool {
    flag(flags, "--mode") == ["capture"]
}

/// Capture mode (golden cases with `--mode capture`): the capture-init container first, as
/// root with NET_ADMIN and NET_RAW only, exempting the sidecar's UID and redirecting to the
/// port the sidecar listens on; then the sidecar, without --upstream (it reads the pod's
/// resolv.conf); the pod's DNS settings, sysctls and containers exactly as they were.
#[test]
fn capture_mode_pods_keep_their_dns() {
    let mut checked = 0;
    for (name, flags, input) in cases() {
        if !is_capture(&flags) {
            continue;
        }
        let out = run_case(&flags, &input);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let before: Vec<_> =
            documents(&std::fs::read_to_string(&input).expect("input")).iter().flat_map(pod_specs).collect();
        let after: Vec<_> = documents(&stdout(&out)).iter().flat_map(pod_specs).collect();
        assert_eq!(before.len(), after.len(), "{name}: workloads appeared or vanished");
        let image = flag(&flags, "--image")[0];
        let capture_image =
            flag(&flags, "--capture-image").first().map_or_else(|| format!("{image}-capture-init"), |i| i.to_string());
        let ipv6 = flags.iter().any(|f| f == "--capture-ipv6");
        for ((_, old, _), (_, spec, meta)) in before.iter().zip(&after) {
            let Some(Node::Seq(init)) = spec.get("initContainers") else { panic!("{name}: no initContainers") };
            let (capture, sidecar) = (&init[0], &init[1]);
            assert_eq!(capture.get_str("name"), Some("podns-capture-init"), "{name}");
            assert_eq!(capture.get_str("image"), Some(capture_image.as_str()), "{name}");
            assert_eq!(capture.get("restartPolicy"), None, "{name}: capture-init must run to completion");
            let sc = capture.get("securityContext").expect("securityContext");
            assert_eq!(sc.get_str("runAsUser"), Some("0"), "{name}");
            assert_eq!(sc.get_str("runAsNonRoot"), Some("false"), "{name}");
            assert_eq!(sc.get_str("allowPrivilegeEscalation"), Some("false"), "{name}");
            assert_eq!(strs(sc.path(&["capabilities", "add"])), ["NET_ADMIN", "NET_RAW"], "{name}");
            assert_eq!(strs(sc.path(&["capabilities", "drop"])), ["ALL"], "{name}");

            assert_eq!(sidecar.get_str("name"), Some("podns"), "{name}");
            assert_eq!(sidecar.get_str("restartPolicy"), Some("Always"), "{name}");
            assert_eq!(sidecar.get_str("image"), Some(image), "{name}");
            let uid = sidecar.path(&["securityContext", "runAsUser"]).and_then(Node::as_str).expect("runAsUser");
            assert_ne!(uid, "0", "{name}");
            let args = strs(sidecar.get("args"));
            assert!(!args.iter().any(|a| a.starts_with("--upstream")), "{name}: {args:?}");
            let listen: Vec<&str> = args.iter().filter_map(|a| a.strip_prefix("--listen=")).collect();
            let want: &[&str] = if ipv6 { &["127.0.0.1:15053", "[::1]:15053"] } else { &["127.0.0.1:15053"] };
            assert_eq!(listen, want, "{name}");
            let capture_args = strs(capture.get("args"));
            assert_eq!(
                capture_args,
                [
                    "capture-init",
                    "--port=15053",
                    &format!("--uid={uid}"),
                    if ipv6 { "--ipv6=on" } else { "--ipv6=off" }
                ],
                "{name}: capture-init must exempt the sidecar's UID and redirect to its port"
            );

            let old_init: Vec<Node> = match old.get("initContainers") {
                Some(Node::Seq(items)) => items.clone(),
                _ => Vec::new(),
            };
            assert_eq!(&init[2..], &old_init[..], "{name}: init containers changed");
            for key in ["containers", "dnsPolicy", "dnsConfig", "securityContext", "hostNetwork"] {
                assert_eq!(spec.get(key), old.get(key), "{name}: {key} changed");
            }
            assert_eq!(meta.path(&["labels", "podns/injected"]).and_then(Node::as_str), Some("true"), "{name}");
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} capture-mode workloads checked");
}

/// Documents that are not workloads come out byte for byte, comments included.
#[test]
fn other_documents_are_copied_verbatim() {
    let input = golden_dir().join("passthrough.in.yaml");
    let text = std::fs::read_to_string(&input).expect("input");
    let out = inject(&["--upstream", "10.96.0.10", input.to_str().expect("path")], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let strip = |s: &str| -> String {
        s.lines().filter(|l| !(l.starts_with("---") || *l == "...")).map(|l| format!("{l}\n")).collect()
    };
    assert_eq!(strip(&stdout(&out)), strip(&text));
    assert!(stdout(&out).contains("--- # a comment on the marker line\n"));
    // Documents of the mixed stream too.
    let mixed = std::fs::read_to_string(golden_dir().join("deployment.in.yaml")).expect("input");
    let out = inject(&["--upstream", "10.96.0.10"], Some(&mixed));
    let got = stdout(&out);
    let config_map = mixed.split("---\n").next().expect("first document");
    let service = mixed.split("---\n").last().expect("last document");
    assert!(got.starts_with(&format!("---\n{config_map}")), "{got}");
    assert!(got.ends_with(&format!("---\n{service}")), "{got}");
}

/// Standard input, `-` and a file argument give the same output; several files make one stream.
#[test]
fn reads_files_and_standard_input() {
    let input = golden_dir().join("pod.in.yaml");
    let path = input.to_str().expect("path");
    let text = std::fs::read_to_string(&input).expect("input");
    let from_file = inject(&["--upstream", "10.96.0.10", path], None);
    let from_stdin = inject(&["--upstream", "10.96.0.10"], Some(&text));
    let from_dash = inject(&["--upstream", "10.96.0.10", "-"], Some(&text));
    assert!(from_file.status.success() && from_stdin.status.success() && from_dash.status.success());
    assert_eq!(stdout(&from_stdin), stdout(&from_file));
    assert_eq!(stdout(&from_dash), stdout(&from_file));
    let two = inject(&["--upstream", "10.96.0.10", path, path], None);
    assert_eq!(stdout(&two), stdout(&from_file).repeat(2));
}

#[test]
fn default_image_is_this_version() {
    let out = inject(
        &["--upstream", "10.96.0.10"],
        Some("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let docs = documents(&stdout(&out));
    let image = docs[0].path(&["spec", "initContainers"]).and_then(|i| match i {
        Node::Seq(items) => items[0].get_str("image").map(str::to_owned),
        _ => None,
    });
    assert_eq!(image, Some(format!("podns:{}", env!("CARGO_PKG_VERSION"))));
}

/// Refusals exit 2 with a message on stderr and write nothing to stdout, even for the documents
/// that were fine, so a pipe into kubectl applies nothing.
#[test]
fn refusals_exit_2_and_write_nothing() {
    let good = std::fs::read_to_string(golden_dir().join("pod.in.yaml")).expect("input");
    let cases: [(&[&str], String, &str); 10] = [
        (
            &["--upstream", "10.96.0.10"],
            format!("{good}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: node-agent}}\nspec:\n  hostNetwork: true\n  containers: []\n"),
            "hostNetwork",
        ),
        (
            &["--upstream", "10.96.0.10"],
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    spec:\n      dnsPolicy: Default\n      containers: []\n".into(),
            "dnsPolicy: Default",
        ),
        (
            &["--mode", "capture"],
            format!("{good}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: node-agent}}\nspec:\n  hostNetwork: true\n  containers: []\n"),
            "DNS traffic of the whole node",
        ),
        (
            &["--mode", "capture"],
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  securityContext: {runAsUser: 15053}\n  containers: [{name: app, image: x}]\n".into(),
            "container `app` runs as UID 15053",
        ),
        (&["--mode", "capture", "--image", "r.example/podns@sha256:00"], good.clone(), "pass --capture-image"),
        (&["--upstream", "10.96.0.10", "--capture-ipv6"], good.clone(), "only apply with --mode capture"),
        (&[], good.clone(), "--upstream is required"),
        (&["--upstream", "10.96.0.10"], format!("{good}---\nkind: [unclosed\n"), "line 14: not valid YAML"),
        (&["--upstream", "10.96.0.10", "--namespace", "Not_A_Namespace"], good.clone(), "--namespace"),
        (
            &["--upstream", "10.96.0.10"],
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  dnsConfig:\n    nameservers: [dns.example]\n  containers: []\n".into(),
            "entry `dns.example` is not an IP address",
        ),
    ];
    for (args, input, message) in cases {
        let out = inject(args, Some(&input));
        assert_eq!(out.status.code(), Some(2), "{args:?} {message}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: stderr {:?} lacks {message:?}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}: wrote {}", stdout(&out));
    }
}

#[test]
fn unreadable_file_exits_1() {
    let out = inject(&["--upstream", "10.96.0.10", "/nonexistent/podns-inject-input.yaml"], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("/nonexistent/podns-inject-input.yaml"));
}

#[test]
fn bad_upstream_is_a_usage_error() {
    let out = inject(&["--upstream", "kube-dns"], Some(""));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--upstream"), "{}", stderr(&out));
}

/// Values compared as a reader sees them: scalars by text, mappings regardless of key order.
fn same_values(a: &Node, b: &Node) -> bool {
    match (a, b) {
        (Node::Scalar(x), Node::Scalar(y)) => x.value == y.value,
        (Node::Seq(x), Node::Seq(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_values(p, q)),
        (Node::Map(x), Node::Map(y)) => {
            x.len() == y.len()
                && x.iter().all(|(k, v)| y.iter().any(|(k2, v2)| same_values(k, k2) && same_values(v, v2)))
        }
        _ => false,
    }
}

/// The documented examples (k8s/example/deployment.yaml and deployment-capture.yaml, with their
/// comments) are what `podns inject` writes for the plain application, so they cannot drift
/// apart.
#[test]
fn example_manifest_is_what_inject_writes() {
    for (case, manifest) in
        [("example", "k8s/example/deployment.yaml"), ("example-capture", "k8s/example/deployment-capture.yaml")]
    {
        let (_, flags, input) = cases().into_iter().find(|(n, _, _)| n == case).expect("example case");
        let out = run_case(&flags, &input);
        assert!(out.status.success(), "{}", stderr(&out));
        let injected = documents(&stdout(&out));
        let example = documents(&std::fs::read_to_string(repo_file(manifest)).expect("example manifest"));
        assert_eq!(injected.len(), 1);
        let deployment: Vec<&Node> = example.iter().filter(|d| d.get_str("kind") == Some("Deployment")).collect();
        assert_eq!(deployment.len(), 1, "one Deployment in {manifest}");
        assert!(
            same_values(&injected[0], deployment[0]),
            "{manifest} differs from `podns inject` of {}:\n{}",
            input.display(),
            stdout(&out)
        );
    }
}

/// Content on a `---` line and CRLF line ends: every document comes out once, as YAML.
#[test]
fn unusual_document_layouts() {
    let input = "--- {apiVersion: v1, kind: ConfigMap, metadata: {name: x}}\n--- {apiVersion: v1, kind: Pod, metadata: {name: y}, spec: {containers: []}}\n";
    let out = inject(&["--upstream", "10.96.0.10"], Some(input));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("--- {apiVersion: v1, kind: ConfigMap, metadata: {name: x}}\n---\n"), "{text}");
    let docs = documents(&text);
    assert_eq!(docs.len(), 2, "{text}");
    assert_eq!(pod_specs(&docs[1]).len(), 1);

    let crlf = "apiVersion: v1\r\nkind: Pod\r\nmetadata:\r\n  name: crlf\r\nspec:\r\n  containers:\r\n  - name: a\r\n    image: b\r\n";
    let out = inject(&["--upstream", "10.96.0.10"], Some(crlf));
    assert!(out.status.success(), "{}", stderr(&out));
    let docs = documents(&stdout(&out));
    assert_eq!(docs.len(), 1);
    let (_, spec, _) = pod_specs(&docs[0]).remove(0);
    assert_eq!(
        spec.path(&["containers"]).and_then(|c| match c {
            Node::Seq(items) => items[0].get_str("image").map(str::to_owned),
            _ => None,
        }),
        Some("b".to_owned())
    );
}

/// `podns uninject` of any injected golden output gives back the input's objects (as values:
/// comments and flow layout of the changed documents are not kept).
#[test]
fn uninject_restores_every_golden_input() {
    let mut checked = 0;
    for (name, flags, input) in cases() {
        let once = run_case(&flags, &input);
        assert!(once.status.success(), "{name}: {}", stderr(&once));
        let mut child = Command::new(BIN)
            .arg("uninject")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("podns runs");
        child.stdin.take().expect("stdin").write_all(&once.stdout).expect("writes stdin");
        let back = child.wait_with_output().expect("podns exits");
        assert!(back.status.success(), "{name}: {}", stderr(&back));
        let objects = |text: &str| -> Vec<Node> { documents(text).into_iter().filter(|d| !d.is_null()).collect() };
        let original = objects(&std::fs::read_to_string(&input).expect("input"));
        let restored = objects(&stdout(&back));
        assert_eq!(original.len(), restored.len(), "{name}");
        for (a, b) in original.iter().zip(&restored) {
            assert!(same_values(a, b), "{name}: uninject did not restore\n{}", stdout(&back));
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} cases");
}

/// An object's own metadata.namespace wins over --namespace, and stderr says so.
#[test]
fn namespace_flag_and_metadata_disagree() {
    let input = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\nspec: {containers: []}\n";
    let out = inject(&["--upstream", "10.96.0.10", "--namespace", "web"], Some(input));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("metadata.namespace `shop` differs from --namespace `web`"), "{}", stderr(&out));
    let docs = documents(&stdout(&out));
    let (_, spec, _) = pod_specs(&docs[0]).remove(0);
    assert_eq!(strs(spec.path(&["dnsConfig", "searches"]))[0], "shop.svc.cluster.local");
}
