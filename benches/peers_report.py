#!/usr/bin/env python3
"""Helper of benches/peers.sh (unpinned mode): parses one dnsperf run, and builds the report.

  peers_report.py run KEY=VALUE... DNSPERF_OUTPUT   -> one JSON object (a line) on stdout
  peers_report.py report RUNS_JSONL META_JSON OUT_JSON OUT_MD  -> table on stdout, JSON + markdown

Standard library only.
"""

import json
import re
import statistics
import sys


def num(s):
    try:
        return int(s)
    except ValueError:
        try:
            return float(s)
        except ValueError:
            return s


def parse_dnsperf(path):
    """dnsperf's summary fields and, with -v, the per-query latencies of answered queries."""
    out = {}
    lats = []
    timeouts = 0
    rcodes = {}
    pat = {
        "queries_sent": r"Queries sent:\s+(\d+)",
        "queries_completed": r"Queries completed:\s+(\d+)",
        "queries_lost": r"Queries lost:\s+(\d+)",
        "qps": r"Queries per second:\s+([\d.]+)",
        "run_time_s": r"Run time \(s\):\s+([\d.]+)",
        "dnsperf_avg_latency_s": r"Average Latency \(s\):\s+([\d.]+)",
        "dnsperf_max_latency_s": r"Average Latency \(s\):.*max ([\d.]+)",
    }
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("> "):
                # "> NOERROR host1.bench.test A 0.000146"; a timed-out query has rcode "T"
                parts = line.split()
                if len(parts) >= 3 and parts[1] != "T":
                    try:
                        lats.append(float(parts[-1]))
                    except ValueError:
                        pass
                else:
                    timeouts += 1
                continue
            for k, p in pat.items():
                m = re.search(p, line)
                if m:
                    out[k] = num(m.group(1))
            if line.strip().startswith("Response codes:"):
                for name, count in re.findall(r"([A-Z]+) (\d+)", line):
                    rcodes[name] = int(count)
    out["rcodes"] = rcodes
    if lats:
        lats.sort()
        n = len(lats)
        out["latency_samples"] = n
        out["mean_latency_us"] = round(sum(lats) / n * 1e6, 1)
        out["p50_latency_us"] = round(lats[int(0.50 * (n - 1))] * 1e6, 1)
        out["p99_latency_us"] = round(lats[int(0.99 * (n - 1))] * 1e6, 1)
        out["p999_latency_us"] = round(lats[int(0.999 * (n - 1))] * 1e6, 1)
    return out


def cmd_run(args):
    kv = {}
    for a in args[:-1]:
        k, _, v = a.partition("=")
        kv[k] = num(v)
    r = dict(kv)
    r.update(parse_dnsperf(args[-1]))
    hz = kv.get("clk_tck", 100)
    done = r.get("queries_completed") or 0
    r["ok"] = done > 0
    if "cpu_ticks" in kv:
        r["cpu_s"] = kv["cpu_ticks"] / hz
        r["cpu_us_per_query"] = round(r["cpu_s"] * 1e6 / done, 3) if done else None
    if "upstream_ticks" in kv:
        r["upstream_cpu_us_per_query"] = round(kv["upstream_ticks"] / hz * 1e6 / done, 3) if done else None
    if "dnsperf_ticks" in kv:
        r["dnsperf_cpu_us_per_query"] = round(kv["dnsperf_ticks"] / hz * 1e6 / done, 3) if done else None
    if r.get("queries_sent"):
        r["lost_pct"] = round(100.0 * r.get("queries_lost", 0) / r["queries_sent"], 3)
    print(json.dumps(r, sort_keys=True))


def cmd_show(args):
    """One line per run (a JSON object on stdin) while the benchmark runs."""
    r = json.loads(sys.stdin.read())

    def g(k, f="{:.0f}"):
        return "–" if r.get(k) is None else f.format(r[k])

    print(f"   {r['server']:8} {r['scenario']:7} {r['load']:5} r{r['round']}  qps {g('qps'):>7}"
          f"  cpu/q {g('cpu_us_per_query', '{:.2f}'):>6} us  mean {g('mean_latency_us'):>5}"
          f" p50 {g('p50_latency_us'):>5} p99 {g('p99_latency_us'):>6} us  lost {g('queries_lost')}"
          f"  rss {g('rss_end_kib')} KiB  rcvbuf drops {g('udp_rcvbuf_errors')}"
          f"  busy {g('machine_busy', '{:.2f}')}", flush=True)


def med(vals):
    vals = [v for v in vals if isinstance(v, (int, float))]
    return statistics.median(vals) if vals else None


METRICS = [
    "qps", "cpu_us_per_query", "mean_latency_us", "p50_latency_us", "p99_latency_us",
    "queries_lost", "lost_pct", "rss_end_kib", "upstream_cpu_us_per_query", "dnsperf_cpu_us_per_query",
    "udp_rcvbuf_errors", "idle_rss_kib",
]


def fmt(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, float) and v.is_integer() and nd == 0:
        return f"{int(v)}"
    return f"{v:.{nd}f}"


def cmd_report(args):
    runs_path, meta_path, out_json, out_md = args
    runs = [json.loads(line) for line in open(runs_path) if line.strip()]
    meta = json.load(open(meta_path))
    servers = meta["servers"]
    groups = {}
    for r in runs:
        if not r.get("ok"):
            continue
        groups.setdefault((r["server"], r["scenario"], r["load"]), []).append(r)
    medians = []
    M = {}
    for (srv, scen, load), rs in groups.items():
        m = {"server": srv, "scenario": scen, "load": load, "rounds": len(rs)}
        for k in METRICS:
            m[k] = med([r.get(k) for r in rs])
        spread = [r.get("cpu_us_per_query") for r in rs if r.get("cpu_us_per_query")]
        if spread and m["cpu_us_per_query"]:
            m["cpu_spread_pct"] = round(100 * (max(spread) - min(spread)) / m["cpu_us_per_query"], 1)
        m["lost_total"] = sum(r.get("queries_lost", 0) for r in rs)
        medians.append(m)
        M[(srv, scen, load)] = m

    rates = meta["rates"]
    label = {"podns": "podns", "dnsdist": "dnsdist", "unbound": "unbound", "dnsmasq": "dnsmasq",
             "echo": "recvmmsg echo (floor)"}
    lines = []
    head = "| path, rate | " + " | ".join(label.get(s, s) for s in servers) + " |"
    lines.append(head)
    lines.append("|---|" + "---|" * len(servers))

    def row(title, scen, load, key, nd=1, suffix=""):
        cells = []
        for s in servers:
            m = M.get((s, scen, load))
            v = m.get(key) if m else None
            cells.append(fmt(v, nd) + (suffix if v is not None else ""))
        if all(c == "–" for c in cells):
            return
        lines.append(f"| {title} | " + " | ".join(cells) + " |")

    for scen, name in (("forward", "forward"), ("hit", "cache hit")):
        if not any(k[1] == scen for k in M):
            continue
        r = rates.get(scen)
        rk = f"{r // 1000}k" if r else "?"
        t = f"{name}, {rk} q/s"
        row(f"{t}: CPU µs/query", scen, "fixed", "cpu_us_per_query", 2)
        row(f"{t}: qps reached", scen, "fixed", "qps", 0)
        row(f"{t}: mean latency µs", scen, "fixed", "mean_latency_us", 0)
        row(f"{t}: p50 latency µs", scen, "fixed", "p50_latency_us", 0)
        row(f"{t}: p99 latency µs", scen, "fixed", "p99_latency_us", 0)
        row(f"{t}: lost queries (median of runs)", scen, "fixed", "queries_lost", 0)
        row(f"{t}: RSS at end, KiB", scen, "fixed", "rss_end_kib", 0)
        row(f"{name}, saturation: qps", scen, "sat", "qps", 0)
        row(f"{name}, saturation: lost %", scen, "sat", "lost_pct", 2)
        row(f"{name}, saturation: CPU µs/query", scen, "sat", "cpu_us_per_query", 2)
        row(f"{name}: idle RSS after start, KiB", scen, "fixed", "idle_rss_kib", 0)

    fp = meta.get("footprint") or {}
    targets = []

    def get(s, scen, load, k):
        m = M.get((s, scen, load))
        return m.get(k) if m else None

    def check(desc, val, limit, le=True):
        if val is None or limit is None:
            targets.append(f"| {desc} | – | – | not measured |")
            return
        ok = val <= limit if le else val >= limit
        targets.append(f"| {desc} | {val:.2f} | {limit:.2f} | {'met' if ok else 'MISSED by ' + f'{(val / limit - 1) * 100:.0f} %' if limit else 'MISSED'} |")

    pf = get("podns", "forward", "fixed", "cpu_us_per_query")
    df = get("dnsdist", "forward", "fixed", "cpu_us_per_query")
    if pf is not None or df is not None:
        check("forward: podns CPU/query ≤ 0.8 × dnsdist", pf, 0.8 * df if df else None)
        check("forward: podns mean latency ≤ dnsdist (µs)", get("podns", "forward", "fixed", "mean_latency_us"),
              get("dnsdist", "forward", "fixed", "mean_latency_us"))
        check("forward: podns p99 latency ≤ dnsdist (µs)", get("podns", "forward", "fixed", "p99_latency_us"),
              get("dnsdist", "forward", "fixed", "p99_latency_us"))
        pl = sum(r.get("queries_lost", 0) for r in groups.get(("podns", "forward", "fixed"), []))
        dl = sum(r.get("queries_lost", 0) for r in groups.get(("dnsdist", "forward", "fixed"), []))
        if groups.get(("podns", "forward", "fixed")) and groups.get(("dnsdist", "forward", "fixed")):
            targets.append(f"| forward: podns lost ≤ dnsdist lost (all rounds) | {pl} | {dl} | {'met' if pl <= dl else 'MISSED'} |")
    ph = get("podns", "hit", "fixed", "cpu_us_per_query")
    peers = [get(s, "hit", "fixed", "cpu_us_per_query") for s in ("dnsdist", "unbound", "dnsmasq")]
    peers = [p for p in peers if p]
    if ph is not None:
        check("cache hit: podns CPU/query ≤ 0.8 × best peer", ph, 0.8 * min(peers) if peers else None)
        eh = get("echo", "hit", "fixed", "cpu_us_per_query")
        check("cache hit: podns CPU/query ≤ 1.2 × echo floor", ph, 1.2 * eh if eh else None)
    if fp:
        if fp.get("idle_rss_kib"):
            check("idle RSS ≤ 8 MiB (KiB)", float(fp["idle_rss_kib"]), 8192.0)
        if fp.get("rss_after_names_kib"):
            check(f"RSS after {fp.get('names')} distinct names ≤ 16 MiB (KiB)", float(fp["rss_after_names_kib"]), 16384.0)
        if fp.get("idle_syscalls") is not None:
            check("system calls in 10 s idle (fresh start)", float(fp["idle_syscalls"]), 0.0)
        if fp.get("idle_syscalls_after_traffic") is not None:
            check("system calls in 10 s idle (after the names)", float(fp["idle_syscalls_after_traffic"]), 0.0)

    md = "\n".join(lines)
    if targets:
        md += "\n\nissue 12's targets for podns (from this run):\n\n| target | podns | limit | |\n|---|---:|---:|---|\n" + "\n".join(targets)
    print(md)
    with open(out_md, "w") as f:
        f.write(md + "\n")
    meta["runs"] = runs
    meta["medians"] = medians
    with open(out_json, "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "report", "show"):
        sys.exit(__doc__)
    {"run": cmd_run, "report": cmd_report, "show": cmd_show}[sys.argv[1]](sys.argv[2:])
