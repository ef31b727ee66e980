#!/usr/bin/env sh
# A self-signed certificate for trying the TLS profile locally (browsers will warn).
# In production, put your real certificate and key here as tls.crt and tls.key.
set -eu
cd "$(dirname "$0")"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout tls.key -out tls.crt
echo "wrote $(pwd)/tls.crt and tls.key"
