# trellis-lab: a real Kubernetes cluster on this machine. See docs/lab.md.
#
#   make lab-binaries        pinned Kubernetes/etcd/CoreDNS/CNI binaries into $(TRELLIS_CACHE) (cold ~20 min, warm instant)
#   make lab-build           the lab CLI, the pause binary, the bench and agnhost test images
#   make demo-lab            3 nodes over 2 subnets, agnhost pods, connectivity matrix; leaves the lab running
#   make demo-down           remove the lab
#   make test-e2e-lanes      make test's tier 2: test-e2e and test-e2e-other-modes in two lanes on two labs at once
#   make test-e2e-encryption the WireGuard encryption suite alone, on its own lab (--encryption wireguard)
#   make test-e2e-bgp        the BGP suite alone, on its own lab (--routing-mode bgp: BIRD as the ToR)
#   make test-e2e-dualstack  the suites of a cluster with IPv6 (test/e2e/dualstack, test/e2e/policy over both
#                            families) in a dual-stack (DUALSTACK_FAMILY=ipv6: IPv6-only) lab (both in make test)
#   make test-e2e            tier 2: lab-based end-to-end tests, Trellis installed as the shipped DaemonSet
#                            from `make image` (brings a lab up and down per suite)
#   make conformance-netpol  upstream Kubernetes NetworkPolicy e2e specs against a lab
#                            (CONFORMANCE_IP_FAMILY=ipv4, ipv6 or dual: the lab's IP family)
#   make conformance-dualstack  upstream [Feature:IPv6DualStack] e2e specs against a dual-stack lab

.PHONY: lab-binaries lab-build test-e2e demo-lab demo-down conformance-netpol conformance-dualstack

LAB := $(BIN)/trellis-lab
LAB_NODES ?= 3
LAB_SUBNETS ?= 2
LAB_ROUTING ?= auto
E2E_TIMEOUT ?= 30m
# test-e2e runs its own named lab so it never disturbs a demo or someone else's lab.
E2E_LAB_NAME ?= e2e
# How the e2e labs install Trellis: daemonset (the shipped manifest and the
# image from `make image`, as CI runs it), helm, or process (the dev loop).
E2E_INSTALL ?= daemonset
LAB_IMAGE_TAR ?= $(BIN)/image/trellis-image.tar
E2E_ENV = TRELLIS_LAB_INSTALL=$(E2E_INSTALL) TRELLIS_LAB_IMAGE_TAR=$(LAB_IMAGE_TAR) TRELLIS_LAB_BIN=$(LAB)

lab-binaries:
	@hack/build-pinned.sh

# The lab CLI, the pause image binary (static, for the pod sandbox image) and
# the benchmark image every node imports (mk/bench.mk).
lab-build: build bench-image agnhost-image
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/trellis-pause ./images/pause

# The test image every node imports (registry.k8s.io/e2e-test-images/agnhost's
# name): the pinned agnhost build with the tools the upstream e2e specs run in
# it through a shell (curl, nc, sh, sleep, grep: Debian's curl, netcat-openbsd
# and dash with their libraries, busybox-static), built like the bench
# image (hack/build-image -image agnhost) into bin/agnhost-image/agnhost.tar.
.PHONY: agnhost-image
agnhost-image: deps lab-binaries
	$(GO) run ./hack/build-image -image agnhost -agnhost "$$(hack/build-pinned.sh --print-dir agnhost)/agnhost" \
	  -out $(BIN)/agnhost-image >/dev/null

# Tier 2. The harness brings a lab up unless TRELLIS_LAB_REUSE=1 names a running one,
# and takes it down at the end.
test-e2e: deps lab-build lab-binaries image
	TRELLIS_LAB_NAME=$(E2E_LAB_NAME) $(E2E_ENV) $(GO) test -count=1 -p 1 -tags e2e -timeout $(E2E_TIMEOUT) -run '^TestE2E' -v ./test/e2e/...

# The encryption suite alone (test/e2e/encryption, lab `wg` brought up with
# --encryption wireguard; part of test-e2e and of make test's lane B).
.PHONY: test-e2e-encryption
test-e2e-encryption: deps lab-build lab-binaries image
	TRELLIS_LAB_NAME=wg $(E2E_ENV) $(GO) test -count=1 -tags e2e -timeout 20m -run '^TestE2E' -v ./test/e2e/encryption/

# The BGP suite alone (test/e2e/bgp, lab `bgp` brought up with --routing-mode
# bgp, which runs BIRD as the nodes' ToR; part of test-e2e and of make test's
# lane B).
.PHONY: test-e2e-bgp
test-e2e-bgp: deps lab-build lab-binaries image
	TRELLIS_LAB_NAME=bgp $(E2E_ENV) $(GO) test -count=1 -tags e2e -timeout 15m -run '^TestE2E' -v ./test/e2e/bgp/

# The suites of a cluster with IPv6 (hack/e2e-dualstack.sh) on one lab brought
# up with --ip-family DUALSTACK_FAMILY (dual or ipv6): the dual-stack suite
# (test/e2e/dualstack: the lab, pod addresses, truth tables, node and pod,
# Services, masquerade, full-size UDP, each per family; the routed tests again
# in the other two routing modes) and the NetworkPolicy truth tables and random
# test over every family (test/e2e/policy). Part of make test: ipv6 in lane A,
# dual in lane B (hack/e2e-lanes.sh).
DUALSTACK_FAMILY ?= dual
.PHONY: test-e2e-dualstack
test-e2e-dualstack: deps lab-build lab-binaries image
	GO=$(GO) DS_LAB_NAME=$(DUALSTACK_FAMILY) $(E2E_ENV) hack/e2e-dualstack.sh $(DUALSTACK_FAMILY)

# Part of `make test`: every lab e2e suite (test-e2e) plus the agent suite in
# routing modes native and vxlan (test-e2e-other-modes), in two lanes on two
# labs at once (hack/e2e-lanes.sh): the API-server-outage suite, mostly
# waiting, runs beside the others.
.PHONY: test-e2e-lanes
test-e2e-lanes: deps lab-build lab-binaries image
	GO=$(GO) E2E_LAB_NAME=$(E2E_LAB_NAME) E2E_TIMEOUT=$(E2E_TIMEOUT) $(E2E_ENV) hack/e2e-lanes.sh

demo-lab: deps lab-build lab-binaries image
	@hack/lab-demo.sh $(LAB) $(LAB_NODES) $(LAB_SUBNETS) $(LAB_ROUTING)

demo-down:
	@if [ -x $(LAB) ]; then $(LAB) down; else echo "no trellis-lab binary; nothing to do"; fi

# Upstream NetworkPolicy specs from e2e.test v1.37.2 ([Feature:SCTPConnectivity]
# skipped: no SCTP sockets here) against a lab of CONFORMANCE_IP_FAMILY (ipv4, ipv6 or dual).
CONFORMANCE_IP_FAMILY ?= ipv4
conformance-netpol: deps lab-build lab-binaries image
	@hack/build-pinned.sh e2e.test
	@CONFORMANCE_IP_FAMILY=$(CONFORMANCE_IP_FAMILY) hack/lab-conformance.sh netpol $(LAB) "$$(hack/build-pinned.sh --print-dir e2e.test)/e2e.test"

# Upstream dual-stack specs ([Feature:IPv6DualStack], test/e2e/network/dual_stack.go)
# from the same e2e.test against a dual-stack lab ([Feature:SCTPConnectivity] skipped).
conformance-dualstack: deps lab-build lab-binaries image
	@hack/build-pinned.sh e2e.test
	@CONFORMANCE_IP_FAMILY=dual hack/lab-conformance.sh dualstack $(LAB) "$$(hack/build-pinned.sh --print-dir e2e.test)/e2e.test"
