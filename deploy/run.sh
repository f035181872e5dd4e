#!/usr/bin/env bash
# Quick start, command 1: install what is needed, build, and run coapgate on its embedded
# defaults. Arguments are passed to coapgate.
#
# Until the ingest server lands (issue #3) coapgate's one command is `dissect`; with no
# arguments this runs it over deploy/examples/datagrams.txt, typical device datagrams and
# the malformed ones of the test catalogue, to show each verdict and reply.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
deploy/build.sh release
if (($#)); then
  exec build/release/engine/coapgate "$@"
fi
exec build/release/engine/coapgate dissect < deploy/examples/datagrams.txt
