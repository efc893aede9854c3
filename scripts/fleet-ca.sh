#!/usr/bin/env bash
# A self-signed CA and a broker certificate signed by it, for the fleet's TLS listener (issue 18): for tests and
# trials. A real deployment uses its own CA (docs/fleet-update-format.md, "TLS"); the boards get only ca.crt.
#
#   bash scripts/fleet-ca.sh DIR [BROKER_NAME]     (default name: localhost; 127.0.0.1 is always in the SAN)
#
# Writes DIR/ca.crt, DIR/ca.key, DIR/server.crt, DIR/server.key (RSA 2048, 30 days). Needs the openssl CLI.
set -euo pipefail
dir=${1:?usage: fleet-ca.sh DIR [BROKER_NAME]}
name=${2:-localhost}
command -v openssl >/dev/null || { echo "fleet-ca.sh: the openssl command is needed (Debian package openssl)" >&2; exit 1; }
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=edgelearn fleet test CA" \
  -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=$name" -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:%s,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
  "$name" >server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile server.ext \
  -out server.crt 2>/dev/null
rm -f server.csr server.ext ca.srl
# mosquitto may read them after dropping to its own user.
chmod 644 ca.crt server.crt server.key
echo "fleet-ca.sh: $dir/ca.crt (give it to the boards), $dir/server.crt and $dir/server.key (the broker's, for $name)"
