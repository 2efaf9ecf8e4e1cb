#!/usr/bin/env python3
"""Stand-in cluster DNS for the pod lab.

Answers the way CoreDNS (kubernetes plugin + forward) answers inside a
cluster whose domain is ``cluster.local``:

* ``<svc>.<ns>.svc.cluster.local``            A = ClusterIP (or every pod IP of a
                                               headless service), AAAA = NODATA+SOA
                                               (IPv4-only services), SRV per port
* ``<host>.<svc>.<ns>.svc.cluster.local``     A of a headless service's pod
* ``_<port>._<proto>.<svc>.<ns>.svc...``      SRV of one named port
* ``<a-b-c-d>.<ns>.pod.cluster.local``        A a.b.c.d
* ``<ns>.svc.cluster.local``                  NODATA+SOA if the namespace exists,
                                               NXDOMAIN+SOA if not
* ``cluster.local``                           SOA, NS; other types NODATA
* any other ``*.cluster.local``               NXDOMAIN+SOA

Every other name is "forwarded": it is answered from a small built-in set of
public names (``PUBLIC``) with CNAME chains followed the way a recursive
resolver does, one answer too big for 512 bytes (a UDP answer that does not
fit is truncated like CoreDNS does: the records that fit, TC set), and
NXDOMAIN+SOA for everything else.  No query ever leaves this process.

Misbehaviour per name and type is set through the control socket (``rules``):
``servfail`` (what a systemd-resolved upstream does for AAAA), ``refused``,
``drop`` (never answer), ``truncate`` (UDP answers carry TC and no records,
TCP answers normally), ``nodata`` (NOERROR, no records) and ``nxdomain``, both
with the SOA of the rule's ``soa`` zone in the authority section when it names
one (none otherwise: CoreDNS's ``template IN AAAA . { rcode NOERROR }``), and
``delay_ms`` (on any rule, also with ``answer``).
Every query received is logged; the log can be fetched and reset.

Control socket: a Unix stream socket (path given by --control), one JSON
object per line in, one JSON object per line out:
  {"op": "ping"}
  {"op": "rules", "rules": [{"name": "legacy.default.svc.cluster.local.",
                             "type": "AAAA", "proto": "*",
                             "action": "servfail", "delay_ms": 0}, ...]}
  {"op": "log"}      -> {"ok": true, "log": [entry, ...]}
  {"op": "reset"}    -> clears the log
  {"op": "take"}     -> log and clear, atomically
``name`` is an fnmatch pattern on the lower-case absolute name (trailing dot);
``type`` and ``proto`` are a type mnemonic / "udp" / "tcp" or "*"; ``labels``
(optional) matches names of exactly that many labels (1: "postgresql-primary.").
The first matching rule wins; no matching rule means "answer normally".

Unix sockets are not network-namespaced, so the harness talks to a server
running inside a namespace through a path in its own temporary directory.

Run: clusterdns.py --listen 198.18.0.10 --port 53 --control /tmp/x/ctl.sock
Prints ``ready udp=IP:PORT tcp=IP:PORT`` on stdout once every socket is bound.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import ipaddress
import json
import os
import signal
import socket
import struct
import sys
import time

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

# --------------------------------------------------------------------------
# Data: the cluster and the public names.  The tests import these to know the
# truth (which addresses a name must resolve to).

CLUSTER_DOMAIN = "cluster.local."
CLUSTER_TTL = 5  # CoreDNS kubernetes plugin default
NEGATIVE_TTL = 30
PUBLIC_TTL = 300

NAMESPACES = {"default", "kube-system", "lab", "dev"}

# (service, namespace) -> spec.  "ip": ClusterIP; "pods": headless service
# (hostname -> pod IP); "ports": [(name, proto, port)].
SERVICES = {
    ("kubernetes", "default"): {"ip": "198.18.1.1", "ports": [("https", "tcp", 443)]},
    ("myapp", "default"): {"ip": "198.18.1.20", "ports": [("http", "tcp", 80)]},
    ("legacy", "default"): {"ip": "198.18.1.21", "ports": [("http", "tcp", 80)]},
    # issue 10: pgbouncer's database, asked for by its short name (IPv4-only service)
    ("postgresql-primary", "default"): {"ip": "198.18.1.50", "ports": [("postgresql", "tcp", 5432)]},
    ("kube-dns", "kube-system"): {
        "ip": "198.18.0.10",
        "ports": [("dns", "udp", 53), ("dns-tcp", "tcp", 53), ("metrics", "tcp", 9153)],
    },
    ("backend", "lab"): {"ip": "198.18.1.30", "ports": [("grpc", "tcp", 9000)]},
    ("db", "lab"): {
        "pods": {"db-0": "198.18.3.10", "db-1": "198.18.3.11"},
        "ports": [("mysql", "tcp", 3306)],
    },
    # Namespace "dev" is also a public TLD, and web.dev exists publicly too.
    ("web", "dev"): {"ip": "198.18.1.40", "ports": [("http", "tcp", 80)]},
}

# Public zones, for the SOA of negative answers ("." when nothing closer).
PUBLIC_ZONES = [
    "pypi.org.", "pythonhosted.org.", "fastly.net.", "amazonaws.com.",
    "example.org.", "example.com.", "example.net.", "dev.", "org.", "com.", "net.",
]

# name -> list of (type, value).  A CNAME must be alone at its name.
PUBLIC = {
    "pypi.org.": [("A", "198.19.1.1"), ("AAAA", "2001:db8:1::1")],
    # 2 dots, behind a CNAME
    "files.pythonhosted.org.": [("CNAME", "dualstack.python.map.fastly.net.")],
    "dualstack.python.map.fastly.net.": [
        ("A", "198.19.2.1"), ("A", "198.19.2.2"), ("AAAA", "2001:db8:2::1"),
    ],
    # 3 dots, CNAME; 4 dots, two-step CNAME chain
    "s3.eu-west-1.amazonaws.com.": [("CNAME", "s3-r-w.eu-west-1.amazonaws.com.")],
    "bucket.s3.eu-west-1.amazonaws.com.": [("CNAME", "s3.eu-west-1.amazonaws.com.")],
    "s3-r-w.eu-west-1.amazonaws.com.": [("A", "198.19.3.1"), ("A", "198.19.3.2")],
    # the public twin of the cluster's web.dev
    "web.dev.": [("A", "198.19.4.40")],
    # external name whose AAAA the lab makes SERVFAIL
    "legacy-api.example.com.": [("A", "198.19.5.1"), ("AAAA", "2001:db8:5::1")],
    # 40 A records: about 680 bytes, too big for a plain 512-byte UDP answer
    "mirrors.example.org.": [("A", "198.19.6.%d" % i) for i in range(1, 41)],
}

SOA_MNAME = "ns.dns." + CLUSTER_DOMAIN


def cluster_soa_text():
    return "%s hostmaster.%s 1700000000 7200 1800 86400 %d" % (
        SOA_MNAME, CLUSTER_DOMAIN, NEGATIVE_TTL)


def public_soa(zone):
    return "ns1.%s hostmaster.%s 2024010101 7200 900 1209600 %d" % (
        zone if zone != "." else "root-servers.net.",
        zone if zone != "." else "nstld.verisign-grs.com.",
        NEGATIVE_TTL,
    )


# --------------------------------------------------------------------------
# Answers


class Answer:
    """What the zone logic decided, before misbehaviour and wire limits."""

    def __init__(self, rcode=dns.rcode.NOERROR, aa=False):
        self.rcode = rcode
        self.aa = aa
        self.answer = []  # list of (name, ttl, type, text)
        self.authority = []
        self.additional = []


def _lower(name: str) -> str:
    name = name.lower()
    return name if name.endswith(".") else name + "."


def _svc_fqdn(svc, ns):
    return "%s.%s.svc.%s" % (svc, ns, CLUSTER_DOMAIN)


def _service_a(name, spec, ans):
    if "ip" in spec:
        ans.answer.append((name, CLUSTER_TTL, "A", spec["ip"]))
    else:
        for ip in sorted(spec["pods"].values()):
            ans.answer.append((name, CLUSTER_TTL, "A", ip))


def _service_srv(name, svc, ns, spec, ports, ans):
    for (_pname, _proto, port) in ports:
        if "ip" in spec:
            target = _svc_fqdn(svc, ns)
            ans.answer.append((name, CLUSTER_TTL, "SRV", "0 100 %d %s" % (port, target)))
            ans.additional.append((target, CLUSTER_TTL, "A", spec["ip"]))
        else:
            for host, ip in sorted(spec["pods"].items()):
                target = "%s.%s" % (host, _svc_fqdn(svc, ns))
                ans.answer.append((name, CLUSTER_TTL, "SRV", "0 50 %d %s" % (port, target)))
                ans.additional.append((target, CLUSTER_TTL, "A", ip))


def _nodata(ans):
    ans.rcode = dns.rcode.NOERROR
    ans.authority = [(CLUSTER_DOMAIN, NEGATIVE_TTL, "SOA", cluster_soa_text())]
    return ans


def _nxdomain(ans):
    ans.rcode = dns.rcode.NXDOMAIN
    ans.authority = [(CLUSTER_DOMAIN, NEGATIVE_TTL, "SOA", cluster_soa_text())]
    return ans


def answer_cluster(name: str, qtype: str, server_ip: str) -> Answer:
    ans = Answer(aa=True)
    rel = name[: -len(CLUSTER_DOMAIN)].rstrip(".")
    labels = rel.split(".") if rel else []
    if not labels:  # the apex
        if qtype == "SOA":
            ans.answer.append((CLUSTER_DOMAIN, NEGATIVE_TTL, "SOA", cluster_soa_text()))
            return ans
        if qtype == "NS":
            ans.answer.append((CLUSTER_DOMAIN, NEGATIVE_TTL, "NS", SOA_MNAME))
            ans.additional.append((SOA_MNAME, CLUSTER_TTL, "A", server_ip))
            return ans
        return _nodata(ans)
    if labels == ["ns", "dns"]:
        if qtype == "A":
            ans.answer.append((name, CLUSTER_TTL, "A", server_ip))
            return ans
        return _nodata(ans)
    if labels in (["svc"], ["pod"], ["dns"]):
        return _nodata(ans)
    if labels[-1] == "pod" and len(labels) == 3:
        ip_label, ns = labels[0], labels[1]
        try:
            ip = str(ipaddress.IPv4Address(ip_label.replace("-", ".")))
        except ValueError:
            return _nxdomain(ans)
        if ns not in NAMESPACES:
            return _nxdomain(ans)
        if qtype == "A":
            ans.answer.append((name, CLUSTER_TTL, "A", ip))
            return ans
        return _nodata(ans)
    if labels[-1] != "svc":
        return _nxdomain(ans)
    labels = labels[:-1]
    if len(labels) == 1:  # <ns>.svc
        return _nodata(ans) if labels[0] in NAMESPACES else _nxdomain(ans)
    if len(labels) == 2:  # <svc>.<ns>.svc
        svc, ns = labels
        spec = SERVICES.get((svc, ns))
        if spec is None:
            return _nxdomain(ans)
        if qtype == "A":
            _service_a(name, spec, ans)
            return ans
        if qtype == "SRV":
            _service_srv(name, svc, ns, spec, spec["ports"], ans)
            return ans
        return _nodata(ans)  # AAAA of an IPv4 service, TXT, ...
    if len(labels) == 3:  # <host>.<svc>.<ns>.svc (headless pod)
        host, svc, ns = labels
        spec = SERVICES.get((svc, ns))
        if spec is None or host not in spec.get("pods", {}):
            return _nxdomain(ans)
        if qtype == "A":
            ans.answer.append((name, CLUSTER_TTL, "A", spec["pods"][host]))
            return ans
        return _nodata(ans)
    if len(labels) == 4 and labels[0].startswith("_") and labels[1].startswith("_"):
        port_name, proto, svc, ns = labels[0][1:], labels[1][1:], labels[2], labels[3]
        spec = SERVICES.get((svc, ns))
        if spec is None:
            return _nxdomain(ans)
        ports = [p for p in spec["ports"] if p[0] == port_name and p[1] == proto]
        if not ports:
            return _nxdomain(ans)
        if qtype == "SRV":
            _service_srv(name, svc, ns, spec, ports, ans)
            return ans
        return _nodata(ans)
    return _nxdomain(ans)


def _public_zone(name):
    best = "."
    for zone in PUBLIC_ZONES:
        if (name == zone or name.endswith("." + zone)) and len(zone) > len(best):
            best = zone
    return best


def answer_public(name: str, qtype: str) -> Answer:
    """A recursive resolver's answer from the built-in public data."""
    ans = Answer(aa=False)
    current = name
    for _ in range(8):  # CNAME chain bound
        records = PUBLIC.get(current)
        if records is None:
            # the chain (if any) ends in a name that does not exist
            ans.rcode = dns.rcode.NXDOMAIN
            zone = _public_zone(current)
            ans.authority = [(zone, NEGATIVE_TTL, "SOA", public_soa(zone))]
            return ans
        cname = [v for (t, v) in records if t == "CNAME"]
        if cname and qtype != "CNAME":
            ans.answer.append((current, PUBLIC_TTL, "CNAME", cname[0]))
            current = cname[0]
            continue
        matching = [(current, PUBLIC_TTL, t, v) for (t, v) in records if t == qtype]
        if not matching:
            zone = _public_zone(current)
            ans.authority = [(zone, NEGATIVE_TTL, "SOA", public_soa(zone))]
        ans.answer.extend(matching)
        return ans
    ans.rcode = dns.rcode.SERVFAIL  # CNAME loop
    return ans


def resolve(name: str, qtype: str, server_ip: str) -> Answer:
    name = _lower(name)
    if name == CLUSTER_DOMAIN or name.endswith("." + CLUSTER_DOMAIN):
        return answer_cluster(name, qtype, server_ip)
    return answer_public(name, qtype)


ACTIONS = ("answer", "servfail", "refused", "drop", "truncate", "nodata", "nxdomain")


def _rule_name(pattern: str) -> str:
    pattern = pattern.lower()
    if pattern != "*" and not pattern.endswith(".") and not pattern.endswith("*"):
        pattern += "."
    return pattern


def label_count(name: str) -> int:
    return len([x for x in _lower(name).split(".") if x])


def match_rule(rules, name: str, qtype: str, proto: str):
    """The first rule matching a question, or None ("answer normally")."""
    for rule in rules:
        if not fnmatch.fnmatchcase(name, _rule_name(rule.get("name", "*"))):
            continue
        rtype = rule.get("type", "*")
        if rtype != "*" and rtype.upper() != qtype:
            continue
        rproto = rule.get("proto", "*")
        if rproto != "*" and rproto != proto:
            continue
        if "labels" in rule and label_count(name) != int(rule["labels"]):
            continue
        return rule
    return None


def decide(rules, name: str, qtype: str, proto: str, server_ip: str):
    """What the server does with one question under ``rules``: (action, Answer or None,
    rcode).  Pure: the lab's tests use it to know what a client was told."""
    name = _lower(name)
    rule = match_rule(rules, name, qtype, proto)
    action = rule.get("action", "answer") if rule else "answer"
    if action == "drop":
        return action, None, None
    if action == "servfail":
        return action, None, dns.rcode.SERVFAIL
    if action == "refused":
        return action, None, dns.rcode.REFUSED
    if action in ("nodata", "nxdomain"):
        ans = Answer(aa=True)
        ans.rcode = dns.rcode.NOERROR if action == "nodata" else dns.rcode.NXDOMAIN
        zone = rule.get("soa")
        if zone:
            zone = _lower(zone)
            ans.authority = [(zone, NEGATIVE_TTL, "SOA", public_soa(zone))]
        return action, ans, ans.rcode
    ans = resolve(name, qtype, server_ip)
    return action, ans, ans.rcode


# --------------------------------------------------------------------------
# Wire


def _add_section(msg, section, records):
    for (name, ttl, rtype, text) in records:
        rrset = msg.find_rrset(section, dns.name.from_text(name), dns.rdataclass.IN,
                               dns.rdatatype.from_text(rtype), create=True)
        rrset.update_ttl(ttl)
        rrset.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text),
                  ttl)


def build_response(query: dns.message.Message, ans: Answer | None, rcode: int) -> dns.message.Message:
    resp = dns.message.make_response(query, our_payload=1232)
    resp.flags |= dns.flags.RA
    resp.set_rcode(rcode)
    if ans is not None and rcode == ans.rcode:
        if ans.aa:
            resp.flags |= dns.flags.AA
        _add_section(resp, resp.answer, ans.answer)
        _add_section(resp, resp.authority, ans.authority)
        _add_section(resp, resp.additional, ans.additional)
    return resp


def to_wire_limited(resp: dns.message.Message, limit: int, force_tc: bool) -> tuple[bytes, bool]:
    """Wire form within ``limit`` bytes, truncated the way CoreDNS does it (miekg/dns
    ``Msg.Truncate``): as many answer records as fit, authority and additional
    dropped, TC set.  ``force_tc`` (the "truncate" misbehaviour) keeps no record."""
    if not force_tc:
        try:
            return resp.to_wire(max_size=limit), False
        except dns.exception.TooBig:
            pass
    records = [] if force_tc else [(rrset, rd) for rrset in resp.answer for rd in rrset]

    def render(k):
        msg = dns.message.Message(id=resp.id)
        msg.flags = resp.flags | dns.flags.TC
        msg.set_rcode(resp.rcode())
        msg.question = list(resp.question)
        if resp.edns >= 0:
            msg.use_edns(resp.edns, resp.ednsflags, resp.payload, options=resp.options)
        for rrset, rd in records[:k]:
            msg.find_rrset(msg.answer, rrset.name, rrset.rdclass, rrset.rdtype,
                           create=True).add(rd, rrset.ttl)
        return msg.to_wire(max_size=65535)

    lo, hi = 0, len(records)  # the largest k whose rendering fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(render(mid)) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return render(lo), True


def respond_wire(query: dns.message.Message, proto: str, action: str, ans: Answer | None,
                 rcode: int) -> tuple[bytes, bool]:
    """The bytes sent for a decided answer (not for "drop"), and whether UDP truncated it."""
    resp = build_response(query, ans, rcode)
    if proto == "udp":
        limit = max(512, min(query.payload, 4096)) if query.edns >= 0 else 512
        return to_wire_limited(resp, limit, force_tc=(action == "truncate"))
    return resp.to_wire(max_size=65535), False


# --------------------------------------------------------------------------
# Server


class ClusterDNS:
    def __init__(self, server_ip: str):
        self.server_ip = server_ip
        self.rules: list[dict] = []
        self.log: list[dict] = []
        self.started = time.monotonic()

    def match_rule(self, name: str, qtype: str, proto: str):
        return match_rule(self.rules, name, qtype, proto)

    async def handle(self, data: bytes, proto: str, src) -> bytes | None:
        """Answer one message; None means send nothing."""
        received = time.monotonic()
        try:
            query = dns.message.from_wire(data)
        except Exception:  # noqa: BLE001 - anything unparsable
            self.log.append({"t": received - self.started, "proto": proto, "src": str(src),
                             "name": None, "type": None, "action": "malformed"})
            return _formerr(data)
        if not query.question:
            self.log.append({"t": received - self.started, "proto": proto, "src": str(src),
                             "name": None, "type": None, "action": "noquestion"})
            return build_response(query, None, dns.rcode.FORMERR).to_wire()
        q = query.question[0]
        name = _lower(q.name.to_text())
        qtype = dns.rdatatype.to_text(q.rdtype)
        rule = self.match_rule(name, qtype, proto)
        action, ans, rcode = decide(self.rules, name, qtype, proto, self.server_ip)
        entry = {
            "t": round(received - self.started, 6),
            "proto": proto,
            "src": "%s:%s" % (src[0], src[1]) if isinstance(src, tuple) else str(src),
            "id": query.id,
            "name": name,
            "type": qtype,
            "edns": query.edns >= 0,
            "payload": query.payload if query.edns >= 0 else None,
            "action": action,
        }
        self.log.append(entry)
        delay_ms = int(rule.get("delay_ms", 0)) if rule else 0
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000.0)
        if action == "drop":
            entry["rcode"] = None
            return None
        wire, tc = respond_wire(query, proto, action, ans, rcode)
        entry["rcode"] = dns.rcode.to_text(rcode)
        if proto == "udp":
            entry["tc"] = tc
        return wire

    # -- control -------------------------------------------------------------

    def control(self, req: dict) -> dict:
        op = req.get("op")
        if op == "ping":
            return {"ok": True}
        if op == "rules":
            rules = req.get("rules", [])
            for r in rules:
                if r.get("action", "answer") not in ACTIONS:
                    return {"ok": False, "error": "bad action %r" % r.get("action")}
            self.rules = rules
            return {"ok": True}
        if op == "log":
            return {"ok": True, "log": list(self.log)}
        if op == "reset":
            self.log = []
            return {"ok": True}
        if op == "take":
            log, self.log = self.log, []
            return {"ok": True, "log": log}
        return {"ok": False, "error": "unknown op %r" % op}


def _formerr(data: bytes) -> bytes | None:
    if len(data) < 12:
        return None
    qid, flags = struct.unpack("!HH", data[:4])
    flags = 0x8000 | (flags & 0x7900) | dns.rcode.FORMERR  # QR, keep opcode+RD
    return struct.pack("!HHHHHH", qid, flags, 0, 0, 0, 0)


class UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: ClusterDNS):
        self.server = server
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        asyncio.ensure_future(self._answer(data, addr))

    async def _answer(self, data, addr):
        wire = await self.server.handle(data, "udp", addr)
        if wire is not None and self.transport is not None:
            self.transport.sendto(wire, addr)


async def tcp_client(server: ClusterDNS, reader, writer):
    peer = writer.get_extra_info("peername")
    lock = asyncio.Lock()

    async def one(data):
        wire = await server.handle(data, "tcp", peer)
        if wire is None:
            return
        async with lock:
            writer.write(struct.pack("!H", len(wire)) + wire)
            await writer.drain()

    tasks = set()
    try:
        while True:
            head = await reader.readexactly(2)
            (length,) = struct.unpack("!H", head)
            data = await reader.readexactly(length)
            t = asyncio.ensure_future(one(data))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        for t in list(tasks):
            try:
                await t
            except Exception:  # noqa: BLE001
                pass
        writer.close()


async def control_client(server: ClusterDNS, reader, writer):
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            try:
                resp = server.control(json.loads(line))
            except Exception as e:  # noqa: BLE001
                resp = {"ok": False, "error": repr(e)}
            writer.write((json.dumps(resp) + "\n").encode())
            await writer.drain()
    finally:
        writer.close()


def _bind_pair(ip: str, port: int):
    """UDP and TCP sockets on the same port (port 0: pick a free one)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    for _ in range(50):
        u = socket.socket(family, socket.SOCK_DGRAM)
        u.bind((ip, port))
        chosen = u.getsockname()[1]
        t = socket.socket(family, socket.SOCK_STREAM)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            t.bind((ip, chosen))
        except OSError:
            u.close()
            t.close()
            if port:
                raise
            continue
        t.listen(128)
        u.setblocking(False)
        t.setblocking(False)
        return u, t, chosen
    raise OSError("no free port pair")


async def main_async(args):
    server = ClusterDNS(args.server_ip or args.listen)
    usock, tsock, port = _bind_pair(args.listen, args.port)
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: UDPProtocol(server), sock=usock)
    await asyncio.start_server(lambda r, w: tcp_client(server, r, w), sock=tsock)
    if args.control:
        if os.path.exists(args.control):
            os.unlink(args.control)
        await asyncio.start_unix_server(lambda r, w: control_client(server, r, w),
                                        path=args.control)
    if args.rules:
        with open(args.rules) as f:
            server.rules = json.load(f)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready udp=%s:%d tcp=%s:%d" % (args.listen, port, args.listen, port), flush=True)
    await stop.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--server-ip", help="address to give for ns.dns.cluster.local "
                    "(default: --listen)")
    ap.add_argument("--control", help="path of the Unix control socket")
    ap.add_argument("--rules", help="JSON file with the initial misbehaviour rules")
    args = ap.parse_args()
    try:
        asyncio.run(main_async(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
