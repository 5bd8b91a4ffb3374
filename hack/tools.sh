#!/usr/bin/env bash
# Builds the pinned third-party binaries the tests and benchmarks need, from
# the Go module proxy, into a cache directory, and prints that directory.
# Re-running is cheap: a binary already built at the pinned version is kept.
#
#   TOOLS_DIR   where binaries go (default: $XDG_CACHE_HOME/tekton-artifacts-tools
#               or ~/.cache/tekton-artifacts-tools)
set -euo pipefail

REGISTRY_VERSION=v3.1.2   # github.com/distribution/distribution/v3 (CNCF distribution)
ORAS_VERSION=v1.3.6       # oras.land/oras (benchmark baseline)

TOOLS_DIR=${TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tekton-artifacts-tools}
mkdir -p "$TOOLS_DIR"

build() { # name module@version
  local name=$1 pkg=$2 stamp="$TOOLS_DIR/.$1.version"
  if [[ -x "$TOOLS_DIR/$name" && "$(cat "$stamp" 2>/dev/null)" == "$pkg" ]]; then
    return
  fi
  echo "building $pkg" >&2
  GOBIN="$TOOLS_DIR" GOFLAGS=-mod=mod go install "$pkg" >&2
  echo "$pkg" >"$stamp"
}

build registry "github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION"
if [[ "${1:-}" == "--bench" ]]; then
  build oras "oras.land/oras/cmd/oras@$ORAS_VERSION"
fi
echo "$TOOLS_DIR"
