#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets into fuzz/corpus/<target>/ (needs dnspython).

The seeds are a handful of realistic messages: libFuzzer mutates from them, so they only need
to reach the interesting shapes (EDNS, compression, CNAME chains, SOA denials, names in RDATA).
Output is deterministic; run `python3 fuzz/gen_corpus.py` after changing it and commit the files.
"""

import hashlib
import os
import shutil

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset

HERE = os.path.dirname(os.path.abspath(__file__))


def query(name, rdtype="A", edns=-1, dnssec=False, qid=0x1234, options=None):
    q = dns.message.make_query(name, rdtype, use_edns=edns, want_dnssec=dnssec, options=options)
    q.id = qid
    return q


def reply(q, rcode=dns.rcode.NOERROR, answer=(), authority=(), additional=()):
    r = dns.message.make_response(q)
    r.flags |= dns.flags.RA
    r.set_rcode(rcode)
    for sec, rrs in ((r.answer, answer), (r.authority, authority), (r.additional, additional)):
        for name, ttl, rdtype, *rdatas in rrs:
            sec.append(dns.rrset.from_text(name, ttl, "IN", rdtype, *rdatas))
    return r


def wire(m):
    return m.to_wire() if isinstance(m, dns.message.Message) else bytes(m)


def queries():
    out = {
        "a_plain": query("example.com."),
        "aaaa_edns_do": query("pypi.org.", "AAAA", edns=0, dnssec=True),
        "search_expansion": query("PyPI.org.default.svc.cluster.local.", "A", edns=0),
        "srv_cluster": query("_https._tcp.kubernetes.default.svc.cluster.local.", "SRV"),
        "edns_cookie": query(
            "files.pythonhosted.org.", "HTTPS", edns=0, options=[dns.edns.GenericOption(10, b"\x01" * 8)]
        ),
        "edns_v1": query("example.com.", edns=1),
        "long_labels": query(".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61]) + "."),
    }
    notify = query("cluster.local.", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    out["notify"] = notify
    raw = {
        "no_question": b"\x12\x34\x01\x00" + b"\x00" * 8,
        "two_opts": wire(query("a.", edns=0))[:11] + b"\x02" + wire(query("a.", edns=0))[12:] + b"\x00\x00\x29\x04\xd0" + b"\x00" * 6,
        "response": wire(reply(query("example.com."), answer=[("example.com.", 300, "A", "192.0.2.1")])),
    }
    return {**{k: wire(v) for k, v in out.items()}, **raw}


def replies():
    q = query("files.pythonhosted.org.", edns=0)
    out = {
        "a_compressed": reply(query("example.com."), answer=[("example.com.", 300, "A", "192.0.2.1", "192.0.2.2")]),
        "cname_chain": reply(
            q,
            answer=[
                ("files.pythonhosted.org.", 120, "CNAME", "dualstack.python.map.fastly.net."),
                ("dualstack.python.map.fastly.net.", 60, "A", "151.101.0.223"),
            ],
        ),
        "nxdomain_soa": reply(
            query("pypi.org.cluster.local.", edns=0),
            rcode=dns.rcode.NXDOMAIN,
            authority=[("cluster.local.", 30, "SOA", "ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30")],
        ),
        "nodata_soa": reply(
            query("redis.default.svc.cluster.local.", "AAAA"),
            authority=[("cluster.local.", 5, "SOA", "ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5")],
        ),
        "mx": reply(query("example.org.", "MX"), answer=[("example.org.", 3600, "MX", "10 mail.example.org.", "20 mx2.example.org.")]),
        "srv": reply(
            query("_https._tcp.kubernetes.default.svc.cluster.local.", "SRV"),
            answer=[("_https._tcp.kubernetes.default.svc.cluster.local.", 30, "SRV", "0 100 443 kubernetes.default.svc.cluster.local.")],
            additional=[("kubernetes.default.svc.cluster.local.", 30, "A", "10.96.0.1")],
        ),
        "ns_glue_edns": reply(
            query("example.net.", "NS", edns=0, dnssec=True),
            answer=[("example.net.", 86400, "NS", "a.iana-servers.net.", "b.iana-servers.net.")],
            additional=[("a.iana-servers.net.", 1800, "A", "199.43.135.53"), ("a.iana-servers.net.", 1800, "AAAA", "2001:500:8f::53")],
        ),
        "ptr": reply(query("1.0.96.10.in-addr.arpa.", "PTR"), answer=[("1.0.96.10.in-addr.arpa.", 30, "PTR", "kubernetes.default.svc.cluster.local.")]),
        "txt_aaaa_edns": reply(
            query("dns-version.cluster.local.", "TXT", edns=0),
            answer=[("dns-version.cluster.local.", 28, "TXT", '"1.1.0"')],
        ),
        "servfail": reply(query("broken.example.", edns=0), rcode=dns.rcode.SERVFAIL),
        "dname": reply(
            query("www.old.example.", edns=0),
            answer=[
                ("old.example.", 300, "DNAME", "new.example."),
                ("www.old.example.", 300, "CNAME", "www.new.example."),
                ("www.new.example.", 300, "A", "192.0.2.7"),
            ],
        ),
    }
    # The longest name there is (254 octets with 4 labels): owners compress to it.
    longest = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 60]) + "."
    out["longest_name"] = reply(query(longest, edns=0), answer=[(longest, 60, "A", "192.0.2.10", "192.0.2.11")])
    tc = reply(query("big.example."), answer=[("big.example.", 60, "A", "192.0.2.9")])
    tc.flags |= dns.flags.TC
    out["truncated"] = tc
    return {k: wire(v) for k, v in out.items()}


def names():
    """Wire names for `search` (classify), and resolv.conf texts (from_resolv_conf)."""

    def w(dotted):
        return b"".join(bytes([len(l)]) + l.encode() for l in dotted.rstrip(".").split(".") if l) + b"\x00"

    out = {
        f"name_{i}": w(n)
        for i, n in enumerate(
            [
                "pypi.org.default.svc.cluster.local",
                "pypi.org.svc.cluster.local",
                "pypi.org.cluster.local",
                "www.pypi.org.corp.example",
                "redis.default.svc.cluster.local",
                "_https._tcp.kubernetes.default.svc.cluster.local",
                "1-2-3-4.default.pod.cluster.local",
                "yandex.xn--p1ai.default.svc.cluster.local",
                "ns.dns.cluster.local",
                "*.default.svc.cluster.local",
            ]
        )
    }
    out["resolv_k8s"] = (
        b"search default.svc.cluster.local svc.cluster.local cluster.local ec2.internal\n"
        b"nameserver 10.96.0.10\noptions ndots:5\n"
    )
    out["resolv_domain_tabs"] = b"domain\tteam-a.svc.k8s.example\noptions attempts:2 ndots:-3 timeout:1\nsearch\n"
    out["resolv_custom_cd"] = b"k8s.example\nsearch team-a.svc.k8s.example svc.k8s.example k8s.example corp.example.com\noptions ndots:15\n"
    return out


def pending():
    """Length octet of the query, a mode octet (1: reply carries the ticket's ID, 2: a second
    ticket, 4: the ticket is dropped first), the query, the reply."""
    out = {}
    for name, (qname, rdtype, rname, mode) in {
        "match_case": ("WwW.Example.COM.", "A", "www.example.com.", 1),
        "wrong_type": ("www.example.com.", "A", None, 1),
        "second_ticket": ("pypi.org.", "AAAA", "pypi.org.", 3),
        "dropped": ("pypi.org.", "AAAA", "pypi.org.", 5),
        "unknown_id": ("pypi.org.", "A", "pypi.org.", 0),
    }.items():
        q = query(qname, rdtype)
        if rname is None:
            r = reply(query(qname, "AAAA"))
        else:
            r = reply(query(rname, rdtype), answer=[(rname, 60, rdtype, "192.0.2.1" if rdtype == "A" else "2001:db8::1")])
        qw = wire(q)
        out[name] = bytes([len(qw), mode]) + qw + wire(r)
    return out


def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, data in seeds.items():
        h = hashlib.sha1(data).hexdigest()[:8]
        with open(os.path.join(d, f"{name}-{h}"), "wb") as f:
            f.write(data)


def main():
    q, r = queries(), replies()
    write("admit", q)
    write("reply", r)
    write("cache", {k: r[k] for k in ("a_compressed", "cname_chain", "nxdomain_soa", "nodata_soa", "mx", "servfail", "truncated", "ns_glue_edns", "longest_name")})
    write("search", names())
    write("pending", pending())


if __name__ == "__main__":
    main()
