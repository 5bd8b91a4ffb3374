#!/usr/bin/env bash
# Incremental artifacts: the chunked layout against today's zstd archive,
# side by side in one run (BenchmarkVersions in pkg/oci):
#
#   push-cold                  a tree nothing of which is in the registry
#   push-changed               after 1 MiB changed in the middle of one file
#   pull-cold                  into an empty directory
#   pull-changed-with-previous the changed version, with the previous tree
#                              at hand as the node plugin's cache gives it
#                              (chunked only)
#
# on a tree of four random files (BENCH_TREE_MB in all, default 1024: the
# issue's 1 GiB with 256 MiB files). The registry is go-containerregistry's,
# in process, behind a handler counting blob bytes: each row reports ms/op,
# up-MB and down-MB, and the changed pull needed-MB (what range requests for
# exactly the missing chunks would fetch).
#
# Usage:  make bench-versions   or   BENCH_TREE_MB=256 N=3 test/bench/versions.sh
# Environment: BENCH_TREE_MB (default 1024), N (iterations, default 2),
# NICE (niceness, e.g. -10). Needs about 3×BENCH_TREE_MB of memory.
set -euo pipefail
cd "$(dirname "$0")/../.."
export BENCH_TREE_MB=${BENCH_TREE_MB:-1024}
${NICE:+nice -n "$NICE"} go test -count=1 -run '^$' -bench Versions -benchtime="${N:-2}x" -timeout 60m ./pkg/oci
