# The eBPF fast path (internal/fastpath, docs/fastpath.md).
#
#   make bpf             rebuild internal/fastpath/fastpath.bpf.o from bpf/fastpath.c
#   make bpf-check       the committed object is exactly what the source builds to (in make test)
#   make test-fastpath   the package's tier-0 and tier-1 tests (root)
#
# The object is committed so that `go build` needs no clang; Debian 12's
# clang 14 output is byte-for-byte reproducible, which bpf-check relies on.

# -fdebug-prefix-map: the BTF line info names the source relative to the
# checkout, so every clone builds the same bytes.
BPF_CFLAGS := -O2 -g -Wall -Werror -target bpf -I/usr/include/$(shell uname -m)-linux-gnu -fdebug-prefix-map=$(CURDIR)=.
BPF_DIR := internal/fastpath

.PHONY: bpf bpf-check test-fastpath
bpf: deps
	cd $(BPF_DIR) && clang $(BPF_CFLAGS) -c bpf/fastpath.c -o fastpath.bpf.o && llvm-strip -g fastpath.bpf.o

bpf-check: deps
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	  (cd $(BPF_DIR) && clang $(BPF_CFLAGS) -c bpf/fastpath.c -o $$tmp/fastpath.bpf.o && llvm-strip -g $$tmp/fastpath.bpf.o) && \
	  if cmp -s $$tmp/fastpath.bpf.o $(BPF_DIR)/fastpath.bpf.o; then echo "bpf-check: $(BPF_DIR)/fastpath.bpf.o matches bpf/fastpath.c"; \
	  else echo "bpf-check: $(BPF_DIR)/fastpath.bpf.o is stale or was built differently: run 'make bpf' and commit it" >&2; exit 1; fi

test-fastpath: deps build
	$(GO) test -count=1 ./internal/fastpath/...
	$(GO) test -count=1 -p 1 -tags kernel -run '^TestKernel' ./internal/fastpath/...
