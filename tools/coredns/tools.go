//go:build tools

// Package tools pins CoreDNS, the lab's cluster DNS server (see hack/build-pinned.sh).
// Its main package is the module root: coremain plus every plugin registered
// through core/plugin.
//
// CoreDNS v1.15.0 requires k8s.io/{api,apimachinery,client-go} v0.37.1; this
// module raises them to the project's v0.37.2 pin (minimal version selection,
// no replace: a patch release of the same minor).
package tools

import _ "github.com/coredns/coredns"
