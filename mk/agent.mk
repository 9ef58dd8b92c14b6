# trellis-agent. See docs/agent.md.
#
#   make test-agent   the agent's tier-0 and tier-1 tests only (root for tier 1)

AGENT_PKGS := ./cmd/trellis-agent/... ./internal/agent/... ./internal/config/... ./internal/syncrunner/... \
  ./internal/nodesetup/... ./internal/routing/... ./internal/netnstest/... ./internal/dpbench/... ./internal/masq/... ./internal/metrics/...

.PHONY: test-agent
test-agent: deps
	$(GO) test -count=1 $(AGENT_PKGS)
	$(GO) test -count=1 -p 1 -tags kernel -run '^TestKernel' $(AGENT_PKGS)

# Cross-node datapath vs baselines in one run (see docs/agent.md#benchmarks), IPv4 and
# IPv6 (about 13 min; add -family ipv4 or -family ipv6 to BENCH_DATAPLANE_FLAGS for one).
BENCH_DATAPLANE_FLAGS ?= -runs 7 -seconds 5 -congestion default,cubic
.PHONY: bench-dataplane
bench-dataplane: deps build
	$(GO) run ./hack/bench-dataplane -bin $(BIN) $(BENCH_DATAPLANE_FLAGS)

# WireGuard encryption vs a hand-built wireguard-go tunnel and vs plaintext,
# in one run on the same two node namespaces (docs/encryption.md#what-it-costs).
BENCH_ENCRYPTION_FLAGS ?= -runs 7 -seconds 5
.PHONY: bench-encryption
bench-encryption: deps build
	$(GO) build -o $(BIN)/bench-encryption ./hack/bench-encryption
	$(BIN)/bench-encryption -bin $(BIN) $(BENCH_ENCRYPTION_FLAGS)

# The same figures on a lab (3 nodes over 2 subnets, mode auto): pods on real
# kubelet/containerd nodes, underlay through the lab's switch and router.
.PHONY: bench-dataplane-lab
bench-dataplane-lab: deps lab-build lab-binaries
	TRELLIS_LAB_NAME=benchdp TRELLIS_LAB_ROUTING=auto TRELLIS_LAB_BIN=$(LAB) \
	  $(GO) test -count=1 -tags e2e -timeout 20m -run '^TestBenchDataplaneLab$$' -v ./test/e2e/agent/

# The agent's lab e2e in each routing mode (make test-e2e runs them in auto only).
.PHONY: test-e2e-agent-modes
test-e2e-agent-modes: deps lab-build lab-binaries image
	@for m in auto native vxlan; do \
	  echo "== agent e2e, routing mode $$m ($(E2E_INSTALL) install)"; \
	  TRELLIS_LAB_NAME=$$m TRELLIS_LAB_ROUTING=$$m $(E2E_ENV) \
	    $(GO) test -count=1 -tags e2e -timeout 20m -run '^TestE2E' -v ./test/e2e/agent/ || exit 1; \
	done

# Part of `make test`: the agent's lab e2e in the routing modes test-e2e does
# not cover (it runs auto). The 100-node memory figure is measured once, in
# the auto run.
.PHONY: test-e2e-other-modes
test-e2e-other-modes: deps lab-build lab-binaries image
	@for m in native vxlan; do \
	  echo "== agent e2e, routing mode $$m ($(E2E_INSTALL) install)"; \
	  TRELLIS_LAB_NAME=$$m TRELLIS_LAB_ROUTING=$$m $(E2E_ENV) \
	    $(GO) test -count=1 -tags e2e -timeout 20m -run '^TestE2E' -skip 'TestE2EAgentMemoryAt100Nodes2000Pods' -v ./test/e2e/agent/ || exit 1; \
	done

# The routing controller at 5,000 peers (tier 1, root, no lab): a node
# namespace (uplink + VXLAN device), the real controller and netlinkprog fed
# by informers on a fake API; cold programming, no-op resync, ≥ 50 single
# Node adds (informer event → entries seen by netlink), p50/p99.
# BENCH_ROUTING_FLAGS: -routing.peers=N -routing.adds=N -routing.cpuprofile=DIR
.PHONY: bench-routing-scale
bench-routing-scale: deps
	bash -o pipefail -c "$(GO) test -count=1 -tags kernel -timeout 20m -run '^TestBenchRoutingScale$$' -v ./internal/routing/netlinkprog/ -args $(BENCH_ROUTING_FLAGS) 2>&1 | grep -v '^[IW][0-9]'"
