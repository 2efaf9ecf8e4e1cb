"""`podns explain --live` and `podns check` in the pod lab (issue 14).

One lab of its own (a pod and the stand-in cluster DNS in two network namespaces), independent
of the session-wide lab run: `podns check` runs in the pod before podns starts, then podns runs
as the sidecar (--listen 127.0.0.1:53 --upstream <cluster DNS> --metrics-listen 127.0.0.1:9153)
and `podns explain --live` walks names with the pod's own resolv.conf, directly against the
cluster DNS and through podns.  explain is given no --upstream: it must learn the upstream from
podns's metrics, as it does in a real pod.

Run alone:  tests/lab/run.sh -k explain   (or, without building the lab's clients:
            python3 -m pytest tests/lab/test_explain.py -p no:cacheprovider -q)
"""

import json
import os

import pytest

import lab


def podns_bin():
    path = os.environ.get("PODNS_BIN")
    if path:
        return path
    for profile in ("release", "debug"):
        p = os.path.join(lab.REPO, "target", profile, "podns")
        if os.access(p, os.X_OK):
            return p
    pytest.fail("no podns binary: cargo build (or set PODNS_BIN)")


@pytest.fixture(scope="module")
def pod():
    lab.check_privileges()
    lab.remove_stale_namespaces()
    logdir = os.path.join(lab.LAB_TARGET, "logs")
    os.makedirs(logdir, exist_ok=True)
    lb = lab.Lab("explain", logdir)
    try:
        lb.setup()
        yield lb
    finally:
        lb.teardown()


def in_pod(pod, *argv, timeout=30):
    rc, out, err, ms = pod.run(["ip", "netns", "exec", pod.pod, *argv], timeout)
    assert rc is not None, "%s timed out" % (argv,)
    return rc, out, err, ms


@pytest.fixture(scope="module")
def checked(pod):
    """`podns check --json` in the pod, before the sidecar holds port 53."""
    return in_pod(pod, podns_bin(), "check", "--json")


@pytest.fixture(scope="module")
def sidecar(pod, checked):
    proc = pod.start_podns(podns_bin())
    yield proc
    pod.stop_podns(proc)


def explain(pod, name, *flags):
    rc, out, err, ms = in_pod(pod, podns_bin(), "explain", name, "--json", *flags)
    assert rc == 0, "podns explain %s: exit %s: %s" % (name, rc, err)
    return json.loads(out), out, ms


def test_check_before_the_sidecar(checked):
    rc, out, err, _ = checked
    report = json.loads(out)
    by = {f["check"]: f for f in report["findings"]}
    assert rc == 0, "nothing blocks in the lab's pod: %s %s" % (out, err)
    assert by["cluster-dns"]["severity"] == "ok", by["cluster-dns"]
    assert by["upstream"]["summary"].startswith("upstream %s:53" % lab.DNS_IP)
    assert by["listen"]["severity"] == "ok", by["listen"]
    assert by["aaaa"]["severity"] == "ok", by["aaaa"]
    assert by["single-label"]["severity"] == "ok", by["single-label"]


def test_live_text_shows_both_paths(pod, sidecar):
    # No --live: live is the default when a podns answers at --via (127.0.0.1:53). The first walk
    # of the module: podns's cache is cold.
    rc, out, err, _ = in_pod(pod, podns_bin(), "explain", "pypi.org")
    assert rc == 0, err
    assert "Live walk" in out
    assert "directly to the upstream %s:53:" % lab.DNS_IP in out
    assert "through podns at 127.0.0.1:53:" in out
    assert "same result on both paths" in out
    print(out)


def test_live_pypi_fewer_queries_through_podns(pod, sidecar):
    doc, text, ms = explain(pod, "pypi.org", "--live")
    live = doc["live"]
    direct, through = live["direct"], live["podns"]
    print("direct: %d queries, podns: %d queries (%s)" % (direct["queries"], through["queries"],
                                                        " ".join(through["addresses"])))
    assert direct["server"] == "%s:53" % lab.DNS_IP, "upstream learnt from podns's metrics"
    assert through["server"] == "127.0.0.1:53"
    assert direct["queries"] > through["queries"], text
    # podns's own upstream queries (its TLD probes and the collapse's candidates, from its
    # metrics) stay below the direct walk's too.
    assert through["upstream_queries"] is not None, text
    assert direct["upstream_queries"] > through["upstream_queries"], text
    assert direct["outcome"] == through["outcome"] == "found", text
    assert direct["addresses"] == through["addresses"] and direct["addresses"], text
    assert live["same_result"] is True
    # What the static part says agrees with what the walk saw: the first candidate is collapsed
    # into a CNAME to pypi.org., as the probes found `org` in no namespace.
    first = doc["candidates"][0]
    assert first["name"] == "pypi.org.default.svc.cluster.local."
    assert first["action"]["kind"] == "collapsed", first
    assert through["exchanges"][0]["cname"] == "pypi.org.", through["exchanges"][0]


def test_live_cluster_name_same_on_both_paths(pod, sidecar):
    doc, text, _ = explain(pod, "kubernetes.default", "--live")
    live = doc["live"]
    assert live["same_result"] is True, text
    assert live["direct"]["queries"] >= live["podns"]["queries"], text
    assert live["podns"]["addresses"], text


def test_check_sees_an_aaaa_servfail(pod):
    """The stand-in cluster DNS fails AAAA for the kubernetes service (a systemd-resolved
    upstream does this): check warns, says podns repairs it, and does not block."""
    pod.set_rules([{"name": "kubernetes.default.svc.cluster.local.", "type": "AAAA", "proto": "*",
                    "action": "servfail"}])
    try:
        # A port of its own: the sidecar of the tests above may hold 127.0.0.1:53.
        rc, out, err, _ = in_pod(pod, podns_bin(), "check", "--json", "--listen", "127.0.0.1:15353")
    finally:
        pod.set_rules([])
    assert rc == 0, "a quirk podns repairs does not block: %s %s" % (out, err)
    aaaa = [f for f in json.loads(out)["findings"] if f["check"] == "aaaa"]
    assert [f["severity"] for f in aaaa] == ["warn"], aaaa
    assert "SERVFAIL" in aaaa[0]["summary"] and "--aaaa fix" in aaaa[0]["podns"], aaaa


def test_debug_explain_answers_loopback_clients_only(pod, sidecar):
    """The metrics listener is reachable from the cluster (0.0.0.0:9153 by default); its
    /debug/explain is not: a client reaching it over the pod's own address gets 403, the same
    request over loopback (kubectl exec, port-forward) the explanation."""
    import subprocess
    import time

    argv = ["ip", "netns", "exec", pod.pod, podns_bin(), "--listen", "127.0.0.1:5354",
            "--upstream", lab.DNS_IP, "--metrics-listen", "0.0.0.0:9154", "--drain-grace", "0s",
            "--search", "default.svc.cluster.local,svc.cluster.local,cluster.local", "--ndots", "5"]
    proc = pod.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):  # a bounded poll: the listener's start has no event to wait for
            status, _ = lab.netns_http_get(pod.pod, "http://127.0.0.1:9154/health", 1.0)
            if status == 200:
                break
            time.sleep(0.05)
        assert status == 200, "the second podns did not start"
        url = "http://%s:9154/debug/explain?name=pypi.org"
        status, body = lab.netns_http_get(pod.pod, url % "127.0.0.1", 3.0)
        assert status == 200 and json.loads(body)["name"] == "pypi.org", (status, body)
        status, body = lab.netns_http_get(pod.pod, url % lab.POD_IP, 3.0)
        assert status == 403, (status, body)
        status, body = lab.netns_http_get(pod.pod, "http://%s:9154/metrics" % lab.POD_IP, 3.0)
        assert status == 200 and "podns_build_info" in body, status
    finally:
        lab._stop(proc)
