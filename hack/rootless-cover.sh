#!/usr/bin/env bash
# Runs the node service's unit tests as an unprivileged user (nobody) and
# checks that they cover at least MIN percent (default 80) of the
# statements of the node RPC code: pkg/driver's node.go, input.go,
# output.go and from.go. Needs root, to change user.
#
#   hack/rootless-cover.sh        # make cover-rootless
set -euo pipefail
cd "$(dirname "$0")/.."
min=${MIN:-80}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
go test -c -cover -coverpkg=./pkg/driver -o "$work/driver.test" ./pkg/driver
mkdir -m 777 "$work/home"
(cd pkg/driver && setpriv --reuid=65534 --regid=65534 --clear-groups \
  env HOME="$work/home" TMPDIR="$work/home" "$work/driver.test" -test.count=1 \
  -test.coverprofile="$work/home/cover.out" >"$work/home/log" 2>&1) || { tail -50 "$work/home/log"; exit 1; }
awk -v min="$min" '
  NR > 1 {
    split($1, loc, ":"); n = split(loc[1], parts, "/"); f = parts[n]
    if (f != "node.go" && f != "input.go" && f != "output.go" && f != "from.go") next
    total += $2; if ($3 > 0) covered += $2
  }
  END {
    pct = 100 * covered / total
    printf "node RPC code, rootless: %d of %d statements covered (%.1f%%, minimum %d%%)\n", covered, total, pct, min
    exit (pct < min)
  }' "$work/home/cover.out"
