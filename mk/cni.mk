# trellis-cni: benchmark and the single-host plugin demo.

.PHONY: bench-cni demo-cni
BENCH_CNI_FLAGS ?= -pods 200 -concurrency 16 -rounds 5

# ADD+DEL latency, trellis-cni vs ptp + host-local (containernetworking/plugins, pinned).
bench-cni: deps build
	@hack/build-pinned.sh ptp host-local
	$(GO) run ./hack/bench-cni -trellis-bin $(BIN) \
	  -ref-bin "$$(hack/build-pinned.sh --print-dir ptp):$$(hack/build-pinned.sh --print-dir host-local)" $(BENCH_CNI_FLAGS)

# The plugin alone on one host: two pods wired through libcni, traffic, DEL.
# DEMO_CNI_FLAGS=-ip-family=dual (or ipv6) gives the pods IPv6 addresses too.
demo-cni: deps build
	$(GO) run ./hack/cni-demo -bin $(BIN) $(DEMO_CNI_FLAGS)
