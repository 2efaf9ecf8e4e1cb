#!/usr/bin/env python3
"""Small probes the lab runs *inside* a namespace (via `ip netns exec`).

  nshelper.py dns-probe IP NAME
      One UDP query (A, 1 s timeout, one try) to IP:53; prints the rcode.
      Exit 0 on any answer, 1 on none.
"""
import sys


def dns_probe(ip, name):
    import dns.message
    import dns.query
    import dns.rcode

    q = dns.message.make_query(name, "A")
    try:
        r = dns.query.udp(q, ip, timeout=1.0)
    except Exception as e:  # noqa: BLE001
        print("no answer from %s: %r" % (ip, e))
        return 1
    print(dns.rcode.to_text(r.rcode()))
    return 0


def main(argv):
    if len(argv) == 4 and argv[1] == "dns-probe":
        return dns_probe(argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
