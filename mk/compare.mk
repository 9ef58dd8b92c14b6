# The side-by-side with kube-router (hack/compare, internal/compare; docs/comparison.md).
#
#   make compare   bring up a Trellis lab and a kube-router lab, one after the other, run the
#                  same measurements against each and write docs/comparison.md (~40 min; not in make test)

.PHONY: compare compare-binaries

compare-binaries: lab-binaries
	@hack/build-pinned.sh e2e.test kube-router bridge host-local

compare: deps lab-build compare-binaries image
	$(GO) run ./hack/compare -bin $(BIN) -e2e "$$(hack/build-pinned.sh --print-dir e2e.test)/e2e.test" $(COMPARE_FLAGS)
