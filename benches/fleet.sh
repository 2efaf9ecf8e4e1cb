#!/usr/bin/env bash
# What one podns sidecar costs a fleet: CPU, memory, Prometheus series and /metrics size, idle
# and at a pod's everyday query rate. One command on a fresh Debian machine (root):
#   bash benches/fleet.sh                  # builds podns release unless PODNS=path is given
# Environment (defaults): RATE=100 (queries/s) DURATION=60 (s) IDLE=30 (s) PORT_BASE=25450
#
# podns runs as in a pod: its defaults, a kubelet-style resolv.conf for namespace "default"
# (search default.svc.cluster.local svc.cluster.local cluster.local, ndots 5), so the collapse,
# its probes and the AAAA handling do their usual work. The upstream is an unbound instance
# answering like cluster DNS from local data with CoreDNS's 30 s TTL (cluster.local: a few
# services, NXDOMAIN otherwise; a few public names), its CPU not counted. The load is what a
# getaddrinfo-heavy application sends: A and AAAA for cluster services by short and full name,
# and for public names through the search walk (the names as the stub resolver asks them).
# CPU = utime+stime of podns from /proc/PID/stat over the window; RSS = VmRSS at the end.
# Traffic goes only to 127.0.0.1; everything started is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-100}
DURATION=${DURATION:-60}
IDLE=${IDLE:-30}
PORT_BASE=${PORT_BASE:-25450}
UP_PORT=$((PORT_BASE + 1)) DNS_PORT=$((PORT_BASE + 2)) METRICS_PORT=$((PORT_BASE + 3))
log() { printf '== %s\n' "$*" >&2; }
die() { printf 'fleet.sh: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (installs packages)"
need=()
command -v dnsperf >/dev/null || need+=(dnsperf)
command -v unbound >/dev/null || need+=(unbound)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [[ -z ${PODNS:-} ]]; then
  log "building podns (release)"
  env -u OUT_DIR -u PROFILE cargo build --release --quiet
  PODNS=$PWD/target/release/podns
fi

WORK=$(mktemp -d /tmp/podns-fleet.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

{
  echo 'server:'
  echo "  interface: 127.0.0.1@$UP_PORT"
  echo '  num-threads: 1'
  echo '  do-daemonize: no'
  echo '  use-syslog: no'
  echo '  logfile: ""'
  echo '  chroot: ""'
  echo '  username: ""'
  echo '  pidfile: ""'
  echo "  directory: \"$WORK\""
  echo '  do-ip6: no'
  echo '  module-config: "iterator"'
  echo '  local-zone: "local." nodefault'
  echo '  local-zone: "cluster.local." static'
  echo '  local-data: "cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30"'
  for svc in kubernetes.default api.default db.default cache.shop; do
    echo "  local-data: \"$svc.svc.cluster.local. 30 IN A 198.18.20.$((RANDOM % 250 + 1))\""
  done
  echo '  local-data: "default.svc.cluster.local. 30 IN TXT ns"'
  echo '  local-data: "shop.svc.cluster.local. 30 IN TXT ns"'
  echo '  local-zone: "example.com." static'
  echo '  local-data: "example.com. 30 IN SOA ns.example.com. h.example.com. 1 7200 1800 86400 30"'
  for n in pypi.org files.pythonhosted.org registry.example.com api.example.com; do
    echo "  local-zone: \"$n.\" static"
    echo "  local-data: \"$n. 30 IN A 198.18.30.$((RANDOM % 250 + 1))\""
    echo "  local-data: \"$n. 30 IN AAAA 2001:db8::$((RANDOM % 250 + 1))\""
  done
} >"$WORK/upstream.conf"
unbound -d -c "$WORK/upstream.conf" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)

printf 'nameserver 127.0.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n' >"$WORK/resolv.conf"
"$PODNS" --listen "127.0.0.1:$DNS_PORT" --upstream "127.0.0.1:$UP_PORT" --metrics-listen "127.0.0.1:$METRICS_PORT" \
  --resolv-conf "$WORK/resolv.conf" >"$WORK/podns.out" 2>"$WORK/podns.log" &
PID=$!
PIDS+=($PID)
for _ in $(seq 100); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$METRICS_PORT/ready") == 200 ]] && break
  sleep 0.1
done
[[ $(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$METRICS_PORT/ready") == 200 ]] || die "podns not ready: $(cat "$WORK/podns.log")"

ticks() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$PID/status"; }
HZ=$(getconf CLK_TCK)
metrics_facts() { # series bytes
  curl -s "127.0.0.1:$METRICS_PORT/metrics" >"$WORK/metrics.txt"
  echo "$(grep -cv '^#' "$WORK/metrics.txt") $(wc -c <"$WORK/metrics.txt")"
}

log "idle for ${IDLE}s"
t0=$(ticks)
sleep "$IDLE"
idle_cpu_ms=$(( ($(ticks) - t0) * 1000 / HZ ))
idle_rss=$(rss_kib)
read -r idle_series idle_bytes < <(metrics_facts)

# What applications' stub resolvers send, as they send it: getaddrinfo of a service by short
# name walks to <svc>.<ns>.svc.cluster.local; of pypi.org, the search walk's first candidate.
{
  for svc in kubernetes.default api.default db.default cache.shop; do
    echo "$svc.svc.cluster.local A"; echo "$svc.svc.cluster.local AAAA"
  done
  for n in pypi.org files.pythonhosted.org registry.example.com api.example.com; do
    echo "$n.default.svc.cluster.local A"; echo "$n.default.svc.cluster.local AAAA"
    echo "$n A"; echo "$n AAAA"
  done
  echo "nothing-here.example.com A"
} >"$WORK/queries.txt"

log "${RATE} queries/s for ${DURATION}s"
t0=$(ticks)
dnsperf -s 127.0.0.1 -p "$DNS_PORT" -d "$WORK/queries.txt" -Q "$RATE" -l "$DURATION" -c 1 >"$WORK/dnsperf.txt" 2>&1
busy_cpu_ms=$(( ($(ticks) - t0) * 1000 / HZ ))
busy_rss=$(rss_kib)
read -r busy_series busy_bytes < <(metrics_facts)
sent=$(awk '/Queries sent:/ { print $3 }' "$WORK/dnsperf.txt")
done_q=$(awk '/Queries completed:/ { print $3 }' "$WORK/dnsperf.txt")
upstream=$(awk '/^podns_upstream_requests_total/ { s += $2 } END { print s + 0 }' "$WORK/metrics.txt")

cat <<TABLE
fleet cost of one podns ($(date -u +%Y-%m-%d), $("$PODNS" --version), $(nproc) cores)
| per pod | idle (${IDLE} s) | at ${RATE} queries/s (${DURATION} s) |
| --- | --- | --- |
| CPU | ${idle_cpu_ms} ms in ${IDLE} s ($(awk -v c="$idle_cpu_ms" -v t="$IDLE" 'BEGIN { printf "%.2f", c / t }') millicores) | ${busy_cpu_ms} ms in ${DURATION} s ($(awk -v c="$busy_cpu_ms" -v t="$DURATION" 'BEGIN { printf "%.2f", c / t }') millicores) |
| memory (RSS) | $(awk -v k="$idle_rss" 'BEGIN { printf "%.1f MiB", k / 1024 }') | $(awk -v k="$busy_rss" 'BEGIN { printf "%.1f MiB", k / 1024 }') |
| Prometheus series | ${idle_series} | ${busy_series} |
| /metrics size | $(awk -v b="$idle_bytes" 'BEGIN { printf "%.1f KiB", b / 1024 }') | $(awk -v b="$busy_bytes" 'BEGIN { printf "%.1f KiB", b / 1024 }') |
queries sent ${sent}, completed ${done_q}; podns sent ${upstream} upstream (cache, collapse and probes included)
TABLE
