# The eBPF fast path (internal/fastpath, docs/fastpath.md).
#
#   make bpf             rebuild the fast path from bpf/fastpath.c with bpf2go: the object
#                        (fastpath_bpfel.o) and the Go side of its maps and structs
#                        (fastpath_bpfel.go)
#   make bpf-check       the committed object and Go file are exactly what the source builds
#                        to (in make test)
#   make test-fastpath   the package's tier-0 and tier-1 tests (root)
#
# Both generated files are committed so that `go build` needs no clang; Debian 12's
# clang 14 output is byte-for-byte reproducible, which bpf-check relies on. bpf2go is
# the version go.mod pins (cilium/ebpf, `tool` directive); it compiles with -O2
# -mcpu=v1 -g, maps the source directory out of the debug info and strips DWARF
# (the BTF stays). -type names the C structs whose Go types it generates.

BPF_DIR := internal/fastpath
BPF2GO_FLAGS := -cc clang -strip llvm-strip -target bpfel -go-package fastpath \
  -type iface -type settings -type flow_key -type flow_key6 -type flow_val
BPF_CFLAGS := -Wall -Werror -I/usr/include/$(shell uname -m)-linux-gnu
# bpf2go's generated names: fastpath_bpfel.{o,go}.
BPF_OUT := fastpath_bpfel.o fastpath_bpfel.go

.PHONY: bpf bpf-check test-fastpath
bpf: deps
	cd $(BPF_DIR) && $(GO) tool bpf2go $(BPF2GO_FLAGS) fastpath bpf/fastpath.c -- $(BPF_CFLAGS)

bpf-check: deps
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	  (cd $(BPF_DIR) && $(GO) tool bpf2go $(BPF2GO_FLAGS) -output-dir $$tmp fastpath bpf/fastpath.c -- $(BPF_CFLAGS)) && \
	  for f in $(BPF_OUT); do \
	    if ! cmp -s $$tmp/$$f $(BPF_DIR)/$$f; then \
	      echo "bpf-check: $(BPF_DIR)/$$f is stale or was built differently: run 'make bpf' and commit it" >&2; exit 1; fi; \
	  done && echo "bpf-check: $(addprefix $(BPF_DIR)/,$(BPF_OUT)) match bpf/fastpath.c"

test-fastpath: deps build
	$(GO) test -count=1 ./internal/fastpath/...
	$(GO) test -count=1 -p 1 -tags kernel -run '^TestKernel' ./internal/fastpath/...
