"""The stand-in cluster DNS answers like CoreDNS and misbehaves on request.

Runs it on loopback (no namespace needed) and asks it with dnspython.
"""

import json
import os
import re
import socket
import subprocess
import sys

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


class Server:
    def __init__(self, tmp_path):
        self.control_path = str(tmp_path / "ctl.sock")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "clusterdns.py"), "--listen", "127.0.0.1",
             "--port", "0", "--server-ip", "198.18.0.10", "--control", self.control_path],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # blocks until bound (or exit -> "")
        m = re.match(r"ready udp=127\.0\.0\.1:(\d+)", line)
        assert m, "server did not start: %r %s" % (line, self.proc.stderr.read())
        self.port = int(m.group(1))
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ctl.settimeout(10)
        self.ctl.connect(self.control_path)
        self.ctl_file = self.ctl.makefile("rb")

    def control(self, **req):
        self.ctl.sendall((json.dumps(req) + "\n").encode())
        resp = json.loads(self.ctl_file.readline())
        assert resp["ok"], resp
        return resp

    def udp(self, name, qtype, edns=False, timeout=2.0):
        q = dns.message.make_query(name, qtype, use_edns=0 if edns else False)
        return dns.query.udp(q, "127.0.0.1", port=self.port, timeout=timeout,
                             ignore_trailing=True)

    def tcp(self, name, qtype, timeout=2.0):
        q = dns.message.make_query(name, qtype)
        return dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=timeout)

    def close(self):
        self.ctl_file.close()
        self.ctl.close()
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    yield s
    s.close()


def values(msg, rdtype):
    return sorted(rd.to_text() for rrset in msg.answer if rrset.rdtype == rdtype for rd in rrset)


def soa_in_authority(msg):
    return any(rrset.rdtype == dns.rdatatype.SOA for rrset in msg.authority)


def test_service_a_and_nodata_aaaa(server):
    r = server.udp("kubernetes.default.svc.cluster.local.", "A")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    assert values(r, dns.rdatatype.A) == ["198.18.1.1"]
    r = server.udp("kubernetes.default.svc.cluster.local.", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer and soa_in_authority(r)


def test_namespace_nodata_missing_namespace_nxdomain(server):
    r = server.udp("dev.svc.cluster.local.", "A")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer and soa_in_authority(r)
    r = server.udp("org.svc.cluster.local.", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN and soa_in_authority(r)
    r = server.udp("pypi.org.default.svc.cluster.local.", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN and soa_in_authority(r)
    r = server.udp("whatever.cluster.local.", "AAAA")
    assert r.rcode() == dns.rcode.NXDOMAIN and soa_in_authority(r)


def test_headless_pods_srv_and_apex(server):
    assert values(server.udp("db.lab.svc.cluster.local.", "A"), dns.rdatatype.A) == \
        ["198.18.3.10", "198.18.3.11"]
    assert values(server.udp("db-1.db.lab.svc.cluster.local.", "A"), dns.rdatatype.A) == \
        ["198.18.3.11"]
    r = server.udp("_mysql._tcp.db.lab.svc.cluster.local.", "SRV")
    assert values(r, dns.rdatatype.SRV) == ["0 50 3306 db-0.db.lab.svc.cluster.local.",
                                            "0 50 3306 db-1.db.lab.svc.cluster.local."]
    r = server.udp("_https._tcp.kubernetes.default.svc.cluster.local.", "SRV")
    assert values(r, dns.rdatatype.SRV) == ["0 100 443 kubernetes.default.svc.cluster.local."]
    r = server.udp("cluster.local.", "SOA")
    assert values(r, dns.rdatatype.SOA) and r.flags & dns.flags.AA
    assert values(server.udp("10-0-0-1.default.pod.cluster.local.", "A"),
                  dns.rdatatype.A) == ["10.0.0.1"]


def test_public_cname_chain_and_nxdomain(server):
    r = server.udp("bucket.s3.eu-west-1.amazonaws.com.", "A")
    assert values(r, dns.rdatatype.CNAME) == ["s3-r-w.eu-west-1.amazonaws.com.",
                                              "s3.eu-west-1.amazonaws.com."]
    assert values(r, dns.rdatatype.A) == ["198.19.3.1", "198.19.3.2"]
    assert not r.flags & dns.flags.AA
    r = server.udp("files.pythonhosted.org.", "AAAA")
    assert values(r, dns.rdatatype.AAAA) == ["2001:db8:2::1"]
    r = server.udp("nothing-here.example.net.", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN and soa_in_authority(r)
    r = server.udp("web.dev.", "A")
    assert values(r, dns.rdatatype.A) == ["198.19.4.40"]


def test_big_answer_truncated_over_udp_whole_over_tcp(server):
    full = ["198.19.6.%d" % i for i in range(1, 41)]
    r = server.udp("mirrors.example.org.", "A")  # no EDNS: 512 bytes, CoreDNS-style
    got = values(r, dns.rdatatype.A)  # truncation: as many records as fit, TC set
    assert r.flags & dns.flags.TC and 0 < len(got) < 40 and set(got) <= set(full)
    r = server.udp("mirrors.example.org.", "A", edns=True)  # dnspython offers 1232
    assert not r.flags & dns.flags.TC and len(values(r, dns.rdatatype.A)) == 40
    r = server.tcp("mirrors.example.org.", "A")
    assert values(r, dns.rdatatype.A) == sorted(full)


def test_misbehaviour_rules(server):
    server.control(op="rules", rules=[
        {"name": "legacy.default.svc.cluster.local.", "type": "AAAA", "action": "servfail"},
        {"name": "*.example.com", "type": "*", "action": "refused"},
        {"name": "pypi.org", "type": "A", "proto": "udp", "action": "truncate"},
        {"name": "files.pythonhosted.org.", "type": "A", "action": "drop"},
        {"name": "web.dev.", "type": "A", "action": "answer", "delay_ms": 1500},
    ])
    assert server.udp("legacy.default.svc.cluster.local.", "AAAA").rcode() == dns.rcode.SERVFAIL
    assert server.udp("legacy.default.svc.cluster.local.", "A").rcode() == dns.rcode.NOERROR
    assert server.udp("legacy-api.example.com.", "A").rcode() == dns.rcode.REFUSED
    r = server.udp("pypi.org.", "A", edns=True)
    assert r.flags & dns.flags.TC and not r.answer
    assert values(server.tcp("pypi.org.", "A"), dns.rdatatype.A) == ["198.19.1.1"]
    with pytest.raises(dns.exception.Timeout):
        server.udp("files.pythonhosted.org.", "A", timeout=0.5)
    with pytest.raises(dns.exception.Timeout):  # not before its delay ...
        server.udp("web.dev.", "A", timeout=0.3)
    # ... but then it does answer
    assert values(server.udp("web.dev.", "A", timeout=5), dns.rdatatype.A) == ["198.19.4.40"]
    server.control(op="rules", rules=[])
    assert server.udp("legacy.default.svc.cluster.local.", "AAAA").rcode() == dns.rcode.NOERROR


def test_environment_rules_nodata_nxdomain_labels(server):
    """The rules the lab's environments (issue 10) are made of: a node search domain answering
    NODATA (with its SOA) or NXDOMAIN for everything under it, CoreDNS's `template IN AAAA`
    (NOERROR, no records, no SOA), and single-label names failing (systemd-resolved)."""
    server.control(op="rules", rules=[
        {"name": "*.nodata.lab.example.", "action": "nodata", "soa": "nodata.lab.example."},
        {"name": "*.nx.lab.example.", "action": "nxdomain", "soa": "nx.lab.example."},
        {"name": "*.cluster.local.", "action": "answer"},
        {"name": "*", "labels": 1, "action": "servfail"},
        {"name": "*", "type": "AAAA", "action": "nodata"},
    ])
    r = server.udp("pypi.org.nodata.lab.example.", "A")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert [rr.name.to_text() for rr in r.authority
            if rr.rdtype == dns.rdatatype.SOA] == ["nodata.lab.example."]
    r = server.udp("x.y.nx.lab.example.", "AAAA")
    assert r.rcode() == dns.rcode.NXDOMAIN and soa_in_authority(r)
    assert server.udp("postgresql-primary.", "A").rcode() == dns.rcode.SERVFAIL
    assert server.udp("pypi.org.", "A").rcode() == dns.rcode.NOERROR  # two labels
    r = server.udp("pypi.org.", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer and not r.authority
    r = server.udp("nothing-here.example.net.", "AAAA")  # even a name that does not exist
    assert r.rcode() == dns.rcode.NOERROR and not r.answer and not r.authority
    # cluster names answer normally, AAAA included (the earlier rule wins)
    r = server.udp("myapp.default.svc.cluster.local.", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and soa_in_authority(r)
    with pytest.raises(AssertionError):
        server.control(op="rules", rules=[{"name": "*", "action": "bogus"}])


def test_query_log_counts_and_resets(server):
    server.control(op="reset")
    server.udp("myapp.default.svc.cluster.local.", "A")
    server.tcp("myapp.default.svc.cluster.local.", "AAAA")
    log = server.control(op="take")["log"]
    assert [(e["proto"], e["name"], e["type"], e["rcode"]) for e in log] == [
        ("udp", "myapp.default.svc.cluster.local.", "A", "NOERROR"),
        ("tcp", "myapp.default.svc.cluster.local.", "AAAA", "NOERROR"),
    ]
    assert server.control(op="log")["log"] == []
