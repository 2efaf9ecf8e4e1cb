#!/usr/bin/env bash
# Soak: podns at a fixed query rate for a long time in front of a misbehaving upstream, to show
# that memory and file descriptors plateau and that nothing a healthy upstream answers is lost.
# A benchmark, not a test: it asserts nothing, it measures and writes a table.
#
# Needs: dnsperf (apt-get install -y dnsperf), python3, a built podns.
# Run from the repository root:
#   bash benches/soak.sh                              # 10 minutes at 500 q/s
#   DURATION=240 bash benches/soak.sh                 # a shorter run
# Settings (environment): DURATION (600 s), RATE (500 q/s), INTERVAL (30 s per sample),
#   PODNS_BIN (target/release/podns, else target/debug/podns), PORT (25450: podns; +1 upstream,
#   +2 metrics; all on 127.0.0.1), OUT (benches/RESULTS.md; "-" for stdout only).
#
# The upstream (benches/soak_upstream.py) misbehaves by name: of the 1000 query names, 84 % are
# answered (TTL 0, so podns never caches them and every query is forwarded), 5 % are truncated
# over UDP and answered over TCP (podns's TCP fallback), 5 % get SERVFAIL, 5 % are dropped, and
# 1 % are truncated over UDP and stall half-way through the TCP reply (the connection then says
# nothing more). Expected client outcome: NOERROR for 90 % (the stalled ones get the truncated
# reply, TC set, which tells a client to retry over TCP itself), SERVFAIL for the 10 % that no
# upstream answers, nothing lost.
#
# dnsperf runs INTERVAL seconds at a time, back to back; after each run the script samples
# podns's RSS and open file descriptors (/proc) and a few of its metrics, and the upstream's
# counters. The table goes to stdout and, as a dated section, to the end of $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-600}
RATE=${RATE:-500}
INTERVAL=${INTERVAL:-30}
PORT=${PORT:-25450}
OUT=${OUT:-benches/RESULTS.md}
if [[ -z "${PODNS_BIN:-}" ]]; then
  PODNS_BIN=target/release/podns
  [[ -x $PODNS_BIN ]] || PODNS_BIN=target/debug/podns
fi
command -v dnsperf >/dev/null || { echo "dnsperf missing: apt-get install -y dnsperf" >&2; exit 1; }
[[ -x $PODNS_BIN ]] || { echo "no podns binary at $PODNS_BIN: cargo build --release" >&2; exit 1; }

UP_PORT=$((PORT + 1))
METRICS_PORT=$((PORT + 2))
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

for i in $(seq 0 999); do
  case $((i % 100)) in
    [0-4]) kind=tc ;;
    [5-9]) kind=sf ;;
    1[0-4]) kind=drop ;;
    15) kind=stall ;;
    *) kind=ok ;;
  esac
  echo "$kind-$i.soak.test A"
done >"$WORK/queries"

python3 benches/soak_upstream.py --port "$UP_PORT" --stats "$WORK/upstream.json" >"$WORK/upstream.log" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
for _ in $(seq 50); do grep -q ready "$WORK/upstream.log" 2>/dev/null && break; sleep 0.1; done

"$PODNS_BIN" --listen "127.0.0.1:$PORT" --upstream "127.0.0.1:$UP_PORT" \
  --metrics-listen "127.0.0.1:$METRICS_PORT" --resolv-conf /dev/null --log-level warn \
  >"$WORK/podns.log" 2>&1 &
PODNS_PID=$!
PIDS+=("$PODNS_PID")
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$METRICS_PORT/health" >/dev/null 2>&1 && break
  sleep 0.1
done

metric() { # sum of a metric's samples whose line matches $2
  curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | grep "^$1" | grep -- "${2:-}" |
    awk '{s += $NF} END {printf "%d", s}'
}
field() { # a number from dnsperf's output: field "Queries sent:" file
  grep -m1 "$1" "$2" | awk -v k="$1" '{sub(k, ""); print $1}'
}
rcode() { # count of one rcode in dnsperf's "Response codes:" line
  grep -m1 "Response codes:" "$2" | grep -o "$1 [0-9]*" | awk '{print $2}' | head -1
}

HEADER="| t (s) | sent | completed | lost | NOERROR | SERVFAIL | RSS (KiB) | fds | TCP fallbacks | upstream malformed/timeout/closed |"
RULE="|---|---|---|---|---|---|---|---|---|---|"
ROWS=()
TOTAL_SENT=0 TOTAL_LOST=0 TOTAL_NOERROR=0 TOTAL_SERVFAIL=0
rss() { awk '/VmRSS/ {print $2}' "/proc/$PODNS_PID/status"; }
fds() { ls "/proc/$PODNS_PID/fd" | wc -l; }
START_RSS=$(rss) START_FDS=$(fds)
echo "podns pid $PODNS_PID ($PODNS_BIN), start RSS ${START_RSS} KiB, ${START_FDS} fds" >&2
echo "$HEADER"
echo "$RULE"
elapsed=0
while ((elapsed < DURATION)); do
  len=$((DURATION - elapsed < INTERVAL ? DURATION - elapsed : INTERVAL))
  dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries" -Q "$RATE" -l "$len" -q 2000 -t 5 >"$WORK/perf" 2>&1 || true
  elapsed=$((elapsed + len))
  sent=$(field "Queries sent:" "$WORK/perf")
  completed=$(field "Queries completed:" "$WORK/perf")
  lost=$(field "Queries lost:" "$WORK/perf")
  noerror=$(rcode NOERROR "$WORK/perf")
  servfail=$(rcode SERVFAIL "$WORK/perf")
  TOTAL_SENT=$((TOTAL_SENT + ${sent:-0}))
  TOTAL_LOST=$((TOTAL_LOST + ${lost:-0}))
  TOTAL_NOERROR=$((TOTAL_NOERROR + ${noerror:-0}))
  TOTAL_SERVFAIL=$((TOTAL_SERVFAIL + ${servfail:-0}))
  errs="$(metric podns_upstream_errors_total 'reason="malformed"')/$(metric podns_upstream_errors_total 'reason="timeout"')/$(metric podns_upstream_errors_total 'reason="closed"')"
  row="| $elapsed | ${sent:-?} | ${completed:-?} | ${lost:-?} | ${noerror:-0} | ${servfail:-0} | $(rss) | $(fds) | $(metric podns_upstream_tcp_fallback_total) | $errs |"
  ROWS+=("$row")
  echo "$row"
done
kill -USR1 "$UP_PID"
sleep 0.5
UPSTREAM=$(cat "$WORK/upstream.json" 2>/dev/null || echo '{}')
END_RSS=$(rss) END_FDS=$(fds)
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", 100 * a / b; else print "-" }'; }
SUMMARY="Totals: $TOTAL_SENT sent, $TOTAL_LOST lost, NOERROR $(pct "$TOTAL_NOERROR" "$TOTAL_SENT") % (expected 90 %), SERVFAIL $(pct "$TOTAL_SERVFAIL" "$TOTAL_SENT") % (expected 10 %). RSS ${START_RSS} → ${END_RSS} KiB, fds ${START_FDS} → ${END_FDS}. Upstream counters: \`$UPSTREAM\`."
echo "$SUMMARY"
if grep -qiE "panic|error" "$WORK/podns.log"; then
  echo "podns log:" >&2
  cat "$WORK/podns.log" >&2
fi

if [[ "$OUT" != "-" ]]; then
  {
    echo
    echo "## Soak"
    echo
    echo "Run of $(date -u '+%Y-%m-%d %H:%M UTC'), podns $(git rev-parse --short HEAD 2>/dev/null || echo '?')."
    echo
    echo "\`DURATION=$DURATION RATE=$RATE INTERVAL=$INTERVAL PODNS_BIN=$PODNS_BIN bash benches/soak.sh\` on $(nproc) shared cores;"
    echo "upstream: \`benches/soak_upstream.py\` (84 % answered, 5 % TC→TCP, 5 % SERVFAIL, 5 % dropped,"
    echo "1 % TC then a TCP reply stalled half-way). Cumulative columns: TCP fallbacks and upstream errors."
    echo
    echo "$HEADER"
    echo "$RULE"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "$SUMMARY"
  } >>"$OUT"
fi
