//go:build tools

// Package tools pins kube-router, the peer CNI of the lab's side-by-side
// comparison (`trellis-lab up --cni kube-router`, `make compare`; see
// hack/build-pinned.sh). It is built for measurement inside the lab only and
// never shipped: the Go module list reports security advisories against
// v2.1.0, which is acceptable only because the binary runs inside the lab's
// network namespaces, against the lab's own throwaway cluster.
package tools

import _ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
