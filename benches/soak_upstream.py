#!/usr/bin/env python3
"""A misbehaving upstream DNS server for benches/soak.sh, on loopback only.

Behaviour is fixed by the first label's prefix, so every query name has a known outcome:

  ok-N     A 192.0.2.1, TTL 0 (never cached: every query reaches this server)
  tc-N     over UDP: TC=1, no records; over TCP: the A record  (podns's TCP fallback)
  sf-N     SERVFAIL
  drop-N   no answer at all
  stall-N  over UDP: TC=1; over TCP: a length prefix for 100 octets, 10 of them, and then
           nothing more on that connection, which stays open (a reply stalled half-way)

Counters are written as JSON to the --stats file on SIGUSR1 and at exit. No dependencies.
"""

import argparse
import asyncio
import json
import signal
import struct
import sys

COUNTS = {
    "udp_received": 0,
    "tcp_received": 0,
    "ok_answered_udp": 0,
    "tc_truncated_udp": 0,
    "tc_answered_tcp": 0,
    "servfail": 0,
    "dropped": 0,
    "stalled_tcp": 0,
    "tcp_connections": 0,
}


def parse(q):
    """(id, flags, question bytes, first label) or None."""
    if len(q) < 12:
        return None
    qid, flags, qd = struct.unpack("!HHH", q[:6])
    if flags & 0x8000 or qd != 1:
        return None
    i = 12
    first = None
    while i < len(q):
        n = q[i]
        if n == 0:
            break
        if n & 0xC0:
            return None
        if first is None:
            first = q[i + 1 : i + 1 + n].decode("ascii", "replace").lower()
        i += 1 + n
    end = i + 5
    if end > len(q):
        return None
    return qid, flags, q[12:end], first or ""


def reply(qid, flags, question, rcode=0, tc=False, answer=False):
    f = 0x8000 | (flags & 0x0100) | 0x0080 | rcode
    if tc:
        f |= 0x0200
    an = 1 if answer else 0
    m = struct.pack("!HHHHHH", qid, f, 1, an, 0, 0) + question
    if answer:
        m += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + bytes([192, 0, 2, 1])
    return m


def kind(label):
    return label.split("-", 1)[0]


class Udp(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.t = transport

    def datagram_received(self, data, addr):
        COUNTS["udp_received"] += 1
        p = parse(data)
        if p is None:
            return
        qid, flags, question, label = p
        k = kind(label)
        if k == "ok":
            COUNTS["ok_answered_udp"] += 1
            self.t.sendto(reply(qid, flags, question, answer=True), addr)
        elif k in ("tc", "stall"):
            COUNTS["tc_truncated_udp"] += 1
            self.t.sendto(reply(qid, flags, question, tc=True), addr)
        elif k == "sf":
            COUNTS["servfail"] += 1
            self.t.sendto(reply(qid, flags, question, rcode=2), addr)
        else:
            COUNTS["dropped"] += 1


async def tcp_conn(reader, writer):
    COUNTS["tcp_connections"] += 1
    try:
        while True:
            n = struct.unpack("!H", await reader.readexactly(2))[0]
            data = await reader.readexactly(n)
            COUNTS["tcp_received"] += 1
            p = parse(data)
            if p is None:
                continue
            qid, flags, question, label = p
            k = kind(label)
            if k == "stall":
                COUNTS["stalled_tcp"] += 1
                writer.write(struct.pack("!H", 100) + struct.pack("!H", qid) + b"\x81\x80" + b"\x00" * 6)
                await writer.drain()
                await asyncio.Event().wait()  # hold the connection, answer nothing more
            if k == "drop":
                COUNTS["dropped"] += 1
                continue
            if k == "sf":
                COUNTS["servfail"] += 1
                r = reply(qid, flags, question, rcode=2)
            else:
                if k == "tc":
                    COUNTS["tc_answered_tcp"] += 1
                r = reply(qid, flags, question, answer=True)
            writer.write(struct.pack("!H", len(r)) + r)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--stats", required=True)
    a = ap.parse_args()
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", a.port))
    server = await asyncio.start_server(tcp_conn, "127.0.0.1", a.port)

    def dump():
        with open(a.stats, "w") as f:
            json.dump(COUNTS, f)

    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, dump)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()
    dump()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
