# Static analysis: gofmt, go vet and staticcheck over every build tag the project uses
# (plain, kernel, e2e). staticcheck is pinned and built through the module proxy
# into $(TRELLIS_CACHE), once per machine. Config: staticcheck.conf.

STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(TRELLIS_CACHE)/staticcheck-$(STATICCHECK_VERSION)/staticcheck

.PHONY: lint
lint: $(STATICCHECK)
	@unformatted=$$(gofmt -l cmd internal test hack images tools); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags kernel ./...
	$(GO) vet -tags e2e ./...
	$(GO) vet -tags e2e,peer ./test/e2e/peer/
	$(GO) vet -tags e2e,dualstack ./test/e2e/dualstack/
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags kernel ./...
	$(STATICCHECK) -tags e2e ./...

$(STATICCHECK):
	@mkdir -p $(dir $@)
	GOBIN=$(dir $@) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
