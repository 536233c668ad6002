#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null || ! command -v chromium >/dev/null \
    || ! command -v prometheus-node-exporter >/dev/null || ! command -v prometheus-alertmanager >/dev/null \
    || ! command -v memcached >/dev/null || ! bash scripts/venv.sh --check; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # chromium: the web UI's browser tests drive it headless; node-exporter: their screenshots' setup;
  # prometheus-alertmanager: the ruler's tests send alerts to a real one; memcached: the store
  # gateway's shared caches and the query frontend's results cache are tested against it;
  # python3-venv and python3-dev: the venv is made on Debian's optimized CPython (scripts/venv.sh).
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus prometheus-node-exporter \
    prometheus-alertmanager chromium memcached python3 python3-venv python3-dev >/dev/null
fi
bash scripts/venv.sh -e '.[test]'
# Reference peers (pinned Thanos, Prometheus 3) built from the Go module proxy into .peers/;
# instant once built. The Go module and build caches (~/go, ~/.cache/go-build) persist.
[ -x /usr/local/go/bin/go ] && PATH="$PATH:/usr/local/go/bin"
bash scripts/peers.sh
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
# pytest exits 5 when it collected no tests: that is a failure here.
[ "$rc" -eq 5 ] && echo "no tests ran" >&2
exit "$rc"
