# Trellis — top-level make targets. Component targets live in mk/*.mk.
#
#   make demo   bring up the demo (installs what it needs)
#   make test   every test tier: unit, real-kernel (netns), lab end-to-end
#
SHELL := /bin/bash
.DEFAULT_GOAL := build

export PATH := /usr/local/go/bin:$(PATH)
export GOTOOLCHAIN := local
# Everything compiles with -trimpath, as the shipped binaries must (a
# reproducible image): one compilation of each package then serves make build,
# lint and every test tier, instead of one with paths and one without.
export GOFLAGS := $(strip $(GOFLAGS) -trimpath)
GO ?= go
BIN := $(CURDIR)/bin
# Machine-wide cache of pinned third-party binaries (Kubernetes, etcd, CNI
# reference plugins), keyed by version, shared by every clone on the machine.
TRELLIS_CACHE ?= /var/cache/trellis
export TRELLIS_CACHE


# The release the binaries report (trellis_build_info{version}).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: build deps demo test test-unit test-kernel vet clean
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w -X main.version=$(VERSION)' -o $(BIN)/ ./cmd/...

# Host packages every tier needs (idempotent; apt only when something is missing).
deps:
	@hack/install-deps.sh

vet:
	$(GO) vet ./...
	$(GO) vet -tags kernel ./...

# Tier 0: pure Go, no root. Includes fuzz seed corpora (go test runs them).
test-unit:
	$(GO) test -count=1 ./...

# Tier 1: real kernel, throwaway network namespaces, root.
test-kernel: deps build
	$(GO) test -count=1 -p 1 -tags kernel -run '^TestKernel' ./...

test: deps bpf-check generate-check lint test-unit test-chart test-benchplot image-repro test-kernel test-e2e-lanes

# The main job: a real cluster in network namespaces, networked by Trellis
# (mk/lab.mk). `make demo-down` removes it; `make demo-cni` shows the plugin alone.
demo: demo-lab

clean:
	rm -rf $(BIN)

-include mk/*.mk
