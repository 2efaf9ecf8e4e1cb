#!/usr/bin/env bash
# Coverage-guided fuzzing of podns's pure code (see fuzz/README.md).
#
# Installs cargo-fuzz when missing, builds every target, replays every saved input under
# fuzz/regressions/<target>/ (each must pass), then fuzzes each target for FUZZ_SECONDS
# (default 20) from the seed corpus in fuzz/corpus/<target>/. Exits non-zero on any crash,
# panic, failed assertion or hang; the input that caused it is in fuzz/artifacts/<target>/.
#
# Environment:
#   FUZZ_SECONDS    seconds per target (default 20; 0 = replay only)
#   FUZZ_TARGETS    space-separated targets (default: all of fuzz/fuzz_targets/)
#   FUZZ_SANITIZER  cargo fuzz --sanitizer (default address; none builds and runs faster)
#   FUZZ_JOBS       libFuzzer -fork=N workers per target (default 1: no fork)
#   FUZZ_ARGS       extra libFuzzer flags, e.g. "-max_len=65535"
#   FUZZ_TARGET_DIR cargo target dir (default fuzz/target); one outside the checkout survives
#                   fresh clones, and a warm one saves the first build (minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")"
FUZZ_DIR="$PWD"

FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
FUZZ_SANITIZER="${FUZZ_SANITIZER:-address}"
FUZZ_JOBS="${FUZZ_JOBS:-1}"
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-$FUZZ_DIR/target}"
read -r -a EXTRA_ARGS <<<"${FUZZ_ARGS:-}"
if [ -n "${FUZZ_TARGETS:-}" ]; then
  read -r -a TARGETS <<<"$FUZZ_TARGETS"
else
  TARGETS=()
  for f in fuzz_targets/*.rs; do TARGETS+=("$(basename "$f" .rs)"); done
fi

log() { printf '[fuzz %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# libFuzzer needs nightly rustc flags (-Zsanitizer, sancov). Use the nightly toolchain when
# rustup has one; otherwise let the one toolchain there is accept them.
TOOLCHAIN=()
if command -v rustup >/dev/null && rustup toolchain list | grep -q '^nightly'; then
  TOOLCHAIN=(+nightly)
else
  log "no nightly toolchain: using $(rustc --version) with RUSTC_BOOTSTRAP=1"
  export RUSTC_BOOTSTRAP=1
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

log "building every target (sanitizer: $FUZZ_SANITIZER)"
build_start=$SECONDS
for t in "${TARGETS[@]}"; do
  [ -f "fuzz_targets/$t.rs" ] || { echo "no such target: $t" >&2; exit 2; }
done
# One cargo invocation builds every target; it shares the build of podns and its dependencies.
cargo "${TOOLCHAIN[@]}" fuzz build --fuzz-dir "$FUZZ_DIR" --target-dir "$FUZZ_TARGET_DIR" --sanitizer "$FUZZ_SANITIZER"
log "built in $((SECONDS - build_start)) s"
BIN_DIR="$FUZZ_TARGET_DIR/$(rustc -vV | sed -n 's/^host: //p')/release"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0:detect_leaks=0}"

failed=()
mkdir -p "$FUZZ_DIR/work"

# 1. Saved inputs that once failed must pass now.
for t in "${TARGETS[@]}"; do
  dir="regressions/$t"
  [ -d "$dir" ] || continue
  mapfile -t files < <(find "$dir" -type f ! -name '*.md' | sort)
  [ "${#files[@]}" -gt 0 ] || continue
  log "$t: replaying ${#files[@]} saved input(s) from $dir"
  for f in "${files[@]}"; do
    out="$FUZZ_DIR/work/$t.replay.$(basename "$f").log"
    if ! "$BIN_DIR/$t" -timeout=10 -rss_limit_mb=2048 "$f" >"$out" 2>&1; then
      grep -m1 -A1 "panicked at" "$out" || grep -m1 "ERROR:" "$out" || tail -n 20 "$out"
      log "$t: saved input $f fails (log: $out)"
      failed+=("$t:$(basename "$f")")
    fi
  done
done

# 2. Fuzz each target in turn (two cores at most: one target at a time).
if [ "$FUZZ_SECONDS" -gt 0 ]; then
  for t in "${TARGETS[@]}"; do
    work="$FUZZ_DIR/work/corpus/$t"
    mkdir -p "$work" "$FUZZ_DIR/artifacts/$t"
    fork=()
    [ "$FUZZ_JOBS" -gt 1 ] && fork=(-fork="$FUZZ_JOBS")
    log "$t: fuzzing for ${FUZZ_SECONDS}s"
    # The working corpus comes first: libFuzzer adds new inputs there, never to the seeds.
    if "$BIN_DIR/$t" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$FUZZ_DIR/artifacts/$t/" "${fork[@]}" "${EXTRA_ARGS[@]}" \
      "$work" "$FUZZ_DIR/corpus/$t" >"$FUZZ_DIR/work/$t.log" 2>&1; then
      # The last status line: runs, coverage (edges), features, corpus, speed.
      log "$t: clean: $(grep -E '^#[0-9]+' "$FUZZ_DIR/work/$t.log" | tail -n 1 | tr -s ' \t' ' ')"
    else
      tail -n 60 "$FUZZ_DIR/work/$t.log"
      log "$t: FAILED (input saved under fuzz/artifacts/$t/; full log fuzz/work/$t.log)"
      failed+=("$t")
    fi
  done
fi

if [ "${#failed[@]}" -gt 0 ]; then
  log "failing targets: ${failed[*]}"
  exit 1
fi
log "all ${#TARGETS[@]} targets clean"
