#!/usr/bin/env python3
"""Small probes the lab runs *inside* a namespace (via `ip netns exec`).

  nshelper.py http-wait URL TRIES INTERVAL_S
      GET URL until it answers 200, at most TRIES times, INTERVAL_S apart.
      Exit 0 when it did, 1 when it never did (prints the last error).
  nshelper.py dns-probe IP NAME
      One UDP query (A, 1 s timeout, one try) to IP:53; prints the rcode.
      Exit 0 on any answer, 1 on none.
"""
import sys
import time
import urllib.request


def http_wait(url, tries, interval):
    last = "no attempt"
    for i in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    print("ready after %d tries" % (i + 1))
                    return 0
                last = "HTTP %d" % resp.status
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = repr(e)
        if i + 1 < tries:
            time.sleep(interval)  # polling interval of a bounded poll
    print("not ready after %d tries: %s" % (tries, last))
    return 1


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
    if len(argv) == 5 and argv[1] == "http-wait":
        return http_wait(argv[2], int(argv[3]), float(argv[4]))
    if len(argv) == 4 and argv[1] == "dns-probe":
        return dns_probe(argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
