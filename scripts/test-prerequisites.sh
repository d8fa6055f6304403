#!/usr/bin/env bash
# The Debian packages the test suite drives for real: Chromium (browser tests, through
# playwright-core, no browser download), nats-server (clusters), HAProxy and Prometheus with
# promtool (deploy checks). Run before `npm test` (pretest) and by .ci/run. Missing packages are
# installed when running as root; otherwise it stops with the command to run, rather than letting
# the suite fail one test at a time much later.
set -euo pipefail

# Debian puts nats-server and haproxy in /usr/sbin, which a non-root PATH often lacks.
has() { PATH="$PATH:/usr/sbin:/sbin" command -v "$1" >/dev/null 2>&1; }

missing=()
has chromium || missing+=(chromium)
has nats-server || missing+=(nats-server)
has haproxy || missing+=(haproxy)
{ has prometheus && has promtool; } || missing+=(prometheus)

[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$EUID" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "natsedge tests need the Debian packages ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
