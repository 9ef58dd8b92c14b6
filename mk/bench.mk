# The benchmark image of `trellisctl bench` (docs/trellisctl.md#trellisctl-bench).
#
#   make bench-image   bin/bench-image/trellis-bench.tar: trellis.dev/bench (dpbench.Image),
#                      Debian's iperf3 with its libraries plus trellis-bench (images/bench)
#
# Built like the Trellis image (hack/build-image -image bench), without a base
# image or a registry; the .debs are cached in $(TRELLIS_CACHE)/debs. The lab
# imports the tarball into every node at `trellis-lab up`; for another
# cluster, `ctr -n k8s.io images import` it on each node or push it to a
# registry and pass `trellisctl bench --image`.

BENCH_IMAGE_DIR := $(BIN)/bench-image

.PHONY: bench-image
bench-image: deps
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/trellis-bench ./images/bench
	$(GO) run ./hack/build-image -image bench -bin $(BIN) -out $(BENCH_IMAGE_DIR) >/dev/null

# BGP's convergence and scale figures (docs/benchmarks-bgp.md): TestBenchBGP in
# test/e2e/bgp on its own lab brought up with --routing-mode bgp (BIRD as the
# ToR), Trellis installed as the DaemonSet from `make image`; the table is
# printed on the lines starting `BENCH`. BENCH_BGP_FLAGS: e.g.
# TRELLIS_BENCH_BGP_ROUNDS=10 (see the test's comment for the others).
# bench-bgp-mesh (run first by bench-bgp; alone it needs only root, no lab):
# a FullMesh of 20 GoBGP speakers, each its own process in its own network
# namespace on one bridge, TestBenchBGPFullMesh20 in internal/bgp/speaker.
BENCH_BGP_LAB ?= bgpbench
.PHONY: bench-bgp bench-bgp-mesh
bench-bgp-mesh: deps
	$(GO) test -count=1 -tags kernel -timeout 5m -run '^TestBenchBGPFullMesh20$$' -v ./internal/bgp/speaker/

bench-bgp: deps bench-bgp-mesh lab-build lab-binaries image
	TRELLIS_LAB_NAME=$(BENCH_BGP_LAB) $(E2E_ENV) $(BENCH_BGP_FLAGS) \
	  $(GO) test -count=1 -tags e2e -timeout 15m -run '^TestBenchBGP$$' -v ./test/e2e/bgp/
