"""Pod lab acceptance tests (issue 3): real stub resolvers in a pod network namespace,
resolving through the stand-in cluster DNS directly ("before"), through podns
running inside the pod ("after"), and through podns in capture mode ("capture": the
pod's resolv.conf still names the cluster DNS; `podns capture-init` redirects port 53
to podns with real nat rules, issue 6).

The lab runs once per session (every phase, every client, in parallel labs); the
tests below only read its results.  Features that podns does not have yet are
gated by FEATURES: a gated test is *skipped* with a reason naming the feature
until the lead switches it on here.
"""

import os

import pytest

import lab

# Switch a feature on when it lands in podns; its tests then run (and must pass).
FEATURES = {
    "aaaa_fix": True,  # --aaaa fix (the default): SERVFAIL for AAAA -> NODATA
    "search_collapse": True,  # search-list expansion answered without cluster DNS
    # A UDP answer too big for the client keeps the records that fit, TC set (as CoreDNS
    # does); podns today sends TC with no records, so musl < 1.2.4 (no TCP fallback)
    # loses a name it resolved without podns (ext-big).
    "partial_truncation": True,
}
# LAB_FEATURES=aaaa_fix,search_collapse switches features on for one run.
for _f in filter(None, os.environ.get("LAB_FEATURES", "").split(",")):
    if _f not in FEATURES:
        raise ValueError("LAB_FEATURES: unknown feature %r (known: %s)" % (_f, sorted(FEATURES)))
    FEATURES[_f] = True

# Extra podns flags for the "after" and "capture" runs (the base command lines are in lab.py:
# --listen 127.0.0.1:53 --upstream <cluster DNS> --metrics-listen 127.0.0.1:9153).
PODNS_ARGS = os.environ.get("PODNS_ARGS", "").split()

# What "no client waits for a timeout" means: below musl's first retransmission
# (its 5 s timeout split over 2 attempts = 2.5 s) and glibc's 5 s. Typical answers take
# under 100 ms; the margin is for a loaded 2-core CI machine running ten labs at once.
NO_TIMEOUT_BUDGET_MS = 2400.0

TEMPORARY = {"again", "servfail", "timeout", "refused", "fail", "other"}


def feature(name):
    return pytest.mark.skipif(
        not FEATURES[name],
        reason="feature %s not enabled: set FEATURES[%r] = True in tests/lab/test_lab.py "
        "when podns implements it" % (name, name))


def _cases(pred):
    return [c.id for c in lab.CASES if pred(c)]


HEALTHY_CLUSTER = _cases(lambda c: c.kind == "cluster" and c.healthy)
HEALTHY_EXTERNAL = _cases(lambda c: c.kind == "external" and c.healthy)
MISSING = _cases(lambda c: c.kind == "missing" and c.healthy)
SERVFAIL_EXISTING = ["aaaa-servfail-cluster", "aaaa-servfail-external"]
HEALTHY = _cases(lambda c: c.healthy)


@pytest.fixture(scope="session")
def report():
    podns_bin = os.environ.get("PODNS_BIN",
                               os.path.join(lab.REPO, "target", "release", "podns"))
    try:
        rep = lab.run_all(lab.PHASES, lab.CLIENTS, lab.CASES, podns_bin, PODNS_ARGS)
    except lab.LabError as e:
        pytest.exit("pod lab cannot run: %s" % e, returncode=3)
    path = lab.write_report(rep)
    lab.LAST_REPORT.update(report=rep, path=path)
    return rep


@pytest.fixture(scope="session")
def rows(report):
    return {(r["phase"], r["client"], r["case"]): r for r in report["rows"]}


def row(rows, phase, client, case_id):
    r = rows[(phase, client, case_id)]
    assert r.get("category") != "lab-error", "lab failure: %s" % r.get("error")
    return r


def describe(r):
    return "%s %s %s: ok=%s addrs=%s err=%s cat=%s %.0fms queries=%s %s" % (
        r["phase"], r["client"], r["name"], r["ok"], r["addresses"], r.get("error"),
        r.get("category"), r.get("elapsed_ms") or -1, r.get("queries"),
        [(q["name"], q["type"], q.get("rcode")) for q in r.get("query_log", [])])


def questions(r):
    """(name, type) questions that reached cluster DNS for the lookup, less podns's own
    upstream health probe."""
    return {(q["name"], q["type"]) for q in r.get("query_log", [])} - {lab.HEALTH_PROBE}


def kept_truncated(r):
    """The client got a truncated (TC) UDP answer and never retried over TCP."""
    log = r.get("query_log", [])
    return any(q.get("tc") for q in log) and not any(q["proto"] == "tcp" for q in log)


def assert_preserved(before, after):
    """`after` resolved what `before` resolved, to the same addresses."""
    both = describe(before) + "\n" + describe(after)
    if kept_truncated(before) and not FEATURES["partial_truncation"]:
        pytest.skip("feature partial_truncation not enabled: %s %s relies on the records "
                    "of a truncated answer" % (before["client"], before["name"]))
    assert after["ok"], both
    if kept_truncated(before):
        # a client without TCP fallback: podns must still hand it addresses (how
        # many fit in 512 bytes depends on the encoder, so not the same ones)
        truth = lab.expected_addresses(lab.CASE_BY_ID[before["case"]], before["client"])
        assert after["addresses"] and set(after["addresses"]) <= truth, both
    else:
        assert after["addresses"] == before["addresses"], both


def expansions(name):
    """The names a stub resolver tries for `name` (search list first: ndots:5)."""
    if name.endswith("."):
        return [name]
    return [name + "." + d + "." for d in lab.SEARCH] + [name + "."]


# --------------------------------------------------------------------------
# Before: the lab reproduces the problem (no podns)


@pytest.mark.parametrize("client", lab.CLIENTS)
@pytest.mark.parametrize("case_id", HEALTHY_CLUSTER)
def test_before_cluster_names_resolve(rows, client, case_id):
    r = row(rows, "before", client, case_id)
    expected = lab.expected_addresses(lab.CASE_BY_ID[case_id], client)
    assert r["ok"], describe(r)
    assert set(r["addresses"]) == expected, describe(r)


@pytest.mark.parametrize("client", lab.CLIENTS)
@pytest.mark.parametrize("case_id", HEALTHY_EXTERNAL)
def test_before_external_names_resolve(rows, client, case_id):
    r = row(rows, "before", client, case_id)
    expected = lab.expected_addresses(lab.CASE_BY_ID[case_id], client)
    assert r["ok"], describe(r)
    if kept_truncated(r):
        # no TCP fallback (musl < 1.2.4): it keeps what the truncated answer held
        assert r["addresses"] and set(r["addresses"]) < expected, describe(r)
    else:
        assert set(r["addresses"]) == expected, describe(r)


@pytest.mark.parametrize("case_id", ["ext-1dot", "ext-2dot-cname", "ext-3dot-cname",
                                     "ext-4dot-chain", "ext-missing"])
def test_before_glibc_sends_8_queries_per_external_name(rows, case_id):
    """ndots:5 and three search domains: A+AAAA for 3 expansions and the name itself."""
    r = row(rows, "before", "glibc", case_id)
    assert r["queries"] == 8, describe(r)
    names = {q["name"] for q in r["query_log"]}
    assert names == set(expansions(r["name"])), describe(r)
    assert {q["type"] for q in r["query_log"]} == {"A", "AAAA"}, describe(r)


@pytest.mark.parametrize("case_id", SERVFAIL_EXISTING)
def test_before_musl_fails_on_aaaa_servfail(rows, case_id):
    r = row(rows, "before", "musl", case_id)
    assert not r["ok"], describe(r)
    assert r["category"] in TEMPORARY, describe(r)
    assert any(q["type"] == "AAAA" and q.get("rcode") == "SERVFAIL" for q in r["query_log"]), \
        describe(r)


def test_before_cares_misreports_missing_name_on_aaaa_servfail(rows):
    """c-ares (as shipped in pycares) turns "A: NXDOMAIN, AAAA: SERVFAIL" into a
    server failure instead of "not found".  (For an *existing* name it does get the
    A address: see the report; issue 3's claim that it fails there does not hold
    for c-ares 1.18-1.34.)"""
    r = row(rows, "before", "cares", "aaaa-servfail-missing")
    assert not r["ok"], describe(r)
    assert r["category"] != "notfound", describe(r)


@pytest.mark.parametrize("client", lab.CLIENTS)
@pytest.mark.parametrize("case_id", MISSING)
def test_before_missing_names_not_found(rows, client, case_id):
    r = row(rows, "before", client, case_id)
    assert not r["ok"] and r["category"] == "notfound", describe(r)
    assert r["elapsed_ms"] < NO_TIMEOUT_BUDGET_MS, describe(r)


@pytest.mark.parametrize("client", lab.CLIENTS)
def test_before_dead_cluster_dns_fails_without_claiming_not_found(rows, client):
    r = row(rows, "before", client, "dead-dns")
    assert not r["ok"], describe(r)
    assert r["category"] != "notfound", describe(r)
    assert r["queries"] >= 1, describe(r)


# --------------------------------------------------------------------------
# After, plain forwarding: podns in the pod changes nothing that worked


@pytest.mark.parametrize("client", lab.CLIENTS)
@pytest.mark.parametrize("case_id", [c.id for c in lab.CASES])
def test_after_podns_survives_every_lookup(rows, client, case_id):
    r = row(rows, "after", client, case_id)
    assert r.get("podns_alive") is True, "podns exited during the lookup: %s" % describe(r)
    assert r.get("podns_exit") == 0, "podns did not exit 0 on SIGTERM: %s" % describe(r)


@pytest.mark.parametrize("client", lab.CLIENTS)
@pytest.mark.parametrize("case_id", HEALTHY_CLUSTER)
def test_after_cluster_names_same_as_before(rows, client, case_id):
    before = row(rows, "before", client, case_id)
    after = row(rows, "after", client, case_id)
    assert before["ok"], describe(before)
    assert after["ok"], describe(after)
    assert after["addresses"] == before["addresses"], describe(before) + "\n" + describe(after)


@pytest.mark.parametrize("client", lab.CLIENTS)
@pytest.mark.parametrize("case_id", HEALTHY_EXTERNAL)
def test_after_external_names_same_as_before(rows, client, case_id):
    before = row(rows, "before", client, case_id)
    after = row(rows, "after", client, case_id)
    if not before["ok"]:
        pytest.skip("failed before podns too (%s): nothing to preserve" % before.get("error"))
    assert_preserved(before, after)


@pytest.mark.parametrize("client", lab.CLIENTS)
@pytest.mark.parametrize("case_id", MISSING)
def test_after_missing_names_not_found_fast(rows, client, case_id):
    r = row(rows, "after", client, case_id)
    assert not r["ok"] and r["category"] == "notfound", describe(r)
    assert r["elapsed_ms"] < NO_TIMEOUT_BUDGET_MS, describe(r)


@pytest.mark.parametrize("client", lab.CLIENTS)
def test_after_dead_cluster_dns_fails_without_claiming_not_found(rows, client):
    r = row(rows, "after", client, "dead-dns")
    assert not r["ok"], describe(r)
    assert r["category"] != "notfound", describe(r)
    assert r["queries"] >= 1, "podns never tried the cluster DNS: %s" % describe(r)


@pytest.mark.parametrize("client", lab.CLIENTS)
@pytest.mark.parametrize("case_id", HEALTHY)
def test_after_podns_asks_nothing_new(rows, client, case_id):
    """Every question podns puts to cluster DNS was one the client asked itself
    before (TLD probes of search collapse aside)."""
    before = row(rows, "before", client, case_id)
    after = row(rows, "after", client, case_id)
    tlds = lab.case_tlds(lab.CASE_BY_ID[case_id])
    new = {(n, t) for (n, t) in questions(after) - questions(before)
           if not lab.is_probe(n, tlds)}
    assert not new, "podns asked %s: %s" % (sorted(new), describe(after))


# --------------------------------------------------------------------------
# After, aaaa_fix


@feature("aaaa_fix")
@pytest.mark.parametrize("client", lab.CLIENTS)
@pytest.mark.parametrize("case_id", SERVFAIL_EXISTING)
def test_aaaa_fix_every_client_gets_the_a_address(rows, client, case_id):
    r = row(rows, "after", client, case_id)
    a = lab.truth(lab.CASE_BY_ID[case_id].fqdn, ("A",))
    assert r["ok"], describe(r)
    assert a and a <= set(r["addresses"]), describe(r)
    assert r["elapsed_ms"] < NO_TIMEOUT_BUDGET_MS, "waited for a timeout: %s" % describe(r)


@feature("aaaa_fix")
def test_aaaa_fix_repairs_what_failed_before(rows):
    failed_before = [(c, k) for c in lab.CLIENTS for k in SERVFAIL_EXISTING
                     if not row(rows, "before", c, k)["ok"]]
    # the lab reproduces the problem (musl, at least) ...
    assert ("musl", "aaaa-servfail-cluster") in failed_before
    assert ("musl", "aaaa-servfail-external") in failed_before
    # ... and podns repairs every one of them
    still = [describe(row(rows, "after", c, k)) for (c, k) in failed_before
             if not row(rows, "after", c, k)["ok"]]
    assert not still, "\n".join(still)


@feature("aaaa_fix")
@pytest.mark.parametrize("client", lab.CLIENTS)
def test_aaaa_fix_missing_name_still_not_found(rows, client):
    """A: NXDOMAIN, AAAA: SERVFAIL must stay "not found": not SERVFAIL, no timeout."""
    r = row(rows, "after", client, "aaaa-servfail-missing")
    assert not r["ok"] and r["category"] == "notfound", describe(r)
    assert r["elapsed_ms"] < NO_TIMEOUT_BUDGET_MS, "waited for a timeout: %s" % describe(r)


# --------------------------------------------------------------------------
# After, search_collapse


def _chain_names(fqdn):
    """CNAME targets on the way from fqdn (a client like hickory asks them itself)."""
    out = set()
    for qt in ("A", "AAAA"):
        for (n, _ttl, rtype, value) in lab.clusterdns.resolve(fqdn, qt, lab.DNS_IP).answer:
            if rtype == "CNAME":
                out.add(value.lower())
    return out


def _collapse_budget(r, case):
    absolute = case.name.rstrip(".").lower() + "."
    tlds = lab.case_tlds(case)
    probes = {n for (n, _t) in questions(r) if lab.is_probe(n, tlds)}
    chain = _chain_names(absolute)
    other = {(n, t) for (n, t) in questions(r) if not lab.is_probe(n, tlds)}
    stray = {(n, t) for (n, t) in other if n != absolute and n not in chain}
    own = {(n, t) for (n, t) in other if n == absolute}
    assert not stray, "search expansions reached cluster DNS %s: %s" % (sorted(stray),
                                                                         describe(r))
    assert len(own) <= 2, describe(r)
    assert len(probes) <= 2 * len(tlds), "probes %s: %s" % (sorted(probes), describe(r))


@feature("search_collapse")
@pytest.mark.parametrize("client", lab.CLIENTS)
@pytest.mark.parametrize("case_id", HEALTHY_CLUSTER + ["cluster-missing"])
def test_collapse_cluster_names_unchanged(rows, client, case_id):
    before = row(rows, "before", client, case_id)
    after = row(rows, "after", client, case_id)
    assert (after["ok"], after["addresses"], after["category"]) == \
        (before["ok"], before["addresses"], before["category"]), \
        describe(before) + "\n" + describe(after)


@feature("search_collapse")
@pytest.mark.parametrize("client", lab.CLIENTS)
@pytest.mark.parametrize("case_id", HEALTHY_EXTERNAL)
def test_collapse_external_names_within_query_budget(rows, client, case_id):
    case = lab.CASE_BY_ID[case_id]
    r = row(rows, "after", client, case_id)
    before = row(rows, "before", client, case_id)
    if before["ok"]:
        assert_preserved(before, r)
    _collapse_budget(r, case)


@feature("search_collapse")
@pytest.mark.parametrize("client", lab.CLIENTS)
def test_collapse_missing_external_name_not_found_within_budget(rows, client):
    case = lab.CASE_BY_ID["ext-missing"]
    r = row(rows, "after", client, case.id)
    assert not r["ok"] and r["category"] == "notfound", describe(r)
    _collapse_budget(r, case)


@feature("search_collapse")
@pytest.mark.parametrize("client", lab.CLIENTS)
def test_collapse_namespace_named_like_a_tld_stays_in_cluster(rows, client):
    r = row(rows, "after", client, "tld-namespace")
    public = lab.truth("web.dev.")
    assert r["ok"] and not (set(r["addresses"]) & public), describe(r)
    assert set(r["addresses"]) == lab.expected_addresses(lab.CASE_BY_ID["tld-namespace"],
                                                         client), describe(r)


# --------------------------------------------------------------------------
# Capture: resolv.conf names the cluster DNS, the kernel redirects port 53 to podns


def capture_info(report, client):
    info = report["labs"].get("capture/%s" % client)
    assert info is not None, "capture lab %s recorded nothing" % client
    assert not info.get("error"), "capture lab %s: %s" % (client, info["error"])
    return info


def _src_port(q):
    return int(q["src"].rsplit(":", 1)[1])


@pytest.mark.parametrize("client", lab.CLIENTS)
def test_capture_init_installs_the_rules_once(report, client):
    """Two runs of capture-init (a restarted init container) leave one chain and one jump per
    protocol, in both families (the lab runs it with --ipv6 on)."""
    runs = capture_info(report, client)["capture_init"]
    assert [r["rc"] for r in runs] == [0, 0], runs
    want = ["-A OUTPUT -p udp -m udp --dport 53 -j PODNS_OUTPUT",
            "-A OUTPUT -p tcp -m tcp --dport 53 -j PODNS_OUTPUT",
            "-A PODNS_OUTPUT -m owner --uid-owner %d -j RETURN" % lab.CAPTURE_UID,
            "-A PODNS_OUTPUT -p udp -j REDIRECT --to-ports %d" % lab.CAPTURE_PORT,
            "-A PODNS_OUTPUT -p tcp -j REDIRECT --to-ports %d" % lab.CAPTURE_PORT]
    for run in runs:
        assert run["nat4"] == want, run
        assert run["nat6"] == want, run
    assert "already there" in runs[1]["stderr"], runs[1]["stderr"]


@pytest.mark.parametrize("client", lab.CLIENTS)
@pytest.mark.parametrize("case_id", lab.CAPTURE_CASES)
def test_capture_clients_get_what_podns_gives(rows, client, case_id):
    """A client that never heard of podns (its resolv.conf names the cluster DNS) gets what
    the client pointed at podns gets: the same outcome and addresses, and the cluster DNS
    sees the same questions (search collapse: not the client's own walk)."""
    cap = row(rows, "capture", client, case_id)
    after = row(rows, "after", client, case_id)
    both = describe(after) + "\n" + describe(cap)
    assert cap.get("podns_alive") is True and cap.get("podns_exit") == 0, describe(cap)
    assert (cap["ok"], cap["category"]) == (after["ok"], after["category"]), both
    truth = lab.expected_addresses(lab.CASE_BY_ID[case_id], client)
    if after["addresses"] and set(after["addresses"]) < truth:
        # the answer did not fit a client without TCP fallback (musl): podns hands it the
        # records that fit, not always the same ones
        assert len(cap["addresses"]) == len(after["addresses"]), both
        assert set(cap["addresses"]) < truth, both
    else:
        assert cap["addresses"] == after["addresses"], both
    assert questions(cap) == questions(after), both
    assert cap["elapsed_ms"] < NO_TIMEOUT_BUDGET_MS, "waited for a timeout: %s" % describe(cap)


@pytest.mark.parametrize("client", lab.CLIENTS)
@pytest.mark.parametrize("case_id", lab.CAPTURE_CASES)
def test_capture_podns_answers_and_is_not_looped(rows, client, case_id):
    """podns received the client's queries (its request counter), and every query that reached
    the cluster DNS came from one of podns's own sockets: its upstream traffic left the pod
    instead of being redirected back to itself."""
    cap = row(rows, "capture", client, case_id)
    podns = cap["podns"]
    assert podns["requests"] >= 1, "podns received nothing: %s" % describe(cap)
    assert cap["query_log"], "no query reached the cluster DNS: %s" % describe(cap)
    foreign = [q for q in cap["query_log"] if _src_port(q) not in podns["ports"]]
    assert not foreign, "queries not from podns's sockets %s: %s %s" % (
        foreign, podns["ports"], describe(cap))
    assert podns["upstream_requests"] >= len(cap["query_log"]), describe(cap)


@pytest.mark.parametrize("case_id", SERVFAIL_EXISTING)
def test_capture_repairs_musl_aaaa_servfail(rows, case_id):
    """The AAAA SERVFAIL failure of musl (EAI_AGAIN after 5 s before podns) is gone for a pod
    that kept its resolv.conf."""
    before = row(rows, "before", "musl", case_id)
    cap = row(rows, "capture", "musl", case_id)
    assert not before["ok"], describe(before)
    assert cap["ok"], describe(cap)
    assert lab.truth(lab.CASE_BY_ID[case_id].fqdn, ("A",)) <= set(cap["addresses"]), describe(cap)
    assert cap["elapsed_ms"] < NO_TIMEOUT_BUDGET_MS, describe(cap)


@pytest.mark.parametrize("client", lab.CLIENTS)
def test_capture_collapses_the_search_walk(rows, client):
    before = row(rows, "before", client, "ext-1dot")
    cap = row(rows, "capture", client, "ext-1dot")
    assert cap["ok"] and cap["addresses"] == before["addresses"], describe(cap)
    _collapse_budget(cap, lab.CASE_BY_ID["ext-1dot"])
    if before["queries"] > 2:
        assert cap["queries"] < before["queries"], describe(before) + "\n" + describe(cap)


@pytest.mark.parametrize("client", lab.CLIENTS)
def test_capture_kernel_counters(report, client):
    """The nat counters: client flows were redirected, podns's own flows took the exemption."""
    packets = lab.rule_packets(capture_info(report, client)["counters4"])
    assert packets.get("udp", 0) >= 1, packets
    assert packets.get("return", 0) >= 1, packets


def test_capture_ipv6_and_tcp(report):
    """dig naming its server: TCP to the cluster DNS, and UDP and TCP to [::1]:53, where
    nothing listens: the ip6tables rules bring them to podns on [::1]:15053."""
    extras = capture_info(report, "dig").get("extras")
    assert extras, "the dig capture lab made no extra lookups"
    truth = lab.truth(lab.CAPTURE_EXTRA_NAME + ".", ("A",))
    for label, _ in lab.CAPTURE_EXTRAS:
        r = extras[label]
        assert r["ok"] and set(r["addresses"]) == truth, (label, r)
    by = extras["podns"]["requests_by"]
    assert by["ipv4/tcp"] >= 1 and by["ipv6/udp"] >= 1 and by["ipv6/tcp"] >= 1, by
    assert extras["podns_alive"] and extras["podns_exit"] == 0, extras
    packets6 = lab.rule_packets(capture_info(report, "dig")["counters6"])
    assert packets6.get("udp", 0) >= 1 and packets6.get("tcp", 0) >= 1, packets6
