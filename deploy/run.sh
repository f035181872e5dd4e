#!/usr/bin/env bash
# Quick start, command 1: install what is needed, build, and run coapgate on its embedded
# defaults (CoAP on 0.0.0.0:5683, coaps:// on 0.0.0.0:5684, TELEMETRY_DATA lines on stdout). Arguments are passed
# to coapgate (e.g. --config FILE).
#
# It runs in deploy/examples, so the default devices file (devices.csv) is the example one,
# which registers 127.0.0.1 and ::1: from another terminal,
#   coap-client-notls -m post -e hello 'coap://127.0.0.1/?t=test'
# gets 2.04 and the message appears here. Ctrl-C drains and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
deploy/build.sh release
coapgate=$PWD/build/release/app/coapgate
cd deploy/examples
exec "$coapgate" "$@"
