# Sluice — build, test, generate, benchmark and demo.
# Heavy tools and caches live outside the repository, under $(SLUICE_CACHE).

SHELL := /bin/bash
GO ?= go
export SLUICE_CACHE ?= $(HOME)/.cache/sluice
export SLUICE_TOOLS ?= $(SLUICE_CACHE)/tools
TOOLS_BIN := $(SLUICE_TOOLS)/bin
export PATH := $(TOOLS_BIN):$(PATH)
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
GOTEST_FLAGS ?= -race -count=1 -timeout 30m

.PHONY: all build test test-unit tools tools-bench envtest generate bench demo fmt vet clean images e2e-up e2e-down e2e

all: build

## build: the binaries into bin/
build:
	@mkdir -p bin
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/sluice-proxy ./cmd/sluice-proxy
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/sluice ./cmd/sluice
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/sluice-demo-app ./examples/app

## images: OCI layouts and ctr-importable tars of the sluice, sluice-proxy,
## sluice-demo-app and pause images, in $(SLUICE_CACHE)/images (no Docker needed)
images:
	@bash hack/tools.sh images
	$(GO) run ./hack/images -out $(SLUICE_CACHE)/images -version $(VERSION)

## tools: what the tests need (h2spec, iptables, iproute2), cached outside the repo
tools:
	@bash hack/tools.sh test

tools-bench:
	@bash hack/tools.sh bench

## envtest: build (once, cached in $(SLUICE_CACHE)/envtest) kube-apiserver, etcd and kubectl
envtest:
	@bash hack/envtest.sh >/dev/null

## e2e-up: a real single-node Kubernetes cluster for end-to-end tests (root; binaries built once
## by hack/kube-node.sh into $(SLUICE_CACHE)/cluster); prints the export KUBECONFIG line
e2e-up:
	@test "$$(id -u)" = 0 || { echo "e2e-up needs root: it runs containerd and the kubelet, creates interfaces and iptables rules" >&2; exit 1; }
	@bash hack/kube-node.sh >/dev/null
	@$(GO) run ./test/e2e/cluster/cmd/e2e-cluster up

## e2e-down: stop that cluster and give the host back (fails listing any difference from before e2e-up)
e2e-down:
	@test "$$(id -u)" = 0 || { echo "e2e-down needs root" >&2; exit 1; }
	@$(GO) run ./test/e2e/cluster/cmd/e2e-cluster down

## e2e-deps: what the end-to-end tests need besides envtest: the node binaries and Debian packages
e2e-deps: envtest
	@bash hack/kube-node.sh >/dev/null

## e2e: the end-to-end tests on a real single-node cluster (root): the harness on its own, then
## the whole product (sluice install, meshed pods, mTLS, policy, retries, a canary promoted and
## rolled back). Packages run one at a time: a cluster owns the host's network while it is up.
E2E_FLAGS ?= -count=1 -p 1 -timeout 60m -v
e2e: tools build e2e-deps
	SLUICE_E2E_CLUSTER=1 $(GO) test $(E2E_FLAGS) ./test/e2e/...

## test: every test, with the race detector, then the end-to-end tests (make e2e)
test: tools build envtest e2e-deps
	KUBEBUILDER_ASSETS=$$(bash hack/envtest.sh --print-dir) H2SPEC=$(TOOLS_BIN)/h2spec $(GO) test $(GOTEST_FLAGS) ./...
	@$(MAKE) --no-print-directory e2e

## vet: static checks
vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

## generate: regenerate checked-in generated code
generate:
	@bash hack/protoc.sh
	@bash hack/generate-crds.sh
	@bash hack/gatewayapi-crds.sh

## bench: proxy throughput, latency and memory against haproxy and nginx (not part of test)
bench: tools-bench build
	$(GO) run ./bench/cmd/proxybench

## demo: local mode, a rollout that promotes a healthy backend v2 and rolls back a failing v3
demo: build
	$(GO) run ./examples/demo

## demo-proxy: two versions of the demo app behind sluice-proxy alone, split 90/10
demo-proxy: build
	$(GO) run ./examples/proxydemo

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
