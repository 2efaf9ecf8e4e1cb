#!/usr/bin/env python3
"""Pod-lab client: one c-ares ares_getaddrinfo() call through pycares.

The channel is built with no options at all, so c-ares reads the system
configuration (/etc/resolv.conf, which `ip netns exec` bind-mounts: search
list, ndots, timeout, attempts) exactly as an application using pycares or
aiodns does.  AF_UNSPEC, so both A and AAAA are asked.

Prints one JSON line:
  {"ok":..,"addresses":[..],"rc":N,"error":"ARES_E...","elapsed_ms":F,"cares":"1.x"}
and exits 0 on success, 1 on failure, 2 on usage error.
"""
import json
import socket
import sys
import threading
import time

import pycares
import pycares.errno as ares_errno


def _error_name(code):
    for attr in dir(ares_errno):
        if attr.startswith("ARES_E") and getattr(ares_errno, attr) == code:
            return attr
    return "ARES_%d" % code


def main(argv):
    if len(argv) != 2:
        print("usage: cares_client.py NAME", file=sys.stderr)
        return 2
    name = argv[1]
    done = threading.Event()
    out = {}

    def callback(result, error):
        out["result"] = result
        out["error"] = error
        done.set()

    # pycares >= 5: c-ares runs its own event thread; no options = system config
    channel = pycares.Channel()
    start = time.monotonic()
    channel.getaddrinfo(name, None, family=socket.AF_UNSPEC, callback=callback)
    # Upper bound only so a wedged library cannot hang the lab; the harness
    # has its own, larger, timeout around this process.
    finished = done.wait(60)
    elapsed_ms = (time.monotonic() - start) * 1000.0
    addresses = []
    if not finished:
        rc, err = -1, "HARNESS_TIMEOUT"
    elif out["error"]:
        rc, err = out["error"], _error_name(out["error"])
    else:
        rc, err = 0, None
        for node in out["result"].nodes:
            ip = node.addr[0]
            addresses.append(ip.decode() if isinstance(ip, bytes) else ip)
    print(json.dumps({
        "ok": rc == 0,
        "addresses": addresses,
        "rc": rc,
        "error": err,
        "elapsed_ms": round(elapsed_ms, 3),
        "cares": pycares.ARES_VERSION,
    }), flush=True)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
