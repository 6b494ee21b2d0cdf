#!/usr/bin/env bash
# Weft perf harness: Weft vs HAProxy vs nginx (and direct-to-upstream) on 127.0.0.1,
# one worker/thread each, HTTP/1.1 keep-alive (wrk) and h2c prior knowledge (h2load).
# See tests/perf/README.md for how to run it and how to read the table.
#
# Usage: tests/perf/run.sh [--quick]
# Env:   DURATION (10s)  CONNS (64)  H2_CONNS (16)  H2_STREAMS (10)  WARMUP (2s)
#        ROUNDS (3: every proxy measured this many times, in rotating order; medians reported)
#        PIN (0)  WEFT_BIN (prebuilt binary; skips cargo)  PORT_BASE (18080)
#        PGO (1: build weft with deploy/build-pgo.sh, the profile-guided release build that
#             ships, ~15 min; 0: plain cargo build --release; either way not with WEFT_BIN)
#        OUT (results dir; default tests/perf/results/<timestamp>)  NO_INSTALL (0)
#        WAIT_IDLE (0: seconds to wait, before each scenario, for running cargo/rustc to end)
#        NOISE_MAX (10: % CPU of other processes above which a scenario is redone)
#        NOISY_RETRIES (2: how many times)
#        TELEMETRY (1: also measure weft-obs, weft with an access log and tracing on)
#        TRACE_PERCENT (1)  OTLP_SINK_BIN (prebuilt tests/src/bin/otlp-sink; skips cargo)
#        RESILIENCE (1: also measure weft-bare, weft with retries, outlier detection and
#                    circuit breaking off, to price the default resilience layers)
#        MTLS (1: also measure the sidecar pairs, client -> A -> mutual TLS -> B -> upstream,
#              for weft, haproxy and nginx (NGINX_TLS=0 leaves nginx out), and the rate
#              of new mutual-TLS connections: weft's mesh listener vs rustls alone)
#        HS_CONNS (16: concurrent handshake loops)  HS_THREADS (nproc: client threads)
#        HS_MAX (1000000: at most this many connections per handshake measurement)
#        HS_PIN (1: handshake rows pinned, server on CPU 1, client on CPU 0, whatever PIN)
#        SCENARIOS ("h1 h2 mtls": which to run; mtls = mtls-h1 mtls-h2 handshake, each also
#                   nameable alone, e.g. SCENARIOS=handshake)
#        TLS_BENCH_BIN (prebuilt tests/src/bin/tls-bench; skips cargo)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "run.sh: unknown argument: $arg (use --quick)" >&2
            exit 2
            ;;
    esac
done

if [[ $QUICK == 1 ]]; then
    DURATION="${DURATION:-3s}"
    WARMUP="${WARMUP:-1s}"
else
    DURATION="${DURATION:-10s}"
    WARMUP="${WARMUP:-2s}"
fi
CONNS="${CONNS:-64}"
H2_CONNS="${H2_CONNS:-16}"
H2_STREAMS="${H2_STREAMS:-10}"
PIN="${PIN:-0}"
ROUNDS="${ROUNDS:-3}"
PORT_BASE="${PORT_BASE:-18080}"
NO_INSTALL="${NO_INSTALL:-0}"
WAIT_IDLE="${WAIT_IDLE:-0}"
NOISE_MAX="${NOISE_MAX:-10}"
NOISY_RETRIES="${NOISY_RETRIES:-2}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="${OUT:-$HERE/results/$STAMP}"

UP_PORT=$((PORT_BASE))
UP_H2_PORT=$((PORT_BASE + 1))
WEFT_PORT=$((PORT_BASE + 10))
WEFT_ADMIN_PORT=$((PORT_BASE + 11))
HAPROXY_PORT=$((PORT_BASE + 20))
HAPROXY_H2_PORT=$((PORT_BASE + 21))
NGINX_PORT=$((PORT_BASE + 30))
NGINX_H2_PORT=$((PORT_BASE + 31))
OTLP_PORT=$((PORT_BASE + 40))
# The sidecar pairs (A: plain in, mutual TLS out; B: mutual TLS in) and the bare
# rustls server of the handshake rows.
WA_PORT=$((PORT_BASE + 50))
WA_ADMIN_PORT=$((PORT_BASE + 51))
WB_PORT=$((PORT_BASE + 52))
WB_ADMIN_PORT=$((PORT_BASE + 53))
HA_A_PORT=$((PORT_BASE + 54))
HA_A_H2_PORT=$((PORT_BASE + 55))
HA_B_PORT=$((PORT_BASE + 56))
NG_A_PORT=$((PORT_BASE + 57))
NG_A_H2_PORT=$((PORT_BASE + 58))
NG_B_PORT=$((PORT_BASE + 59))
RUSTLS_PORT=$((PORT_BASE + 60))
ALL_PORTS=("$UP_PORT" "$UP_H2_PORT" "$WEFT_PORT" "$WEFT_ADMIN_PORT" "$HAPROXY_PORT"
    "$HAPROXY_H2_PORT" "$NGINX_PORT" "$NGINX_H2_PORT")
TELEMETRY="${TELEMETRY:-1}"
RESILIENCE="${RESILIENCE:-1}"
TRACE_PERCENT="${TRACE_PERCENT:-1}"
MTLS="${MTLS:-1}"
NGINX_TLS="${NGINX_TLS:-1}"
HS_CONNS="${HS_CONNS:-16}"
HS_MAX="${HS_MAX:-1000000}"
HS_PIN="${HS_PIN:-1}"
SCENARIOS="${SCENARIOS:-h1 h2 mtls}"
SCENARIOS="${SCENARIOS//mtls-h1/MH1}"
SCENARIOS="${SCENARIOS//mtls-h2/MH2}"
SCENARIOS="${SCENARIOS//mtls/MH1 MH2 handshake}"
SCENARIOS="${SCENARIOS//MH/mtls-h}"
for sc in $SCENARIOS; do
    case "$sc" in
        h1 | h2 | mtls-h1 | mtls-h2 | handshake) ;;
        *) echo "run.sh: unknown scenario $sc in SCENARIOS (h1 h2 mtls mtls-h1 mtls-h2 handshake)" >&2 && exit 2 ;;
    esac
done
wants() { [[ " $SCENARIOS " == *" $1 "* ]]; }
# The plain scenarios need the telemetry row's collector, the mTLS ones need MTLS=1.
if ! wants h1 && ! wants h2; then
    TELEMETRY=0
    RESILIENCE=0
fi
if [[ $MTLS != 1 ]]; then
    SCENARIOS="$(tr ' ' '\n' <<< "$SCENARIOS" | { grep -v -e '^mtls-' -e '^handshake$' || true; } | tr '\n' ' ')"
fi
wants mtls-h1 || wants mtls-h2 || wants handshake || MTLS=0
[[ -n ${SCENARIOS// /} ]] || { echo "run.sh: no scenario left to run (SCENARIOS, MTLS=0)" >&2 && exit 2; }
[[ $TELEMETRY == 1 ]] && ALL_PORTS+=("$OTLP_PORT")
[[ $MTLS == 1 ]] && ALL_PORTS+=("$WA_PORT" "$WA_ADMIN_PORT" "$WB_PORT" "$WB_ADMIN_PORT" "$HA_A_PORT"
    "$HA_A_H2_PORT" "$HA_B_PORT" "$NG_A_PORT" "$NG_A_H2_PORT" "$NG_B_PORT" "$RUSTLS_PORT")

log() { printf '[perf %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# ---------------------------------------------------------------- duration parsing
# "10s" / "500ms" / "1m" / "10" -> seconds (may be fractional).
to_seconds() {
    local d="$1"
    case "$d" in
        *ms) awk -v v="${d%ms}" 'BEGIN { print v / 1000 }' ;;
        *s) echo "${d%s}" ;;
        *m) awk -v v="${d%m}" 'BEGIN { print v * 60 }' ;;
        *h) awk -v v="${d%h}" 'BEGIN { print v * 3600 }' ;;
        *) echo "$d" ;;
    esac
}
DUR_S="$(to_seconds "$DURATION")"
WARM_S="$(to_seconds "$WARMUP")"
[[ $DUR_S =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "DURATION must look like 10s, 500ms or 1m (got $DURATION)"
[[ $WARM_S =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "WARMUP must look like 2s (got $WARMUP)"
# wrk wants whole seconds (or a unit); h2load takes fractional seconds.
WRK_DUR="$(awk -v v="$DUR_S" 'BEGIN { s = int(v + 0.5); if (s < 1) s = 1; print s "s" }')"
WRK_WARM="$(awk -v v="$WARM_S" 'BEGIN { s = int(v + 0.5); if (s < 1) s = 1; print s "s" }')"
# Hard wall-clock bound for any single load command.
LOAD_TIMEOUT="$(awk -v v="$DUR_S" 'BEGIN { print int(v) + 30 }')"

# ---------------------------------------------------------------- tools
need_install=0
for t in wrk h2load haproxy nginx curl taskset ss openssl; do
    command -v "$t" > /dev/null 2>&1 || [[ -x /usr/sbin/$t ]] || need_install=1
done
if [[ $need_install == 1 ]]; then
    [[ $NO_INSTALL == 1 ]] && die "missing tools and NO_INSTALL=1"
    [[ $(id -u) == 0 ]] || die "missing tools; run as root so apt-get can install them"
    log "installing wrk nghttp2-client haproxy nginx-light (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y wrk nghttp2-client haproxy nginx-light curl util-linux iproute2 openssl
fi
export PATH="$PATH:/usr/sbin:/sbin"

NCPU="$(nproc)"
HS_THREADS="${HS_THREADS:-$NCPU}"
if [[ $PIN == 1 || $HS_PIN == 1 ]] && [[ $NCPU -lt 2 ]]; then
    log "only $NCPU CPU: pinning disabled"
    PIN=0
    HS_PIN=0
fi
# Proxy under test on CPU 1; upstream and load generator share CPU 0.
if [[ $PIN == 1 ]]; then
    PROXY_CPU=(taskset -c 1)
    LOAD_CPU=(taskset -c 0)
else
    PROXY_CPU=()
    LOAD_CPU=()
fi

# ---------------------------------------------------------------- weft binary
if [[ -n ${WEFT_BIN:-} ]]; then
    [[ -x $WEFT_BIN ]] || die "WEFT_BIN=$WEFT_BIN is not an executable"
    WEFT_BUILD="prebuilt (WEFT_BIN)"
elif [[ ${PGO:-1} == 1 ]]; then
    command -v cargo > /dev/null 2>&1 || die "cargo not found (install Rust >= 1.90, or set WEFT_BIN)"
    log "building weft with profile-guided optimisation (deploy/build-pgo.sh, ~15 min)"
    WEFT_BIN="$(NO_INSTALL="$NO_INSTALL" "$ROOT/deploy/build-pgo.sh" | tail -n1)" ||
        die "deploy/build-pgo.sh failed (PGO=0 measures a plain release build instead)"
    [[ -x $WEFT_BIN ]] || die "deploy/build-pgo.sh finished but $WEFT_BIN is missing"
    WEFT_BUILD="profile-guided (deploy/build-pgo.sh)"
else
    command -v cargo > /dev/null 2>&1 || die "cargo not found (install Rust >= 1.90, or set WEFT_BIN)"
    log "building weft (cargo build --release -p weft-proxy)"
    (cd "$ROOT" && cargo build --release -p weft-proxy)
    WEFT_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/weft"
    [[ -x $WEFT_BIN ]] || die "build finished but $WEFT_BIN is missing"
    WEFT_BUILD="plain (cargo build --release, PGO=0)"
fi
# The collector for the telemetry-on run: counts the spans it is sent, keeps nothing.
if [[ $TELEMETRY == 1 && -z ${OTLP_SINK_BIN:-} ]]; then
    command -v cargo > /dev/null 2>&1 || die "cargo not found (set OTLP_SINK_BIN, or TELEMETRY=0)"
    log "building the OTLP sink (cargo build --release -p weft-tests --bin otlp-sink)"
    (cd "$ROOT" && cargo build --release -p weft-tests --bin otlp-sink)
    OTLP_SINK_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/otlp-sink"
fi
[[ $TELEMETRY != 1 || -x $OTLP_SINK_BIN ]] || die "OTLP_SINK_BIN=$OTLP_SINK_BIN is not an executable"
# The handshake client, and the rustls-only server it is compared with.
if [[ $MTLS == 1 && -z ${TLS_BENCH_BIN:-} ]]; then
    command -v cargo > /dev/null 2>&1 || die "cargo not found (set TLS_BENCH_BIN, or MTLS=0)"
    log "building the TLS bench (cargo build --release -p weft-tests --bin tls-bench)"
    (cd "$ROOT" && cargo build --release -p weft-tests --bin tls-bench)
    TLS_BENCH_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tls-bench"
fi
[[ $MTLS != 1 || -x $TLS_BENCH_BIN ]] || die "TLS_BENCH_BIN=$TLS_BENCH_BIN is not an executable"

# ---------------------------------------------------------------- process bookkeeping
mkdir -p "$OUT/raw"
RUN="$(mktemp -d /tmp/weft-perf.XXXXXX)"
mkdir -p "$RUN/upstream-body" "$RUN/proxy-body" "$RUN/proxy-temp"
PKI="$RUN/pki"
PIDS=()

stop_pid() {
    local pid="$1"
    kill -0 "$pid" 2> /dev/null || return 0
    kill -TERM "$pid" 2> /dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2> /dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2> /dev/null || true
    wait "$pid" 2> /dev/null || true
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid"
    done
    rm -rf "$RUN"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_in_use() { [[ -n $(ss -Hltn "sport = :$1" 2> /dev/null) ]]; }

wait_port_free() {
    local p="$1"
    for _ in $(seq 1 100); do
        port_in_use "$p" || return 0
        sleep 0.1
    done
    die "port $p still in use"
}

# Poll until URL answers 200 (curl; h2 with --http2-prior-knowledge when $2 == h2;
# mtls: HTTP/1.1 over TLS with sidecar A's client certificate, the server's not checked).
wait_ready() {
    local url="$1" mode="${2:-h1}" code
    local flags=(-s -o /dev/null -w '%{http_code}' --max-time 1)
    [[ $mode == h2 ]] && flags+=(--http2-prior-knowledge)
    [[ $mode == mtls ]] && flags+=(--http1.1 -k --cert "$PKI/a/cert.pem" --key "$PKI/a/key.pem")
    for _ in $(seq 1 100); do
        code="$(curl "${flags[@]}" "$url" 2> /dev/null || true)"
        [[ $code == 200 ]] && return 0
        sleep 0.1
    done
    die "$url not ready (last status: ${code:-none})"
}

render() {
    sed -e "s|@RUN@|$RUN|g" -e "s|@UP_PORT@|$UP_PORT|g" -e "s|@UP_H2_PORT@|$UP_H2_PORT|g" \
        -e "s|@NGINX_PORT@|$NGINX_PORT|g" -e "s|@NGINX_H2_PORT@|$NGINX_H2_PORT|g" \
        -e "s|@HAPROXY_PORT@|$HAPROXY_PORT|g" -e "s|@HAPROXY_H2_PORT@|$HAPROXY_H2_PORT|g" \
        -e "s|@PKI@|$PKI|g" -e "s|@WA_PORT@|$WA_PORT|g" -e "s|@WA_ADMIN_PORT@|$WA_ADMIN_PORT|g" \
        -e "s|@WB_PORT@|$WB_PORT|g" -e "s|@WB_ADMIN_PORT@|$WB_ADMIN_PORT|g" \
        -e "s|@HA_A_PORT@|$HA_A_PORT|g" -e "s|@HA_A_H2_PORT@|$HA_A_H2_PORT|g" \
        -e "s|@HA_B_PORT@|$HA_B_PORT|g" -e "s|@NG_A_PORT@|$NG_A_PORT|g" \
        -e "s|@NG_A_H2_PORT@|$NG_A_H2_PORT|g" -e "s|@NG_B_PORT@|$NG_B_PORT|g" \
        "$HERE/$1" > "$RUN/$2"
}

status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2> /dev/null || echo 0; }
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
# "busy total" jiffies for one CPU from /proc/stat.
cpu_line() { awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat; }
CLK_TCK="$(getconf CLK_TCK)"

# nginx runs master + 1 worker: measure the worker, which does all the work.
nginx_worker() {
    local master="$1" w
    for _ in $(seq 1 50); do
        w="$(pgrep -P "$master" | head -n1 || true)"
        [[ -n $w ]] && {
            echo "$w"
            return 0
        }
        sleep 0.1
    done
    die "nginx master $master has no worker"
}

# ---------------------------------------------------------------- servers
UP_PID=""
start_upstream() {
    render nginx-upstream.conf.tmpl nginx-upstream.conf
    "${LOAD_CPU[@]}" nginx -p "$RUN" -e "$RUN/nginx-upstream.error.log" -c "$RUN/nginx-upstream.conf" \
        > "$OUT/raw/upstream.log" 2>&1 &
    UP_PID=$!
    PIDS+=("$UP_PID")
    wait_ready "http://127.0.0.1:$UP_PORT/"
    wait_ready "http://127.0.0.1:$UP_H2_PORT/" h2
}

SINK_PID=""
start_sink() {
    "${LOAD_CPU[@]}" "$OTLP_SINK_BIN" "127.0.0.1:$OTLP_PORT" > "$OUT/raw/otlp-sink.log" 2>&1 &
    SINK_PID=$!
    PIDS+=("$SINK_PID")
    for _ in $(seq 1 100); do
        port_in_use "$OTLP_PORT" && return 0
        sleep 0.1
    done
    die "the OTLP sink did not start"
}

# ---------------------------------------------------------------- certificates
# The pairs' identities, from Weft's development CA: ECDSA P-256, one SPIFFE id each
# (spiffe://example.org/ns/perf/sa/a and .../b), cert.pem + key.pem + ca.pem per
# workload. HAProxy reads certificate and key from one file (haproxy.pem). nginx checks
# a host name on the certificate it is shown, and Weft's certificates have only the URI
# SAN, so nginx B serves a certificate from the same CA and of the same kind with a DNS
# SAN added (b-nginx/, made with openssl).
make_pki() {
    local w
    {
        "$WEFT_BIN" ca init --trust-domain example.org --out "$PKI/ca"
        for w in a b; do
            "$WEFT_BIN" ca issue --ca "$PKI/ca" --id "spiffe://example.org/ns/perf/sa/$w" \
                --ttl 24h --out "$PKI/$w"
            cat "$PKI/$w/cert.pem" "$PKI/$w/key.pem" > "$PKI/$w/haproxy.pem"
        done
        if [[ $NGINX_TLS == 1 ]]; then
            mkdir -p "$PKI/b-nginx"
            printf '%s\n' "subjectAltName = URI:spiffe://example.org/ns/perf/sa/b, DNS:b.perf.test" \
                "basicConstraints = critical, CA:FALSE" "keyUsage = critical, digitalSignature" \
                "extendedKeyUsage = serverAuth, clientAuth" > "$PKI/b-nginx/ext.cnf"
            openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                -subj "/CN=b.perf.test" -keyout "$PKI/b-nginx/key.pem" -out "$PKI/b-nginx/csr.pem"
            openssl x509 -req -in "$PKI/b-nginx/csr.pem" -CA "$PKI/ca/ca.pem" \
                -CAkey "$PKI/ca/ca-key.pem" -set_serial "0x$(openssl rand -hex 8)" -days 2 \
                -sha256 -extfile "$PKI/b-nginx/ext.cnf" -out "$PKI/b-nginx/cert.pem"
        fi
    } > "$OUT/raw/pki.log" 2>&1 || die "making the certificates failed (see $OUT/raw/pki.log)"
}

# launch LOG COMMAND...: starts COMMAND in the background (on the proxy's CPU when
# pinned), appending its output to $OUT/raw/LOG; sets LAUNCHED to its pid.
LAUNCHED=""
launch() {
    local log="$1"
    shift
    "${PROXY_CPU[@]}" "$@" >> "$OUT/raw/$log" 2>&1 &
    LAUNCHED=$!
    PIDS+=("$LAUNCHED")
}

# start_proxy NAME -> sets PROXY_MAIN (pid to stop) and PROXY_PID (pid to measure); for
# a pair, PROXY_MAIN is A and PROXY_MAIN2 / PROXY_PID2 are B (measured together).
PROXY_MAIN=""
PROXY_PID=""
PROXY_MAIN2=""
PROXY_PID2=""
start_proxy() {
    local name="$1"
    case "$name" in
        weft-mtls-pair)
            render weft-mtls-b.yaml.tmpl weft-mtls-b.yaml
            render weft-mtls-a.yaml.tmpl weft-mtls-a.yaml
            launch weft-mtls-b.log "$WEFT_BIN" --workers 1 run -c "$RUN/weft-mtls-b.yaml"
            PROXY_MAIN2=$LAUNCHED
            launch weft-mtls-a.log "$WEFT_BIN" --workers 1 run -c "$RUN/weft-mtls-a.yaml"
            PROXY_MAIN=$LAUNCHED
            wait_ready "http://127.0.0.1:$WB_ADMIN_PORT/ready"
            wait_ready "http://127.0.0.1:$WA_ADMIN_PORT/ready"
            wait_ready "https://127.0.0.1:$WB_PORT/" mtls
            wait_ready "http://127.0.0.1:$WA_PORT/"
            wait_ready "http://127.0.0.1:$WA_PORT/" h2
            PROXY_PID=$PROXY_MAIN
            PROXY_PID2=$PROXY_MAIN2
            ;;
        weft-mtls-b)
            # Sidecar B alone: the Weft target of the handshake rows.
            render weft-mtls-b.yaml.tmpl weft-mtls-b.yaml
            launch weft-mtls-b.log "$WEFT_BIN" --workers 1 run -c "$RUN/weft-mtls-b.yaml"
            PROXY_MAIN=$LAUNCHED
            wait_ready "http://127.0.0.1:$WB_ADMIN_PORT/ready"
            wait_ready "https://127.0.0.1:$WB_PORT/" mtls
            PROXY_PID=$PROXY_MAIN
            ;;
        rustls-alone)
            launch rustls-alone.log "$TLS_BENCH_BIN" server "127.0.0.1:$RUSTLS_PORT" "$PKI/b"
            PROXY_MAIN=$LAUNCHED
            wait_ready "https://127.0.0.1:$RUSTLS_PORT/" mtls
            PROXY_PID=$PROXY_MAIN
            ;;
        haproxy-tls-pair)
            render haproxy-tls-b.cfg.tmpl haproxy-tls-b.cfg
            render haproxy-tls-a.cfg.tmpl haproxy-tls-a.cfg
            launch haproxy-tls-b.log haproxy -db -f "$RUN/haproxy-tls-b.cfg"
            PROXY_MAIN2=$LAUNCHED
            launch haproxy-tls-a.log haproxy -db -f "$RUN/haproxy-tls-a.cfg"
            PROXY_MAIN=$LAUNCHED
            wait_ready "https://127.0.0.1:$HA_B_PORT/" mtls
            wait_ready "http://127.0.0.1:$HA_A_PORT/"
            wait_ready "http://127.0.0.1:$HA_A_H2_PORT/" h2
            PROXY_PID=$PROXY_MAIN
            PROXY_PID2=$PROXY_MAIN2
            ;;
        nginx-tls-pair)
            render nginx-tls-b.conf.tmpl nginx-tls-b.conf
            render nginx-tls-a.conf.tmpl nginx-tls-a.conf
            launch nginx-tls-b.log nginx -p "$RUN" -e "$RUN/nginx-tls-b.error.log" -c "$RUN/nginx-tls-b.conf"
            PROXY_MAIN2=$LAUNCHED
            launch nginx-tls-a.log nginx -p "$RUN" -e "$RUN/nginx-tls-a.error.log" -c "$RUN/nginx-tls-a.conf"
            PROXY_MAIN=$LAUNCHED
            wait_ready "https://127.0.0.1:$NG_B_PORT/" mtls
            wait_ready "http://127.0.0.1:$NG_A_PORT/"
            wait_ready "http://127.0.0.1:$NG_A_H2_PORT/" h2
            PROXY_PID="$(nginx_worker "$PROXY_MAIN")"
            PROXY_PID2="$(nginx_worker "$PROXY_MAIN2")"
            ;;
        weft)
            "${PROXY_CPU[@]}" "$WEFT_BIN" --workers 1 proxy --listen "127.0.0.1:$WEFT_PORT" \
                --to "127.0.0.1:$UP_PORT" --admin "127.0.0.1:$WEFT_ADMIN_PORT" \
                >> "$OUT/raw/weft.log" 2>&1 &
            PROXY_MAIN=$!
            PIDS+=("$PROXY_MAIN")
            wait_ready "http://127.0.0.1:$WEFT_ADMIN_PORT/ready"
            wait_ready "http://127.0.0.1:$WEFT_PORT/"
            wait_ready "http://127.0.0.1:$WEFT_PORT/" h2
            PROXY_PID=$PROXY_MAIN
            ;;
        weft-bare)
            # The same without the default resilience layers (retries, outlier
            # detection, circuit-breaker limits): what they cost is weft vs weft-bare.
            "${PROXY_CPU[@]}" "$WEFT_BIN" --workers 1 proxy --listen "127.0.0.1:$WEFT_PORT" \
                --to "127.0.0.1:$UP_PORT" --admin "127.0.0.1:$WEFT_ADMIN_PORT" --no-resilience \
                >> "$OUT/raw/weft-bare.log" 2>&1 &
            PROXY_MAIN=$!
            PIDS+=("$PROXY_MAIN")
            wait_ready "http://127.0.0.1:$WEFT_ADMIN_PORT/ready"
            wait_ready "http://127.0.0.1:$WEFT_PORT/"
            wait_ready "http://127.0.0.1:$WEFT_PORT/" h2
            PROXY_PID=$PROXY_MAIN
            ;;
        weft-obs)
            # The same, with every kind of telemetry on: metrics (always), a JSON access
            # log to a file, and TRACE_PERCENT % of requests traced to a real collector.
            rm -f "$RUN/access.log"
            "${PROXY_CPU[@]}" "$WEFT_BIN" --workers 1 --otlp-endpoint "http://127.0.0.1:$OTLP_PORT" \
                proxy --listen "127.0.0.1:$WEFT_PORT" --to "127.0.0.1:$UP_PORT" \
                --admin "127.0.0.1:$WEFT_ADMIN_PORT" --access-log "$RUN/access.log" \
                --trace-sample-percent "$TRACE_PERCENT" >> "$OUT/raw/weft-obs.log" 2>&1 &
            PROXY_MAIN=$!
            PIDS+=("$PROXY_MAIN")
            wait_ready "http://127.0.0.1:$WEFT_ADMIN_PORT/ready"
            wait_ready "http://127.0.0.1:$WEFT_PORT/"
            wait_ready "http://127.0.0.1:$WEFT_PORT/" h2
            PROXY_PID=$PROXY_MAIN
            ;;
        haproxy)
            render haproxy.cfg.tmpl haproxy.cfg
            "${PROXY_CPU[@]}" haproxy -db -f "$RUN/haproxy.cfg" >> "$OUT/raw/haproxy.log" 2>&1 &
            PROXY_MAIN=$!
            PIDS+=("$PROXY_MAIN")
            wait_ready "http://127.0.0.1:$HAPROXY_PORT/"
            wait_ready "http://127.0.0.1:$HAPROXY_H2_PORT/" h2
            PROXY_PID=$PROXY_MAIN
            ;;
        nginx)
            render nginx-proxy.conf.tmpl nginx-proxy.conf
            "${PROXY_CPU[@]}" nginx -p "$RUN" -e "$RUN/nginx-proxy.error.log" -c "$RUN/nginx-proxy.conf" \
                >> "$OUT/raw/nginx.log" 2>&1 &
            PROXY_MAIN=$!
            PIDS+=("$PROXY_MAIN")
            wait_ready "http://127.0.0.1:$NGINX_PORT/"
            wait_ready "http://127.0.0.1:$NGINX_H2_PORT/" h2
            PROXY_PID="$(nginx_worker "$PROXY_MAIN")"
            ;;
        *) die "unknown proxy $name" ;;
    esac
}

stop_proxy() {
    stop_pid "$PROXY_MAIN"
    [[ -n $PROXY_MAIN2 ]] && stop_pid "$PROXY_MAIN2"
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p != "$PROXY_MAIN" && $p != "$PROXY_MAIN2" ]] && keep+=("$p"); done
    PIDS=("${keep[@]}")
    PROXY_MAIN=""
    PROXY_PID=""
    PROXY_MAIN2=""
    PROXY_PID2=""
    # The access log of a telemetry run is not kept: it grows by tens of MB per second.
    rm -f "$RUN/access.log"
}

# ---------------------------------------------------------------- load + parsing
# Latency strings from wrk ("512.00us", "1.23ms", "1.02s", "2.00m") -> microseconds.
wrk_us() {
    awk -v s="$1" 'BEGIN {
        if (match(s, /us$/)) v = substr(s, 1, length(s) - 2);
        else if (match(s, /ms$/)) v = substr(s, 1, length(s) - 2) * 1000;
        else if (match(s, /m$/)) v = substr(s, 1, length(s) - 1) * 60000000;
        else if (match(s, /s$/)) v = substr(s, 1, length(s) - 1) * 1000000;
        else v = s;
        printf "%.0f", v }'
}

# Warm-up: same load shape, short, output kept but not measured.
warmup() {
    local url="$1" mode="$2" out="$3"
    case "$mode" in
        h1)
            timeout "$LOAD_TIMEOUT" "${LOAD_CPU[@]}" wrk -t1 -c"$CONNS" -d"$WRK_WARM" "$url" > "$out.warmup" 2>&1 || true
            ;;
        h2)
            timeout "$LOAD_TIMEOUT" "${LOAD_CPU[@]}" h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D "$WARM_S" "$url" \
                > "$out.warmup" 2>&1 || true
            ;;
        hs)
            timeout "$LOAD_TIMEOUT" "${LOAD_CPU[@]}" "$TLS_BENCH_BIN" client "$url" "$PKI/a" \
                --conns "$HS_CONNS" --threads "$HS_THREADS" --duration "$WARM_S" > "$out.warmup" 2>&1 || true
            ;;
    esac
}

# run_hs ADDR OUTFILE: new mutual-TLS connections (full handshake, one GET, close) from
# HS_CONNS loops for DURATION, at most HS_MAX connections (tests/src/bin/tls-bench.rs).
run_hs() {
    local addr="$1" out="$2"
    timeout "$LOAD_TIMEOUT" "${LOAD_CPU[@]}" "$TLS_BENCH_BIN" client "$addr" "$PKI/a" \
        --conns "$HS_CONNS" --threads "$HS_THREADS" --duration "$DUR_S" --max "$HS_MAX" > "$out" 2>&1 ||
        log "tls-bench exited non-zero (see $out)"
}

parse_hs() {
    local out="$1" line
    line="$(grep '^tls-bench:' "$out" || true)"
    field() { awk -v k="$1" '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }' <<< "$line"; }
    R_RPS="$(field rate)"
    R_P50="$(field p50_us)"
    R_P99="$(field p99_us)"
    R_ERR="$(field errors)"
    R_ERR="${R_ERR:-0}"
}

# run_h1 URL OUTFILE -> sets R_RPS R_P50 R_P99 R_ERR (latencies in us)
run_h1() {
    local url="$1" out="$2"
    timeout "$LOAD_TIMEOUT" "${LOAD_CPU[@]}" wrk -t1 -c"$CONNS" -d"$WRK_DUR" --latency "$url" > "$out" 2>&1 ||
        log "wrk exited non-zero (see $out)"
}

parse_h1() {
    local out="$1" non2xx sockerr
    R_RPS="$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")"
    R_P50="$(wrk_us "$(awk '$1 == "50%" { print $2 }' "$out")")"
    R_P99="$(wrk_us "$(awk '$1 == "99%" { print $2 }' "$out")")"
    non2xx="$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")"
    sockerr="$(awk -F'[ ,]+' '/Socket errors:/ { print $5 + $7 + $9 + $11 }' "$out")"
    R_ERR=$((${non2xx:-0} + ${sockerr:-0}))
}

# run_h2 URL OUTFILE; percentiles come from h2load's per-request --log-file
# (column 3: microseconds from request start to end of response).
run_h2() {
    local url="$1" out="$2"
    timeout "$LOAD_TIMEOUT" "${LOAD_CPU[@]}" h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D "$DUR_S" \
        --log-file="$RUN/h2.log" "$url" > "$out" 2>&1 ||
        log "h2load exited non-zero (see $out)"
}

parse_h2() {
    local out="$1" pct failed errored non2xx
    R_RPS="$(awk '/^finished in/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^req\/s/) { printf "%.0f", $i; exit } }' "$out")"
    pct="$(awk -F'\t' '$2 >= 200 && $2 < 400 { print $3 }' "$RUN/h2.log" | sort -n |
        awk '{ v[NR] = $1 } END {
            if (NR == 0) { print "0 0"; exit }
            i50 = int(NR * 0.50); if (i50 < NR * 0.50) i50++; if (i50 < 1) i50 = 1;
            i99 = int(NR * 0.99); if (i99 < NR * 0.99) i99++; if (i99 < 1) i99 = 1;
            print v[i50], v[i99] }')"
    R_P50="${pct% *}"
    R_P99="${pct#* }"
    {
        echo
        echo "# from --log-file: $(wc -l < "$RUN/h2.log") requests, p50=${R_P50}us p99=${R_P99}us"
    } >> "$out"
    rm -f "$RUN/h2.log"
    failed="$(awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^failed/) print $i }' "$out")"
    errored="$(awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^errored/) print $i }' "$out")"
    non2xx="$(awk '/^status codes:/ { print $7 + $9 }' "$out")"
    R_ERR=$((${failed:-0} + ${errored:-0} + ${non2xx:-0}))
}

# CPU ticks of this shell's reaped children (= the load generator, run in the foreground).
child_ticks() { awk '{ sub(/^.*\) /, ""); print $14 + $15 }' "/proc/$$/stat"; }
# Ticks over all CPUs: "user+nice+system irq+softirq steal".
all_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4, $7 + $8, $9 }' /proc/stat; }
pct_of() { awk -v a="$1" -v b="$2" -v t="$3" -v hz="$CLK_TCK" 'BEGIN { v = (b - a) / hz / t * 100; if (v < 0) v = 0; printf "%.0f", v }'; }
busy_pct() {
    awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ");
        d = y[2] - x[2]; printf "%.0f", (d > 0 ? (y[1] - x[1]) / d * 100 : 0) }'
}

# ---------------------------------------------------------------- results
# "scenario|proxy|rps|p50us|p99us|idleKB|peakKB|procCPU%|loadgenCPU%|cpu0%|cpu1%|other%|irq%|steal%|errors"
ROWS=()

# measure SCENARIO PROXY URL MODE
measure() {
    local scenario="$1" proxy="$2" url="$3" mode="$4"
    local raw="$OUT/raw/$scenario-$proxy-r$ROUND.txt"
    local idle="-" peak="-" pid="$PROXY_PID" pid2="$PROXY_PID2"
    local t0 t1 c0 c1 u0 u1 g0 g1 s0 s1 a0 a1 b0 b1 k0 k1
    [[ $proxy == direct ]] && pid="$UP_WORKER"
    # A pair's two processes count as one: CPU and RSS are A + B.
    ticks() { if [[ -n $pid2 ]]; then echo $(($(cpu_ticks "$pid") + $(cpu_ticks "$pid2"))); else cpu_ticks "$pid"; fi; }
    kb() { if [[ -n $pid2 ]]; then echo $(($(status_kb "$pid" "$1") + $(status_kb "$pid2" "$1"))); else status_kb "$pid" "$1"; fi; }
    if [[ $proxy != direct ]]; then
        sleep 0.5
        idle="$(kb VmRSS)"
    fi
    log "$scenario / $proxy: warm-up $WARMUP, load $DURATION ($url)"
    warmup "$url" "$mode" "$raw"
    c0="$(ticks)"
    local a0t="" a1t=""
    [[ -n $pid2 ]] && a0t="$(cpu_ticks "$pid")"
    u0="$(cpu_ticks "$UP_WORKER")"
    k0=0
    [[ -n $SINK_PID ]] && k0="$(cpu_ticks "$SINK_PID")"
    g0="$(child_ticks)"
    s0="$(all_ticks)"
    a0="$(cpu_line 0)"
    b0="$(cpu_line 1 || true)"
    t0="$(date +%s.%N)"
    case "$mode" in
        h1) run_h1 "$url" "$raw" ;;
        h2) run_h2 "$url" "$raw" ;;
        hs) run_hs "$url" "$raw" ;;
    esac
    t1="$(date +%s.%N)"
    c1="$(ticks)"
    [[ -n $pid2 ]] && a1t="$(cpu_ticks "$pid")"
    u1="$(cpu_ticks "$UP_WORKER")"
    k1=0
    [[ -n $SINK_PID ]] && k1="$(cpu_ticks "$SINK_PID")"
    g1="$(child_ticks)"
    s1="$(all_ticks)"
    a1="$(cpu_line 0)"
    b1="$(cpu_line 1 || true)"
    [[ $proxy != direct ]] && peak="$(kb VmHWM)"
    case "$mode" in
        h1) parse_h1 "$raw" ;;
        h2) parse_h2 "$raw" ;;
        hs) parse_hs "$raw" ;;
    esac

    local secs cpu gen busy0 busy1="-" ours other
    secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
    cpu="$(pct_of "$c0" "$c1" "$secs")"
    gen="$(pct_of "$g0" "$g1" "$secs")"
    busy0="$(busy_pct "$a0" "$a1")"
    [[ -n $b0 ]] && busy1="$(busy_pct "$b0" "$b1")"
    # Everything else that ran meanwhile (other builds, ...): a noise indicator.
    local sa sb irq steal
    read -ra sa <<< "$s0"
    read -ra sb <<< "$s1"
    ours=$(((c1 - c0) + (g1 - g0)))
    [[ $proxy != direct ]] && ours=$((ours + u1 - u0))
    # The collector of the telemetry run is part of the setup, not noise.
    ours=$((ours + k1 - k0))
    other="$(pct_of "$ours" "$((sb[0] - sa[0]))" "$secs")"
    irq="$(pct_of "${sa[1]}" "${sb[1]}" "$secs")"
    steal="$(pct_of "${sa[2]}" "${sb[2]}" "$secs")"
    {
        echo
        echo "# harness: rps=$R_RPS p50_us=$R_P50 p99_us=$R_P99 errors=$R_ERR idle_rss_kb=$idle" \
            "peak_rss_kb=$peak proc_cpu_pct=$cpu loadgen_cpu_pct=$gen cpu0_busy_pct=$busy0" \
            "cpu1_busy_pct=$busy1 other_cpu_pct=$other irq_softirq_pct=$irq steal_pct=$steal wall_s=$secs"
        # A pair's CPU split: sidecar A (client side) and B (server side).
        if [[ -n $pid2 ]]; then
            echo "# pair: a_cpu_pct=$(pct_of "$a0t" "$a1t" "$secs")" \
                "b_cpu_pct=$(pct_of "$((c0 - a0t))" "$((c1 - a1t))" "$secs")"
        fi
    } >> "$raw"
    LAST_ROW="$scenario|$proxy|${R_RPS:-0}|${R_P50:-0}|${R_P99:-0}|$idle|$peak|$cpu|$gen|$busy0|$busy1|$other|$irq|$steal|$R_ERR"
    LAST_OTHER="$other"
}

# wait_quiet: before a scenario, give running compilers up to WAIT_IDLE seconds to finish.
wait_quiet() {
    local waited=0
    while [[ -n $(busy_procs) ]] && ((waited < WAIT_IDLE)); do
        sleep 5
        waited=$((waited + 5))
    done
    ((waited > 0)) && log "waited ${waited}s for compilers to finish"
    return 0
}

# scenario SCENARIO PROXY URL MODE: fresh proxy, measure, stop; redo (up to NOISY_RETRIES
# times) when other processes took more than NOISE_MAX % CPU during the load.
scenario() {
    local sc="$1" px="$2" url="$3" mode="$4" attempt=0
    local raw="$OUT/raw/$sc-$px-r$ROUND.txt"
    while :; do
        wait_quiet
        [[ $px != direct ]] && start_proxy "$px"
        measure "$sc" "$px" "$url" "$mode"
        [[ $px != direct ]] && stop_proxy
        if ((LAST_OTHER > NOISE_MAX && attempt < NOISY_RETRIES)); then
            attempt=$((attempt + 1))
            log "$sc / $px: other processes used ${LAST_OTHER}% CPU; redoing (attempt $((attempt + 1)))"
            mv "$raw" "$raw.noisy$attempt"
            continue
        fi
        ((LAST_OTHER > NOISE_MAX)) && log "WARNING: $sc / $px still noisy (${LAST_OTHER}% other CPU)"
        ROWS+=("$LAST_ROW")
        return 0
    done
}

# ---------------------------------------------------------------- quiet machine
# Other heavy work (a cargo build on a 2-core box) wrecks the numbers: wait up to WAIT_IDLE
# seconds for compilers to finish, then go on regardless but say so.
busy_procs() {
    ps -eo pid=,comm= | awk '$2 ~ /^(cargo|cargo-clippy|clippy-driver|rustc|rustdoc|cc1|cc1plus|ld|ld\.lld|mold)$/ { printf "%s%s(%s)", sep, $2, $1; sep = " " }'
}
waited=0
while [[ -n $(busy_procs) ]] && ((waited < WAIT_IDLE)); do
    ((waited == 0)) && log "compilers running ($(busy_procs)); waiting up to ${WAIT_IDLE}s"
    sleep 5
    waited=$((waited + 5))
done
NOISE="none seen at start"
if [[ -n $(busy_procs) ]]; then
    NOISE="compiler processes running at start: $(busy_procs)"
    log "WARNING: $NOISE; results will be noisy (see 'other CPU %')"
fi
ulimit -n 65536 2> /dev/null || true

# ---------------------------------------------------------------- environment record
for p in "${ALL_PORTS[@]}"; do
    port_in_use "$p" && die "port $p is in use (set PORT_BASE to move the harness's ports)"
done
{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(uname -srm); $(nproc) CPUs; $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "weft: $WEFT_BIN ($("$WEFT_BIN" --version 2> /dev/null || echo '?')); build: $WEFT_BUILD"
    echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo '?')" \
        "($(git -C "$ROOT" status --porcelain 2> /dev/null | wc -l) changed files in the work tree)"
    echo "haproxy: $(haproxy -v 2> /dev/null | head -n1)"
    echo "nginx: $(nginx -v 2>&1)"
    echo "wrk: $(wrk -v 2>&1 | head -n1)"
    echo "h2load: $(h2load --version 2>&1 | head -n1)"
    [[ $MTLS == 1 ]] && echo "tls-bench: $TLS_BENCH_BIN; openssl: $(openssl version 2>&1)" \
        "(haproxy and nginx link it; Weft and tls-bench use rustls with aws-lc-rs)"
    echo "settings: DURATION=$DURATION WARMUP=$WARMUP CONNS=$CONNS H2_CONNS=$H2_CONNS" \
        "H2_STREAMS=$H2_STREAMS PIN=$PIN QUICK=$QUICK PORT_BASE=$PORT_BASE MTLS=$MTLS" \
        "HS_CONNS=$HS_CONNS HS_THREADS=$HS_THREADS HS_PIN=$HS_PIN SCENARIOS=\"$SCENARIOS\""
    [[ $PIN == 1 ]] && echo "pinning: proxy under test on CPU 1; upstream + load generator on CPU 0"
    [[ $PIN == 1 ]] || echo "pinning: none (scheduler places everything)"
    echo "other load: $NOISE; loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$OUT/env.txt"
cat "$OUT/env.txt" >&2

# ---------------------------------------------------------------- run
start_upstream
UP_WORKER="$(nginx_worker "$UP_PID")"

PROXIES=(weft)
[[ $RESILIENCE == 1 ]] && PROXIES+=(weft-bare)
[[ $TELEMETRY == 1 ]] && start_sink && PROXIES+=(weft-obs)
PROXIES+=(haproxy nginx)
declare -A H1_PORT=([weft]=$WEFT_PORT [weft-bare]=$WEFT_PORT [weft-obs]=$WEFT_PORT [haproxy]=$HAPROXY_PORT [nginx]=$NGINX_PORT)
declare -A H2_PORT=([weft]=$WEFT_PORT [weft-bare]=$WEFT_PORT [weft-obs]=$WEFT_PORT [haproxy]=$HAPROXY_H2_PORT [nginx]=$NGINX_H2_PORT)
# Sidecar pairs (mtls-h1, mtls-h2: load on A) and handshake targets (handshake).
PAIRS=()
HS_TARGETS=()
if [[ $MTLS == 1 ]]; then
    make_pki
    PAIRS=(weft-mtls-pair haproxy-tls-pair)
    [[ $NGINX_TLS == 1 ]] && PAIRS+=(nginx-tls-pair)
    HS_TARGETS=(weft-mtls-b rustls-alone)
fi
declare -A PAIR_H1_PORT=([weft-mtls-pair]=$WA_PORT [haproxy-tls-pair]=$HA_A_PORT [nginx-tls-pair]=$NG_A_PORT)
declare -A PAIR_H2_PORT=([weft-mtls-pair]=$WA_PORT [haproxy-tls-pair]=$HA_A_H2_PORT [nginx-tls-pair]=$NG_A_H2_PORT)
declare -A HS_PORT=([weft-mtls-b]=$WB_PORT [rustls-alone]=$RUSTLS_PORT)

# Machines like this one drift by several percent within minutes, so each proxy is
# measured ROUNDS times, the order rotating every round so that no proxy always runs
# first or last; the table reports the median of each figure.
rotate() { local n=$1; shift; local a=("$@"); echo "${a[@]:n}" "${a[@]:0:n}"; }
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    log "round $ROUND of $ROUNDS"
    read -ra order <<< "$(rotate $(((ROUND - 1) % ${#PROXIES[@]})) "${PROXIES[@]}")"
    # HTTP/1.1 keep-alive (wrk). Each proxy is started fresh per scenario so idle/peak
    # RSS are its own.
    if wants h1; then
        scenario h1 direct "http://127.0.0.1:$UP_PORT/" h1
        for p in "${order[@]}"; do
            scenario h1 "$p" "http://127.0.0.1:${H1_PORT[$p]}/" h1
        done
    fi
    # h2c prior knowledge (h2load); the proxies still talk HTTP/1.1 to the upstream.
    if wants h2; then
        scenario h2 direct "http://127.0.0.1:$UP_H2_PORT/" h2
        for p in "${order[@]}"; do
            scenario h2 "$p" "http://127.0.0.1:${H2_PORT[$p]}/" h2
        done
    fi
    ((MTLS == 1)) || continue
    # The sidecar pairs: the same wrk and h2load loads on A, which forwards over mutual
    # TLS to B, which forwards to the upstream.
    read -ra order <<< "$(rotate $(((ROUND - 1) % ${#PAIRS[@]})) "${PAIRS[@]}")"
    if wants mtls-h1; then
        for p in "${order[@]}"; do
            scenario mtls-h1 "$p" "http://127.0.0.1:${PAIR_H1_PORT[$p]}/" h1
        done
    fi
    if wants mtls-h2; then
        for p in "${order[@]}"; do
            scenario mtls-h2 "$p" "http://127.0.0.1:${PAIR_H2_PORT[$p]}/" h2
        done
    fi
    # New mutual-TLS connections per second: Weft's mesh listener (B) vs rustls alone.
    # Pinned by default (HS_PIN): the client costs less per handshake than the server,
    # so on its own CPU it keeps the server's CPU saturated and the rate is the server's.
    if wants handshake; then
        read -ra order <<< "$(rotate $(((ROUND - 1) % ${#HS_TARGETS[@]})) "${HS_TARGETS[@]}")"
        saved_proxy_cpu=("${PROXY_CPU[@]}")
        saved_load_cpu=("${LOAD_CPU[@]}")
        if [[ $HS_PIN == 1 ]]; then
            PROXY_CPU=(taskset -c 1)
            LOAD_CPU=(taskset -c 0)
        fi
        for p in "${order[@]}"; do
            scenario handshake "$p" "127.0.0.1:${HS_PORT[$p]}" hs
        done
        PROXY_CPU=("${saved_proxy_cpu[@]}")
        LOAD_CPU=("${saved_load_cpu[@]}")
    fi
done

# One row per (scenario, proxy): the median of every numeric field over the rounds, plus
# the min-max range of req/s.
median_rows() {
    local sc px
    for sc in h1 h2 mtls-h1 mtls-h2 handshake; do
        for px in direct "${PROXIES[@]}" "${PAIRS[@]}" "${HS_TARGETS[@]}"; do
            printf '%s\n' "${ROWS[@]}" | awk -F'|' -v sc="$sc" -v px="$px" '
                $1 == sc && $2 == px { n++; for (i = 3; i <= 15; i++) v[i, n] = $i }
                END {
                    if (n == 0) exit
                    line = sc "|" px
                    for (i = 3; i <= 15; i++) {
                        m = 0; delete a
                        for (k = 1; k <= n; k++) if (v[i, k] != "-" && v[i, k] != "") a[++m] = v[i, k] + 0
                        if (m == 0) { line = line "|-"; continue }
                        for (x = 1; x <= m; x++) for (y = x + 1; y <= m; y++) if (a[y] < a[x]) { t = a[x]; a[x] = a[y]; a[y] = t }
                        med = (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
                        line = line "|" ((med == int(med)) ? med : sprintf("%.0f", med))
                        if (i == 3) { lo = a[1]; hi = a[m] }
                    }
                    print line "|" lo "-" hi
                }'
        done
    done
}
mapfile -t ALL_ROWS < <(printf '%s\n' "${ROWS[@]}")
mapfile -t ROWS < <(median_rows)

# ---------------------------------------------------------------- table
fmt_ms() { awk -v v="$1" 'BEGIN { if (v == "") print "n/a"; else printf "%.2f ms", v / 1000 }'; }
fmt_mb() { awk -v v="$1" 'BEGIN { if (v == "-" || v == "") print "-"; else printf "%.1f MB", v / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || a == "" || b == "-" || b == "" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }

per_core() { awk -v r="$1" -v c="$2" 'BEGIN { if (c + 0 == 0) print "-"; else printf "%.0f", r / (c / 100) }'; }
# field_of SCENARIO PROXY N: field N (1-based, '|'-separated) of that median row.
field_of() { printf '%s\n' "${ROWS[@]}" | awk -F'|' -v sc="$1" -v px="$2" -v n="$3" '$1 == sc && $2 == px { print $n }'; }

# Every scenario's ratios are to one row of it: haproxy (h1, h2), the haproxy pair
# (mtls-h1, mtls-h2), rustls alone (handshake).
ref_of() {
    case "$1" in
        mtls-*) echo haproxy-tls-pair ;;
        handshake) echo rustls-alone ;;
        *) echo haproxy ;;
    esac
}

# per_round SCENARIO PROXY REF: PROXY's req/s over REF's, round by round (the k-th
# measurement of each, taken in the same round, minutes apart at most), space-separated.
# The machine drifts between phases lasting minutes; a ratio within one round is less
# exposed to that than the ratio of medians, and how many rounds go either way shows it.
per_round() {
    printf '%s\n' "${ALL_ROWS[@]}" | awk -F'|' -v sc="$1" -v px="$2" -v ref="$3" '
        $1 == sc && $2 == px { a[++na] = $3 }
        $1 == sc && $2 == ref { b[++nb] = $3 }
        END {
            n = na < nb ? na : nb
            for (k = 1; k <= n; k++) if (b[k] > 0) { printf "%s%.2f", sep, a[k] / b[k]; sep = " " }
        }'
}

declare -A HA_RPS HA_P99 HA_CORE WEFT_RPS OBS_RPS BARE_RPS
for r in "${ROWS[@]}"; do
    IFS='|' read -r sc px rps p50 p99 idle peak cpu _ <<< "$r"
    if [[ $px == "$(ref_of "$sc")" ]]; then
        HA_RPS[$sc]=$rps
        HA_P99[$sc]=$p99
        HA_CORE[$sc]="$(per_core "$rps" "$cpu")"
    fi
    [[ $px == weft || $px == weft-mtls-pair || $px == weft-mtls-b ]] && WEFT_RPS[$sc]=$rps
    [[ $px == weft-obs ]] && OBS_RPS[$sc]=$rps
    [[ $px == weft-bare ]] && BARE_RPS[$sc]=$rps
done

TABLE="$OUT/table.md"
{
    echo "## Weft perf: $(date -u +%FT%TZ), PIN=$PIN, load $DURATION (warm-up $WARMUP)," \
        "h1: wrk -t1 -c$CONNS, h2: h2load -t1 -c$H2_CONNS -m$H2_STREAMS; medians of $ROUNDS rounds"
    echo
    echo "| scenario | proxy | req/s | req/s range | p50 | p99 | idle RSS | peak RSS | req/s ratio to haproxy | p99 ratio to haproxy |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    noisy=0
    for r in "${ROWS[@]}"; do
        IFS='|' read -r sc px rps p50 p99 idle peak cpu gen b0 b1 other irq steal err range <<< "$r"
        [[ $sc == handshake ]] && continue
        if ((other > NOISE_MAX)); then
            px="$px *"
            noisy=1
        fi
        echo "| $sc | $px | $rps | $range | $(fmt_ms "$p50") | $(fmt_ms "$p99") | $(fmt_mb "$idle") | $(fmt_mb "$peak")" \
            "| $(ratio "$rps" "${HA_RPS[$sc]:-}") | $(ratio "$p99" "${HA_P99[$sc]:-}") |"
    done
    if ((noisy)); then
        echo
        echo "\* other processes used more than $NOISE_MAX % CPU during this measurement, even after" \
            "$NOISY_RETRIES retries: treat it as noisy."
    fi
    if [[ $RESILIENCE == 1 ]]; then
        echo
        echo "weft-bare is weft without its default resilience layers (retries with a budget, outlier" \
            "detection, circuit-breaker limits). Layers on / off, req/s:" \
            "h1 $(ratio "${WEFT_RPS[h1]:-}" "${BARE_RPS[h1]:-}"), h2 $(ratio "${WEFT_RPS[h2]:-}" "${BARE_RPS[h2]:-}")."
    fi
    if [[ $MTLS == 1 ]]; then
        echo
        echo "mtls-h1 / mtls-h2: the same loads on sidecar A, which forwards over mutual TLS 1.3 to" \
            "sidecar B, which forwards to the upstream; ratios are to haproxy-tls-pair, RSS and CPU are" \
            "A + B. Weft A multiplexes every request over HTTP/2 to B; HAProxy and nginx A keep a pool" \
            "of HTTP/1.1 keep-alive TLS connections to B. weft-mtls-pair / haproxy-tls-pair:" \
            "h1 req/s $(ratio "${WEFT_RPS[mtls-h1]:-}" "${HA_RPS[mtls-h1]:-}"), p99 $(ratio "$(field_of mtls-h1 weft-mtls-pair 5)" "${HA_P99[mtls-h1]:-}");" \
            "h2 req/s $(ratio "${WEFT_RPS[mtls-h2]:-}" "${HA_RPS[mtls-h2]:-}"), p99 $(ratio "$(field_of mtls-h2 weft-mtls-pair 5)" "${HA_P99[mtls-h2]:-}")."
    fi
    if [[ $TELEMETRY == 1 ]]; then
        echo
        echo "weft-obs is weft with a JSON access log to a file and $TRACE_PERCENT % of requests traced to an" \
            "OTLP collector (metrics are always on). Telemetry on / off, req/s:" \
            "h1 $(ratio "${OBS_RPS[h1]:-}" "${WEFT_RPS[h1]:-}"), h2 $(ratio "${OBS_RPS[h2]:-}" "${WEFT_RPS[h2]:-}")."
    fi
    rounds=""
    for sc in h1 h2 mtls-h1 mtls-h2; do
        wants "$sc" || continue
        px=weft
        [[ $sc == mtls-* ]] && px=weft-mtls-pair
        r="$(per_round "$sc" "$px" "$(ref_of "$sc")")"
        [[ -n $r ]] && rounds+="${rounds:+; }$sc $r"
        if [[ $px == weft && $RESILIENCE == 1 ]]; then
            r="$(per_round "$sc" weft-bare "$(ref_of "$sc")")"
            [[ -n $r ]] && rounds+="; $sc weft-bare $r"
        fi
    done
    if [[ -n $rounds ]]; then
        echo
        echo "Round by round (each round's Weft measurement over the same round's HAProxy one)," \
            "req/s: $rounds."
    fi
    echo
    echo "Details, over the measured load only. 'proc CPU' is the proxy process (nginx: its worker;"
    echo "direct: the upstream worker); 'req/s per proxy core' = req/s / proc CPU, the efficiency"
    echo "figure that holds even when the load generator, not the proxy, is the bottleneck;"
    echo "'other CPU' is CPU used by anything but the proxy, upstream and load generator (noise);"
    echo "'irq' is interrupt + softirq time (loopback networking, not charged to processes); 'steal'"
    echo "is time the hypervisor gave to other guests. Percentages are of one CPU."
    echo
    echo "| scenario | proxy | proc CPU % | req/s per proxy core | per-core ratio to haproxy | load-gen CPU % | CPU0 busy % | CPU1 busy % | other CPU % | irq % | steal % | errors |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for r in "${ROWS[@]}"; do
        IFS='|' read -r sc px rps p50 p99 idle peak cpu gen b0 b1 other irq steal err _ <<< "$r"
        [[ $sc == handshake ]] && continue
        echo "| $sc | $px | $cpu | $(per_core "$rps" "$cpu") | $(ratio "$(per_core "$rps" "$cpu")" "${HA_CORE[$sc]:-}")" \
            "| $gen | $b0 | $b1 | $other | $irq | $steal | $err |"
    done
    echo
    echo "h1 latencies: wrk --latency percentiles. h2 latencies: exact p50/p99 over h2load's"
    echo "per-request --log-file (request start to end of response). RSS: VmRSS before the"
    echo "load (idle) and VmHWM after warm-up + load (peak) of the process doing the work (nginx: its worker)."
    echo "Raw outputs: $OUT/raw/ (every round; rows.txt has the unaggregated rows)."
    if [[ $MTLS == 1 ]]; then
        echo
        echo "### New mutual-TLS connections per second (TLS 1.3, full handshake, one GET, close)"
        echo
        echo "tls-bench client: $HS_CONNS loops on $HS_THREADS threads, sidecar A's certificate, no resumption;" \
            "$([[ $HS_PIN == 1 ]] && echo "server pinned to CPU 1, client to CPU 0;" || echo "not pinned;")" \
            "latency = connect + handshake + request + response. weft-mtls-b: sidecar B's mesh listener" \
            "(routes / to the upstream); rustls-alone: tls-bench server, Weft's mesh_server_config on one" \
            "thread answering a fixed 200. Per server core = handshakes/s / server CPU."
        echo
        echo "| target | handshakes/s | range | p50 | p99 | server CPU % | per server core | client CPU % | idle RSS | peak RSS | ratio to rustls-alone | per-core ratio | other CPU % | errors |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for r in "${ROWS[@]}"; do
            IFS='|' read -r sc px rps p50 p99 idle peak cpu gen b0 b1 other irq steal err range <<< "$r"
            [[ $sc == handshake ]] || continue
            ((other > NOISE_MAX)) && px="$px *"
            echo "| $px | $rps | $range | $(fmt_ms "$p50") | $(fmt_ms "$p99") | $cpu | $(per_core "$rps" "$cpu")" \
                "| $gen | $(fmt_mb "$idle") | $(fmt_mb "$peak") | $(ratio "$rps" "${HA_RPS[handshake]:-}")" \
                "| $(ratio "$(per_core "$rps" "$cpu")" "${HA_CORE[handshake]:-}") | $other | $err |"
        done
        echo
        echo "Weft / rustls alone: handshakes/s $(ratio "${WEFT_RPS[handshake]:-}" "${HA_RPS[handshake]:-}")," \
            "per server core $(ratio "$(per_core "${WEFT_RPS[handshake]:-}" "$(field_of handshake weft-mtls-b 8)")" "${HA_CORE[handshake]:-}")" \
            "(target >= 0.8)."
    fi
} > "$TABLE"
printf '%s\n' "${ALL_ROWS[@]}" > "$OUT/raw/rows.txt"
cat "$TABLE"

# Weft idle RSS budget (< 15 MB with one worker).
for r in "${ROWS[@]}"; do
    IFS='|' read -r sc px rps p50 p99 idle _ <<< "$r"
    if [[ $px == weft && $idle != "-" ]]; then
        if ((idle >= 15 * 1024)); then
            log "WARNING: weft idle RSS $(fmt_mb "$idle") in $sc is over the 15 MB budget"
        fi
    fi
done
log "results in $OUT"
