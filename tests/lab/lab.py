"""Pod lab orchestration: namespaces, the stand-in cluster DNS, podns, clients.

One *lab* is a pair of network namespaces joined by a veth pair:

    pod  (198.18.0.2/24, eth0)  <---->  cluster DNS (198.18.0.10/24, eth0)

with the pod's own /etc/netns/<pod>/resolv.conf (what `ip netns exec` bind-mounts
over /etc/resolv.conf).  Every (phase, client) pair gets its own lab, so the
labs can run in parallel without disturbing each other's query counts, and
every lookup in the "after" and "capture" phases meets a freshly started podns
(so a case's query count never depends on what an earlier case left in a cache).

Phases: "before" (resolv.conf names the cluster DNS, no podns), "after" (resolv.conf
names podns on 127.0.0.1:53), "capture" (resolv.conf names the cluster DNS as in
"before"; `podns capture-init` installs real nat rules in the pod that redirect
port-53 traffic to podns on 127.0.0.1:15053 / [::1]:15053, and podns runs as a
non-root UID whose own queries the rules exempt; a subset of the cases).

Environments (issue 10): the default one above (kubelet's search list, a stand-in CoreDNS), and
variants that change the pod's search list and the stand-in's behaviour (`ENVIRONMENTS`): node
search domains answering NODATA or NXDOMAIN for everything under them, a systemd-resolved-like
node resolver failing single-label names, CoreDNS's `template IN AAAA` hack and an air-gapped
cluster.  Their cases (`ENV_CASES`, ids `<env>/<case>`) run in the "before" and "after" phases,
in the same labs as the default cases.

Namespace names carry the harness PID (`podnslab-<pid>-...`), so concurrent
runs never collide; a later run removes namespaces whose owning PID is gone.
Only 198.18.0.0/15 addresses and loopback are used; no route leads anywhere else.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import ctypes
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import clusterdns  # noqa: E402

LAB_TARGET = os.environ.get("LAB_TARGET_DIR", os.path.join(REPO, "target", "lab"))
BIN_DIR = os.path.join(LAB_TARGET, "bin")
HICKORY_BIN = os.path.join(LAB_TARGET, "debug", "lab-hickory-client")
CARES_OLD_BIN = os.path.join(BIN_DIR, "gethostbyname-cares-old")
GO_BIN = os.path.join(BIN_DIR, "lookup-go")

POD_IP = "198.18.0.2"
DNS_IP = "198.18.0.10"
PREFIX_LEN = 24
POD_NAMESPACE = "default"
SEARCH = ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]
NDOTS = 5
NS_PREFIX = "podnslab-"

CLIENT_TIMEOUT_S = 60.0  # hard bound around one client process
PODNS_START_TIMEOUT_S = 15.0
READY_TRIES = 200
READY_INTERVAL_S = 0.05

# cares-old: c-ares 1.13.0, ares_gethostbyname(AF_UNSPEC) as pgbouncer calls it; go: Go's pure
# resolver (net.Resolver{PreferGo: true}, GODEBUG=netdns=go).  Both built by run.sh.
CLIENTS = ["glibc", "musl", "cares", "cares-old", "go", "hickory", "dig"]
PHASES = ["before", "after", "capture"]

# Capture mode: the local port podns listens on, and the UID it runs as (the UID the
# capture rules exempt; the clients run as root).
CAPTURE_PORT = 15053
CAPTURE_UID = 1337
# The cases of the capture phase: a cluster name, search collapse, TCP (an answer over 512
# bytes), a missing name and the AAAA SERVFAIL fix; enough to show podns's behaviour
# reaches clients that never heard of it, at a small cost in lab time.
CAPTURE_CASES = ["k8s-default", "ext-1dot", "ext-big", "ext-missing", "aaaa-servfail-cluster",
                 "aaaa-servfail-external", "aaaa-servfail-missing"]
# Extra lookups of the capture lab of the dig client, with dig's own server choice: TCP
# over IPv4 to the cluster DNS, and UDP and TCP to [::1]:53 (the ip6tables rules).
CAPTURE_EXTRAS = [
    ("ipv4-tcp", [DNS_IP, "+tcp"]),
    ("ipv6-udp", ["::1", "+notcp"]),
    ("ipv6-tcp", ["::1", "+tcp"]),
]
CAPTURE_EXTRA_NAME = "kubernetes.default.svc.cluster.local"
# The phases that run the other environments' cases (issue 10; capture: the default one only).
ENV_PHASES = ("before", "after")

LAST_REPORT: dict = {}  # the last run_all() result, for the pytest summary
LAB_INFO: dict = {}  # lab key -> what a lab observed beyond its rows (capture rules)
ABORT = threading.Event()  # set on SIGTERM/SIGINT: labs stop creating things


# --------------------------------------------------------------------------
# Cases


@dataclass
class Environment:
    """A pod's search list and how the DNS behind the cluster DNS behaves (stand-in rules,
    applied after a case's own)."""
    id: str
    search: list
    rules: list = field(default_factory=list)
    note: str = ""


def _zone_rules(zone, action):
    """Every question at or under `zone` answered `action` with the zone's SOA."""
    return [{"name": zone, "type": "*", "proto": "*", "action": action, "soa": zone},
            {"name": "*." + zone, "type": "*", "proto": "*", "action": action, "soa": zone}]


# cluster names answered as CoreDNS's kubernetes plugin does (the first matching rule wins)
_CLUSTER_AS_USUAL = [{"name": "cluster.local.", "type": "*", "proto": "*", "action": "answer"},
                     {"name": "*.cluster.local.", "type": "*", "proto": "*", "action": "answer"}]

DEFAULT_ENV = "default"
ENVIRONMENTS = [
    Environment(DEFAULT_ENV, SEARCH, [], "kubelet's search list, stand-in CoreDNS"),
    Environment("node-nodata", SEARCH + ["nodata.lab.example"],
                _zone_rules("nodata.lab.example.", "nodata"),
                "kubelet appends the node's search domain, whose DNS answers NOERROR/NODATA "
                "(+SOA) for any name under it (an MX wildcard, some cloud/router resolvers)"),
    Environment("node-nxdomain", SEARCH + ["nx.lab.example"],
                _zone_rules("nx.lab.example.", "nxdomain"),
                "the node's search domain answers NXDOMAIN for any name under it"),
    Environment("resolved", SEARCH,
                _CLUSTER_AS_USUAL + [{"name": "*", "type": "*", "proto": "*", "labels": 1,
                                      "action": "servfail"}],
                "CoreDNS forwards to a systemd-resolved-like node resolver: SERVFAIL for "
                "every single-label name outside the cluster"),
    Environment("template-aaaa", SEARCH,
                [{"name": "*", "type": "AAAA", "proto": "*", "action": "nodata"}],
                "CoreDNS `template IN AAAA . { rcode NOERROR }`: every AAAA answered NOERROR, "
                "no records, no SOA, for every name (even missing ones)"),
    Environment("airgap", SEARCH,
                _CLUSTER_AS_USUAL + [{"name": "*", "type": "*", "proto": "*",
                                      "action": "servfail"}],
                "air-gapped cluster: SERVFAIL for every name outside the cluster"),
]
ENV_BY_ID = {e.id: e for e in ENVIRONMENTS}


@dataclass
class Case:
    id: str
    name: str  # what the application asks for
    kind: str  # cluster | external | missing | dead
    fqdn: str | None  # the absolute name that really answers (truth), None: nothing
    rules: list = field(default_factory=list)
    resolv_options: list = field(default_factory=list)  # beyond ndots
    note: str = ""
    env: str = DEFAULT_ENV

    @property
    def healthy(self):
        return not self.rules

    @property
    def environment(self):
        return ENV_BY_ID[self.env]

    @property
    def all_rules(self):
        """What the stand-in is told for this case: the case's rules, then its environment's."""
        return list(self.rules) + list(self.environment.rules)


def _servfail_aaaa(name):
    return [{"name": name, "type": "AAAA", "proto": "*", "action": "servfail"}]


CASES = [
    # cluster names: must resolve exactly as before
    Case("k8s-default", "kubernetes.default", "cluster", "kubernetes.default.svc.cluster.local."),
    Case("short-svc", "myapp", "cluster", "myapp.default.svc.cluster.local."),
    Case("ns-qualified", "backend.lab", "cluster", "backend.lab.svc.cluster.local."),
    Case("headless-pod", "db-0.db.lab", "cluster", "db-0.db.lab.svc.cluster.local."),
    Case("headless-svc", "db.lab", "cluster", "db.lab.svc.cluster.local."),
    Case("tld-namespace", "web.dev", "cluster", "web.dev.svc.cluster.local.",
         note="namespace 'dev' is also a public TLD and web.dev exists publicly"),
    Case("svc-fqdn", "kubernetes.default.svc.cluster.local", "cluster",
         "kubernetes.default.svc.cluster.local.", note="4 dots, no trailing dot"),
    Case("cluster-missing", "nosuchsvc", "missing", None),
    # external names, 1-4 dots, CNAME chains, absolute, too big for 512 bytes
    Case("ext-1dot", "pypi.org", "external", "pypi.org."),
    Case("ext-2dot-cname", "files.pythonhosted.org", "external", "files.pythonhosted.org."),
    Case("ext-3dot-cname", "s3.eu-west-1.amazonaws.com", "external",
         "s3.eu-west-1.amazonaws.com."),
    Case("ext-4dot-chain", "bucket.s3.eu-west-1.amazonaws.com", "external",
         "bucket.s3.eu-west-1.amazonaws.com."),
    Case("ext-absolute", "pypi.org.", "external", "pypi.org."),
    Case("ext-big", "mirrors.example.org", "external", "mirrors.example.org.",
         note="40 A records: over 512 bytes, TC then TCP"),
    Case("ext-missing", "nothing-here.example.net", "missing", None),
    # AAAA SERVFAIL (what a systemd-resolved upstream does)
    Case("aaaa-servfail-cluster", "legacy", "cluster", "legacy.default.svc.cluster.local.",
         rules=_servfail_aaaa("legacy.default.svc.cluster.local.")),
    Case("aaaa-servfail-external", "legacy-api.example.com", "external",
         "legacy-api.example.com.", rules=_servfail_aaaa("legacy-api.example.com.")),
    Case("aaaa-servfail-missing", "nothing-here.example.net", "missing", None,
         rules=_servfail_aaaa("nothing-here.example.net.")),
    # dead cluster DNS: every query dropped.  The one case whose resolv.conf
    # shortens the clients' timeouts (timeout:1 attempts:1): what is measured
    # is "fails, and does not claim the name is missing", not how long the
    # libraries' default timeouts are.
    Case("dead-dns", "myapp", "dead", None,
         rules=[{"name": "*", "type": "*", "proto": "*", "action": "drop"}],
         resolv_options=["timeout:1", "attempts:1"]),
]


def _env_case(env, base, name, kind, fqdn, rules=(), note=""):
    return Case("%s/%s" % (env, base), name, kind, fqdn, rules=list(rules), note=note, env=env)


_PYPI = ("ext-1dot", "pypi.org", "external", "pypi.org.")
_FILES = ("ext-2dot-cname", "files.pythonhosted.org", "external", "files.pythonhosted.org.")
_MYAPP = ("short-svc", "myapp", "cluster", "myapp.default.svc.cluster.local.")
_EXT_MISSING = ("ext-missing", "nothing-here.example.net", "missing", None)
_CLUSTER_MISSING = ("cluster-missing", "nosuchsvc", "missing", None)

# Issue 10: the environments, each crossed with the cases that show what it changes.
ENV_CASES = [
    *(_env_case("node-nodata", *c) for c in (_PYPI, _FILES, _MYAPP, _EXT_MISSING)),
    *(_env_case("node-nxdomain", *c) for c in (_PYPI, _FILES, _MYAPP, _EXT_MISSING)),
    _env_case("resolved", "short-svc-pg", "postgresql-primary", "cluster",
              "postgresql-primary.default.svc.cluster.local.",
              note="pgbouncer: c-ares < 1.16 walks the whole search list for AAAA first and "
                   "ends on the bare name's SERVFAIL"),
    _env_case("resolved", *_CLUSTER_MISSING),
    _env_case("resolved", "aaaa-servfail-external", "legacy-api.example.com", "external",
              "legacy-api.example.com.", rules=_servfail_aaaa("legacy-api.example.com.")),
    *(_env_case("template-aaaa", *c)
      for c in (_MYAPP, _PYPI, _FILES, _CLUSTER_MISSING, _EXT_MISSING)),
    _env_case("airgap", *_MYAPP),
    _env_case("airgap", "k8s-default", "kubernetes.default", "cluster",
              "kubernetes.default.svc.cluster.local."),
    _env_case("airgap", "headless-pod", "db-0.db.lab", "cluster",
              "db-0.db.lab.svc.cluster.local."),
    _env_case("airgap", "svc-fqdn", "kubernetes.default.svc.cluster.local", "cluster",
              "kubernetes.default.svc.cluster.local."),
    _env_case("airgap", *_CLUSTER_MISSING),
    _env_case("airgap", "ext-1dot", "pypi.org", "unreachable", None,
              note="exists on the internet, which the cluster cannot reach"),
    _env_case("airgap", *_EXT_MISSING),
]
# Every case the lab runs: the default environment's, then the other environments'.
ALL_CASES = CASES + ENV_CASES
CASE_BY_ID = {c.id: c for c in ALL_CASES}


def truth(fqdn, qtypes=("A", "AAAA")):
    """Addresses the stand-in cluster DNS holds for an absolute name."""
    out = set()
    if fqdn is None:
        return out
    for qt in qtypes:
        ans = clusterdns.resolve(fqdn, qt, DNS_IP)
        for (_n, _ttl, rtype, value) in ans.answer:
            if rtype == qt:
                out.add(value)
    return out


def truth_under(case: Case, qtype: str):
    """Addresses of type `qtype` the stand-in gives the case's name under the case's rules and
    its environment's (an AAAA answered with SERVFAIL, or by `template-aaaa`: none)."""
    out = set()
    if case.fqdn is None:
        return out
    _action, ans, _rcode = clusterdns.decide(case.all_rules, case.fqdn, qtype, "udp", DNS_IP)
    for (_n, _ttl, rtype, value) in (ans.answer if ans is not None else []):
        if rtype == qtype:
            out.add(value)
    return out


def expected_addresses(case: Case, client: str):
    """What a correct resolution returns for this client (dig asks A only; cares-old,
    ares_gethostbyname(AF_UNSPEC), returns one family: the AAAA addresses when there are
    any, else the A ones; an AAAA answered with SERVFAIL contributes nothing)."""
    if client == "dig":
        return truth_under(case, "A")
    a, aaaa = truth_under(case, "A"), truth_under(case, "AAAA")
    if client == "cares-old":
        return aaaa or a
    return a | aaaa


# podns's own upstream health probe (the brief: `<cluster-domain>. SOA`): not a
# question any client asked.
HEALTH_PROBE = ("cluster.local.", "SOA")


def is_probe(qname: str, tlds) -> bool:
    """A search-collapse TLD probe: <tld>.svc.<domain> or <tld>.<ns>.svc.<domain>."""
    for tld in tlds:
        if qname in ("%s.svc.cluster.local." % tld,
                     "%s.%s.svc.cluster.local." % (tld, POD_NAMESPACE)):
            return True
    return False


def search_for(case: Case):
    return case.environment.search


def case_tlds(case: Case):
    name = case.name.rstrip(".")
    return {name.rsplit(".", 1)[-1].lower()} if "." in name else set()


# --------------------------------------------------------------------------
# Processes


def sh(*args, check=True, timeout=30):
    r = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise LabError("command failed (%d): %s\n%s%s" % (r.returncode, " ".join(args),
                                                          r.stdout, r.stderr))
    return r


class LabError(RuntimeError):
    pass


class LineReader:
    """Reads a pipe line by line in a thread, copies it to a log file, and lets a
    caller wait (bounded) for a line matching a pattern."""

    def __init__(self, pipe, logfile, prefix=""):
        self.lines = []
        self.cond = threading.Condition()
        self.closed = False
        self.logfile = logfile
        self.prefix = prefix
        self.thread = threading.Thread(target=self._run, args=(pipe,), daemon=True)
        self.thread.start()

    def _run(self, pipe):
        for raw in iter(pipe.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
            if self.logfile:
                try:
                    self.logfile.write(self.prefix + line + "\n")
                    self.logfile.flush()
                except ValueError:  # closed by a teardown
                    pass
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def wait_for(self, pattern, timeout):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if rx.search(line):
                        return line
                if self.closed:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)


_LIBC = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def netns_http_get(ns, url, timeout=2.0):
    """GET url from inside network namespace ns: (status, body), status None when it could not
    connect. A thread of its own enters the namespace (setns(2) changes the calling thread
    only), so this costs no process start."""
    import urllib.error
    import urllib.request

    out = {}

    def target():
        try:
            with open(os.path.join("/run/netns", ns)) as f:
                if _LIBC.setns(f.fileno(), _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns(%s)" % ns)
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    out["value"] = (resp.status, resp.read().decode())
            except urllib.error.HTTPError as e:
                out["value"] = (e.code, e.read().decode(errors="replace"))
            except (urllib.error.URLError, OSError) as e:
                out["value"] = (None, repr(e))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout + 5)
    if "error" in out:
        raise LabError("GET %s in %s: %r" % (url, ns, out["error"]))
    return out.get("value", (None, "no answer within %.0f s" % (timeout + 5)))


def _stop(proc: subprocess.Popen, grace=3.0):
    if proc.poll() is not None:
        return proc.returncode
    proc.terminate()
    try:
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


# --------------------------------------------------------------------------
# Namespaces

_LIVE_LABS: set = set()
_LIVE_LOCK = threading.Lock()


def _cleanup_all():
    with _LIVE_LOCK:
        labs = list(_LIVE_LABS)
    for lab in labs:
        lab.teardown()


atexit.register(_cleanup_all)


def install_signal_handlers():
    """SIGTERM/SIGHUP become SystemExit so finally blocks and atexit tear down."""
    def handler(signum, _frame):
        raise SystemExit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_namespaces():
    """Delete podnslab-<pid>-* namespaces left by runs whose PID is gone."""
    r = sh("ip", "netns", "list", check=False)
    removed = []
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(re.escape(NS_PREFIX) + r"(\d+)-", name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        _delete_netns(name)
        removed.append(name)
    tmp = tempfile.gettempdir()
    for entry in os.listdir(tmp):
        m = re.match(re.escape(NS_PREFIX) + r"(\d+)-", entry)
        if m and not _pid_alive(int(m.group(1))):
            shutil.rmtree(os.path.join(tmp, entry), ignore_errors=True)
    for entry in os.listdir("/etc/netns") if os.path.isdir("/etc/netns") else []:
        m = re.match(re.escape(NS_PREFIX) + r"(\d+)-", entry)
        if m and not _pid_alive(int(m.group(1))):
            shutil.rmtree(os.path.join("/etc/netns", entry), ignore_errors=True)
    return removed


def _delete_netns(name):
    # processes a crashed lab left in its own namespace
    r = sh("ip", "netns", "pids", name, check=False)
    for pid in r.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    sh("ip", "netns", "del", name, check=False)
    shutil.rmtree(os.path.join("/etc/netns", name), ignore_errors=True)


def check_privileges():
    """Raise LabError with a clear message when namespaces cannot be made."""
    probe = "%s%d-probe" % (NS_PREFIX, os.getpid())
    if shutil.which("ip") is None:
        raise LabError("`ip` (Debian package iproute2) is not installed")
    r = sh("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        raise LabError("cannot create a network namespace (`ip netns add` failed: %s); "
                       "the lab must run as root with CAP_SYS_ADMIN" % r.stderr.strip())
    sh("ip", "netns", "del", probe, check=False)


class Lab:
    def __init__(self, tag: str, logdir: str):
        self.tag = tag
        base = "%s%d-%s" % (NS_PREFIX, os.getpid(), tag)
        self.pod = base + "-pod"
        self.dns = base + "-dns"
        self.logdir = logdir
        self.tmp = tempfile.mkdtemp(prefix=base + "-")
        self.control_path = os.path.join(self.tmp, "ctl.sock")
        self.dns_proc = None
        self.procs = []
        self.created = []
        self._ctl = None
        self._torn_down = False
        self._lock = threading.Lock()  # guards procs/created against a concurrent teardown
        self.podns_log = None
        with _LIVE_LOCK:
            _LIVE_LABS.add(self)

    # -- guarded creation: nothing is created once teardown has begun ---------

    def _check_open(self):
        if self._torn_down or ABORT.is_set():
            raise LabError("lab %s aborted" % self.tag)

    def _add_netns(self, ns):
        with self._lock:
            self._check_open()
            sh("ip", "netns", "add", ns)
            self.created.append(ns)

    def spawn(self, argv, **kw):
        with self._lock:
            self._check_open()
            proc = subprocess.Popen(argv, **kw)
            self.procs.append(proc)
            return proc

    def run(self, argv, timeout):
        """Run a short command as a tracked process: (rc, stdout, stderr, wall_ms);
        rc None on timeout."""
        t0 = time.monotonic()
        proc = self.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            rc = None
        with self._lock:
            if proc in self.procs:
                self.procs.remove(proc)
        return (rc, out.decode(errors="replace"), err.decode(errors="replace"),
                (time.monotonic() - t0) * 1000.0)

    # -- setup / teardown ------------------------------------------------

    def setup(self):
        for ns in (self.pod, self.dns):
            self._add_netns(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # created directly inside the namespaces: the names never meet the host's
        sh("ip", "-n", self.pod, "link", "add", "eth0", "type", "veth",
           "peer", "name", "eth0", "netns", self.dns)
        sh("ip", "-n", self.pod, "addr", "add", "%s/%d" % (POD_IP, PREFIX_LEN), "dev", "eth0")
        sh("ip", "-n", self.dns, "addr", "add", "%s/%d" % (DNS_IP, PREFIX_LEN), "dev", "eth0")
        sh("ip", "-n", self.pod, "link", "set", "eth0", "up")
        sh("ip", "-n", self.dns, "link", "set", "eth0", "up")
        etc = os.path.join("/etc/netns", self.pod)
        os.makedirs(etc, exist_ok=True)
        with open(os.path.join(etc, "hosts"), "w") as f:
            f.write("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                    "%s\tpodnslab-pod\n" % POD_IP)
        with open(os.path.join(etc, "nsswitch.conf"), "w") as f:
            f.write("hosts: files dns\n")
        self.write_resolv_conf(DNS_IP)
        self._start_dns()

    def _start_dns(self):
        log = open(os.path.join(self.logdir, "%s.clusterdns.log" % self.tag), "w")
        self.dns_proc = self.spawn(
            ["ip", "netns", "exec", self.dns, sys.executable,
             os.path.join(HERE, "clusterdns.py"), "--listen", DNS_IP, "--port", "53",
             "--control", self.control_path],
            stdout=subprocess.PIPE, stderr=log)
        reader = LineReader(self.dns_proc.stdout, log)
        if reader.wait_for(r"^ready ", 20) is None:
            raise LabError("stand-in cluster DNS did not start in %s (see %s)"
                           % (self.dns, log.name))
        # the pod reaches it over the veth
        rc, out, err, _ = self.run(
            ["ip", "netns", "exec", self.pod, sys.executable,
             os.path.join(HERE, "nshelper.py"), "dns-probe", DNS_IP, "cluster.local"], 30)
        if rc != 0:
            raise LabError("pod %s cannot reach the cluster DNS at %s: %s"
                           % (self.pod, DNS_IP, out + err))

    def teardown(self):
        with self._lock:
            if self._torn_down:
                return
            self._torn_down = True
            procs = list(self.procs)
        if self._ctl is not None:
            for f in reversed(self._ctl):
                try:
                    f.close()
                except OSError:
                    pass
        for p in procs:
            try:
                _stop(p, grace=2)
            except Exception:  # noqa: BLE001 - keep tearing down
                pass
        for ns in self.created:
            try:
                _delete_netns(ns)
            except Exception:  # noqa: BLE001 - keep tearing down
                pass
        shutil.rmtree(os.path.join("/etc/netns", self.pod), ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.podns_log is not None:
            self.podns_log.close()
        with _LIVE_LOCK:
            _LIVE_LABS.discard(self)

    def write_resolv_conf(self, nameserver, options=(), search=SEARCH):
        opts = ["ndots:%d" % NDOTS] + list(options)
        text = "search %s\nnameserver %s\noptions %s\n" % (" ".join(search), nameserver,
                                                           " ".join(opts))
        path = os.path.join("/etc/netns", self.pod, "resolv.conf")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)

    # -- control channel ---------------------------------------------------

    def control(self, req):
        import socket as _socket
        self._check_open()
        try:
            if self._ctl is None:
                s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
                s.settimeout(10)
                s.connect(self.control_path)
                self._ctl = (s, s.makefile("rb"))
            s, rf = self._ctl
            s.sendall((json.dumps(req) + "\n").encode())
            line = rf.readline()
        except (OSError, ValueError) as e:
            raise LabError("cluster DNS control socket: %r" % e) from e
        if not line:
            raise LabError("cluster DNS control socket closed")
        resp = json.loads(line)
        if not resp.get("ok"):
            raise LabError("cluster DNS control error: %s" % resp)
        return resp

    def set_rules(self, rules):
        self.control({"op": "rules", "rules": rules})

    def take_log(self):
        return self.control({"op": "take"})["log"]

    # -- podns -------------------------------------------------------------

    def start_podns(self, podns_bin, extra_args=(), capture=False):
        if self.podns_log is None:
            self.podns_log = open(os.path.join(self.logdir, "%s.podns.log" % self.tag), "w")
        if capture:
            # What the capture-mode sidecar runs: no --upstream (the nameserver of the pod's
            # resolv.conf, the cluster DNS), as a non-root UID.  --socket-rotate 1h keeps every
            # upstream socket of the lookup open until podns_observe() lists them, so each
            # query at the cluster DNS can be traced to a podns socket.
            argv = ["ip", "netns", "exec", self.pod,
                    "setpriv", "--reuid=%d" % CAPTURE_UID, "--regid=%d" % CAPTURE_UID,
                    "--clear-groups", podns_bin,
                    "--listen", "127.0.0.1:%d" % CAPTURE_PORT, "--listen", "[::1]:%d" % CAPTURE_PORT,
                    "--metrics-listen", "127.0.0.1:9153", "--drain-grace", "0s",
                    "--socket-rotate", "1h", *extra_args]
        else:
            argv = ["ip", "netns", "exec", self.pod, podns_bin,
                    "--listen", "127.0.0.1:53", "--upstream", DNS_IP,
                    "--metrics-listen", "127.0.0.1:9153", "--drain-grace", "0s", *extra_args]
        self.podns_log.write("### %s\n" % " ".join(argv[argv.index(podns_bin):]))
        self.podns_log.flush()
        proc = self.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        reader = LineReader(proc.stderr, self.podns_log)
        if reader.wait_for(r"listening proto=udp", PODNS_START_TIMEOUT_S) is None:
            rc = _stop(proc)
            raise LabError("podns did not log `listening proto=udp` within %.0f s (exit %s); "
                           "stderr: %s" % (PODNS_START_TIMEOUT_S, rc,
                                           " | ".join(reader.lines[-10:])))
        last = None
        for i in range(READY_TRIES):  # a bounded poll: /ready has no event to wait for
            self._check_open()
            status, body = netns_http_get(self.pod, "http://127.0.0.1:9153/ready", 1.0)
            if status == 200:
                break
            last = "%s %s" % (status, body.strip()[:200])
            if i + 1 < READY_TRIES:
                time.sleep(READY_INTERVAL_S)
        else:
            code = _stop(proc)
            raise LabError("podns never became ready (/ready): %s; exit %s; stderr: %s"
                           % (last, code, " | ".join(reader.lines[-10:])))
        return proc

    def podns_observe(self, proc):
        """While podns runs: its counters (sums over labels) and the local ports of its
        sockets (UDP and TCP)."""
        status, out = netns_http_get(self.pod, "http://127.0.0.1:9153/metrics")
        if status != 200:
            raise LabError("GET /metrics: %s %s" % (status, out.strip()[-300:]))
        samples = parse_metrics(out)
        return {"requests": metric_sum(samples, "podns_requests_total"),
                # `family` is "1" (IPv4) or "2" (IPv6), as CoreDNS labels it.
                "requests_by": {"%s/%s" % (name, p): metric_sum(samples, "podns_requests_total",
                                                                family=f, proto=p)
                                for name, f in (("ipv4", "1"), ("ipv6", "2")) for p in ("udp", "tcp")},
                "upstream_requests": metric_sum(samples, "podns_upstream_requests_total"),
                "ports": sorted(socket_ports(proc.pid))}

    # -- capture mode ------------------------------------------------------

    def capture_init(self, podns_bin):
        """Runs `podns capture-init` as root in the pod, twice (a restarted init container
        must leave the same rules); returns each run with the nat tables after it."""
        runs = []
        for _ in range(2):
            argv = ["ip", "netns", "exec", self.pod, podns_bin, "capture-init",
                    "--port", str(CAPTURE_PORT), "--uid", str(CAPTURE_UID), "--ipv6", "on"]
            rc, out, err, ms = self.run(argv, 30)
            if rc != 0:
                raise LabError("podns capture-init failed (exit %s): %s" % (rc, err.strip()))
            runs.append({"rc": rc, "stdout": out, "stderr": err, "ms": round(ms, 1),
                         "nat4": self.nat_table("iptables-save"),
                         "nat6": self.nat_table("ip6tables-save")})
        return runs

    def nat_table(self, tool, counters=False):
        """The rule lines of the pod's nat table (with [packets:bytes] when counters)."""
        rc, out, err, _ = self.run(["ip", "netns", "exec", self.pod, tool, "-t", "nat",
                                    *(["-c"] if counters else [])], 30)
        if rc != 0:
            raise LabError("%s failed: %s" % (tool, err.strip()))
        return [ln for ln in out.splitlines() if ln.startswith(("-A", "["))]

    def capture_extras(self, podns_bin, podns_args):
        """dig with an explicit server: TCP to the cluster DNS, UDP and TCP to [::1]:53.
        Nothing listens on port 53 in the pod, so an answer means the rules redirected it."""
        podns = self.start_podns(podns_bin, podns_args, capture=True)
        out = {}
        try:
            for label, (server, transport) in CAPTURE_EXTRAS:
                argv = ["dig", "@" + server, transport, "+tries=1", "+time=2",
                        CAPTURE_EXTRA_NAME, "A"]
                rc, text, _err, ms = self.run(["ip", "netns", "exec", self.pod, *argv],
                                              CLIENT_TIMEOUT_S)
                res = parse_dig(text, rc if rc is not None else -1)
                res["wall_ms"] = round(ms, 1)
                out[label] = res
            out["podns"] = self.podns_observe(podns)
        finally:
            alive, rc = self.stop_podns(podns)
        out["podns_alive"], out["podns_exit"] = alive, rc
        return out

    def stop_podns(self, proc):
        alive = proc.poll() is None
        rc = _stop(proc, grace=5)
        with self._lock:
            if proc in self.procs:
                self.procs.remove(proc)
        return alive, rc

    # -- clients -----------------------------------------------------------

    def run_client(self, client, name, resolv_options=()):
        argv = client_argv(client, name, resolv_options)
        rc, out, err, wall_ms = self.run(["ip", "netns", "exec", self.pod, *argv],
                                         CLIENT_TIMEOUT_S)
        if rc is None:
            return {"ok": False, "addresses": [], "error": "HARNESS_TIMEOUT",
                    "category": "timeout", "elapsed_ms": round(wall_ms, 3),
                    "wall_ms": round(wall_ms, 3), "stdout": out[-500:]}
        self._check_open()  # a client killed by an abort is no result
        res = parse_client_output(client, out, rc)
        res["wall_ms"] = round(wall_ms, 3)
        if res.get("elapsed_ms") is None:
            res["elapsed_ms"] = round(wall_ms, 3)
        if not res["ok"] and res["error"] is None:
            res["error"] = "exit %d: %s" % (rc, err.strip()[-200:])
        if err.strip():
            res["stderr"] = err.strip()[-500:]
        return res


def parse_metrics(text):
    """Prometheus text: [(name, {label: value}, value)]."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)', line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        try:
            out.append((m.group(1), labels, float(m.group(3))))
        except ValueError:
            pass
    return out


def metric_sum(samples, name, **labels):
    return sum(v for (n, ls, v) in samples
               if n == name and all(ls.get(k) == want for k, want in labels.items()))


def socket_ports(pid):
    """Local ports of the UDP and TCP sockets a process holds open: the socket inodes of its
    file descriptors, looked up in /proc/<pid>/net/{udp,tcp}{,6} (its network namespace's
    tables)."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            link = os.readlink(os.path.join(fd_dir, fd))
        except OSError:  # closed meanwhile
            continue
        m = re.match(r"socket:\[(\d+)\]$", link)
        if m:
            inodes.add(m.group(1))
    ports = set()
    for table in ("udp", "tcp", "udp6", "tcp6"):
        with open("/proc/%d/net/%s" % (pid, table)) as f:
            next(f)  # header
            for line in f:
                fields = line.split()
                if len(fields) > 9 and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def rule_packets(lines):
    """Packets counted by the capture chain's rules in `iptables-save -c` lines:
    {"return": n, "udp": n, "tcp": n}.  (nat rules see the first packet of a flow.)"""
    out = {}
    for line in lines:
        m = re.match(r"^\[(\d+):\d+\] -A PODNS_OUTPUT (.*)$", line)
        if not m:
            continue
        rule = m.group(2)
        key = ("return" if "-j RETURN" in rule else
               "udp" if "-p udp" in rule else "tcp" if "-p tcp" in rule else rule)
        out[key] = out.get(key, 0) + int(m.group(1))
    return out


def old_cares_res_options(resolv_options):
    """c-ares 1.13 reads only the BSD spellings of resolv.conf's timing options (`retrans:`
    in milliseconds, `retry:`), not `timeout:`/`attempts:`; its defaults (5 s, 4 tries, the
    timeout doubling per try) outlast the harness's bound on a dead cluster DNS.  The same
    settings in its dialect, for its RES_OPTIONS environment variable (read before
    resolv.conf), or None when the case sets none."""
    out = []
    for opt in resolv_options:
        key, _, val = opt.partition(":")
        if key == "timeout":
            out.append("retrans:%d" % (int(val) * 1000))
        elif key == "attempts":
            out.append("retry:%s" % val)
    return " ".join(out) or None


def client_argv(client, name, resolv_options=()):
    if client == "glibc":
        return [os.path.join(BIN_DIR, "gai-glibc"), name]
    if client == "musl":
        return [os.path.join(BIN_DIR, "gai-musl"), name]
    if client == "cares":
        return [sys.executable, os.path.join(HERE, "cares_client.py"), name]
    if client == "cares-old":
        res_options = old_cares_res_options(resolv_options)
        if res_options:
            return ["env", "RES_OPTIONS=" + res_options, CARES_OLD_BIN, name]
        return [CARES_OLD_BIN, name]
    if client == "go":
        return ["env", "GODEBUG=netdns=go", GO_BIN, name]
    if client == "hickory":
        return [HICKORY_BIN, name]
    if client == "dig":
        return ["dig", "+search", name, "A"]
    raise ValueError(client)


def missing_clients():
    """Clients whose program is not there, with what provides it."""
    missing = {}
    for c, path, what in [
        ("glibc", os.path.join(BIN_DIR, "gai-glibc"), "built by run.sh with gcc"),
        ("musl", os.path.join(BIN_DIR, "gai-musl"), "built by run.sh with musl-gcc (musl-tools)"),
        ("hickory", HICKORY_BIN, "built by run.sh (cargo, tests/lab/hickory-client)"),
        ("cares-old", CARES_OLD_BIN, "built by run.sh: c-ares 1.13.0 + gethostbyname_old.c"),
        ("go", GO_BIN, "built by run.sh with go (golang-go), tests/lab/go-client"),
    ]:
        if not os.access(path, os.X_OK):
            missing[c] = "%s missing (%s)" % (path, what)
    if shutil.which("dig") is None:
        missing["dig"] = "dig missing (Debian package bind9-dnsutils)"
    if importlib.util.find_spec("pycares") is None:
        missing["cares"] = "python module pycares missing (pip install pycares)"
    return missing


EAI_CATEGORY = {
    "EAI_NONAME": "notfound", "EAI_NODATA": "notfound", "EAI_ADDRFAMILY": "notfound",
    "EAI_AGAIN": "again", "EAI_FAIL": "fail",
}
ARES_CATEGORY = {
    "ARES_ENOTFOUND": "notfound", "ARES_ENODATA": "notfound", "ARES_ENONAME": "notfound",
    "ARES_ESERVFAIL": "servfail", "ARES_ETIMEOUT": "timeout", "ARES_EREFUSED": "refused",
    "ARES_ECONNREFUSED": "refused",
}


def parse_client_output(client, out, rc):
    if client == "dig":
        return parse_dig(out, rc)
    line = next((ln for ln in out.splitlines() if ln.startswith("{")), None)
    if line is None:
        return {"ok": False, "addresses": [], "error": None, "category": "other",
                "elapsed_ms": None}
    d = json.loads(line)
    addrs = sorted(set(d.get("addresses", [])))
    if d.get("ok") and not addrs:
        # the library said "success" with nothing to connect to (c-ares 1.13 does, for a CNAME
        # whose target has no address): for the application that is a failed lookup
        d["ok"], d["error"] = False, "NO_ADDRESS (%s)" % (d.get("error") or "library said ok")
        cat = "noaddress"
    elif d.get("ok"):
        cat = "ok"
    elif client in ("glibc", "musl"):
        cat = EAI_CATEGORY.get(d.get("error"), "other")
    elif client in ("cares", "cares-old"):
        cat = ARES_CATEGORY.get(d.get("error"), "other")
    elif client == "go":
        kind = d.get("kind")
        err = (d.get("error") or "").lower()
        if kind == "notfound":
            cat = "notfound"
        elif kind == "timeout":
            cat = "timeout"
        elif "server misbehaving" in err:  # Go's word for SERVFAIL (and other rcodes)
            cat = "servfail"
        elif kind == "temporary":
            cat = "again"
        else:
            cat = "other"
    else:  # hickory
        kind = d.get("kind")
        err = (d.get("error") or "").lower()
        if kind in ("nxdomain", "norecords"):
            cat = "notfound"
        elif kind == "timeout" or "timed out" in err:
            cat = "timeout"
        elif "servfail" in err or "server failure" in err:
            cat = "servfail"
        elif "refused" in err:
            cat = "refused"
        else:
            cat = "other"
    return {"ok": bool(d.get("ok")), "addresses": addrs, "error": d.get("error"),
            "category": cat, "elapsed_ms": d.get("elapsed_ms")}


_DIG_A = re.compile(r"^(\S+)\s+\d+\s+IN\s+A\s+(\S+)\s*$")


def parse_dig(out, rc):
    statuses = re.findall(r"->>HEADER<<- opcode: \w+, status: (\w+)", out)
    addrs = []
    in_answer = False
    for line in out.splitlines():
        if line.startswith(";; ANSWER SECTION"):
            in_answer = True
            continue
        if in_answer:
            if not line.strip() or line.startswith(";;"):
                in_answer = False
                continue
            m = _DIG_A.match(line)
            if m:
                addrs.append(m.group(2))
    qtime = re.findall(r";; Query time: (\d+) msec", out)
    status = statuses[-1] if statuses else None
    if addrs:
        cat, err = "ok", None
    elif status in ("NXDOMAIN",):
        cat, err = "notfound", status
    elif status == "NOERROR":
        cat, err = "notfound", "NODATA"
    elif status == "SERVFAIL":
        cat, err = "servfail", status
    elif status == "REFUSED":
        cat, err = "refused", status
    elif "timed out" in out or "no servers could be reached" in out:
        cat, err = "timeout", "no servers reached"
    else:
        cat, err = "other", status or "exit %d" % rc
    return {"ok": bool(addrs), "addresses": sorted(set(addrs)), "error": err, "category": cat,
            "elapsed_ms": None, "dig_status": status,
            "dig_query_ms": int(qtime[-1]) if qtime else None}


# --------------------------------------------------------------------------
# Runs


def _first_line(argv):
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
    return lines[0] if lines else None


def environment():
    """Versions of what the clients resolve with (for the report)."""
    env = {"glibc": _first_line(["ldd", "--version"]),
           "musl": _first_line(["/lib/ld-musl-x86_64.so.1"]),  # prints "musl libc (x86_64)"
           "dig": _first_line(["dig", "-v"])}
    for line in (_first_line(["dpkg-query", "-W", "-f=${Version}", "musl"]) or "").split():
        env["musl"] = "musl %s" % line
    try:
        import pycares
        env["cares"] = "pycares %s, c-ares %s" % (pycares.__version__, pycares.ARES_VERSION)
    except ImportError:
        env["cares"] = None
    line = _first_line([CARES_OLD_BIN, "localhost"]) if os.access(CARES_OLD_BIN, os.X_OK) else None
    try:
        env["cares-old"] = "c-ares %s, ares_gethostbyname" % json.loads(line)["cares"]
    except (TypeError, ValueError, KeyError):
        env["cares-old"] = None
    line = _first_line([GO_BIN, "localhost"]) if os.access(GO_BIN, os.X_OK) else None
    try:
        env["go"] = "%s, pure Go resolver" % json.loads(line)["go"]
    except (TypeError, ValueError, KeyError):
        env["go"] = None
    try:
        lock = open(os.path.join(HERE, "hickory-client", "Cargo.lock")).read()
        m = re.search(r'name = "hickory-resolver"\nversion = "([^"]+)"', lock)
        env["hickory"] = "hickory-resolver %s" % m.group(1) if m else None
    except OSError:
        env["hickory"] = None
    return env


# The labs of one (phase, client): one per group of environments.
LAB_GROUPS = (DEFAULT_ENV, "envs", "airgap")


def env_group(env):
    return env if env in (DEFAULT_ENV, "airgap") else "envs"


def lab_key(phase, client, group=DEFAULT_ENV):
    """The name of one lab in the report: phase/client (the default environment's cases), or
    phase/client/<group> (the other environments' cases, in labs of their own)."""
    return "%s/%s" % (phase, client) if group == DEFAULT_ENV else "%s/%s/%s" % (phase, client,
                                                                               group)


def run_lab(phase, client, cases, podns_bin=None, podns_args=(), logdir=None,
            group=DEFAULT_ENV):
    """Run every case for one client in one fresh lab; returns result rows."""
    tag = "%s-%s" % (phase[0], client) + ("" if group == DEFAULT_ENV else "-" + group[0])
    lab = Lab(tag, logdir)
    rows = []
    info = {}
    if phase == "capture":
        cases = [c for c in cases if c.id in CAPTURE_CASES]
    else:
        cases = [c for c in cases if c.env == DEFAULT_ENV or phase in ENV_PHASES]
    try:
        if phase in ("after", "capture") and not (podns_bin and os.access(podns_bin, os.X_OK)):
            raise LabError("podns binary %r is missing or not executable (set PODNS_BIN or "
                           "run `cargo build --release`)" % podns_bin)
        missing = missing_clients().get(client) or (phase == "capture" and missing_capture_tools())
        if missing:
            raise LabError("client %s unavailable: %s" % (client, missing))
        lab.setup()
        if phase == "capture":
            # The pod's init container: the rules go in before podns starts, as in Kubernetes.
            info["capture_init"] = lab.capture_init(podns_bin)
        for case in cases:
            if ABORT.is_set():
                raise LabError("aborted")
            row = {"phase": phase, "client": client, "case": case.id, "name": case.name,
                   "kind": case.kind, "rules": case.rules, "env": case.env}
            search = search_for(case)
            podns = None
            try:
                if phase == "after":
                    lab.write_resolv_conf("127.0.0.1", case.resolv_options, search)
                    lab.set_rules([])  # podns must see a healthy upstream to become ready
                    podns = lab.start_podns(podns_bin, podns_args)
                elif phase == "capture":
                    # kubelet's resolv.conf, untouched: podns takes its upstream from it
                    lab.write_resolv_conf(DNS_IP, case.resolv_options, search)
                    lab.set_rules([])
                    podns = lab.start_podns(podns_bin, podns_args, capture=True)
                else:
                    lab.write_resolv_conf(DNS_IP, case.resolv_options, search)
                lab.set_rules(case.all_rules)
                lab.take_log()
                row.update(lab.run_client(client, case.name, case.resolv_options))
                if phase == "capture":
                    row["podns"] = lab.podns_observe(podns)
                if podns is not None:
                    alive, rc = lab.stop_podns(podns)
                    row["podns_alive"] = alive
                    row["podns_exit"] = rc
                log = lab.take_log()
            except LabError as e:
                row.update({"ok": False, "addresses": [], "error": "LAB: %s" % e,
                            "category": "lab-error", "elapsed_ms": None, "wall_ms": None})
                log = []
                if podns is not None:
                    lab.stop_podns(podns)
            lab.set_rules([])
            row["queries"] = len(log)
            row["query_log"] = [{k: q.get(k) for k in ("proto", "name", "type", "action",
                                                          "rcode", "tc", "src", "edns",
                                                          "payload")} for q in log]
            rows.append(row)
        if phase == "capture":
            if client == "dig":
                info["extras"] = lab.capture_extras(podns_bin, podns_args)
            info["counters4"] = lab.nat_table("iptables-save", counters=True)
            info["counters6"] = lab.nat_table("ip6tables-save", counters=True)
    except LabError as e:
        info["error"] = str(e)
        done = {r["case"] for r in rows}
        for case in cases:
            if case.id not in done:
                rows.append({"phase": phase, "client": client, "case": case.id,
                             "name": case.name, "kind": case.kind, "rules": case.rules,
                             "env": case.env,
                             "ok": False, "addresses": [], "error": "LAB: %s" % e,
                             "category": "lab-error", "elapsed_ms": None, "wall_ms": None,
                             "queries": None, "query_log": []})
    finally:
        lab.teardown()
        if info:
            LAB_INFO[lab_key(phase, client, group)] = info
    return rows


def missing_capture_tools():
    """What the capture phase needs beyond the clients, or None."""
    for tool, package in [("iptables-restore", "iptables"), ("ip6tables-save", "iptables"),
                          ("setpriv", "util-linux")]:
        if shutil.which(tool) is None:
            return "%s missing (Debian package %s)" % (tool, package)
    return None


def run_all(phases=PHASES, clients=CLIENTS, cases=ALL_CASES, podns_bin=None, podns_args=(),
            parallel=None, logdir=None):
    logdir = logdir or os.path.join(LAB_TARGET, "logs")
    os.makedirs(logdir, exist_ok=True)
    remove_stale_namespaces()
    check_privileges()
    # The other environments' cases run in labs of their own, beside the default ones: their
    # lookups wait out musl's SERVFAIL timeouts too (5 s each; airgap has three), and in series
    # the labs would add them up.
    groups = {g: [c for c in cases if env_group(c.env) == g] for g in LAB_GROUPS}
    jobs = [(p, c, g) for p in phases for c in clients for g in groups
            if groups[g] and (g == DEFAULT_ENV or p in ENV_PHASES)]
    parallel = parallel or int(os.environ.get("LAB_PARALLEL", "0")) or len(jobs)
    results = {}
    t0 = time.monotonic()
    ex = concurrent.futures.ThreadPoolExecutor(max_workers=parallel)
    try:
        futs = {ex.submit(run_lab, p, c, groups[g], podns_bin, podns_args, logdir, g): (p, c, g)
                for (p, c, g) in jobs}
        for fut in concurrent.futures.as_completed(futs):
            results[futs[fut]] = fut.result()
    except BaseException:
        # SIGTERM/SIGINT (or a harness bug): stop every lab now, not when it finishes
        ABORT.set()
        ex.shutdown(wait=False, cancel_futures=True)
        _cleanup_all()
        raise
    ex.shutdown(wait=True)
    rows = [r for job in jobs for r in results[job]]
    return {"generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "duration_s": round(time.monotonic() - t0, 2),
            "podns_bin": podns_bin, "podns_args": list(podns_args),
            "podns_version": _first_line([podns_bin, "--version"]) if podns_bin else None,
            "environment": environment(),
            "clients": list(clients), "phases": list(phases),
            "labs": {lab_key(*job): LAB_INFO[lab_key(*job)] for job in jobs
                     if lab_key(*job) in LAB_INFO},
            "environments": [{"id": e.id, "search": e.search, "rules": e.rules, "note": e.note}
                             for e in ENVIRONMENTS if any(c.env == e.id for c in cases)],
            "cases": [{"id": c.id, "name": c.name, "kind": c.kind, "rules": c.rules,
                       "env": c.env, "resolv_options": c.resolv_options, "note": c.note,
                       "truth": sorted(truth(c.fqdn))} for c in cases],
            "rows": rows}


# --------------------------------------------------------------------------
# Report


def _cell(row):
    if row is None:
        return "-"
    if row.get("category") == "lab-error":
        return "LAB ERROR"
    ms = row.get("elapsed_ms")
    t = "%.0fms" % ms if ms is not None else "?"
    q = row.get("queries")
    addrs = row.get("addresses") or []
    if row["ok"]:
        what = ("ok " + addrs[0] + ("+%d" % (len(addrs) - 1) if len(addrs) > 1 else "")
                if addrs else "ok NO ADDRESS")
    else:
        err = str(row.get("error") or row.get("category") or "fail")
        if row.get("client") in ("hickory", "go"):
            err = str(row.get("category"))  # its messages are long; the JSON has them
        what = "FAIL " + err[:24]
    return "%s %s q=%s" % (what, t, q)


def format_table(report):
    rows = report["rows"]
    idx = {(r["phase"], r["client"], r["case"]): r for r in rows}
    phases = [p for p in PHASES if p in report["phases"]]
    header = ["env", "case", "name", "client", *phases]
    lines = []
    for c in report["cases"]:
        env = c.get("env", DEFAULT_ENV)
        for client in report["clients"]:
            lines.append([env, c["id"].split("/", 1)[-1], c["name"], client,
                          *(_cell(idx.get((p, client, c["id"]))) for p in phases)])
    widths = [max(len(h), *(len(x[i]) for x in lines)) for i, h in enumerate(header)]
    fmt = "  ".join("%%-%ds" % w for w in widths)
    out = [fmt % tuple(header), fmt % tuple("-" * w for w in widths)]
    prev = prev_env = None
    for ln in lines:
        shown = list(ln)
        if (ln[0], ln[1]) == prev:
            shown[1] = shown[2] = ""
        if ln[0] == prev_env:
            shown[0] = ""
        prev, prev_env = (ln[0], ln[1]), ln[0]
        out.append(fmt % tuple(shown))
    out.append("cell: outcome, first address(+more), time measured by the client (dig: the "
               "whole process), queries received by the cluster DNS (q=)")
    out.append("")
    out.append("per client, names that exist (default environment, no misbehaviour): lookups "
               "ok, and mean queries at the cluster DNS per lookup (cluster names | external "
               "names)")
    healthy = {c["id"]: c for c in report["cases"]
               if not c["rules"] and c["kind"] in ("cluster", "external")
               and c.get("env", DEFAULT_ENV) == DEFAULT_ENV}
    for client in report["clients"]:
        parts = []
        for phase in report["phases"]:
            rs = [idx[(phase, client, cid)] for cid in healthy if (phase, client, cid) in idx]
            okc = sum(1 for r in rs if r["ok"])
            def mean(kind):
                qs = [r["queries"] for r in rs
                      if healthy[r["case"]]["kind"] == kind and r.get("queries") is not None]
                return "%.1f" % (sum(qs) / len(qs)) if qs else "-"
            parts.append("%s: %d/%d ok, q %s | %s" % (phase, okc, len(rs), mean("cluster"),
                                                      mean("external")))
        out.append("  %-8s %s" % (client, "    ".join(parts)))
    return "\n".join(out)


def write_report(report, path=None):
    path = path or os.path.join(LAB_TARGET, "report.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.splitext(path)[0] + ".txt", "w") as f:
        f.write(format_table(report) + "\n")
    return path


def main(argv):
    """python3 lab.py [before|after|capture|both|all] [client...] [environment...]: run and
    print the table (both: before and after; all, the default: the three phases; naming
    environments runs only their cases)."""
    install_signal_handlers()
    phases = PHASES
    named = {"all": PHASES, "both": ["before", "after"]}
    if len(argv) > 1 and argv[1] in ("before", "after", "capture", "both", "all"):
        phases = named.get(argv[1], [argv[1]])
        argv = argv[1:]
    envs = [a for a in argv[1:] if a in ENV_BY_ID]
    clients = [a for a in argv[1:] if a not in ENV_BY_ID] or CLIENTS
    cases = [c for c in ALL_CASES if c.env in envs] if envs else ALL_CASES
    podns_bin = os.environ.get("PODNS_BIN", os.path.join(REPO, "target", "release", "podns"))
    extra = os.environ.get("PODNS_ARGS", "").split()
    report = run_all(phases, clients, cases, podns_bin, extra)
    print(format_table(report))
    print("report: %s (%.1f s)" % (write_report(report), report["duration_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
