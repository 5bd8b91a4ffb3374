# Tekton Artifacts CSI driver. `make help` lists the targets.
SHELL := /usr/bin/env bash
GO ?= go
BIN := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
TOOLS_DIR ?= $(HOME)/.cache/tekton-artifacts-tools
export TOOLS_DIR

.PHONY: help build demo test test-unit lint bench bench-versions bench-node fuzz tools generate proto conformance cover-rootless clean images dev-cluster dev-down e2e

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build static binaries into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

demo: ## start a local registry on 127.0.0.1, push, inspect, re-push and pull an example
	hack/demo.sh

tools: ## build the pinned test tools (registry, etcd, kube-apiserver, kubelet, ...) from the Go module proxy
	hack/tools.sh --cluster >/dev/null

test: tools lint ## lint, unit and integration tests, provider conformance, then the e2e tests on the dev cluster (root)
	REGISTRY_BIN=$(TOOLS_DIR)/registry $(GO) test -race -count=1 ./...
	$(MAKE) cover-rootless
	$(MAKE) conformance
	$(MAKE) e2e

test-unit: ## tests that need no external binary
	$(GO) test -count=1 -short ./...

CONTROLLER_GEN = GOFLAGS=-mod=mod $(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0

generate: ## regenerate deepcopy code, CRD YAML and RBAC roles from the sources (controller-gen v0.23.0)
	$(CONTROLLER_GEN) object:headerFile=/dev/null paths=./pkg/apis/... crd:crdVersions=v1 output:crd:artifacts:config=deploy/crd
	$(CONTROLLER_GEN) rbac:roleName=artifacts-csi-node paths=./pkg/driver/... output:rbac:artifacts:config=deploy/rbac/node
	$(CONTROLLER_GEN) rbac:roleName=artifacts-controller paths=./pkg/controller/... output:rbac:artifacts:config=deploy/rbac/controller

proto: ## regenerate the Go code of proto/ (Debian protoc, pinned protoc-gen-go and protoc-gen-go-grpc)
	hack/proto.sh

cover-rootless: ## run the node service's unit tests as nobody; fail under 80% coverage of the node RPC code (root)
	hack/rootless-cover.sh

conformance: ## run the storage provider conformance suite against the filesystem reference provider
	hack/conformance.sh

lint: ## gofmt, go vet and go mod tidy check
	@out=$$(gofmt -l cmd pkg internal test 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }

# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can
# fail a clean run with "context deadline exceeded" (golang/go#75804).
fuzz: ## run the extraction and chunked-index fuzzers for FUZZTIME executions each (default 50000x)
	$(GO) test ./pkg/archive -run '^$$' -fuzz FuzzExtract -fuzztime $${FUZZTIME:-50000x} -fuzzminimizetime 5s
	$(GO) test ./pkg/chunked -run '^$$' -fuzz FuzzIndex -fuzztime $${FUZZTIME:-50000x} -fuzzminimizetime 5s

bench: build ## side-by-side benchmark against the Konflux baseline (see docs/benchmarks.md)
	test/bench/run.sh

bench-versions: ## incremental artifacts: chunked layout vs zstd archive, cold and after a 1 MiB change (1 GiB tree)
	test/bench/versions.sh

bench-node: ## node plugin benchmarks: publish (cache hit, cold, on the producer's node) and unpublish, with baselines (root)
	test/bench/node.sh

LOCAL_UP_DIR ?= /tmp/artifacts-local-up
export LOCAL_UP_DIR

images: ## build the images (static binaries, no Docker engine) and push them to IMAGE_REGISTRY (default 127.0.0.1:5000)
	hack/local-up.sh images

dev-cluster: ## a single-node cluster from source on loopback, the driver deployed, then the example pipeline (root)
	hack/local-up.sh up
	hack/example.sh

e2e: ## (re)start the dev cluster, run the example pipeline and the end-to-end tests on it (root)
	hack/local-up.sh up
	hack/example.sh
	E2E_KUBECONFIG=$(LOCAL_UP_DIR)/admin.kubeconfig E2E_LOCAL_UP_DIR=$(LOCAL_UP_DIR) COSIGN=$(TOOLS_DIR)/cosign $(GO) test -count=1 -v -timeout 20m ./test/e2e

dev-down: ## stop the dev cluster and remove its containers and mounts
	hack/local-up.sh down

clean: ## remove build output
	rm -rf $(BIN)
