# NetworkPolicy engine. See docs/policy.md.
#
#   make test-policy            tier 0 + tier 1 tests of internal/policy (root for tier 1)
#   make test-policy-property   the tracer == oracle property test with many more cases
#   make fuzz-policy            fuzz the ipBlock compiler against the oracle
#   make bench-policy-compile   compile/apply timings at 10k pods / 1k policies on real nftables (root)
#   make test-e2e-policy        tier 2 truth tables (x/y/z × a/b/c, 80/81 TCP+UDP) on a lab, expected from the oracle
#   make bench-policy           lab benchmark: 1k policies / 10k pod IPs, programming latency, per-packet cost, agent RSS
#   make bench-per-packet       lab benchmark: the per-packet cost alone at 1k policies / 10k pod IPs, 20 interleaved rounds
#   make bench-pending          lab benchmark: CNI ADD returning → the new pod programmed in the policy table (p50/p99/max)
#   make bench-policy-repair    foreign nft flush ruleset → policy table complete and enforcing again (p50/p99 over 20, root)

POLICY_PKGS := ./internal/policy/...
POLICY_CASES ?= 5000
POLICY_SEED ?= $(shell date +%s)
POLICY_FUZZTIME ?= 60s

.PHONY: test-policy test-policy-property fuzz-policy bench-policy-compile
test-policy: deps
	$(GO) test -count=1 $(POLICY_PKGS)
	$(GO) test -count=1 -p 1 -tags kernel -run '^TestKernel' $(POLICY_PKGS)

test-policy-property:
	$(GO) test -count=1 -run '^TestPropertyTracerMatchesOracle$$' ./internal/policy/ \
	  -policy.cases=$(POLICY_CASES) -policy.seed=$(POLICY_SEED) -v

fuzz-policy:
	$(GO) test -run '^$$' -fuzz '^FuzzIPBlock$$' -fuzztime $(POLICY_FUZZTIME) ./internal/policy/

bench-policy-compile: deps
	$(GO) test -count=1 -tags kernel -run '^TestKernelPolicyScale$$' -v ./internal/policy/
	$(GO) test -count=1 -run '^TestScaleCompileAndApply$$' -v ./internal/policy/

# The table guard's repair window on real nftables (tier 1, root, no lab):
# 20 × nft flush ruleset (plus a deleted table, chain and elements) against
# the controller running in a node namespace; prints each window and p50/p99.
.PHONY: bench-policy-repair
bench-policy-repair: deps
	bash -o pipefail -c "$(GO) test -count=1 -tags kernel -run '^TestKernelPolicyTableRepairsForeignChanges$$' -v ./internal/policy/ 2>&1 | grep -v '^I[0-9]'"

# Tier 2: the policy truth tables on a lab (TRELLIS_LAB_REUSE=1 reuses a running lab).
.PHONY: test-e2e-policy
test-e2e-policy: deps lab-build lab-binaries
	TRELLIS_LAB_BIN=$(LAB) $(GO) test -count=1 -tags e2e -timeout 20m -run '^TestE2EPolicy' -v ./test/e2e/policy/

# Benchmark on a lab (not part of make test): 1,000 policies / 10,000 pod
# addresses (API-only pods on an API-only node), programming latency p50/p99,
# per-packet cost (isolated ÷ not isolated, interleaved), agent RSS per pod.
.PHONY: bench-policy
bench-policy: deps lab-build lab-binaries
	TRELLIS_LAB_BIN=$(LAB) $(GO) test -count=1 -tags e2e -timeout 30m -run '^TestBenchPolicy$$' -v ./test/e2e/policy/

# Benchmark on a lab (not part of make test): the per-packet cost alone at
# 1,000 policies / 10,000 pod addresses, TCP throughput and connection rate
# isolated ÷ not isolated over interleaved rounds (test/e2e/perpacket).
# BENCH_PERPACKET_ROUNDS=N rounds (default 20); BENCH_PERPACKET_OUT=f.json
# saves the samples; BENCH_PERPACKET_OLD_PROBE=N first runs N rounds of the
# probe whose client closes first (the artefact, docs/scale.md).
.PHONY: bench-per-packet
bench-per-packet: deps lab-build lab-binaries
	TRELLIS_LAB_BIN=$(LAB) $(GO) test -count=1 -tags e2e -timeout 15m -run '^TestBenchPerPacket$$' -v ./test/e2e/policy/

# Benchmark on a lab (not part of make test): the pending window of a new pod
# in a default-deny namespace, CNI ADD returning → its interface programmed
# into the policy table, p50/p99/max over 8 batches of one pod per node.
# BENCH_PENDING_OUT=f.json saves the samples; BENCH_PENDING_BASELINE=f.json
# prints this run ÷ that one.
.PHONY: bench-pending
bench-pending: deps lab-build lab-binaries
	TRELLIS_LAB_BIN=$(LAB) $(GO) test -count=1 -tags e2e -timeout 20m -run '^TestBenchPendingWindow$$' -v ./test/e2e/policy/
