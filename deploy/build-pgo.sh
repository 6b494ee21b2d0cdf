#!/usr/bin/env bash
# Builds Weft's release binary with profile-guided optimisation (PGO): the build to ship,
# and the one the perf harness (tests/perf/run.sh) measures.
#
#   deploy/build-pgo.sh            # -> target/pgo/weft (path printed on the last line;
#                                  #    target/pgo/weft-dev with PROFILE=dev)
#
# Four steps, ~15 minutes on 2 cores:
#   1. an instrumented release build (rustc -Cprofile-generate), in target/pgo/gen;
#   2. training: that binary runs `weft demo` (the gateway, its sidecars over mutual TLS,
#      the in-process services) and a config-free `weft proxy` in front of one service,
#      under HTTP/1.1 (wrk) and h2c (h2load) load: GETs, POSTs with a body, JWT-checked
#      routes, 404s and the admin API, TRAIN_SECS seconds per load;
#   3. the counts of every process are merged with llvm-profdata (the one matching
#      rustc's LLVM major version: rustup's llvm-tools component, or Debian's llvm-N);
#   4. the optimised release build (rustc -Cprofile-use), in target/pgo/use.
#
# Why: ~75 % of a proxied request's CPU time is the kernel's, the same for every proxy.
# Of the rest, a plain build spends much on instruction-cache misses (async state
# machines, monomorphised tower/hyper/tokio code spread over the binary). Laid out by
# measured use, Weft's user time per request drops by ~15-20 % (tests/perf/README.md,
# "Profile-guided build").
#
# Environment: TRAIN_SECS (5), PGO_PORT_BASE (18480; uses it and the next 3 ports),
# NO_INSTALL=1 (never apt-get; fail instead), CARGO_TARGET_DIR (target), RUSTFLAGS
# (kept, the PGO flag is added), PROFILE (release; `dev` is for testing this script
# quickly).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
PGO="$TARGET/pgo"
TRAIN_SECS="${TRAIN_SECS:-5}"
PGO_PORT_BASE="${PGO_PORT_BASE:-18480}"
PROFILE="${PROFILE:-release}"
NO_INSTALL="${NO_INSTALL:-0}"

log() { printf 'build-pgo: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# --- tools -------------------------------------------------------------------------------
command -v cargo > /dev/null 2>&1 || die "cargo not found"
HOST="$(rustc -vV | sed -n 's/^host: //p')"
LLVM_MAJOR="$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
[[ -n $HOST && -n $LLVM_MAJOR ]] || die "cannot read host triple / LLVM version from rustc -vV"

APT_UPDATED=0
apt_install() {
    [[ $NO_INSTALL == 1 ]] && return 1
    command -v apt-get > /dev/null 2>&1 || return 1
    if [[ $APT_UPDATED == 0 ]]; then
        apt-get update -qq > /dev/null 2>&1 || true
        APT_UPDATED=1
    fi
    log "installing $* (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" > /dev/null 2>&1
}

# llvm-profdata must read what rustc's LLVM writes: same major version.
find_profdata() {
    local c v
    for c in "$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata" \
        "llvm-profdata-$LLVM_MAJOR" "/usr/lib/llvm-$LLVM_MAJOR/bin/llvm-profdata" llvm-profdata; do
        command -v "$c" > /dev/null 2>&1 || continue
        v="$("$c" --version 2>/dev/null | sed -n 's/.*LLVM version \([0-9]*\).*/\1/p' | head -n1)"
        if [[ $v == "$LLVM_MAJOR" ]]; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}
PROFDATA="$(find_profdata)" || {
    apt_install "llvm-$LLVM_MAJOR" || true
    PROFDATA="$(find_profdata)" ||
        die "no llvm-profdata for LLVM $LLVM_MAJOR (rustc's): 'rustup component add llvm-tools', or install Debian's llvm-$LLVM_MAJOR"
}
missing=()
command -v wrk > /dev/null 2>&1 || missing+=(wrk)
command -v h2load > /dev/null 2>&1 || missing+=(nghttp2-client)
command -v curl > /dev/null 2>&1 || missing+=(curl)
if ((${#missing[@]})); then
    apt_install "${missing[@]}" || die "missing ${missing[*]} (apt-get install -y ${missing[*]})"
fi
log "rustc $(rustc -V | cut -d' ' -f2) (LLVM $LLVM_MAJOR), $PROFDATA"

# --- build -------------------------------------------------------------------------------
# --target keeps RUSTFLAGS off build scripts and proc macros: only the binary is
# instrumented, and only its profile is collected.
# Not incremental: each build is made once, and a dev profile's incremental cache would
# take gigabytes for nothing.
build() { # DIR FLAG
    CARGO_INCREMENTAL=0 RUSTFLAGS="${RUSTFLAGS:-} $2" cargo build --manifest-path "$ROOT/Cargo.toml" \
        --profile "$PROFILE" -p weft-proxy --bin weft --target "$HOST" --target-dir "$1" >&2
}
out_dir() { # DIR: where cargo puts the binary for $PROFILE
    if [[ $PROFILE == dev ]]; then echo "$1/$HOST/debug"; else echo "$1/$HOST/$PROFILE"; fi
}

RAW="$PGO/raw"
rm -rf "$RAW"
mkdir -p "$RAW"
log "1/4 instrumented build ($PROFILE)"
build "$PGO/gen" "-Cprofile-generate=$RAW/build"
GEN_BIN="$(out_dir "$PGO/gen")/weft"
[[ -x $GEN_BIN ]] || die "instrumented build finished but $GEN_BIN is missing"

# --- training ----------------------------------------------------------------------------
GW_PORT=$PGO_PORT_BASE
GW_ADMIN=$((PGO_PORT_BASE + 1))
PX_PORT=$((PGO_PORT_BASE + 2))
PX_ADMIN=$((PGO_PORT_BASE + 3))
WORK="$(mktemp -d)"
PIDS=()
stop_all() {
    local p
    for p in "${PIDS[@]}"; do kill -INT "$p" 2> /dev/null || true; done
    # The profile is written when a process exits normally: give them time to drain.
    for _ in $(seq 100); do
        local alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2> /dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2> /dev/null || true; done
    PIDS=()
}
trap 'stop_all; rm -rf "$WORK"' EXIT

# Every process of the instrumented binary writes its own counts (%p: its pid).
export LLVM_PROFILE_FILE="$RAW/weft-%p.profraw"
wait_http() { # URL
    for _ in $(seq 100); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.2
    done
    return 1
}

log "2/4 training: weft demo + weft proxy, ${TRAIN_SECS}s per load"
"$GEN_BIN" --workers 1 demo --port "$GW_PORT" --admin-port "$GW_ADMIN" --services-base 0 \
    --log-level warn > "$WORK/demo.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$GW_PORT/products/1" || die "the demo did not start (log: $(tail -n5 "$WORK/demo.log"))"
TOKEN="$(awk '/Demo token:/ { getline; print $1; exit }' "$WORK/demo.log")"
SERVICE="$(awk '$1 == "product-1" { print $4; exit }' "$WORK/demo.log")"
[[ -n $TOKEN && -n $SERVICE ]] || die "cannot read the demo's token and product service address"
"$GEN_BIN" --workers 1 proxy --listen "127.0.0.1:$PX_PORT" --to "$SERVICE" \
    --admin "127.0.0.1:$PX_ADMIN" --log-level warn > "$WORK/proxy.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$PX_PORT/products/1" || die "weft proxy did not start"

cat > "$WORK/post.lua" << EOF
wrk.method = "POST"
wrk.body = '{"productId":"42","qty":1}'
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer $TOKEN"
EOF
printf '{"productId":"42","qty":1}' > "$WORK/body.json"
gw="http://127.0.0.1:$GW_PORT"
px="http://127.0.0.1:$PX_PORT"
limit=$((TRAIN_SECS + 30))
load() { # name, command...: bounded in time; a failed load fails the build
    log "  $1"
    timeout "$limit" "${@:2}" > "$WORK/load.out" 2>&1 || die "load '$1' failed: $(tail -n3 "$WORK/load.out")"
    # wrk and h2load exit 0 whatever the answers. A load that got no answers, or error
    # answers, would train the compiler on the wrong paths.
    load_ok "$WORK/load.out" ||
        die "load '$1' got errors or no answers: $(grep -E 'requests|Non-2xx|Socket errors|status codes' "$WORK/load.out")"
}
load_ok() { # REPORT: wrk's or h2load's; some requests answered, none failed or 4xx/5xx
    awk '
        / requests in / { n = $1 }                               # wrk
        /Non-2xx|Socket errors/ { bad = 1 }                      # wrk
        /^requests: / { n = $8; if ($10 + $12 > 0) bad = 1 }     # h2load: N succeeded, F failed, E errored
        /^status codes: / { if ($7 + $9 > 0) bad = 1 }           # h2load: A 2xx, B 3xx, C 4xx, D 5xx
        END { exit !(n > 0 && !bad) }' "$1"
}
# The gateway: HTTP/1.1 and h2c in, routing, JWT, mutual TLS over HTTP/2 to the sidecars.
load "gateway h1 GET" wrk -t1 -c32 -d"${TRAIN_SECS}s" "$gw/products/42"
load "gateway h1 GET, JWT" wrk -t1 -c32 -d"${TRAIN_SECS}s" -H "authorization: Bearer $TOKEN" "$gw/users/7"
load "gateway h1 POST, JWT" wrk -t1 -c32 -d"${TRAIN_SECS}s" -s "$WORK/post.lua" "$gw/cart/addItem"
load "gateway h2c GET" h2load -t1 -c8 -m10 -D "$TRAIN_SECS" "$gw/products/42"
load "gateway h2c POST, JWT" h2load -t1 -c8 -m10 -D "$TRAIN_SECS" -d "$WORK/body.json" \
    -H "authorization: Bearer $TOKEN" -H "content-type: application/json" "$gw/cart/addItem"
# The config-free proxy: HTTP/1.1 keep-alive upstream, default policies.
load "proxy h1 GET" wrk -t1 -c64 -d"${TRAIN_SECS}s" "$px/products/42"
load "proxy h2c GET" h2load -t1 -c16 -m10 -D "$TRAIN_SECS" "$px/products/42"
# The rarer answers and the admin API, a few times each.
for _ in $(seq 20); do
    curl -s -o /dev/null "$gw/users/7"                    # 401
    curl -s -o /dev/null "$gw/no/such/route"              # 404
    curl -s -o /dev/null -X POST "$gw/products/42" -d x   # whatever the route says
    curl -s -o /dev/null "http://127.0.0.1:$GW_ADMIN/metrics"
    curl -s -o /dev/null "http://127.0.0.1:$GW_ADMIN/explain?method=GET&url=/products/42"
    curl -s -o /dev/null "http://127.0.0.1:$PX_ADMIN/metrics"
done
stop_all
shopt -s nullglob
profiles=("$RAW"/weft-*.profraw)
((${#profiles[@]} >= 2)) || die "training wrote ${#profiles[@]} profile(s) in $RAW (expected one per process)"

log "3/4 merging ${#profiles[@]} profiles"
"$PROFDATA" merge -o "$PGO/weft.profdata" "${profiles[@]}" >&2

log "4/4 optimised build ($PROFILE)"
build "$PGO/use" "-Cprofile-use=$PGO/weft.profdata"
USE_BIN="$(out_dir "$PGO/use")/weft"
[[ -x $USE_BIN ]] || die "optimised build finished but $USE_BIN is missing"
# A quick `PROFILE=dev` pass must not replace the release binary.
FINAL="$PGO/weft"
[[ $PROFILE == release ]] || FINAL="$PGO/weft-$PROFILE"
cp "$USE_BIN" "$FINAL.tmp"
mv "$FINAL.tmp" "$FINAL"
log "done"
echo "$FINAL"
