# Code and manifests generated from the API types (internal/apis).
#
#   make generate         deep copies (zz_generated.deepcopy.go) and the CRDs
#                         (deploy/helm/trellis/crds/bgp.trellis.dev_<plural>.yaml),
#                         then the manifests (make manifests: deploy/trellis.yaml
#                         carries the CRDs)
#   make generate-check   the committed generated files are what the types
#                         generate (in make lint)
#
# controller-gen is the pinned version, run through the Go module proxy.

CONTROLLER_GEN := $(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0
CRD_DIR := deploy/helm/trellis/crds

.PHONY: generate generate-check
generate:
	$(CONTROLLER_GEN) object paths=./internal/apis/...
	$(CONTROLLER_GEN) crd paths=./internal/apis/... output:crd:dir=$(CRD_DIR)
	$(MAKE) manifests

generate-check:
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	  $(CONTROLLER_GEN) crd paths=./internal/apis/... output:crd:dir=$$tmp && \
	  if ! diff -r $$tmp $(CRD_DIR) >/dev/null; then \
	    echo "generate-check: $(CRD_DIR) is stale: run 'make generate' and commit it" >&2; exit 1; fi && \
	  echo "generate-check: $(CRD_DIR) matches internal/apis"
