#!/usr/bin/env bash
# Pod lab for podns (issue 3): a pod and its cluster DNS in two network
# namespaces, real stub resolvers (glibc, musl, c-ares, c-ares 1.13, Go, hickory, dig) resolving
# directly ("before"), through podns in the pod ("after"), and through podns in
# capture mode ("capture": nat rules of `podns capture-init` redirect port 53).
#
# Environments (issue 10): besides the default one, node search domains answering NODATA or
# NXDOMAIN, a systemd-resolved-like node resolver, CoreDNS's `template IN AAAA` hack and an
# air-gapped cluster (lab.ENVIRONMENTS); one more client, c-ares 1.13.0 (cares-old).
#
# Usage (as root, from anywhere):  tests/lab/run.sh [extra pytest args]
#   PODNS_BIN=path   podns binary for the after run (default: target/release/podns)
#   PODNS_ARGS="..." extra podns flags for the after and capture runs
#   LAB_PARALLEL=N   labs run at once (default: all 49)
# Writes target/lab/report.json (+ report.txt), logs in target/lab/logs/.
#
# This script installs nothing. It needs (CI installs them):
#   Debian: iproute2 gcc musl-tools bind9-dnsutils iptables util-linux golang-go python3 (and
#           cargo/rustc: the machine's Rust toolchain, for the hickory client)
#   pip:    dnspython pycares pytest      (pycares >= 5)
# and fetches (once, cached in target/lab/cares-old) pycares 2.4.0's sdist with pip, for the
# c-ares 1.13.0 sources it bundles.
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
need ar binutils
need sha256sum coreutils
need musl-gcc musl-tools
need dig bind9-dnsutils
need go golang-go
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

# Go's pure resolver (std only, no module to fetch); its build cache stays in $LAB_TARGET.
(cd "$HERE/go-client" && GOCACHE="$LAB_TARGET/go-cache" CGO_ENABLED=0 \
    go build -tags netgo -trimpath -o "$LAB_TARGET/bin/lookup-go" main.go)

# c-ares older than 1.16 (the "cares-old" client: what pgbouncer links against on older
# distributions): c-ares 1.13.0 as bundled in PyPI's pycares 2.4.0 sdist, fetched once with pip
# and cached under $LAB_TARGET, compiled straight from its .c files with the Linux ares_config.h
# that pycares ships (no configure, no CMake), into a static library.
CARES_OLD="$LAB_TARGET/cares-old"
CARES_SDIST="$CARES_OLD/dl/pycares-2.4.0.tar.gz"
CARES_SHA256=0eccb76dff0155ddf793a589c6270e1bdbf6975b2824d18d1d23db2075d7fc96
if [[ ! -f "$CARES_SDIST" ]]; then
    echo "fetching pycares 2.4.0 sdist (c-ares 1.13.0 sources)"
    # build isolation on: pip prepares the sdist's metadata with a setuptools/wheel of its own
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
        pycares==2.4.0 -d "$CARES_OLD/dl" || die "pip download pycares==2.4.0 failed"
fi
echo "$CARES_SHA256  $CARES_SDIST" | sha256sum --check --quiet - \
    || die "$CARES_SDIST: unexpected sha256 (delete it to fetch again)"
if [[ ! -f "$CARES_OLD/lib/libcares.a" || "$CARES_SDIST" -nt "$CARES_OLD/lib/libcares.a" ]]; then
    echo "building c-ares 1.13.0 (static)"
    rm -rf "$CARES_OLD/src" "$CARES_OLD/obj" "$CARES_OLD/lib"
    mkdir -p "$CARES_OLD/src" "$CARES_OLD/obj" "$CARES_OLD/lib"
    tar -xzf "$CARES_SDIST" -C "$CARES_OLD/src" --strip-components=4 pycares-2.4.0/deps/c-ares/src
    grep -q '#define ARES_VERSION_STR "1.13.0"' "$CARES_OLD/src/ares_version.h" \
        || die "the pycares 2.4.0 sdist does not hold c-ares 1.13.0"
    for src in "$CARES_OLD"/src/*.c; do
        obj="$(basename "$src" .c)"
        [[ "$obj" == windows_port ]] && continue
        # -w: 2017 code, today's warnings are not ours to fix
        gcc -O2 -w -fPIC -DHAVE_CONFIG_H -D_LARGEFILE_SOURCE -D_FILE_OFFSET_BITS=64 -DCARES_STATICLIB \
            -I"$CARES_OLD/src" -I"$CARES_OLD/src/config_linux" -c "$src" -o "$CARES_OLD/obj/$obj.o"
    done
    ar rcs "$CARES_OLD/lib/libcares.a" "$CARES_OLD"/obj/*.o
fi
gcc -O2 -Wall -Wextra -Werror -DCARES_STATICLIB -I"$CARES_OLD/src" \
    -o "$LAB_TARGET/bin/gethostbyname-cares-old" "$HERE/gethostbyname_old.c" "$CARES_OLD/lib/libcares.a"

# The stub models (issue 10) agree with the real clients: tests/lab/test_stub_model.py runs the
# example binary.  Built only where the example exists; once it does, a failed build fails here.
if [[ -f "$REPO/examples/stub_model.rs" ]]; then
    echo "building the stub model example"
    (cd "$REPO" && cargo build --quiet --example stub_model)
fi

# -- the lab -----------------------------------------------------------------
cd "$REPO"
exec "$PYTHON" -m pytest "$HERE" -p no:cacheprovider -q -rfEs "$@"
