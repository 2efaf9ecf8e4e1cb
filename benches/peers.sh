#!/usr/bin/env bash
# podns against dnsdist, unbound, dnsmasq and a recvmmsg echo floor: issue 12's benchmark.
#
# One command, as root on Debian, from the repository root:
#   bash benches/peers.sh                              # builds podns (release) and runs it all
#   PODNS=/path/to/podns bash benches/peers.sh         # the same against any podns binary
#   MODE=pinned bash benches/peers.sh                  # the older pinned variant (peers_pinned.sh)
# Installs what is missing (apt-get update + install: dnsperf dnsdist unbound dnsmasq-base
# bind9-dnsutils iproute2 procps strace python3; services those packages ship are not started),
# builds target/release/podns when PODNS is not given and the echo floor (an example) when
# ECHO_FLOOR is not given (cargo runs without OUT_DIR/PROFILE in its environment: build scripts
# read those, and a different value would rebuild dependencies). Never part of `cargo test`.
# The default run takes about 7 minutes.
#
# Conditions (MODE=unpinned, the headline): nothing is pinned; dnsperf, the server under test
# and the upstream share the machine's cores. dnsperf -c 4 -q 200 at a fixed rate (-Q), runs of
# 4 s, rounds interleaved across the servers (A B C D E A B C D E ...), medians of 3 rounds.
#   upstream  one unbound instance (its CPU not counted) answering from local data: 500 names
#             hostN.bench.test and, through a redirect local-zone, every name under
#             rnd.bench.test (198.18.9.9). Every server under test forwards to it.
#   podns     as deployed (--metrics-listen on 127.0.0.1, collapse and AAAA defaults, 16
#             upstream sockets, --max-inflight 4096), --cache-size 0 for forward, 8MiB for hit.
#   dnsdist   default threads (UDP: a listener and a responder thread; its CPU is the sum over
#             all its threads), packet cache only for hit, health checks on (1/s).
#   unbound   num-threads 1, a forward-zone "." to the upstream. Its cache cannot be turned off:
#             in forward every query name is distinct (q<seq>.<tag>.rnd.bench.test, a new tag
#             per round and run, answered by the upstream's redirect zone), so every query is a
#             cache miss, but unbound still stores each answer in its caches.
#   dnsmasq   cache-size=0 for forward, 10000 for hit, dns-forward-max=1000.
#   echo      the floor (benches/floor/echo_floor.rs): recvmmsg/sendmmsg batches of 32, each
#             query sent back with QR set; nothing else. Same number in both scenarios.
# Scenarios: forward at FWD_RATE (60000 q/s), all misses; hit at HIT_RATE (120000 q/s), 500
# names after two warm-up passes. Per scenario, per round, per server one fixed-rate run with
# dnsperf -v (per-query latencies: mean, p50, p99) and one saturation run (no -Q, -q
# SAT_OUTSTANDING, without -v). Per run: CPU µs/query = (utime+stime delta of the server process,
# all threads, /proc/PID/stat) / queries completed; lost queries; VmRSS at the end; idle VmRSS
# after start; kernel receive-buffer drops (/proc/net/snmp).
# Footprint (FOOTPRINT=1): a fresh podns (defaults, 8MiB cache): VmRSS idle, system calls in
# IDLE_SECONDS idle (strace -c -f), VmRSS after FOOTPRINT_NAMES distinct names queried once, and
# system calls idle again after them.
# Profile (PERF_PROFILE=1, needs perf): perf record -g of podns forwarding at FWD_RATE; top symbols.
#
# Output: the table on stdout; $OUT_DIR/peers-unpinned.json (every run, medians, settings),
# $OUT_DIR/peers-unpinned.md (the table), $OUT_DIR/profile-forward.txt with PERF_PROFILE=1.
#
# Environment (defaults): PODNS (build) ECHO_FLOOR (build) DURATION=4 ROUNDS=3 CLIENTS=4
#   OUTSTANDING=200 FWD_RATE=60000 HIT_RATE=120000 SAT_OUTSTANDING=1000 SATURATION=1
#   SERVERS="podns dnsdist unbound dnsmasq echo" SCENARIOS="forward hit" FOOTPRINT=1
#   FOOTPRINT_NAMES=20000 IDLE_SECONDS=10 PERF_PROFILE=0 PORT_BASE=25360 (10 ports from there)
#   OUT_DIR=target/bench INSTALL=1 (0: never apt-get) LATENCY=1 (0: fixed runs without -v)
#   BUSY_WAIT=0 (seconds to wait for a quiet machine first: all cores under 15 % busy)
# Traffic goes only to 127.0.0.1; every process started is stopped on exit.
set -euo pipefail

MODE=${MODE:-unpinned}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
if [[ $MODE == pinned ]]; then
  exec bash "$HERE/peers_pinned.sh" "$@"
fi
[[ $MODE == unpinned ]] || { echo "peers.sh: MODE is unpinned or pinned, not $MODE" >&2; exit 2; }

DURATION=${DURATION:-4}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-4}
OUTSTANDING=${OUTSTANDING:-200}
FWD_RATE=${FWD_RATE:-60000}
HIT_RATE=${HIT_RATE:-120000}
SAT_OUTSTANDING=${SAT_OUTSTANDING:-1000}
SATURATION=${SATURATION:-1}
SERVERS=${SERVERS:-"podns dnsdist unbound dnsmasq echo"}
SCENARIOS=${SCENARIOS:-"forward hit"}
FOOTPRINT=${FOOTPRINT:-1}
FOOTPRINT_NAMES=${FOOTPRINT_NAMES:-20000}
IDLE_SECONDS=${IDLE_SECONDS:-10}
PERF_PROFILE=${PERF_PROFILE:-0}
PORT_BASE=${PORT_BASE:-25360}
OUT_DIR=${OUT_DIR:-target/bench}
INSTALL=${INSTALL:-1}
LATENCY=${LATENCY:-1}
BUSY_WAIT=${BUSY_WAIT:-0}
NAMES=500
ADDR=127.0.0.1
COMMAND_LINE="$(for v in PODNS ECHO_FLOOR BUSY_WAIT DURATION ROUNDS CLIENTS OUTSTANDING FWD_RATE HIT_RATE SAT_OUTSTANDING SATURATION SERVERS SCENARIOS FOOTPRINT FOOTPRINT_NAMES IDLE_SECONDS PERF_PROFILE LATENCY PORT_BASE OUT_DIR; do [[ -n ${!v+x} && -n $(printenv "$v" || true) ]] && printf '%s=%q ' "$v" "$(printenv "$v")"; true; done)bash benches/peers.sh"

die() { echo "peers.sh: $*" >&2; exit 1; }
log() { echo "== $*"; }

[[ $(id -u) == 0 ]] || die "run as root (installs packages; unbound/dnsmasq drop privileges)"
cd "$REPO"

# --- tools -------------------------------------------------------------------------------
declare -A PKG=([dnsperf]=dnsperf [dnsdist]=dnsdist [unbound]=unbound [unbound-checkconf]=unbound
  [dnsmasq]=dnsmasq-base [dig]=bind9-dnsutils [ss]=iproute2 [strace]=strace [python3]=python3)
[[ $PERF_PROFILE == 1 ]] && PKG[perf]=linux-perf
missing=()
for tool in "${!PKG[@]}"; do command -v "$tool" >/dev/null || missing+=("${PKG[$tool]}"); done
if ((${#missing[@]})); then
  [[ $INSTALL == 1 ]] || die "missing packages: ${missing[*]} (INSTALL=0)"
  log "installing ${missing[*]}"
  # No package's service may start (and take port 53) while we install: policy-rc.d says no.
  made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT # also when apt-get fails
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
  if ((made_policy)); then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi

if [[ -z ${PODNS:-} ]]; then
  command -v cargo >/dev/null || die "no cargo: install Rust (rustup) or give PODNS=path"
  log "cargo build --release (podns)"
  env -u OUT_DIR -u PROFILE cargo build --release --bin podns >/dev/null
  PODNS=target/release/podns
fi
[[ -x $PODNS ]] || die "no podns binary at $PODNS"
PODNS=$(realpath "$PODNS")
if [[ " $SERVERS " == *" echo "* && -z ${ECHO_FLOOR:-} ]]; then
  command -v cargo >/dev/null || die "no cargo to build the echo floor: give ECHO_FLOOR=path or drop echo from SERVERS"
  env -u OUT_DIR -u PROFILE cargo build --release --example echo_floor >/dev/null 2>&1 || die "cargo build --release --example echo_floor failed"
  ECHO_FLOOR=target/release/examples/echo_floor
fi
[[ -z ${ECHO_FLOOR:-} ]] || ECHO_FLOOR=$(realpath "$ECHO_FLOOR")

CLK_TCK=$(getconf CLK_TCK)
UP_PORT=$PORT_BASE
declare -A PORT=([podns]=$((PORT_BASE + 1)) [dnsdist]=$((PORT_BASE + 2)) [unbound]=$((PORT_BASE + 3))
  [dnsmasq]=$((PORT_BASE + 4)) [echo]=$((PORT_BASE + 5)))
METRICS_PORT=$((PORT_BASE + 6))
FP_PORT=$((PORT_BASE + 7))
FP_METRICS_PORT=$((PORT_BASE + 8))
for p in $(seq "$PORT_BASE" $((PORT_BASE + 9))); do
  [[ -z $(ss -Hlnu "sport = :$p") && -z $(ss -Hlnt "sport = :$p") ]] || die "port $p is in use; set PORT_BASE"
done

WORK=$(mktemp -d /tmp/podns-bench.XXXXXX)
PIDS=()
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  PIDS=()
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
forget_pid() {
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
start() { # LOG CMD...: starts in the background, sets STARTED
  local logf=$1
  shift
  "$@" >"$logf" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
}

cpu_ticks() { # utime + stime of a process, all its threads
  local s
  s=$(<"/proc/$1/stat") || return 1
  s=${s##*) }
  # shellcheck disable=SC2086
  set -- $s
  echo $((${12} + ${13}))
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo null; }
udp_rcvbuf_errors() {
  awk '/^Udp:/ { if (!c) { for (i = 2; i <= NF; i++) if ($i == "RcvbufErrors") c = i } else { print $c; exit } }' /proc/net/snmp
}
busy_ticks() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat; }

# Polls (10 s at most) until port $1 answers host1.bench.test A (any reply for the echo floor).
wait_ready() {
  local port=$1 pid=$2 want=${3:-198.18.0.2} i out
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 1
    out=$(dig +time=1 +tries=1 +short @"$ADDR" -p "$port" host1.bench.test A 2>/dev/null) || out=
    if [[ $want == any ]]; then
      dig +time=1 +tries=1 @"$ADDR" -p "$port" host1.bench.test A 2>/dev/null | grep -q 'status: NOERROR' && return 0
    elif [[ $out == "$want" ]]; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# --- query files and upstream --------------------------------------------------------------
log "work directory $WORK; podns $PODNS"
awk -v n="$NAMES" 'BEGIN { for (i = 1; i <= n; i++) printf "host%d.bench.test A\n", i }' >"$WORK/hit.txt"
RUN_TAG=$(printf '%04x%04x' $RANDOM $RANDOM)
gen_unique() { # COUNT TAG FILE: distinct names under the upstream's redirect zone
  awk -v n="$1" -v t="$2" 'BEGIN { for (i = 1; i <= n; i++) printf "q%d.%s.rnd.bench.test A\n", i, t }' >"$3"
}

{
  echo 'server:'
  echo "  interface: $ADDR@$UP_PORT"
  echo '  num-threads: 1'
  echo '  do-daemonize: no'
  echo '  use-syslog: no'
  echo '  logfile: ""'
  echo '  verbosity: 0'
  echo '  chroot: ""'
  echo '  username: ""'
  echo '  pidfile: ""'
  echo "  directory: \"$WORK\""
  echo '  do-ip6: no'
  echo '  module-config: "iterator"'
  echo '  so-rcvbuf: 4m'
  echo '  so-sndbuf: 4m'
  echo '  local-zone: "test." nodefault'
  echo '  local-zone: "bench.test." static'
  echo '  local-zone: "rnd.bench.test." redirect'
  echo '  local-data: "rnd.bench.test. 3600 IN A 198.18.9.9"'
  awk -v n="$NAMES" 'BEGIN { for (i = 1; i <= n; i++) printf "  local-data: \"host%d.bench.test. 3600 IN A 198.18.%d.%d\"\n", i, int(i / 250), i % 250 + 1 }'
} >"$WORK/upstream.conf"
unbound-checkconf "$WORK/upstream.conf" >/dev/null || die "bad upstream unbound config"
log "upstream: unbound with local data on $ADDR:$UP_PORT"
start "$WORK/upstream.log" unbound -d -c "$WORK/upstream.conf"
UP_PID=$STARTED
wait_ready "$UP_PORT" "$UP_PID" || die "upstream did not answer: $(cat "$WORK/upstream.log")"

# --- servers under test ----------------------------------------------------------------------
declare -A SPID
start_server() { # NAME SCENARIO [PORT METRICS_PORT CACHE]: sets SPID[NAME]
  local name=$1 scen=$2 dir="$WORK/$1-$2" port=${3:-${PORT[$1]}}
  mkdir -p "$dir"
  case $name in
  podns)
    local cache=8MiB mport=${4:-$METRICS_PORT}
    [[ $scen == forward ]] && cache=0
    [[ -n ${5:-} ]] && cache=$5
    printf 'nameserver %s\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n' \
      "$ADDR" >"$dir/resolv.conf"
    start "$dir/log" "$PODNS" --listen "$ADDR:$port" --upstream "$ADDR:$UP_PORT" \
      --resolv-conf "$dir/resolv.conf" --metrics-listen "$ADDR:$mport" --cache-size "$cache" \
      --drain-grace 0s
    ;;
  dnsdist)
    {
      echo 'setSecurityPollSuffix("")'
      echo "setLocal(\"$ADDR:$port\")"
      echo "newServer({address=\"$ADDR:$UP_PORT\", checkName=\"host1.bench.test.\"})"
      if [[ $scen == hit ]]; then
        echo 'pc = newPacketCache(100000, {maxTTL=86400})'
        echo 'getPool(""):setCache(pc)'
      fi
    } >"$dir/dnsdist.conf"
    start "$dir/log" dnsdist --supervised --disable-syslog -C "$dir/dnsdist.conf"
    ;;
  unbound)
    {
      echo 'server:'
      echo "  interface: $ADDR@$port"
      echo '  num-threads: 1'
      echo '  do-daemonize: no'
      echo '  use-syslog: no'
      echo '  logfile: ""'
      echo '  verbosity: 1' # its query statistics (answers from cache) when it stops
      echo '  chroot: ""'
      echo '  username: ""'
      echo '  pidfile: ""'
      echo "  directory: \"$dir\""
      echo '  do-ip6: no'
      echo '  module-config: "iterator"'
      echo '  qname-minimisation: no'
      echo '  do-not-query-localhost: no'
      echo '  local-zone: "test." nodefault'
      echo 'forward-zone:'
      echo '  name: "."'
      echo "  forward-addr: $ADDR@$UP_PORT"
    } >"$dir/unbound.conf"
    unbound-checkconf "$dir/unbound.conf" >/dev/null || die "bad unbound config"
    start "$dir/log" unbound -d -c "$dir/unbound.conf"
    ;;
  dnsmasq)
    local cache=10000
    [[ $scen == forward ]] && cache=0
    start "$dir/log" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
      --no-poll --server="$ADDR#$UP_PORT" --listen-address="$ADDR" --bind-interfaces \
      --port="$port" --pid-file= --user=root --log-facility=/dev/null --cache-size="$cache" \
      --dns-forward-max=1000
    ;;
  echo)
    start "$dir/log" "$ECHO_FLOOR" "$ADDR:$port"
    ;;
  *) die "unknown server $name" ;;
  esac
  SPID[$name]=$STARTED
  local want=198.18.0.2
  [[ $name == echo ]] && want=any
  wait_ready "$port" "$STARTED" "$want" || die "$name did not become ready: $(tail -5 "$dir/log")"
}

RUNS=$WORK/runs.jsonl
: >"$RUNS"
PROBLEMS=()
declare -A IDLE_RSS

# measure SERVER SCEN LOAD ROUND FILE
measure() {
  local srv=$1 scen=$2 load=$3 round=$4 file=$5 pid=${SPID[$1]} out="$WORK/$1-$2/dnsperf-$3-$4.txt"
  local args=(-s "$ADDR" -p "${PORT[$srv]}" -d "$file" -l "$DURATION" -c "$CLIENTS" -t 2)
  local rate=$FWD_RATE
  [[ $scen == hit ]] && rate=$HIT_RATE
  if [[ $load == fixed ]]; then args+=(-Q "$rate" -q "$OUTSTANDING"); [[ $LATENCY == 1 ]] && args+=(-v); else args+=(-q "$SAT_OUTSTANDING"); rate=0; fi
  local p0 p1 u0 u1 e0 e1 b0 t0 b1 t1 d0 alive=true
  p0=$(cpu_ticks "$pid") || die "$srv is gone before $scen/$load round $round: $(tail -5 "$WORK/$srv-$scen/log")"
  u0=$(cpu_ticks "$UP_PID")
  e0=$(udp_rcvbuf_errors)
  read -r b0 t0 < <(busy_ticks)
  dnsperf "${args[@]}" >"$out" 2>&1 &
  d0=$!
  wait "$d0" || true
  p1=$(cpu_ticks "$pid") || { p1=$p0; alive=false; }
  u1=$(cpu_ticks "$UP_PID")
  e1=$(udp_rcvbuf_errors)
  read -r b1 t1 < <(busy_ticks)
  local rss
  rss=$(rss_kib "$pid")
  python3 "$HERE/peers_report.py" run server="$srv" scenario="$scen" load="$load" round="$round" \
    offered_qps="$rate" cpu_ticks=$((p1 - p0)) upstream_ticks=$((u1 - u0)) clk_tck="$CLK_TCK" \
    rss_end_kib="$rss" idle_rss_kib="${IDLE_RSS[$srv-$scen]:-0}" udp_rcvbuf_errors=$((e1 - e0)) \
    machine_busy=$(awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) 'BEGIN { printf "%.3f", t ? b / t : 0 }') \
    server_alive="$alive" "$out" >>"$RUNS"
  rm -f "$out.v"
  tail -1 "$RUNS" | python3 "$HERE/peers_report.py" show
  $alive || PROBLEMS+=("$srv $scen/$load round $round: the server exited")
  # Keep only the summary of the -v output (per-query lines are parsed already).
  grep -v '^> ' "$out" >"$out.sum" 2>/dev/null && mv "$out.sum" "$out"
}

# Other work on the machine skews every number: say how busy it was, and with BUSY_WAIT=N wait
# up to N seconds for a second in which all cores together are under 15 % busy.
sample_busy() {
  local b0 t0 b1 t1
  read -r b0 t0 < <(busy_ticks)
  sleep 1
  read -r b1 t1 < <(busy_ticks)
  BUSY=$(((b1 - b0) * 100 / (t1 - t0 > 0 ? t1 - t0 : 1)))
}
sample_busy
deadline=$((SECONDS + BUSY_WAIT))
while ((BUSY > 15 && SECONDS < deadline)); do
  log "waiting for a quiet machine: ${BUSY}% busy, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  sleep 4
  sample_busy
done
BACKGROUND="${BUSY}% of all cores busy in the second before the start, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
log "background: $BACKGROUND"

SECONDS=0
for scen in $SCENARIOS; do
  log "scenario $scen: starting $SERVERS"
  for srv in $SERVERS; do
    start_server "$srv" "$scen"
    sleep 0.5
    IDLE_RSS[$srv-$scen]=$(rss_kib "${SPID[$srv]}")
  done
  log "warm-up"
  for srv in $SERVERS; do
    if [[ $scen == hit ]]; then
      dnsperf -s "$ADDR" -p "${PORT[$srv]}" -d "$WORK/hit.txt" -n 2 -Q 20000 -t 2 >"$WORK/$srv-$scen/warmup.txt" 2>&1 || true
    else
      gen_unique $((FWD_RATE + 1000)) "w$srv$RUN_TAG" "$WORK/warm.txt"
      dnsperf -s "$ADDR" -p "${PORT[$srv]}" -d "$WORK/warm.txt" -l 1 -c "$CLIENTS" -Q "$FWD_RATE" -q "$OUTSTANDING" -t 2 >"$WORK/$srv-$scen/warmup.txt" 2>&1 || true
    fi
  done
  rm -f "$WORK/warm.txt"
  loads=fixed
  [[ $SATURATION == 1 ]] && loads="fixed sat"
  for load in $loads; do
    for round in $(seq 1 "$ROUNDS"); do
      if [[ $scen == hit ]]; then
        file=$WORK/hit.txt
      else
        # Distinct names for this round and load, more than any server answers in DURATION s;
        # the same file for every server (each has its own cache, so no name repeats within one).
        file=$WORK/fwd-$load-$round.txt
        if [[ $load == fixed ]]; then n=$((FWD_RATE * DURATION * 11 / 10 + 1000)); else n=$((DURATION * 200000)); fi
        gen_unique "$n" "$load$round$RUN_TAG" "$file"
      fi
      for srv in $SERVERS; do measure "$srv" "$scen" "$load" "$round" "$file"; done
      [[ $scen == hit ]] || rm -f "$file"
    done
  done
  for srv in $SERVERS; do
    stop_pid "${SPID[$srv]}"
    forget_pid "${SPID[$srv]}"
    if [[ $srv == unbound ]]; then
      echo "   unbound's own count ($scen): $(grep -o '[0-9]* queries, [0-9]* answers from cache, [0-9]* recursions' "$WORK/unbound-$scen/log" | tail -1)"
    fi
    if [[ $srv == podns ]] && grep -Eq 'WARN|ERROR' "$WORK/podns-$scen/log"; then
      PROBLEMS+=("podns $scen: logged $(grep -Ec 'WARN|ERROR' "$WORK/podns-$scen/log") warning/error lines")
      grep -E 'WARN|ERROR' "$WORK/podns-$scen/log" | sed -E 's/^[^ ]+ +//' | sort | uniq -c | sort -rn | head -5
    fi
  done
  log "scenario $scen done after ${SECONDS}s"
done

# --- footprint: idle RSS, idle system calls, RSS after many distinct names ---------------------
FOOT=null
if [[ $FOOTPRINT == 1 ]]; then
  log "footprint: fresh podns (8MiB cache, metrics on), $IDLE_SECONDS s idle under strace -c -f"
  mkdir -p "$WORK/podns-footprint"
  printf 'nameserver %s\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n' \
    "$ADDR" >"$WORK/podns-footprint/resolv.conf"
  start "$WORK/podns-footprint/log" "$PODNS" --listen "$ADDR:$FP_PORT" --upstream "$ADDR:$UP_PORT" \
    --resolv-conf "$WORK/podns-footprint/resolv.conf" --metrics-listen "$ADDR:$FP_METRICS_PORT" \
    --drain-grace 0s
  FP_PID=$STARTED
  # Ready = listening; no query yet, so "idle" is the state right after start.
  for _ in $(seq 1 100); do [[ -n $(ss -Hlnu "sport = :$FP_PORT") ]] && break; sleep 0.1; done
  sleep 1
  fp_idle_rss=$(rss_kib "$FP_PID")
  count_syscalls() { # PID SECONDS: system calls of all threads during SECONDS
    timeout -s INT "$2" strace -c -f -p "$1" -o "$WORK/strace.txt" >/dev/null 2>&1 || true
    awk '$NF == "total" { print ($4 ~ /^[0-9]+$/) ? $4 : $3; f = 1 } END { if (!f) print 0 }' "$WORK/strace.txt"
  }
  fp_idle_calls=$(count_syscalls "$FP_PID" "$IDLE_SECONDS")
  cp "$WORK/strace.txt" "$WORK/strace-idle.txt"
  gen_unique "$FOOTPRINT_NAMES" "fp$RUN_TAG" "$WORK/fp.txt"
  dnsperf -s "$ADDR" -p "$FP_PORT" -d "$WORK/fp.txt" -n 1 -c "$CLIENTS" -Q 20000 -q "$OUTSTANDING" -t 2 >"$WORK/fp-dnsperf.txt" 2>&1 || true
  fp_done=$(awk '/Queries completed:/ { print $3 }' "$WORK/fp-dnsperf.txt")
  sleep 2
  fp_names_rss=$(rss_kib "$FP_PID")
  fp_after_calls=$(count_syscalls "$FP_PID" "$IDLE_SECONDS")
  log "footprint: idle RSS ${fp_idle_rss} KiB, ${fp_idle_calls} system calls in ${IDLE_SECONDS}s idle; after ${fp_done:-?} of $FOOTPRINT_NAMES names: RSS ${fp_names_rss} KiB, then ${fp_after_calls} system calls in ${IDLE_SECONDS}s idle"
  if [[ $fp_after_calls != 0 ]]; then sed 's/^/     /' "$WORK/strace.txt" | head -12; fi
  stop_pid "$FP_PID"
  forget_pid "$FP_PID"
  FOOT="{\"idle_rss_kib\": $fp_idle_rss, \"idle_syscalls\": $fp_idle_calls, \"idle_seconds\": $IDLE_SECONDS, \"names\": $FOOTPRINT_NAMES, \"names_answered\": ${fp_done:-0}, \"rss_after_names_kib\": $fp_names_rss, \"idle_syscalls_after_traffic\": $fp_after_calls}"
fi

# --- profile: where podns spends its time when forwarding ----------------------------------------
if [[ $PERF_PROFILE == 1 ]]; then
  log "profile: perf record -g of podns forwarding at $FWD_RATE q/s for $DURATION s"
  start_server podns forward "${PORT[podns]}" "$METRICS_PORT"
  gen_unique $((FWD_RATE * DURATION * 12 / 10)) "prof$RUN_TAG" "$WORK/prof.txt"
  dnsperf -s "$ADDR" -p "${PORT[podns]}" -d "$WORK/prof.txt" -l $((DURATION + 1)) -c "$CLIENTS" -Q "$FWD_RATE" -q "$OUTSTANDING" -t 2 >"$WORK/prof-dnsperf.txt" 2>&1 &
  PERF_LOAD=$!
  sleep 0.5
  perf record -e cpu-clock -F 2000 -g -p "${SPID[podns]}" -o "$WORK/perf.data" -- sleep "$DURATION" >/dev/null 2>&1 || true
  wait "$PERF_LOAD" || true
  mkdir -p "$OUT_DIR"
  {
    echo "# perf record -e cpu-clock -F 2000 -g of podns ($PODNS), forward at $FWD_RATE q/s, $(date -u +%FT%TZ)"
    echo "# self time by symbol (perf report --no-children --sort dso,symbol), top 30"
    perf report -i "$WORK/perf.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null | grep -v -e '^#' -e '^$' | head -30 || true
    echo
    echo "# including children (perf report --children --sort symbol), top 30"
    perf report -i "$WORK/perf.data" --children --sort symbol --stdio -g none 2>/dev/null | grep -v -e '^#' -e '^$' | head -30 || true
  } >"$OUT_DIR/profile-forward.txt"
  stop_pid "${SPID[podns]}"
  forget_pid "${SPID[podns]}"
  log "profile: $OUT_DIR/profile-forward.txt"
  head -20 "$OUT_DIR/profile-forward.txt" || true
fi

# --- report --------------------------------------------------------------------------------------
mkdir -p "$OUT_DIR"
json_str() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'; }
PODNS_SOURCE=unknown
if head=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null); then
  changed=$(GIT_OPTIONAL_LOCKS=0 git -C "$REPO" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock | wc -l)
  PODNS_SOURCE="tree at $head, $changed file(s) under src/ or Cargo.* modified"
fi
cat >"$WORK/meta.json" <<EOF
{
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "command": "$(json_str "$COMMAND_LINE")",
  "mode": "unpinned",
  "host": {"cores": $(nproc), "cpu": "$(json_str "$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)")", "kernel": "$(uname -r)", "loadavg_at_end": "$(cut -d' ' -f1-3 /proc/loadavg)", "background_before": "$(json_str "$BACKGROUND")"},
  "podns": {"binary": "$(json_str "$PODNS")", "built": "$(date -u -r "$PODNS" +%Y-%m-%dT%H:%M:%SZ)", "source": "$(json_str "$PODNS_SOURCE")"},
  "versions": {"dnsdist": "$(dnsdist --version 2>/dev/null | head -1 | awk '{ print $2 }')", "unbound": "$(unbound -V 2>/dev/null | awk '/^Version/ { print $2 }')", "dnsmasq": "$(dnsmasq --version | head -1 | awk '{ print $3 }')", "dnsperf": "$(dnsperf -h 2>&1 | awk '/^Version/ { print $2 }')"},
  "settings": {"duration_s": $DURATION, "rounds": $ROUNDS, "clients": $CLIENTS, "outstanding": $OUTSTANDING, "sat_outstanding": $SAT_OUTSTANDING, "hit_names": $NAMES, "clk_tck": $CLK_TCK},
  "rates": {"forward": $FWD_RATE, "hit": $HIT_RATE},
  "servers": [$(printf '"%s",' $SERVERS | sed 's/,$//')],
  "footprint": $FOOT,
  "problems": [$(for p in "${PROBLEMS[@]}"; do printf '"%s",' "$(json_str "$p")"; done | sed 's/,$//')]
}
EOF
echo
log "results: medians of $ROUNDS rounds of ${DURATION}s; dnsperf -c $CLIENTS -q $OUTSTANDING -Q rate (saturation: no -Q, -q $SAT_OUTSTANDING); unpinned, $(nproc) cores"
python3 "$HERE/peers_report.py" report "$RUNS" "$WORK/meta.json" "$OUT_DIR/peers-unpinned.json" "$OUT_DIR/peers-unpinned.md"
if ((${#PROBLEMS[@]})); then
  echo
  log "problems seen"
  printf '   %s\n' "${PROBLEMS[@]}"
fi
echo
echo "command: $COMMAND_LINE"
echo "wrote $OUT_DIR/peers-unpinned.json and $OUT_DIR/peers-unpinned.md (total ${SECONDS}s)"
