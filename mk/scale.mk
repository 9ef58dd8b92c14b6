# The scale bench (docs/benchmarks-scale.md): one real agent in a cluster
# grown with API-only Nodes, Pods, Namespaces and NetworkPolicies.
#
#   make bench-scale       TestBenchScale in test/e2e/scale on its own lab `scale` (3 nodes, 2 subnets,
#                          cluster CIDR 10.244.0.0/14 so that thousands of API-only Nodes get pod CIDRs),
#                          Trellis installed as the DaemonSet from `make image`; steps
#                          100/2,000 → 1,000/20,000 → 2,000/40,000 → 5,000/100,000 nodes/pods,
#                          1,000 policies, as far as BENCH_SCALE_BUDGET allows (a step that would
#                          end past it is not started, and the result says so); prints the table
#                          after each step, writes $(BENCH_SCALE_OUT)/result.json and table.md,
#                          then the plots (tools/benchplot) into docs/img/. At most the budget
#                          (40 minutes) plus the lab's up and down.
#   make bench-scale-plot  the plots alone, from $(BENCH_SCALE_OUT)/result.json
#
# BENCH_SCALE_STEPS=NODES/PODS,... (e.g. 100/2000 for a quick run), BENCH_SCALE_FLAGS for
# the rest: BENCH_SCALE_SAMPLES (node and pod adds per step, 50), BENCH_SCALE_FLIPS (policy
# flips per step, 20), BENCH_SCALE_IDLE (60s), BENCH_SCALE_CREATE_TIMEOUT (one step's
# creation, 15m). BENCH_SCALE_BUDGET: no step starts that would end past it (40m).
# Not part of make test. Run it alone on the machine: its latencies are CPU-sensitive.

BENCH_SCALE_LAB ?= scale
BENCH_SCALE_STEPS ?= 100/2000,1000/20000,2000/40000,5000/100000
BENCH_SCALE_BUDGET ?= 40m
BENCH_SCALE_OUT ?= $(BIN)/bench-scale
BENCH_SCALE_IMG ?= $(CURDIR)/docs/img

.PHONY: bench-scale bench-scale-plot
bench-scale: deps lab-build lab-binaries image
	TRELLIS_LAB_NAME=$(BENCH_SCALE_LAB) TRELLIS_LAB_CLUSTER_CIDR=10.244.0.0/14 TRELLIS_LAB_NODE_CIDR_MASK=24 $(E2E_ENV) \
	  BENCH_SCALE_STEPS=$(BENCH_SCALE_STEPS) BENCH_SCALE_BUDGET=$(BENCH_SCALE_BUDGET) BENCH_SCALE_OUT=$(BENCH_SCALE_OUT) \
	  BENCH_SCALE_COMMAND="make bench-scale BENCH_SCALE_STEPS=$(BENCH_SCALE_STEPS) BENCH_SCALE_BUDGET=$(BENCH_SCALE_BUDGET) $(BENCH_SCALE_FLAGS)" $(BENCH_SCALE_FLAGS) \
	  $(GO) test -count=1 -tags e2e -timeout 90m -run '^TestBenchScale$$' -v ./test/e2e/scale/
	@$(MAKE) --no-print-directory bench-scale-plot

# The plotter (tools/benchplot, its own Go module: make bench-plot).
bench-scale-plot:
	@if [ -f tools/benchplot/go.mod ]; then \
	  $(MAKE) --no-print-directory bench-plot BENCH_SCALE_RESULT=$(BENCH_SCALE_OUT)/result.json BENCH_PLOT_DIR=$(BENCH_SCALE_IMG); \
	else \
	  echo "bench-scale-plot: tools/benchplot is not in this tree: no plots (the result is in $(BENCH_SCALE_OUT)/result.json)"; \
	fi
