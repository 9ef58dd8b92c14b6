# The scale bench's plots. tools/benchplot is its own Go module (the gonum
# plotting library), so the agent's module does not link it.
#
#   make bench-plot       one PNG per figure of $(BENCH_SCALE_RESULT) into $(BENCH_PLOT_DIR)
#                         (make bench-scale runs it after writing its result)
#   make test-benchplot   vet and test the plotter (in make test)

BENCH_SCALE_RESULT ?= bin/bench-scale/result.json
BENCH_PLOT_DIR ?= docs/img

.PHONY: bench-plot test-benchplot
bench-plot:
	cd tools/benchplot && $(GO) run . -in $(abspath $(BENCH_SCALE_RESULT)) -out $(abspath $(BENCH_PLOT_DIR))

test-benchplot:
	cd tools/benchplot && $(GO) vet ./... && $(GO) test -count=1 ./...
