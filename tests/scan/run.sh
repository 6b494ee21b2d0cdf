#!/usr/bin/env bash
# External TLS scanners against Weft (the identity-and-security issue's acceptance):
# sslscan against an edge TLS listener (expect only TLS 1.2/1.3 with forward-secret AEAD
# suites) and against a mesh mTLS listener (expect TLS 1.3 only, and a client without a
# certificate unable to complete a request). Installs sslscan from Debian's packages
# unless NO_INSTALL=1. Traffic stays on 127.0.0.1.
#
#   tests/scan/run.sh                      # builds weft (release) unless WEFT_BIN is set
#   WEFT_BIN=target/release/weft NO_INSTALL=1 tests/scan/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ "${NO_INSTALL:-0}" != 1 ]] && ! command -v sslscan >/dev/null; then
    apt-get update -qq && apt-get install -y -qq sslscan >/dev/null
fi
WEFT=${WEFT_BIN:-target/release/weft}
if [[ -z "${WEFT_BIN:-}" ]]; then
    cargo build -q --release -p weft-proxy
fi

dir=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT

"$WEFT" ca init --trust-domain scan.test --out "$dir/ca" >/dev/null
"$WEFT" ca issue --ca "$dir/ca" --id spiffe://scan.test/ns/scan/sa/weft --out "$dir/id" >/dev/null
# An edge certificate: the dev CA can issue one with DNS names only through the library,
# so use openssl for the server certificate (ECDSA P-256, signed by the dev CA).
openssl ecparam -name prime256v1 -genkey -noout -out "$dir/edge-key.pem" 2>/dev/null
openssl req -new -key "$dir/edge-key.pem" -subj /CN=shop.example -out "$dir/edge.csr" 2>/dev/null
printf 'subjectAltName=DNS:shop.example\nextendedKeyUsage=serverAuth\n' >"$dir/ext.cnf"
openssl x509 -req -in "$dir/edge.csr" -CA "$dir/ca/ca.pem" -CAkey "$dir/ca/ca-key.pem" \
    -CAcreateserial -days 1 -extfile "$dir/ext.cnf" -out "$dir/edge.pem" 2>/dev/null

EDGE=127.0.0.1:18443
MESH=127.0.0.1:18444
cat >"$dir/weft.yaml" <<YAML
admin: { address: 127.0.0.1:19443 }
identity: { cert: $dir/id/cert.pem, key: $dir/id/key.pem, ca: $dir/id/ca.pem }
listeners:
  - name: edge
    address: $EDGE
    tls: { certificates: [ { cert: $dir/edge.pem, key: $dir/edge-key.pem } ] }
    routes: [ { respond: { status: 200, body: "edge ok" } } ]
  - name: mesh
    address: $MESH
    mtls: true
    routes: [ { respond: { status: 200, body: "mesh ok" } } ]
YAML
"$WEFT" --log-level warn,rustls=error run -c "$dir/weft.yaml" &
pids+=($!)
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:19443/ready && break; sleep 0.1; done

echo "== sslscan $EDGE (edge TLS)"
sslscan --no-colour --no-heartbleed "$EDGE" | sed -n '/SSL\/TLS Protocols/,/Server Key Exchange/p'
echo
echo "== sslscan $MESH (mesh mutual TLS)"
sslscan --no-colour --no-heartbleed "$MESH" | sed -n '/SSL\/TLS Protocols/,/Server Key Exchange/p'
echo
echo "== a client without a certificate against the mesh listener"
if out=$(curl -sk --max-time 5 "https://$MESH/" 2>&1); then
    echo "UNEXPECTED: answered: $out"; exit 1
else
    echo "refused (curl exit $?): no request completes without a client certificate"
fi
echo "== with the workload certificate"
curl -s --max-time 5 --cacert "$dir/ca/ca.pem" --cert "$dir/id/cert.pem" --key "$dir/id/key.pem" -k "https://$MESH/"; echo
echo "== handshake outcomes counted by Weft"
curl -s http://127.0.0.1:19443/metrics | grep '^weft_tls_handshakes_total' | grep -v ' 0$'
