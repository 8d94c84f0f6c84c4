#!/usr/bin/env bash
# Test certificates, made at test time with the openssl CLI (nothing here is
# committed). EC P-256 keys: the whole set takes well under a second.
#
#   make_certs.sh DIR
#
# writes into DIR (created if missing):
#   ca.pem ca.key                 the test CA
#   server.pem server.key         server certificate for 127.0.0.1, ::1 and localhost
#                                 (SAN), signed by ca.pem
#   server-bundle.pem             server.pem and server.key in one file
#                                 (PyMongo's tlsCertificateKeyFile, haproxy's crt)
#   client.pem client.key         client certificate (CN=varanus-test-client), by ca.pem
#   client-bundle.pem             client.pem and client.key in one file
#   expired.pem expired.key       server certificate for 127.0.0.1/localhost, expired
#                                 yesterday
#   otherhost.pem otherhost.key   server certificate for other.example (no IP SAN)
#   unknown-ca.pem unknown-ca.key a second CA nobody trusts
#   unknown.pem unknown.key       server certificate for 127.0.0.1/localhost by the
#                                 unknown CA
#   intermediate.pem intermediate.key  an intermediate CA signed by ca.pem
#   chain.pem chain.key           server certificate for 127.0.0.1/localhost signed by
#                                 the intermediate; chain.pem holds leaf + intermediate
#   server2.pem server2.key       a second valid server certificate (rotation tests)
#
# Exits non-zero, naming the step, when openssl fails.
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
dir=$1
mkdir -p "$dir"
cd "$dir"
command -v openssl >/dev/null || {
  echo "make_certs.sh: the openssl command is not installed" >&2
  exit 1
}

step() {
  local what=$1
  shift
  if ! out=$("$@" 2>&1); then
    echo "make_certs.sh: $what failed: $out" >&2
    exit 1
  fi
}

key() { step "key $1" openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

# ca NAME CN: a self-signed CA certificate NAME.pem with key NAME.key.
ca() {
  key "$1.key"
  step "CA $1" openssl req -x509 -new -key "$1.key" -subj "/CN=$2" -days 30 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" -out "$1.pem"
}

# leaf NAME CN ISSUER DAYS EXTENSIONS: NAME.pem/NAME.key signed by ISSUER.pem/.key.
leaf() {
  local name=$1 cn=$2 issuer=$3 days=$4 ext=$5
  key "$name.key"
  step "request $name" openssl req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr"
  printf '%b\n' "$ext" >"$name.ext"
  step "certificate $name" openssl x509 -req -in "$name.csr" -CA "$issuer.pem" -CAkey "$issuer.key" \
    -CAcreateserial -days "$days" -sha256 -extfile "$name.ext" -out "$name.pem"
  rm -f "$name.csr" "$name.ext"
}

server_ext='basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost'
client_ext='basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth'
other_ext='basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:other.example'
inter_ext='basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid'

ca ca "varanus test CA"
ca unknown-ca "varanus unknown CA"
leaf server localhost ca 30 "$server_ext"
leaf server2 localhost ca 30 "$server_ext"
leaf client varanus-test-client ca 30 "$client_ext"
# -days -1: notAfter is yesterday ("certificate has expired").
leaf expired localhost ca -1 "$server_ext"
leaf otherhost other.example ca 30 "$other_ext"
leaf unknown localhost unknown-ca 30 "$server_ext"
leaf intermediate "varanus test intermediate CA" ca 30 "$inter_ext"
leaf chain-leaf localhost intermediate 30 "$server_ext"
cat chain-leaf.pem intermediate.pem >chain.pem
mv chain-leaf.key chain.key
rm -f chain-leaf.pem
cat server.pem server.key >server-bundle.pem
cat client.pem client.key >client-bundle.pem
rm -f ./*.srl
chmod 600 ./*.key
