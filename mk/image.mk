# The Trellis image (internal/imagebuild, hack/build-image; docs/install.md).
#
#   make image        build bin/image/{oci,trellis-image.tar,image.ref,image.digest,packages.txt}
#   make image-repro  build again from the same binaries and package versions: same digest (in make test)
#
# No base image, no daemon, no registry: the agent and plugin from `make build`
# plus nft and ethtool with their libraries from Debian packages cached in
# $(TRELLIS_CACHE)/debs. Timestamps are SOURCE_DATE_EPOCH (default 0).

IMAGE_DIR := $(BIN)/image
IMAGE_REPO ?= ghcr.io/trellisnet/trellis

.PHONY: image image-repro
image: deps build
	$(GO) run ./hack/build-image -bin $(BIN) -out $(IMAGE_DIR) -repo $(IMAGE_REPO)

# A second build into another directory from the first one's package set
# (no apt resolution, so it is cheap) must give the same digest.
image-repro: image
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	  $(GO) run ./hack/build-image -bin $(BIN) -out $$tmp -repo $(IMAGE_REPO) -lock $(IMAGE_DIR)/packages.txt >/dev/null && \
	  if cmp -s $$tmp/image.digest $(IMAGE_DIR)/image.digest && cmp -s $$tmp/trellis-image.tar $(IMAGE_DIR)/trellis-image.tar; then \
	    echo "image-repro: two builds gave $$(cat $(IMAGE_DIR)/image.ref) $$(cat $(IMAGE_DIR)/image.digest)"; \
	  else echo "image-repro: two builds differ: $$(cat $(IMAGE_DIR)/image.digest) vs $$(cat $$tmp/image.digest)" >&2; exit 1; fi
