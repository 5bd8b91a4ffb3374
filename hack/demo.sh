#!/usr/bin/env bash
# Brings up a local OCI registry (CNCF distribution, built from the Go module
# proxy) on 127.0.0.1, then pushes, inspects, re-pushes and pulls an example
# tree with the artifacts CLI. Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=$(hack/tools.sh)
make -s build
work=$(mktemp -d)
trap 'kill "$reg_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

port=${DEMO_PORT:-5917}
cat >"$work/registry.yml" <<YAML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
YAML
"$tools/registry" serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg_pid=$!
until curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1; do sleep 0.1; done
export XDG_CACHE_HOME="$work/cache"

say() { printf '\n\033[1m$ %s\033[0m\n' "$*" >&2; "$@"; }

mkdir -p "$work/report/html"
echo '<testsuite name="demo" tests="1"/>' >"$work/report/junit.xml"
echo '<h1>coverage</h1>' >"$work/report/html/index.html"
ln -s junit.xml "$work/report/latest.xml"

repo=127.0.0.1:$port/demo/report
ref=$(say bin/artifacts push --name junit --compression zstd "$work/report" "$repo:v1" | tail -n1)
say bin/artifacts inspect "$ref"
say bin/artifacts push --name junit --compression zstd "$work/report" "$repo:v1"
say bin/artifacts pull "$repo:v1" "$work/pulled"
say diff -r "$work/report" "$work/pulled"
echo
echo "pushed and pulled $ref: identical trees"
