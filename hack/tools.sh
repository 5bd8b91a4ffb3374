#!/usr/bin/env bash
# Builds the pinned third-party binaries the tests and benchmarks need, from
# the Go module proxy, into a cache directory, and prints that directory.
# Re-running is cheap: a binary already built at the pinned version is kept.
#
#   hack/tools.sh           the distribution registry
#   hack/tools.sh --bench   also oras (benchmark baseline)
#   hack/tools.sh --kube    also etcd and kube-apiserver, from the hack/kube
#                           module (envtest's KUBEBUILDER_ASSETS; ~5 min cold
#                           on 2 cores)
#   hack/tools.sh --cluster also kube-controller-manager, kube-scheduler,
#                           kubelet and kubectl (hack/local-up.sh), and cosign
#                           (the e2e tests verify provenance with it)
#
#   TOOLS_DIR   where binaries go (default: $XDG_CACHE_HOME/tekton-artifacts-tools
#               or ~/.cache/tekton-artifacts-tools)
set -euo pipefail

REGISTRY_VERSION=v3.1.2   # github.com/distribution/distribution/v3 (CNCF distribution)
ORAS_VERSION=v1.3.6       # oras.land/oras (benchmark baseline)
COSIGN_VERSION=v3.1.3     # github.com/sigstore/cosign/v3 (verifies our provenance in e2e)

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

# build_kube name package: builds a command of the hack/kube module, whose
# go.mod and go.sum pin Kubernetes and etcd.
KUBE_VERSION=v1.37.2
build_kube() {
  local name=$1 pkg=$2 stamp="$TOOLS_DIR/.$1.version" want
  want="$pkg $(sha256sum hack/kube/go.sum | cut -c1-16)"
  if [[ -x "$TOOLS_DIR/$name" && "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
    return
  fi
  echo "building $pkg (hack/kube)" >&2
  # Clients such as Tekton's refuse the default version string.
  (cd hack/kube && go build -ldflags "-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
    -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37" \
    -o "$TOOLS_DIR/$name" "$pkg") >&2
  echo "$want" >"$stamp"
}

cd "$(dirname "$0")/.."
build registry "github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION"
for arg in "$@"; do
  case "$arg" in
  --bench) build oras "oras.land/oras/cmd/oras@$ORAS_VERSION" ;;
  --kube)
    build_kube etcd ./etcd
    build_kube kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
    ;;
  --cluster)
    build_kube etcd ./etcd
    for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
      build_kube "$c" "k8s.io/kubernetes/cmd/$c"
    done
    build cosign "github.com/sigstore/cosign/v3/cmd/cosign@$COSIGN_VERSION"
    ;;
  *) echo "unknown argument $arg" >&2; exit 2 ;;
  esac
done
echo "$TOOLS_DIR"
