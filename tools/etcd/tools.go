//go:build tools

// Package tools pins etcd for the Trellis lab (see hack/build-pinned.sh).
package tools

import _ "go.etcd.io/etcd/server/v3"
