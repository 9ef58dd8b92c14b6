// Command trellis-cni is the Trellis CNI plugin (spec 1.1.0 and earlier):
// container runtimes execute it for every pod attachment.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"

	"github.com/trellisnet/trellis/internal/cni"
)

func main() {
	skel.PluginMainFuncs(cni.Funcs(), cni.VersionInfo(), "trellis-cni: Trellis routed pod networking with node-local IPAM")
}
