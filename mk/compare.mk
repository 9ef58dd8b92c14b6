# The side-by-side with kube-router (hack/compare, internal/compare; docs/comparison.md).
#
#   make compare   bring up a Trellis lab and a kube-router lab, one after the other, run the
#                  same measurements against each and write docs/comparison.md (~40 min; not in make test)

.PHONY: compare compare-binaries test-peer

compare-binaries: lab-binaries
	@hack/build-pinned.sh e2e.test kube-router bridge host-local

compare: deps lab-build compare-binaries image
	$(GO) run ./hack/compare -bin $(BIN) -e2e "$$(hack/build-pinned.sh --print-dir e2e.test)/e2e.test" $(COMPARE_FLAGS)

# The kube-router lab alone (test/e2e/peer): pods on one node, across nodes and subnets, and a
# NetworkPolicy, in a lab of its own (~3-4 min: not in make test, which must stay under 45 min).
test-peer: deps lab-build lab-binaries
	@hack/build-pinned.sh kube-router bridge host-local
	TRELLIS_LAB_NAME=kr TRELLIS_LAB_CNI=kube-router TRELLIS_LAB_BIN=$(LAB) $(GO) test -count=1 -tags e2e,peer -timeout 15m -run '^TestE2E' -v ./test/e2e/peer/
