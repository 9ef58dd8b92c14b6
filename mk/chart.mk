# The Helm chart (deploy/helm/trellis) and the manifests generated from it.
# tools/chart is its own Go module (the helm library), so the agent's module
# does not link Helm.
#
#   make manifests    deploy/{trellis,uninstall,rbac}.yaml from the chart's defaults
#   make test-chart   render, decode, lint, drift and RBAC golden tests (in make test)
#   make chart-tool   bin/trellis-chart: render|lint|manifests|install|upgrade|uninstall

.PHONY: manifests test-chart chart-tool
manifests:
	cd tools/chart && $(GO) run . manifests --chart ../../deploy/helm/trellis --dir ../../deploy

test-chart:
	cd tools/chart && $(GO) vet ./... && $(GO) test -count=1 ./...

chart-tool:
	@mkdir -p $(BIN)
	cd tools/chart && CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/trellis-chart .
