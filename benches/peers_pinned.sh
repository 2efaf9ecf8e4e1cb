#!/usr/bin/env bash
# The older, pinned side-by-side benchmark of podns against other caching DNS forwarders: CPU time per query and
# queries per second, each peer in front of the same local authoritative backend.
#
# Needs (Debian, run as root):
#   apt-get install -y dnsperf dnsdist unbound dnsmasq bind9-dnsutils iproute2 util-linux
#   cargo build --release            # target/release/podns
# Run from the repository root:
#   bash benches/peers_pinned.sh     (or MODE=pinned bash benches/peers.sh)
#
# What it does, per peer (podns, dnsdist, unbound, dnsmasq) and scenario:
#   hit   each peer with its cache on; a query file of $NAMES names (hostN.bench.test A), all
#         answered from the cache after a warm-up pass.
#   miss  forwarding: every query goes to the backend. podns --cache-size 0, dnsdist without a
#         packet cache, dnsmasq cache-size=0. unbound cannot turn its cache off: it gets
#         msg/rrset-cache-size 0 and cache-max-ttl 0, so nothing it stores is ever fresh (the
#         script prints unbound's own "answers from cache" count when it stops), and every query
#         name is distinct anyway (q<seq>.<tag>.rnd.bench.test, answered by a wildcard in the
#         backend). unbound still does the work of storing each answer, which the others skip.
# Each peer runs pinned to core $PEER_CPU (taskset), one worker thread where it has a choice
# (unbound num-threads 1; dnsdist defaults: UDP handled by a listener and a responder thread;
# dnsmasq and podns are single-threaded). dnsperf and the backend (dnsmasq serving a hosts file,
# its CPU not counted) share core $LOAD_CPU. For each scenario two dnsperf runs of $DURATION s:
#   fixed  a fixed offered load (-Q $RATE, at most $FIXED_OUTSTANDING outstanding) that no peer
#          should saturate: compares CPU per query at equal work.
#   max    no rate limit, $OUTSTANDING queries outstanding: the most qps this setup reaches. With a
#          fixed window, qps <= OUTSTANDING / latency: when the peer's core is not full
#          (peer_core_util well below 1), the limit was latency on the load-generator core.
# CPU per query = (utime+stime of the peer process from /proc/PID/stat, after - before, in clock
# ticks / CLK_TCK) / queries completed. qps, lost queries and average latency are dnsperf's.
# udp_rcvbuf_errors: datagrams the kernel dropped on full socket receive buffers during the run
# (/proc/net/snmp, any socket: dnsperf's, the peer's or the backend's).
# load_core_busy/peer_core_busy (/proc/stat) say how busy each core was in total during the run,
# whoever used it.
#
# Environment (defaults): DURATION=10 REPEAT=1 WARMUP=1 RATE=20000 OUTSTANDING=100 CLIENTS=4
#   FIXED_OUTSTANDING=200 NAMES=500 PEERS="podns dnsdist unbound dnsmasq" (add podns-metrics
#   for podns with its Prometheus recorder on) SCENARIOS="hit miss" LOADS="fixed max"
#   ADDR=127.0.0.1 (must be loopback) PORT_BASE=25350 PEER_CPU=1 LOAD_CPU=0 PODNS=target/release/podns
#   OUT=target/bench/results.json BUSY_WAIT=0 (seconds to wait for idle cores first)
# With REPEAT=N every peer instance is measured N times (rounds interleave the peers, so slow
# drift in background load spreads over all of them) and the table shows medians.
# The default settings take about 3 minutes. Other work on the machine skews the numbers: the
# script prints how busy each core was in the second before it starts, and per run how busy the
# peer's core was in total (peer_core_busy) next to the peer's own share (peer_core_util).
# Traffic goes only to $ADDR (loopback); every process started is stopped on exit.
set -euo pipefail

DURATION=${DURATION:-10}
REPEAT=${REPEAT:-1}
WARMUP=${WARMUP:-1}
RATE=${RATE:-20000}
OUTSTANDING=${OUTSTANDING:-100}
# Cap on outstanding queries in the fixed-rate runs: enough for the rate to hold with replies
# taking up to 10 ms (dnsperf's default, 100, is not when the load core is busy), few enough
# that a stalled process cannot overflow a default-sized (208 KiB) socket receive buffer.
FIXED_OUTSTANDING=${FIXED_OUTSTANDING:-200}
CLIENTS=${CLIENTS:-4}
NAMES=${NAMES:-500}
PEERS=${PEERS:-"podns dnsdist unbound dnsmasq"}
SCENARIOS=${SCENARIOS:-"hit miss"}
LOADS=${LOADS:-"fixed max"}
ADDR=${ADDR:-127.0.0.1}
PORT_BASE=${PORT_BASE:-25350}
PEER_CPU=${PEER_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
PODNS=${PODNS:-target/release/podns}
OUT=${OUT:-target/bench/results.json}
# Distinct names for the max-throughput forwarding run; dnsperf starts over at the top of the
# file when it runs out, which the result records as names_wrapped.
MISS_MAX_NAMES=${MISS_MAX_NAMES:-$((DURATION * 150000))}

die() { echo "peers.sh: $*" >&2; exit 1; }

[[ $ADDR =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "ADDR must be a loopback address, got $ADDR"
[[ $(id -u) == 0 ]] || die "run as root (dnsmasq/unbound/dnsdist bind and drop privileges)"
for tool in dnsperf dnsdist unbound dnsmasq dig taskset ss awk; do
  command -v "$tool" >/dev/null || die "missing $tool (see the package list at the top)"
done
[[ -x $PODNS ]] || die "no podns binary at $PODNS (cargo build --release)"
PODNS=$(realpath "$PODNS")
(( $(nproc) > PEER_CPU && $(nproc) > LOAD_CPU )) || die "need cores $LOAD_CPU and $PEER_CPU"
CLK_TCK=$(getconf CLK_TCK)

BACKEND_PORT=$PORT_BASE
PEER_PORT=$((PORT_BASE + 1))
METRICS_PORT=$((PORT_BASE + 2))
for p in "$BACKEND_PORT" "$PEER_PORT" "$METRICS_PORT"; do
  if [[ -n $(ss -Hlnu "sport = :$p") || -n $(ss -Hlnt "sport = :$p") ]]; then
    die "port $p is in use; set PORT_BASE"
  fi
done

cpu_ticks() { # utime + stime of a process, all its threads
  local s
  s=$(<"/proc/$1/stat") || return 1
  s=${s##*) }
  # shellcheck disable=SC2086
  set -- $s
  echo $((${12} + ${13}))
}

core_ticks() { # "busy total" ticks of core $1 from /proc/stat
  awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

udp_rcvbuf_errors() { # datagrams the kernel dropped for a full receive buffer (this netns)
  awk '/^Udp:/ { if (!c) { for (i = 2; i <= NF; i++) if ($i == "RcvbufErrors") c = i } else { print $c; exit } }' /proc/net/snmp
}

# Which source the podns binary is from (read-only git queries: no index refresh).
PODNS_SOURCE=unknown
REPO=$(cd "$(dirname "$0")/.." && pwd)
if head=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null); then
  changed=$(GIT_OPTIONAL_LOCKS=0 git -C "$REPO" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock | wc -l)
  PODNS_SOURCE="$head, $changed file(s) under src/ or Cargo.* modified since"
fi

# How busy each core is before we start: other work skews every number below. With
# BUSY_WAIT=N the script first waits up to N seconds for both cores to be under 15 % busy.
sample_busy() { # sets BUSY0 BUSY1 (percent over one second) and BACKGROUND
  local a0 t0 a1 t1 a0b t0b a1b t1b
  read -r a0 t0 < <(core_ticks "$LOAD_CPU")
  read -r a1 t1 < <(core_ticks "$PEER_CPU")
  sleep 1
  read -r a0b t0b < <(core_ticks "$LOAD_CPU")
  read -r a1b t1b < <(core_ticks "$PEER_CPU")
  BUSY0=$(((a0b - a0) * 100 / (t0b - t0 > 0 ? t0b - t0 : 1)))
  BUSY1=$(((a1b - a1) * 100 / (t1b - t1 > 0 ? t1b - t1 : 1)))
  BACKGROUND="core $LOAD_CPU $BUSY0%, core $PEER_CPU $BUSY1%"
}
sample_busy
BUSY_DEADLINE=$((SECONDS + ${BUSY_WAIT:-0}))
while ((BUSY0 > 15 || BUSY1 > 15)) && ((SECONDS < BUSY_DEADLINE)); do
  echo "== waiting for a quiet machine: $BACKGROUND busy"
  sleep 4
  sample_busy
done
echo "== background load in the last second: $BACKGROUND busy; loadavg $(cut -d' ' -f1-3 /proc/loadavg)"

WORK=$(mktemp -d /tmp/podns-peers.XXXXXX)
PIDS=()

stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
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

# Starts "$@" pinned to core $1 (shifted), output to log $2; sets STARTED to its PID.
start_pinned() {
  local cpu=$1 log=$2
  shift 2
  taskset -c "$cpu" "$@" >"$log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
}

forget_pid() {
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# Polls (bounded, 10 s) until $ADDR:$1 answers host1.bench.test A with the backend's address;
# fails if process $2 exits first.
wait_ready() {
  local port=$1 pid=$2 i
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ $(dig +time=1 +tries=1 +short @"$ADDR" -p "$port" host1.bench.test A 2>/dev/null) == 198.18.0.2 ]]; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# --- query files and backend -------------------------------------------------------------

echo "== preparing query files in $WORK"
awk -v n="$NAMES" 'BEGIN { for (i = 1; i <= n; i++) printf "198.18.%d.%d host%d.bench.test\n", int(i / 250), i % 250 + 1, i }' >"$WORK/hosts"
awk -v n="$NAMES" 'BEGIN { for (i = 1; i <= n; i++) printf "host%d.bench.test A\n", i }' >"$WORK/hit.txt"
RUN_TAG=$(printf '%04x%04x' $RANDOM $RANDOM)
# Miss files: one per use so that no name repeats within one peer instance.
gen_miss() { # count tag file
  awk -v n="$1" -v t="$2" 'BEGIN { for (i = 1; i <= n; i++) printf "q%d.%s.rnd.bench.test A\n", i, t }' >"$3"
}
gen_miss $((WARMUP * RATE + 1000)) "w$RUN_TAG" "$WORK/miss-warm.txt"
gen_miss $((DURATION * RATE * 11 / 10 + 1000)) "f$RUN_TAG" "$WORK/miss-fixed.txt"
gen_miss "$MISS_MAX_NAMES" "m$RUN_TAG" "$WORK/miss-max.txt"

echo "== starting backend (dnsmasq, core $LOAD_CPU) on $ADDR:$BACKEND_PORT"
start_pinned "$LOAD_CPU" "$WORK/backend.log" dnsmasq --keep-in-foreground --conf-file=/dev/null \
  --no-resolv --no-hosts --no-poll --addn-hosts="$WORK/hosts" \
  --address=/rnd.bench.test/198.18.9.9 --local=/cluster.local/ --local-ttl=3600 \
  --listen-address="$ADDR" --bind-interfaces --port="$BACKEND_PORT" --pid-file= --user=root \
  --log-facility=/dev/null --cache-size=10000 --dns-forward-max=10000
BACKEND_PID=$STARTED
wait_ready "$BACKEND_PORT" "$BACKEND_PID" || die "backend did not answer: $(cat "$WORK/backend.log")"

# --- peers -------------------------------------------------------------------------------

# start_peer NAME SCENARIO: writes its config, starts it pinned, sets PEER_PID and PEER_COMM.
start_peer() {
  local name=$1 scen=$2 dir="$WORK/$1-$2"
  mkdir -p "$dir"
  case $name in
  podns | podns-metrics)
    local cache=8MiB metrics=off
    [[ $scen == miss ]] && cache=0
    [[ $name == podns-metrics ]] && metrics="$ADDR:$METRICS_PORT"
    printf 'nameserver %s\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n' \
      "$ADDR" >"$dir/resolv.conf"
    start_pinned "$PEER_CPU" "$dir/log" "$PODNS" --listen "$ADDR:$PEER_PORT" \
      --upstream "$ADDR:$BACKEND_PORT" --resolv-conf "$dir/resolv.conf" \
      --metrics-listen "$metrics" --cache-size "$cache" --collapse off --aaaa forward \
      --drain-grace 0s
    PEER_COMM=podns
    ;;
  dnsdist)
    {
      echo 'setSecurityPollSuffix("")' # no security-status lookups leave the machine
      echo "setLocal(\"$ADDR:$PEER_PORT\")"
      echo "newServer({address=\"$ADDR:$BACKEND_PORT\", checkName=\"host1.bench.test.\"})"
      if [[ $scen == hit ]]; then
        echo 'pc = newPacketCache(100000, {maxTTL=86400})'
        echo 'getPool(""):setCache(pc)'
      fi
    } >"$dir/dnsdist.conf"
    start_pinned "$PEER_CPU" "$dir/log" dnsdist --supervised --disable-syslog -C "$dir/dnsdist.conf"
    PEER_COMM=dnsdist
    ;;
  unbound)
    {
      echo 'server:'
      echo "  interface: $ADDR@$PEER_PORT"
      echo '  num-threads: 1'
      echo '  do-daemonize: no'
      echo '  use-syslog: no'
      echo '  logfile: ""'
      echo '  verbosity: 1' # prints its query statistics (answers from cache) when it stops
      echo '  chroot: ""'
      echo '  username: ""'
      echo '  pidfile: ""'
      echo "  directory: \"$dir\""
      echo '  do-ip6: no'
      echo '  module-config: "iterator"'
      echo '  do-not-query-localhost: no'
      echo '  local-zone: "test." nodefault'
      if [[ $scen == miss ]]; then
        echo '  msg-cache-size: 0'
        echo '  rrset-cache-size: 0'
        echo '  cache-max-ttl: 0'
        echo '  cache-max-negative-ttl: 0'
      fi
      echo 'forward-zone:'
      echo '  name: "."'
      echo "  forward-addr: $ADDR@$BACKEND_PORT"
    } >"$dir/unbound.conf"
    unbound-checkconf "$dir/unbound.conf" >/dev/null || die "bad unbound config"
    start_pinned "$PEER_CPU" "$dir/log" unbound -d -c "$dir/unbound.conf"
    PEER_COMM=unbound
    ;;
  dnsmasq)
    local cache=10000
    [[ $scen == miss ]] && cache=0
    start_pinned "$PEER_CPU" "$dir/log" dnsmasq --keep-in-foreground --conf-file=/dev/null \
      --no-resolv --no-hosts --no-poll --server="$ADDR#$BACKEND_PORT" \
      --listen-address="$ADDR" --bind-interfaces --port="$PEER_PORT" --pid-file= --user=root \
      --log-facility=/dev/null --cache-size="$cache" --dns-forward-max=1000
    PEER_COMM=dnsmasq
    ;;
  *) die "unknown peer $name" ;;
  esac
  PEER_PID=$STARTED
  PEER_DIR=$dir
}

# run_dnsperf FILE LOAD OUTFILE: one measured dnsperf run against the peer, pinned to LOAD_CPU.
run_dnsperf() {
  local file=$1 load=$2 out=$3 limit
  if [[ $load == fixed ]]; then limit=(-Q "$RATE" -q "$FIXED_OUTSTANDING"); else limit=(-q "$OUTSTANDING"); fi
  taskset -c "$LOAD_CPU" dnsperf -s "$ADDR" -p "$PEER_PORT" -d "$file" -l "$DURATION" \
    -c "$CLIENTS" -t 1 "${limit[@]}" >"$out" 2>&1 || true
}

field() { # dnsperf output field
  awk -v k="$2" 'index($0, k) { sub(/^[^:]*:[ \t]*/, ""); split($0, a, /[ \t(]+/); print a[1]; exit }' "$1"
}

RUNS_JSON=$WORK/runs.jsonl   # one JSON object per measured run
ROWS_FILE=$WORK/rows         # "peer scen load round qps cpu_us lost lat_us util alive"
: >"$RUNS_JSON"
: >"$ROWS_FILE"
PROBLEMS=()

# measure_peer PEER SCEN ROUND: one fresh instance of the peer, warm-up, then each load.
measure_peer() {
  local peer=$1 scen=$2 round=$3 comm affinity load file out alive
  local c0b c0t c1b c1t c0b2 c0t2 c1b2 c1t2 p0 p1 b0 b1 u0 u1
  local sent done_q lost qps runtime lat rcodes noerror lines wrapped cpu_s cpu_us util c0 c1 bcpu_us lat_us
  echo "== $peer / $scen (round $round)"
  start_peer "$peer" "$scen"
  if ! wait_ready "$PEER_PORT" "$PEER_PID"; then
    PROBLEMS+=("$peer/$scen round $round: did not become ready")
    echo "!! $peer did not become ready; log:" >&2
    tail -20 "$PEER_DIR/log" >&2 || true
    stop_pid "$PEER_PID"
    forget_pid "$PEER_PID"
    return 0
  fi
  comm=$(<"/proc/$PEER_PID/comm")
  [[ $comm == "$PEER_COMM"* ]] || die "PID $PEER_PID is $comm, not $PEER_COMM"
  affinity=$(taskset -pc "$PEER_PID" | awk '{ print $NF }')
  # Warm-up: hit fills the cache (two passes over the names); miss runs the forwarding path.
  if [[ $scen == hit ]]; then
    taskset -c "$LOAD_CPU" dnsperf -s "$ADDR" -p "$PEER_PORT" -d "$WORK/hit.txt" -n 2 \
      -Q "$RATE" -t 1 >"$PEER_DIR/warmup.txt" 2>&1 || true
  else
    taskset -c "$LOAD_CPU" dnsperf -s "$ADDR" -p "$PEER_PORT" -d "$WORK/miss-warm.txt" \
      -l "$WARMUP" -Q "$RATE" -t 1 >"$PEER_DIR/warmup.txt" 2>&1 || true
  fi
  for load in $LOADS; do
    if [[ $scen == hit ]]; then file=$WORK/hit.txt; else file=$WORK/miss-$load.txt; fi
    out=$PEER_DIR/dnsperf-$load-$round.txt
    read -r c0b c0t < <(core_ticks "$LOAD_CPU")
    read -r c1b c1t < <(core_ticks "$PEER_CPU")
    p0=$(cpu_ticks "$PEER_PID") || p0=
    b0=$(cpu_ticks "$BACKEND_PID")
    u0=$(udp_rcvbuf_errors)
    run_dnsperf "$file" "$load" "$out"
    p1=$(cpu_ticks "$PEER_PID") || p1=
    b1=$(cpu_ticks "$BACKEND_PID")
    u1=$(udp_rcvbuf_errors)
    read -r c0b2 c0t2 < <(core_ticks "$LOAD_CPU")
    read -r c1b2 c1t2 < <(core_ticks "$PEER_CPU")
    alive=true
    kill -0 "$PEER_PID" 2>/dev/null || alive=false
    sent=$(field "$out" "Queries sent:")
    done_q=$(field "$out" "Queries completed:")
    lost=$(field "$out" "Queries lost:")
    qps=$(field "$out" "Queries per second:")
    runtime=$(field "$out" "Run time (s):")
    lat=$(field "$out" "Average Latency (s):")
    rcodes=$(awk -F': *' '/Response codes:/ { print $2 }' "$out")
    noerror=$(awk '/Response codes:/ { for (i = 1; i <= NF; i++) if ($i == "NOERROR") print $(i + 1) }' "$out")
    lines=$(wc -l <"$file")
    wrapped=false
    [[ $scen == miss && -n $sent ]] && ((sent > lines)) && wrapped=true
    if [[ -z $done_q || -z $p0 || -z $p1 ]]; then
      PROBLEMS+=("$peer/$scen/$load round $round: no result (alive: $alive)")
      echo "!! $peer/$scen/$load: no result (peer alive: $alive)" >&2
      tail -20 "$out" >&2 || true
      echo "{\"peer\":\"$peer\",\"scenario\":\"$scen\",\"load\":\"$load\",\"round\":$round,\"ok\":false,\"peer_alive\":$alive}" >>"$RUNS_JSON"
      continue
    fi
    read -r cpu_s cpu_us util c0 c1 bcpu_us lat_us < <(awk -v p="$((p1 - p0))" -v b="$((b1 - b0))" \
      -v hz="$CLK_TCK" -v n="$done_q" -v rt="$runtime" -v lat="$lat" \
      -v c0="$((c0b2 - c0b))" -v c0t="$((c0t2 - c0t))" -v c1="$((c1b2 - c1b))" -v c1t="$((c1t2 - c1t))" \
      'BEGIN { s = p / hz; printf "%.3f %.3f %.3f %.3f %.3f %.3f %.1f\n", s, n ? s * 1e6 / n : 0,
        rt ? s / rt : 0, c0t ? c0 / c0t : 0, c1t ? c1 / c1t : 0, n ? b / hz * 1e6 / n : 0, lat * 1e6 }')
    printf '   %-6s qps %8.0f  cpu/query %6.2f us  peer core %5.1f%%  lost %s  avg latency %s us  rcodes %s\n' \
      "$load" "$qps" "$cpu_us" "$(awk -v u="$util" 'BEGIN { print u * 100 }')" "$lost" "$lat_us" "$rcodes"
    ((u1 > u0)) && echo "          kernel dropped $((u1 - u0)) UDP datagrams on full receive buffers (any socket)"
    if ! $alive; then
      PROBLEMS+=("$peer/$scen/$load round $round: the peer exited during the run")
      echo "!! $peer exited during the $scen/$load run" >&2
    fi
    if ((lost > 0)) || [[ ${noerror:-0} != "$done_q" ]]; then
      PROBLEMS+=("$peer/$scen/$load round $round: sent $sent, completed $done_q, lost $lost, rcodes $rcodes")
    fi
    echo "{\"peer\":\"$peer\",\"scenario\":\"$scen\",\"load\":\"$load\",\"round\":$round,\"ok\":true,\"peer_alive\":$alive,\"offered_qps\":$([[ $load == fixed ]] && echo "$RATE" || echo null),\"queries_sent\":$sent,\"queries_completed\":$done_q,\"queries_lost\":$lost,\"noerror\":${noerror:-0},\"qps\":$qps,\"run_time_s\":$runtime,\"avg_latency_us\":$lat_us,\"peer_cpu_s\":$cpu_s,\"cpu_us_per_query\":$cpu_us,\"peer_core_util\":$util,\"backend_cpu_us_per_query\":$bcpu_us,\"load_core_busy\":$c0,\"peer_core_busy\":$c1,\"names_in_file\":$lines,\"names_wrapped\":$wrapped,\"udp_rcvbuf_errors\":$((u1 - u0)),\"affinity\":\"$affinity\"}" >>"$RUNS_JSON"
    echo "$peer $scen $load $round $qps $cpu_us $lost $lat_us $util $alive" >>"$ROWS_FILE"
  done
  # Warnings and errors podns logged (it logs nothing per query at the default level).
  if [[ $peer == podns* ]] && grep -Eq 'WARN|ERROR' "$PEER_DIR/log"; then
    PROBLEMS+=("$peer/$scen round $round: logged $(grep -Ec 'WARN|ERROR' "$PEER_DIR/log") warning/error lines")
    echo "!! $peer logged warnings/errors:" >&2
    grep -E 'WARN|ERROR' "$PEER_DIR/log" | sed -E 's/^[^ ]+ +//' | sort | uniq -c | sort -rn | head -10 >&2
  fi
  if ! kill -0 "$PEER_PID" 2>/dev/null; then
    echo "!! $peer is no longer running; log:" >&2
    tail -20 "$PEER_DIR/log" >&2
  fi
  stop_pid "$PEER_PID"
  forget_pid "$PEER_PID"
  if [[ $peer == unbound ]]; then
    echo "   unbound's own count: $(grep -o '[0-9]* queries, [0-9]* answers from cache, [0-9]* recursions' "$PEER_DIR/log" | tail -1)"
  fi
}

for round in $(seq 1 "$REPEAT"); do
  for scen in $SCENARIOS; do
    for peer in $PEERS; do
      measure_peer "$peer" "$scen" "$round"
    done
  done
done

# --- report ------------------------------------------------------------------------------

# Median over rounds of each (peer, scenario, load); prints
# "peer scen load n qps cpu_us lost lat_us util" in first-seen order.
medians() {
  awk '
    function med(s,   n, a, i, j, t) {
      n = split(s, a, " ")
      for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    {
      k = $1 " " $2 " " $3
      if (!(k in n)) order[++m] = k
      n[k]++; q[k] = q[k] " " $5; c[k] = c[k] " " $6; l[k] = l[k] " " $7; t[k] = t[k] " " $8; u[k] = u[k] " " $9
    }
    END { for (i = 1; i <= m; i++) { k = order[i]; print k, n[k], med(q[k]), med(c[k]), med(l[k]), med(t[k]), med(u[k]) } }
  ' "$ROWS_FILE"
}
medians >"$WORK/medians"

echo
echo "== results: median of $REPEAT round(s) of ${DURATION}s per run; fixed = -Q $RATE, max = -q $OUTSTANDING"
echo "   outstanding, no rate limit; $CLIENTS clients; peer on core $PEER_CPU, dnsperf + backend on core"
echo "   $LOAD_CPU; core% = peer CPU time / run time; ratios are peer / podns from this run"
awk '
  { key = $2 "/" $3; if ($1 == "podns") { pq[key] = $5; pc[key] = $6 } row[NR] = $0 }
  END {
    printf "%-14s %-5s %-5s %9s %9s %7s %8s %6s %9s %9s\n", "peer", "scen", "load", "qps", "cpu_us/q",
      "lost", "lat_us", "core%", "cpu/podns", "qps/podns"
    for (i = 1; i <= NR; i++) {
      split(row[i], f, " "); key = f[2] "/" f[3]
      rc = (pc[key] > 0) ? sprintf("%.2f", f[6] / pc[key]) : "-"
      rq = (pq[key] > 0 && f[3] == "max") ? sprintf("%.2f", f[5] / pq[key]) : "-"
      printf "%-14s %-5s %-5s %9.0f %9.2f %7d %8.1f %6.1f %9s %9s\n", f[1], f[2], f[3], f[5], f[6],
        f[7], f[8], f[9] * 100, rc, rq
    }
  }' "$WORK/medians" | tee "$WORK/table.txt"

if ((${#PROBLEMS[@]})); then
  echo
  echo "== problems seen"
  printf '   %s\n' "${PROBLEMS[@]}"
fi

json_str() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'; }
mkdir -p "$(dirname "$OUT")"
{
  echo '{'
  echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
  echo "  \"host\": {\"cores\": $(nproc), \"cpu\": \"$(json_str "$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)")\", \"kernel\": \"$(uname -r)\", \"background_busy_before\": \"$(json_str "$BACKGROUND")\", \"loadavg_at_end\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"},"
  echo "  \"podns\": {\"binary\": \"$(json_str "$PODNS")\", \"built\": \"$(date -u -r "$PODNS" +%Y-%m-%dT%H:%M:%SZ)\", \"source\": \"$(json_str "$PODNS_SOURCE")\"},"
  echo "  \"versions\": {\"podns\": \"$(json_str "$("$PODNS" --version 2>/dev/null | head -1)")\", \"dnsdist\": \"$(dnsdist --version 2>/dev/null | head -1 | awk '{ print $2 }')\", \"unbound\": \"$(unbound -V 2>/dev/null | awk '/^Version/ { print $2 }')\", \"dnsmasq\": \"$(dnsmasq --version | head -1 | awk '{ print $3 }')\", \"dnsperf\": \"$(dnsperf -h 2>&1 | awk '/^Version/ { print $2 }')\"},"
  echo "  \"settings\": {\"duration_s\": $DURATION, \"repeat\": $REPEAT, \"rate_qps\": $RATE, \"outstanding\": $OUTSTANDING, \"fixed_outstanding\": $FIXED_OUTSTANDING, \"clients\": $CLIENTS, \"names\": $NAMES, \"peer_cpu\": $PEER_CPU, \"load_cpu\": $LOAD_CPU, \"clk_tck\": $CLK_TCK},"
  echo '  "runs": ['
  sed '$!s/$/,/; s/^/    /' "$RUNS_JSON"
  echo '  ],'
  echo '  "medians": ['
  awk '{ printf "    {\"peer\":\"%s\",\"scenario\":\"%s\",\"load\":\"%s\",\"rounds\":%d,\"qps\":%s,\"cpu_us_per_query\":%s,\"queries_lost\":%s,\"avg_latency_us\":%s,\"peer_core_util\":%s}%s\n",
    $1, $2, $3, $4, $5, $6, $7, $8, $9, (NR < total ? "," : "") }' total="$(wc -l <"$WORK/medians")" "$WORK/medians"
  echo '  ],'
  # Ratios to podns, same scenario and load, medians of this run of the script.
  echo '  "ratios_to_podns": ['
  awk '
    { key = $2 "/" $3; if ($1 == "podns") { pq[key] = $5; pc[key] = $6 } row[NR] = $0 }
    END {
      m = 0
      for (i = 1; i <= NR; i++) {
        split(row[i], f, " "); key = f[2] "/" f[3]
        if (f[1] == "podns" || !(pc[key] > 0)) continue
        out[++m] = sprintf("    {\"peer\":\"%s\",\"scenario\":\"%s\",\"load\":\"%s\",\"cpu_per_query\":%.3f,\"qps\":%.3f}",
          f[1], f[2], f[3], f[6] / pc[key], f[5] / pq[key])
      }
      for (i = 1; i <= m; i++) print out[i] (i < m ? "," : "")
    }' "$WORK/medians"
  echo '  ],'
  echo '  "problems": ['
  for i in "${!PROBLEMS[@]}"; do
    sep=,
    ((i == ${#PROBLEMS[@]} - 1)) && sep=
    echo "    \"$(json_str "${PROBLEMS[$i]}")\"$sep"
  done
  echo '  ]'
  echo '}'
} >"$OUT"
echo "wrote $OUT"
