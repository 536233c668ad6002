#!/usr/bin/env bash
# Builds the reference peers that interop tests and benchmarks compare promring against:
# pinned releases of Thanos and Prometheus 3 (prometheus + promtool), built from the Go module
# proxy with the ordinary go command into a git-ignored cache (.peers/ by default).
# Idempotent: a binary already built for its pinned version is reused, so a second run is instant.
# Prints one "name=path" line per binary on stdout (progress goes to stderr).
# `peers.sh --print` builds nothing: it prints the paths and exits 1 if any binary is missing.
#
# Knobs (environment):
#   PEERS_DIR           where binaries go (default: <repo>/.peers)
#   THANOS_VERSION      github.com/thanos-io/thanos module version (default below)
#   PROMETHEUS_VERSION  github.com/prometheus/prometheus module version; v0.3XY.Z is Prometheus 3.XY.Z
#   GO                  go binary (default: go on PATH, else /usr/local/go/bin/go)
#   GOMODCACHE, GOCACHE module and build caches; the defaults (~/go/pkg/mod, ~/.cache/go-build)
#                       persist between runs, which is what makes warm runs and rebuilds cheap.
#   GOFLAGS             passed through to go (default -buildvcs=false)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS_DIR=${PEERS_DIR:-$ROOT/.peers}
THANOS_VERSION=${THANOS_VERSION:-v0.42.4}
PROMETHEUS_VERSION=${PROMETHEUS_VERSION:-v0.316.0}

PRINT_ONLY=0
[ "${1:-}" = "--print" ] && PRINT_ONLY=1
MISSING=0
if [ "$PRINT_ONLY" = 0 ]; then
  if [ -z "${GO:-}" ]; then
    GO=$(command -v go || true)
    [ -n "$GO" ] || GO=/usr/local/go/bin/go
  fi
  [ -x "$GO" ] || { echo "peers.sh: no go toolchain (looked on PATH and at /usr/local/go/bin/go)" >&2; exit 1; }
  export GOMODCACHE=${GOMODCACHE:-$("$GO" env GOMODCACHE)}
  export GOCACHE=${GOCACHE:-$("$GO" env GOCACHE)}
  export GOFLAGS=${GOFLAGS:--buildvcs=false}
  export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
  export CGO_ENABLED=${CGO_ENABLED:-0}
fi
mkdir -p "$PEERS_DIR/bin"

# build_peer MODULE VERSION NAME PACKAGE [TAGS]
# Builds PACKAGE of MODULE@VERSION with build TAGS (space separated) into
# $PEERS_DIR/bin/NAME-VERSION[-TAG_TAG] (skipped when present) from a
# throwaway module that requires MODULE@VERSION and repeats its replace and exclude directives:
# `go install pkg@version` refuses modules whose go.mod has them (Thanos's does).
build_peer() {
  local module=$1 version=$2 name=$3 package=$4 tags=${5:-}
  local out="$PEERS_DIR/bin/$name-$version${tags:+-${tags// /_}}"
  if [ -x "$out" ]; then
    echo "$name=$out"
    return
  fi
  if [ "$PRINT_ONLY" = 1 ]; then
    echo "$name=$out"
    echo "peers.sh: $out is missing (run: bash scripts/peers.sh)" >&2
    MISSING=1
    return
  fi
  echo "peers.sh: building $package@$version (slow the first time)" >&2
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  (
    cd "$work"
    "$GO" mod init promring.local/peers >/dev/null 2>&1
    local gomod
    gomod=$("$GO" mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    # Repeat the upstream module's replace/exclude lines (local-path replacements cannot apply here).
    "$GO" mod edit -json "$gomod" | python3 -c '
import json, sys
mod = json.load(sys.stdin)
def at(m):
    return m["Path"] + ("@" + m["Version"] if m.get("Version") else "")
for r in mod.get("Replace") or []:
    if r["New"].get("Version"):
        print("-replace=" + at(r["Old"]) + "=" + at(r["New"]))
for e in mod.get("Exclude") or []:
    print("-exclude=" + at(e))
' | xargs -r "$GO" mod edit
    "$GO" get "$package@$version" >&2
    local ldflags="-s -w -X github.com/prometheus/common/version.Version=${version#v}"
    ldflags+=" -X github.com/prometheus/common/version.Branch=promring-peers"
    "$GO" build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$out.tmp" "$package"
  )
  mv "$out.tmp" "$out"
  echo "$name=$out"
}

# Thanos: one binary with every component (receive, query, store, compact, tools). Its releases
# are built with these tags (.promu.yml): its label conversions assume Prometheus's slice labels
# and panic on the default representation.
build_peer github.com/thanos-io/thanos "$THANOS_VERSION" thanos github.com/thanos-io/thanos/cmd/thanos \
  "netgo slicelabels"
# Prometheus 3: built without the builtinassets tag, so the web UI assets (not in the module) are
# not needed; the APIs, remote write receiver and promtool are complete without them.
build_peer github.com/prometheus/prometheus "$PROMETHEUS_VERSION" prometheus github.com/prometheus/prometheus/cmd/prometheus
build_peer github.com/prometheus/prometheus "$PROMETHEUS_VERSION" promtool github.com/prometheus/prometheus/cmd/promtool
exit "$MISSING"
