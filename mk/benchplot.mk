# The scale bench's plots. tools/benchplot is its own Go module (the gonum
# plotting library), so the agent's module does not link it.
#
#   make bench-plot       one PNG per figure of $(BENCH_SCALE_RESULT) into $(BENCH_PLOT_DIR)
#                         (make bench-scale runs it after writing its result)
#   make test-benchplot   vet and test the plotter (in make test)
#   make record-scale-baseline   re-record the scale guard's baseline (below)

BENCH_SCALE_RESULT ?= bin/bench-scale/result.json
BENCH_PLOT_DIR ?= docs/img

.PHONY: bench-plot test-benchplot
bench-plot:
	cd tools/benchplot && $(GO) run . -in $(abspath $(BENCH_SCALE_RESULT)) -out $(abspath $(BENCH_PLOT_DIR))

test-benchplot:
	cd tools/benchplot && $(GO) vet ./... && $(GO) test -count=1 ./...

# The scale guard (internal/agent TestScaleGuard, in test-unit): 1,000 Nodes
# and 10,000 Pods through the agent's informers and controllers with fake
# kernels; it fails when the heap per pod or the resync's CPU time grows
# more than 25 % over internal/agent/testdata/scale-guard-baseline.json.
# Re-record that baseline after a deliberate change, on a quiet machine:
.PHONY: record-scale-baseline
record-scale-baseline:
	$(GO) test ./internal/agent -run '^TestScaleGuard$$' -count=1 -v -record-scale-baseline
