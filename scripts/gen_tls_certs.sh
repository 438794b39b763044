#!/usr/bin/env bash
# Certificates for Ray's mutual TLS (RAY_USE_TLS=1) and for Redis TLS: a private CA, a server
# certificate for the nodes (Ray uses it on both ends of every gRPC connection) and a client
# certificate for drivers, job submitters and Redis clients.
#
#   scripts/gen_tls_certs.sh OUT_DIR [SAN ...]     e.g. scripts/gen_tls_certs.sh certs DNS:ray-head IP:10.0.0.10
#
# Every node and driver then runs with:
#   RAY_USE_TLS=1 RAY_TLS_SERVER_CERT=OUT_DIR/server.crt RAY_TLS_SERVER_KEY=OUT_DIR/server.key
#   RAY_TLS_CA_CERT=OUT_DIR/ca.crt
# Keys are written 0600; the CA key stays with whoever issues certificates (not on the nodes).
set -euo pipefail

out=${1:?usage: gen_tls_certs.sh OUT_DIR [SAN ...]}
shift
days=${TLS_DAYS:-365}
sans="DNS:localhost,IP:127.0.0.1,DNS:$(hostname)"
for extra in "$@"; do sans="$sans,$extra"; done
# the node's own routable address: Ray connects to nodes by it, not by localhost
if ip=$(hostname -I 2>/dev/null | awk '{print $1}') && [[ -n "$ip" ]]; then sans="$sans,IP:$ip"; fi

mkdir -p "$out"
umask 077
cd "$out"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days "$days" \
  -keyout ca.key -out ca.crt -subj "/O=Sapphire/CN=Sapphire Ray CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  2>/dev/null

issue() { # name, CN, extendedKeyUsage
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -keyout "$1.key" -out "$1.csr" \
    -subj "/O=Sapphire/CN=$2" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
    "$3" "$sans" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 \
    -days "$days" -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue server "sapphire-ray-node" "serverAuth,clientAuth"
issue client "sapphire-client" "clientAuth"
rm -f ca.srl
chmod 600 ./*.key
chmod 644 ./*.crt
openssl verify -CAfile ca.crt server.crt client.crt >/dev/null
echo "wrote $(pwd)/{ca,server,client}.{crt,key} (SAN: $sans)"
