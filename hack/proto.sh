#!/usr/bin/env bash
# Regenerates the Go code of every .proto under proto/ (make proto), with
# pinned generators: protoc from Debian's protobuf-compiler, protoc-gen-go
# at the google.golang.org/protobuf version go.mod requires, and
# protoc-gen-go-grpc at PROTOC_GEN_GO_GRPC_VERSION.
#
#   hack/proto.sh [OUT]   write next to the .proto files, or under OUT
#                         (the staleness test compares the two)
set -euo pipefail
cd "$(dirname "$0")/.."
PROTOC_GEN_GO_GRPC_VERSION=v1.6.0
OUT=${1:-$PWD}
TOOLS_DIR=${TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tekton-artifacts-tools}
BIN=$TOOLS_DIR/protoc-plugins
mkdir -p "$BIN"

if ! command -v protoc >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null
fi
GOBIN=$BIN go install google.golang.org/protobuf/cmd/protoc-gen-go
GOBIN=$BIN GOFLAGS=-mod=mod go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"

mapfile -t files < <(find proto -name '*.proto' | sort)
mkdir -p "$OUT/proto"
protoc --proto_path=proto \
  --plugin=protoc-gen-go="$BIN/protoc-gen-go" --plugin=protoc-gen-go-grpc="$BIN/protoc-gen-go-grpc" \
  --go_out="$OUT/proto" --go_opt=paths=source_relative \
  --go-grpc_out="$OUT/proto" --go-grpc_opt=paths=source_relative \
  "${files[@]}"
