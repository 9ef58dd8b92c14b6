// Command coredns is CoreDNS at the pinned release (go.mod) with the plugins
// the lab's cluster DNS uses (internal/lab/clusterdns/coredns.yaml), plus log
// and whoami for debugging. CoreDNS documents building with a chosen plugin
// set; its own main links every plugin (cloud SDKs included), which costs
// minutes of a cold build and adds nothing here. A Corefile naming a plugin
// not linked here is refused at start ("unknown directive").
package main

import (
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/whoami"

	"github.com/coredns/coredns/coremain"
)

func main() {
	coremain.Run()
}
