#!/usr/bin/env bash
# Pod lab for podns (issue 3): a pod and its cluster DNS in two network
# namespaces, real stub resolvers (glibc, musl, c-ares, hickory, dig) resolving
# directly ("before"), through podns in the pod ("after"), and through podns in
# capture mode ("capture": nat rules of `podns capture-init` redirect port 53).
#
# Usage (as root, from anywhere):  tests/lab/run.sh [extra pytest args]
#   PODNS_BIN=path   podns binary for the after run (default: target/release/podns)
#   PODNS_ARGS="..." extra podns flags for the after and capture runs
#   LAB_PARALLEL=N   labs run at once (default: all 15)
# Writes target/lab/report.json (+ report.txt), logs in target/lab/logs/.
#
# This script installs nothing. It needs (CI installs them):
#   Debian: iproute2 gcc musl-tools bind9-dnsutils iptables util-linux python3 (and cargo/rustc: the
#           machine's Rust toolchain, for the hickory client)
#   pip:    dnspython pycares pytest      (pycares >= 5)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
LAB_TARGET="${LAB_TARGET_DIR:-$REPO/target/lab}"
export LAB_TARGET_DIR="$LAB_TARGET"
export PODNS_BIN="${PODNS_BIN:-$REPO/target/release/podns}"
PYTHON="${PYTHON:-python3}"
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the source tree

die() { echo "tests/lab/run.sh: $*" >&2; exit 2; }

# -- prerequisites -----------------------------------------------------------
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1 (Debian package $2)"); }
need ip iproute2
need gcc gcc
need musl-gcc musl-tools
need dig bind9-dnsutils
need iptables-restore iptables
need setpriv util-linux
need "$PYTHON" python3
command -v cargo >/dev/null 2>&1 || missing+=("cargo (the Rust toolchain)")
if command -v "$PYTHON" >/dev/null 2>&1; then
    for mod in dns:dnspython pycares:pycares pytest:pytest; do
        "$PYTHON" -c "import ${mod%%:*}" >/dev/null 2>&1 || missing+=("python module ${mod%%:*} (pip install ${mod##*:})")
    done
    "$PYTHON" -c 'import pycares, sys; sys.exit(int(pycares.__version__.split(".")[0]) < 5)' >/dev/null 2>&1 \
        || missing+=("pycares >= 5 (pip install -U pycares)")
fi
if ((${#missing[@]})); then
    printf 'tests/lab/run.sh: missing prerequisites:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 2
fi
[[ "$(id -u)" == 0 ]] || die "must run as root (it creates network namespaces)"
probe="podnslab-$$-preflight"
if ! err="$(ip netns add "$probe" 2>&1)"; then
    die "cannot create network namespaces (ip netns add: $err); needs root with CAP_SYS_ADMIN and CAP_NET_ADMIN"
fi
ip netns del "$probe"
[[ -x "$PODNS_BIN" ]] || die "podns binary not found at $PODNS_BIN (build it: cargo build --release, or set PODNS_BIN)"

# -- clients -----------------------------------------------------------------
mkdir -p "$LAB_TARGET/bin"
echo "building lab clients in $LAB_TARGET"
gcc -O2 -Wall -Wextra -Werror -o "$LAB_TARGET/bin/gai-glibc" "$HERE/gai.c"
musl-gcc -O2 -Wall -Wextra -Werror -static -o "$LAB_TARGET/bin/gai-musl" "$HERE/gai.c"
CARGO_TARGET_DIR="$LAB_TARGET" cargo build --quiet --locked \
    --manifest-path "$HERE/hickory-client/Cargo.toml"

# -- the lab -----------------------------------------------------------------
cd "$REPO"
exec "$PYTHON" -m pytest "$HERE" -p no:cacheprovider -q -rfEs "$@"
