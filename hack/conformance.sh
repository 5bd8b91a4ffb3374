#!/usr/bin/env bash
# Runs the storage provider conformance suite (the CLI a provider author
# runs against their socket) against the filesystem reference provider:
# both built from this tree, the provider serving a socket in a scratch
# directory. Extra arguments go to artifacts-provider-conformance.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
pid=
cleanup() {
  [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
CGO_ENABLED=0 go build -o "$dir/" ./cmd/artifacts-provider-filesystem ./cmd/artifacts-provider-conformance
"$dir/artifacts-provider-filesystem" --endpoint "$dir/filesystem.sock" --root "$dir/store" --http-address= \
  >"$dir/provider.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [[ -S $dir/filesystem.sock ]] && break; sleep 0.1; done
if ! "$dir/artifacts-provider-conformance" --endpoint "$dir/filesystem.sock" --namespace conformance "$@"; then
  echo "--- provider log"; tail -40 "$dir/provider.log"
  exit 1
fi
