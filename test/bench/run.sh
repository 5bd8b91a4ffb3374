#!/usr/bin/env bash
# Benchmark: the `artifacts` CLI against the Konflux trusted-artifacts
# baseline (`tar | gzip -n` + `oras push`, `oras blob fetch | tar -zxpf -`),
# side by side, in one run, on the same tree and the same local registry.
#
# Usage (from anywhere; paths are relative to the repository root):
#
#   make bench                      # Makefile target: `bench: ; test/bench/run.sh`
#   test/bench/run.sh               # N=3 iterations, medians (~4 min on 2 cores,
#                                   # plus up to SETTLE s right after a previous run)
#   N=1 test/bench/run.sh           # quick run
#   COMPONENTS=1 test/bench/run.sh  # also time components (tar alone, gzip -1, zstd, ...)
#
# Environment:
#   N           iterations per operation (default 3); the median wall time and
#               the peak RSS over all iterations are reported
#   BENCH_DIR   work directory (default /var/tmp/artifacts-bench; see below
#               why not /tmp). The test tree (~230 MiB, ~13k files: a copy
#               of $(go env GOROOT)/src plus 100 MiB of seeded pseudo-random
#               data in 1500 files of varied sizes) is built there once and
#               reused. Registry storage and extraction targets go in a
#               temporary directory under it, so everything is on one
#               filesystem; it is removed on exit. Free space needed: about
#               2.2 GB per iteration (3.9 GB with COMPONENTS=1).
#   ARTIFACTS   an artifacts binary to use instead of building ./cmd/artifacts
#   TOOLS_DIR   where hack/tools.sh caches the registry and oras binaries
#   COMPONENTS  1 to also time components of the operations
#   SETTLE      seconds to wait after the previous run's cleanup on ext4
#               without a journal (default 365, see below; 0 disables)
#   NICE        run every step at this niceness (e.g. -10, needs root), so
#               that unrelated processes on the machine disturb less; both
#               sides get the same priority. Default: unchanged.
#
# Output: a markdown report on stdout, also saved as $BENCH_DIR/results.md;
# progress on stderr. Only 127.0.0.1 is contacted (besides the Go module
# proxy if hack/tools.sh or `go build` must download something).
#
# Method: every push goes to a registry with empty storage (the registry is
# restarted on a fresh storage directory), for the baseline and for us alike,
# so nothing is deduplicated. The tree is read once before timing and stays
# in the page cache: all timings are warm-cache. `sync` runs before every
# timed step so earlier writeback does not land in it. Wall time and peak RSS
# come from `/usr/bin/time -f '%e %M'`; a pipeline is timed as one `bash -c`,
# whose %M is the largest RSS of any process in it. A second table gives the
# CPU time of the client (user+sys), of the registry, and of everything else
# on the machine during the step: the last one shows interference.
#
# Nothing is deleted while timings run: every extraction goes to a new
# directory and every registry restart to a new storage directory, all
# removed at exit. On ext4 without a journal (common in VMs and CI), the
# kernel avoids reusing an inode deleted less than 60 s ago, or 360 s while
# its inode-table block is dirty, by testing free inodes one by one
# (fs/ext4/ialloc.c, recently_deleted()): creating files near many recent
# deletions becomes CPU-bound in the kernel. `cp -r` of this tree took 15 s
# instead of 1 s right after an `rm -rf` of the previous copy. So:
#   - extraction targets are created in a directory marked `chattr +T`
#     (ext4 "top directory"), so that each lands in a group of unused
#     inodes, as the first copy on a fresh filesystem would;
#   - on such a filesystem the run waits until SETTLE seconds (default 365)
#     after the previous run's cleanup;
#   - the default BENCH_DIR is not under /tmp, where other programs (go
#     test, for one) keep deleting files: on a busy machine `cp -r` of the
#     tree into /tmp took 7 s and into /var/tmp 0.9 s.
# The client sys time in the CPU table shows whether this still happened.
set -euo pipefail

N=${N:-3}
BENCH_DIR=${BENCH_DIR:-/var/tmp/artifacts-bench}
COMPONENTS=${COMPONENTS:-0}
RSS_TARGET_MIB=100

[[ "$N" =~ ^[1-9][0-9]*$ ]] || { echo "N must be a positive integer" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "GNU time is required at /usr/bin/time" >&2; exit 2; }
for t in go tar gzip openssl curl dd sha256sum find; do
  command -v "$t" >/dev/null || { echo "$t is required" >&2; exit 2; }
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
if [[ -n "${NICE:-}" ]]; then
  renice -n "$NICE" -p $$ >/dev/null
fi
HZ=$(getconf CLK_TCK)

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }

# Never talk to a proxy: everything is on 127.0.0.1.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
DELETED_STAMP=$BENCH_DIR/.last-deletion
WORK=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
# ext4: spread the directories created in WORK over unused inode groups.
chattr +T "$WORK" 2>/dev/null || true
REG_PID=

stop_registry() {
  if [[ -n "$REG_PID" ]]; then
    kill "$REG_PID" 2>/dev/null || true
    wait "$REG_PID" 2>/dev/null || true
    REG_PID=
  fi
}
cleanup() {
  stop_registry
  log "removing $WORK"
  rm -rf "$WORK"
  sync
  date +%s >"$DELETED_STAMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ext4 without a journal avoids reusing recently deleted inodes, at a cost
# per file created (see above): wait until deletions are old enough.
ext4_nojournal() {
  local src fstype
  read -r src fstype < <(findmnt -no SOURCE,FSTYPE -T "$BENCH_DIR" 2>/dev/null || echo "? ?")
  [[ "$fstype" == ext4 ]] || return 1
  ! compgen -G "/proc/fs/jbd2/$(basename "$src")-*" >/dev/null
}
settle() {
  ext4_nojournal || return 0
  local last wait
  last=$(cat "$DELETED_STAMP" 2>/dev/null || echo 0)
  wait=$((last + ${SETTLE:-365} - $(date +%s)))
  if ((wait > 0)); then
    log "ext4 without journal: waiting ${wait}s for the previous run's deletions to age (see the top of $0; SETTLE=0 skips)"
    sleep "$wait"
  fi
}

# ---------------------------------------------------------------- tools ----
log "building tools (hack/tools.sh --bench)"
TOOLS=$(hack/tools.sh --bench | tail -n1)
REGISTRY_BIN=$TOOLS/registry
ORAS=$TOOLS/oras
if [[ -n "${ARTIFACTS:-}" ]]; then
  ART=$ARTIFACTS
else
  log "building artifacts (go build ./cmd/artifacts)"
  ART=$WORK/artifacts
  go build -o "$ART" ./cmd/artifacts
fi

# Isolate credentials and the digest cache from the user's.
export DOCKER_CONFIG=$WORK/docker
mkdir -p "$DOCKER_CONFIG"
export XDG_CACHE_HOME=$WORK/xdg-cache

# ----------------------------------------------------------------- tree ----
TREE=$BENCH_DIR/tree
RAND_BYTES=$((100 << 20))
RAND_FILES=1500
RAND_KEY=6172746966616374732d62656e63682d6b65792d666978656400000000000001
RAND_IV=0000000000000000000000000000002a
TREE_STAMP="tree v1; $(go version); GOROOT/src + ${RAND_FILES} files, ${RAND_BYTES} bytes, aes-256-ctr key $RAND_KEY iv $RAND_IV"

build_tree() {
  if [[ -d "$TREE" && "$(cat "$BENCH_DIR/tree.stamp" 2>/dev/null)" == "$TREE_STAMP" ]]; then
    log "reusing tree $TREE"
    return
  fi
  log "building tree $TREE"
  local tmp=$TREE.tmp
  if [[ -e "$TREE" || -e "$tmp" ]]; then
    rm -rf "$TREE" "$tmp" "$BENCH_DIR/tree.stamp"
    date +%s >"$DELETED_STAMP"
  fi
  mkdir -p "$tmp/random"
  cp -a "$(go env GOROOT)/src" "$tmp/go-src"
  # A reproducible pseudo-random stream: AES-256-CTR of zeros, fixed key.
  { openssl enc -aes-256-ctr -nosalt -K "$RAND_KEY" -iv "$RAND_IV" -in /dev/zero 2>/dev/null || true; } |
    head -c "$RAND_BYTES" >"$WORK/random.bin"
  # File sizes from a fixed LCG: 60% small (0.5-16.5 KiB), 30% medium
  # (16-256 KiB), 10% large (256 KiB-2 MiB), then scaled to RAND_BYTES.
  local -a raw=()
  local i s=20240917 sum=0 class size off=0 left=$RAND_BYTES
  for ((i = 0; i < RAND_FILES; i++)); do
    s=$(((s * 1103515245 + 12345) % 2147483648)); class=$((s % 100))
    s=$(((s * 1103515245 + 12345) % 2147483648))
    if ((class < 60)); then size=$((512 + s % (16 << 10)))
    elif ((class < 90)); then size=$(((16 << 10) + s % (240 << 10)))
    else size=$(((256 << 10) + s % (1792 << 10)))
    fi
    raw[i]=$size
    sum=$((sum + size))
  done
  for ((i = 0; i < RAND_FILES; i++)); do
    if ((i == RAND_FILES - 1)); then size=$left; else size=$((raw[i] * RAND_BYTES / sum)); fi
    mkdir -p "$tmp/random/d$((i % 30))"
    dd if="$WORK/random.bin" of="$tmp/random/d$((i % 30))/f$i.bin" bs=1M \
      iflag=skip_bytes,count_bytes skip="$off" count="$size" status=none
    off=$((off + size))
    left=$((left - size))
  done
  mv "$tmp" "$TREE"
  echo "$TREE_STAMP" >"$BENCH_DIR/tree.stamp"
}
build_tree
if [[ -n "${TREE_ONLY:-}" ]]; then # used by test/bench/node.sh
  trap - EXIT
  rmdir "$WORK/docker" "$WORK" 2>/dev/null || true
  settle
  echo "$TREE"
  exit 0
fi

TREE_FILES=$(find "$TREE" -type f | wc -l)
TREE_ENTRIES=$(find "$TREE" -mindepth 1 | wc -l)
TREE_BYTES=$(find "$TREE" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
log "warming the page cache (reading the tree once)"
TAR_BYTES=$(tar -C "$TREE" -cf - . | wc -c)

per_iter=$((TAR_BYTES * (COMPONENTS == 1 ? 16 : 9)))
avail=$(($(df -Pk "$BENCH_DIR" | awk 'NR == 2 {print $4}') * 1024))
if ((avail < N * per_iter + (1 << 30))); then
  echo "not enough free space in $BENCH_DIR: need about $(((N * per_iter >> 30) + 1)) GiB" >&2
  exit 1
fi

# ------------------------------------------------------------- registry ----
STORE=
STORES=0
PORT=
write_config() {
  cat >"$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $STORE
http:
  addr: 127.0.0.1:$PORT
EOF
}

free_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  echo "no free port found" >&2
  return 1
}

# fresh_registry (re)starts the registry on a new, empty storage directory.
fresh_registry() {
  stop_registry
  STORES=$((STORES + 1))
  STORE=$WORK/registry.$STORES
  mkdir -p "$STORE"
  local attempt
  for attempt in 1 2 3; do
    [[ -n "$PORT" ]] || PORT=$(free_port)
    write_config
    # No OpenTelemetry exporter: distribution otherwise sends traces to OTLP.
    OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \
      "$REGISTRY_BIN" serve "$WORK/registry.yml" >>"$WORK/registry.log" 2>&1 &
    REG_PID=$!
    for _ in $(seq 200); do
      if curl -fsS --noproxy '*' -o /dev/null "http://127.0.0.1:$PORT/v2/" 2>/dev/null; then
        return
      fi
      kill -0 "$REG_PID" 2>/dev/null || break
      sleep 0.05
    done
    stop_registry
    PORT=
  done
  echo "registry did not start; log:" >&2
  tail -n 20 "$WORK/registry.log" >&2
  return 1
}

# layer_size prints the size of the largest blob in the registry storage:
# the layer, as each storage directory holds one artifact.
layer_size() {
  find "$STORE" -type f -name data -printf '%s\n' | sort -n | tail -n1
}

REG() { echo "127.0.0.1:$PORT/bench/$1"; }

# ---------------------------------------------------------- measurement ----
RES=$WORK/results
mkdir -p "$RES"

# busy_ticks: CPU time used on the machine (user, nice, system, irq,
# softirq, steal), in clock ticks.
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
# reg_ticks: CPU time used by the registry so far, in clock ticks.
reg_ticks() { awk '{print $14 + $15}' "/proc/$REG_PID/stat" 2>/dev/null || echo 0; }

# measure KEY CMD...: sync, then run CMD under /usr/bin/time. Records under
# KEY: wall seconds (.t), peak RSS KiB (.m), client CPU seconds (.c) and its
# system part (.s), registry CPU seconds (.r), and CPU seconds used by
# everything else on the machine meanwhile (.o). CMD's stdout is left in
# $WORK/out, its stderr in $WORK/err.
measure() {
  local key=$1 secs kib user sys b0 b1 r0 r1
  shift
  sync
  b0=$(busy_ticks)
  r0=$(reg_ticks)
  if ! /usr/bin/time -f '%e %M %U %S' -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err"; then
    echo "benchmark step '$key' failed: $*" >&2
    tail -n 20 "$WORK/err" >&2
    exit 1
  fi
  b1=$(busy_ticks)
  r1=$(reg_ticks)
  read -r secs kib user sys < <(tail -n1 "$WORK/time")
  echo "$secs" >>"$RES/$key.t"
  echo "$kib" >>"$RES/$key.m"
  awk -v u="$user" -v s="$sys" -v b="$((b1 - b0))" -v r="$((r1 - r0))" -v hz="$HZ" \
    -v f="$RES/$key" 'BEGIN {
      o = b / hz - u - s - r / hz; if (o < 0) o = 0
      print u + s >>(f ".c"); print s >>(f ".s"); print r / hz >>(f ".r"); print o >>(f ".o")
      printf "%.2f %.2f %.2f\n", u + s, r / hz, o
    }' >"$WORK/cpu"
  read -r user sys b0 <"$WORK/cpu"
  log "  $key: ${secs}s wall, $((kib / 1024)) MiB; CPU s: client $user, registry $sys, others $b0"
}

median() { # KEY [SUFFIX]
  sort -n "$RES/$1.${2:-t}" | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
peak_mib() { sort -n "$RES/$1.m" | tail -n1 | awk '{printf "%.0f", $1 / 1024}'; }

# dest NAME: a new, absent extraction target (never reused, see the top).
dest() { echo "$WORK/dest/$1"; }
mkdir -p "$WORK/dest"
chattr +T "$WORK/dest" 2>/dev/null || true

# ----------------------------------------------------------------- runs ----
log "tree: $TREE_FILES files, $TREE_ENTRIES entries, $TREE_BYTES bytes of content, $TAR_BYTES bytes as tar"
settle
log "N=$N iterations"
for ((i = 1; i <= N; i++)); do
  log "iteration $i/$N"

  # Baseline: Konflux trusted artifacts (create-archive, then use-archive).
  fresh_registry
  mkdir -p "$WORK/base.$i"
  measure base_create bash -c 'cd "$1" && tar -C "$2" -cf - . | gzip -n >blob.tgz &&
    "$3" push --plain-http "$4" blob.tgz:application/vnd.oci.image.layer.v1.tar+gzip' \
    _ "$WORK/base.$i" "$TREE" "$ORAS" "$(REG base):t$i"
  base_digest=sha256:$(sha256sum "$WORK/base.$i/blob.tgz" | cut -d' ' -f1)
  stat -c %s "$WORK/base.$i/blob.tgz" >"$RES/size_base"
  d=$(dest "base_use.$i")
  mkdir "$d"
  measure base_use bash -c 'set -o pipefail; "$1" blob fetch --plain-http --output - "$2" | tar -C "$3" -zxpf -' \
    _ "$ORAS" "$(REG base)@$base_digest" "$d"

  # Ours, gzip.
  fresh_registry
  measure ours_push_gzip "$ART" push --no-cache --plain-http --compression gzip "$TREE" "$(REG ours):t$i"
  ref=$(tail -n1 "$WORK/out")
  layer_size >"$RES/size_ours_gzip"
  echo "$ref" >>"$RES/ref_gzip"
  measure ours_pull_gzip "$ART" pull --plain-http "$ref" "$(dest "pull_gzip.$i")"

  # Ours, zstd.
  fresh_registry
  measure ours_push_zstd "$ART" push --no-cache --plain-http --compression zstd "$TREE" "$(REG ours):t$i"
  ref=$(tail -n1 "$WORK/out")
  layer_size >"$RES/size_ours_zstd"
  echo "$ref" >>"$RES/ref_zstd"
  measure ours_pull_zstd "$ART" pull --plain-http "$ref" "$(dest "pull_zstd.$i")"

  # Ours with the digest cache (the default): a first push into an empty
  # registry with an empty cache, then the same push again: the re-push.
  fresh_registry
  export XDG_CACHE_HOME=$WORK/xdg-cache.$i
  measure ours_push_cached_cold "$ART" push --plain-http --compression gzip "$TREE" "$(REG ours):c$i"
  measure ours_repush "$ART" push --plain-http --compression gzip "$TREE" "$(REG ours):c$i"
  if ! grep -q 'already in the registry' "$WORK/err"; then
    echo "the re-push uploaded the layer again:" >&2
    cat "$WORK/err" >&2
    exit 1
  fi
  export XDG_CACHE_HOME=$WORK/xdg-cache

  # Floor: a plain copy on the same filesystem.
  measure cp_r cp -r "$TREE" "$(dest "cp.$i")"

  if [[ "$COMPONENTS" == 1 ]]; then
    blob=$WORK/base.$i/blob.tgz
    measure c_tar bash -c 'set -o pipefail; tar -C "$1" -cf - . | cat >/dev/null' _ "$TREE"
    measure c_tar_gzip6 bash -c 'set -o pipefail; tar -C "$1" -cf - . | gzip -n >/dev/null' _ "$TREE"
    measure c_tar_gzip1 bash -c 'set -o pipefail; tar -C "$1" -cf - . | gzip -n -1 >/dev/null' _ "$TREE"
    if command -v zstd >/dev/null; then
      measure c_tar_zstd bash -c 'set -o pipefail; tar -C "$1" -cf - . | zstd -q -3 -T0 >/dev/null' _ "$TREE"
    fi
    fresh_registry
    measure c_oras_push bash -c 'cd "$1" && "$2" push --plain-http "$3" blob.tgz:application/vnd.oci.image.layer.v1.tar+gzip' \
      _ "$WORK/base.$i" "$ORAS" "$(REG base):t$i"
    measure c_oras_fetch bash -c '"$1" blob fetch --plain-http --output - "$2" >/dev/null' _ "$ORAS" "$(REG base)@$base_digest"
    measure c_gunzip bash -c 'gzip -dc "$1" >/dev/null' _ "$blob"
    measure c_gunzip_file bash -c 'gzip -dc "$1" >"$1.tar"' _ "$blob"
    d=$(dest "tar_x.$i")
    mkdir "$d"
    measure c_tar_x tar -C "$d" -xpf "$blob.tar"
    fresh_registry
    measure c_ours_push_none "$ART" push --no-cache --plain-http --compression none "$TREE" "$(REG ours):n$i"
    ref=$(tail -n1 "$WORK/out")
    measure c_ours_pull_none "$ART" pull --plain-http "$ref" "$(dest "pull_none.$i")"
  fi
done
stop_registry

# --------------------------------------------------------------- report ----
# row LABEL KEY BASEKEY TARGET CHECK_RSS
row() {
  local label=$1 key=$2 base=$3 target=$4 check_rss=$5
  local med rss ratio="—" met="—" rssmet="—" bl
  med=$(median "$key")
  rss=$(peak_mib "$key")
  if [[ -n "$base" ]]; then
    case $base in
      base_create) bl="baseline create" ;;
      base_use) bl="baseline use" ;;
      cp_r) bl="cp -r" ;;
    esac
    ratio=$(awk -v a="$med" -v b="$(median "$base")" 'BEGIN {printf "%.2f", a / b}')
    if [[ -n "$target" ]]; then
      met=$(awk -v r="$ratio" -v t="$target" 'BEGIN {print (r <= t) ? "yes" : "**no**"}')
      target="≤ $target"
    else
      target="—"
    fi
    ratio="$ratio × $bl"
  else
    target="—"
  fi
  if [[ "$check_rss" == yes ]]; then
    rssmet=$(awk -v r="$rss" -v t="$RSS_TARGET_MIB" 'BEGIN {print (r <= t) ? "yes" : "**no**"}')
  fi
  printf '| %s | %.2f | %s | %s | %s | %s | %s |\n' "$label" "$med" "$ratio" "$target" "$met" "$rss" "$rssmet"
}

# cpu_row LABEL KEY: medians of wall and CPU times.
cpu_row() {
  printf '| %s | %.2f | %.2f | %.2f | %.2f | %.2f |\n' "$1" "$(median "$2")" "$(median "$2" c)" \
    "$(median "$2" s)" "$(median "$2" r)" "$(median "$2" o)"
}
# interference: CPU seconds used by other processes per second of timed steps.
interference() {
  cat "$RES"/*.o | awk '{s += $1} END {printf "%.2f", s}' >"$WORK/o"
  cat "$RES"/*.t | awk -v o="$(cat "$WORK/o")" '{s += $1} END {printf "%.2f", o / s}'
}

LABEL_base_create='baseline create: `tar -cf - . \| gzip -n >blob.tgz` + `oras push`'
LABEL_base_use='baseline use: `oras blob fetch \| tar -zxpf -`'
LABEL_cp_r='`cp -r TREE DEST` (floor)'
LABEL_ours_push_gzip='ours push gzip (`--no-cache`)'
LABEL_ours_push_zstd='ours push zstd (`--no-cache`)'
LABEL_ours_push_cached_cold='ours push gzip, default flags, empty digest cache'
LABEL_ours_repush='ours re-push of the unchanged tree (digest cache)'
LABEL_ours_pull_gzip='ours pull + extract gzip'
LABEL_ours_pull_zstd='ours pull + extract zstd'

{
  echo "- Date: $(date -u +%Y-%m-%dT%H:%MZ); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- pkg cmd 2>/dev/null || echo ', with uncommitted changes in pkg/ or cmd/')"
  echo "- Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2 / 1048576}' /proc/meminfo), $(findmnt -no FSTYPE -T "$BENCH_DIR")$(ext4_nojournal && echo ' (no journal)') under $BENCH_DIR, Linux $(uname -r), $(go version | cut -d' ' -f3)"
  echo "- Tools: $("$ORAS" version | awk '/^Version/ {print "oras " $2}'), distribution $("$REGISTRY_BIN" --version | awk '{print $3}'), $(tar --version | head -n1), $(gzip --version | head -n1)"
  echo "- Tree: $TREE_FILES files ($TREE_ENTRIES entries), $(awk -v b="$TREE_BYTES" 'BEGIN {printf "%.1f MiB", b / 1048576}') of file content, $(awk -v b="$TAR_BYTES" 'BEGIN {printf "%.1f MiB", b / 1048576}') as tar; warm page cache"
  echo "- N=$N iterations: median wall time; peak RSS is the largest of the iterations; niceness $(nice)"
  echo "- Interference: other processes used $(interference) CPU-seconds per second of timed steps (of $(nproc) available; see the CPU table)"
  echo
  echo "| operation | median s | ratio to its baseline | target | met? | peak RSS MiB | RSS ≤ $RSS_TARGET_MIB MiB? |"
  echo "|---|---:|---|---|---|---:|---|"
  row "$LABEL_base_create" base_create "" "" no
  row "$LABEL_base_use" base_use "" "" no
  row "$LABEL_cp_r" cp_r "" "" no
  row "$LABEL_ours_push_gzip" ours_push_gzip base_create 0.5 yes
  row "$LABEL_ours_push_zstd" ours_push_zstd base_create 0.2 yes
  row "$LABEL_ours_push_cached_cold" ours_push_cached_cold base_create "" yes
  row "$LABEL_ours_repush" ours_repush base_create 0.15 yes
  row "$LABEL_ours_pull_gzip" ours_pull_gzip cp_r 1.1 yes
  row "$LABEL_ours_pull_gzip, against baseline use" ours_pull_gzip base_use "" yes
  row "$LABEL_ours_pull_zstd" ours_pull_zstd cp_r 1.1 yes
  echo
  echo "CPU seconds (medians): the client process tree (user+sys, and sys alone), the registry, and all other processes on the machine during the step."
  echo
  echo "| operation | wall s | client CPU s | client sys s | registry CPU s | others' CPU s |"
  echo "|---|---:|---:|---:|---:|---:|"
  for k in base_create base_use cp_r ours_push_gzip ours_push_zstd ours_push_cached_cold ours_repush ours_pull_gzip ours_pull_zstd; do
    l=LABEL_$k
    cpu_row "${!l}" "$k"
  done
  echo
  echo "| artifact (compressed layer) | bytes | MiB | of the tar |"
  echo "|---|---:|---:|---:|"
  for s in 'base:baseline gzip (`gzip -n`, level 6)' 'ours_gzip:ours gzip' 'ours_zstd:ours zstd'; do
    awk -v l="${s#*:}" -v b="$(cat "$RES/size_${s%%:*}")" -v t="$TAR_BYTES" \
      'BEGIN {printf "| %s | %d | %.1f | %.1f%% |\n", l, b, b / 1048576, 100 * b / t}'
  done
  echo
  for c in gzip zstd; do
    if [[ $(sed 's/.*@//' "$RES/ref_$c" | sort -u | wc -l) == 1 ]]; then
      echo "- ours $c: the same manifest digest in every iteration ($(head -n1 "$RES/ref_$c" | sed 's/.*@//'))"
    else
      echo "- ours $c: **manifest digests differ between iterations**: $(sed 's/.*@//' "$RES/ref_$c" | tr '\n' ' ')"
    fi
  done
  if [[ "$COMPONENTS" == 1 ]]; then
    echo
    echo "| component | wall s | client CPU s | client sys s | registry CPU s | others' CPU s |"
    echo "|---|---:|---:|---:|---:|---:|"
    for k in 'c_tar:`tar -cf - . | cat >/dev/null`' \
      'c_tar_gzip6:`tar -cf - . | gzip -n >/dev/null` (level 6)' \
      'c_tar_gzip1:`tar -cf - . | gzip -n -1 >/dev/null`' \
      'c_tar_zstd:`tar -cf - . | zstd -3 -T0 >/dev/null`' \
      'c_oras_push:`oras push` of the ready blob.tgz' \
      'c_oras_fetch:`oras blob fetch` to /dev/null' \
      'c_gunzip:`gzip -dc blob.tgz >/dev/null`' \
      'c_gunzip_file:`gzip -dc blob.tgz >blob.tar`' \
      'c_tar_x:`tar -xpf blob.tar`' \
      'c_ours_push_none:ours push `--compression none --no-cache`' \
      'c_ours_pull_none:ours pull + extract of the uncompressed artifact'; do
      key=${k%%:*}
      [[ -f "$RES/$key.t" ]] || continue
      cpu_row "$(sed 's/|/\\|/g' <<<"${k#*:}")" "$key"
    done
  fi
} | tee "$BENCH_DIR/results.md"
