#!/usr/bin/env bash
# Node plugin benchmarks: the plugin process, driven over its CSI socket as
# kubelet drives it, side by side with a baseline in the same run:
#
#   BenchmarkPublishCacheHit   publish of a cached input   vs  the bare read-only bind mount
#   BenchmarkUnpublishOutput   unpublish of a full output  (what kubelet waits for)
#   BenchmarkPublishCold       publish of an uncached input, fetched from a
#                              registry process and extracted
#                                                          vs  cp -r of the same tree
#   BenchmarkPublishOnProducerNode
#                              publish of an input pushed from the same node
#                              (write-through)             vs  the same with --write-through=false
#
# each on a small generated tree and on the ~230 MiB tree of
# test/bench/run.sh. Needs root (bind mounts).
#
# Usage:  make bench-node   or   N=5 test/bench/node.sh
# Environment: N (iterations, default 5), BENCH (benchmark regexp, default
# all), BENCH_DIR (default /var/tmp/artifacts-bench), NICE (niceness for the
# whole run, e.g. -10).
set -euo pipefail
cd "$(dirname "$0")/../.."
export BENCH_DIR=${BENCH_DIR:-/var/tmp/artifacts-bench}
mkdir -p "$BENCH_DIR"
BENCH_TREE=$(TREE_ONLY=1 test/bench/run.sh | tail -n1)
REGISTRY_BIN=${REGISTRY_BIN:-$(hack/tools.sh | tail -n1)/registry}
export BENCH_TREE REGISTRY_BIN
echo "tree: $BENCH_TREE ($(find "$BENCH_TREE" -type f | wc -l) files, $(du -sh --apparent-size "$BENCH_TREE" | cut -f1))" >&2
tar -C "$BENCH_TREE" -cf - . | wc -c >/dev/null # warm the page cache
# The benchmarks delete their copies when done: record when, for the next
# run's settle time (see test/bench/run.sh).
trap 'date +%s >"$BENCH_DIR/.last-deletion"' EXIT
${NICE:+nice -n "$NICE"} go test -count=1 -run '^$' -bench "${BENCH:-.}" -benchtime="${N:-5}x" -timeout 60m ./test/integration
