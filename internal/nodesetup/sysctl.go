package nodesetup

import (
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/sysctl"
)

// ProcSysctls sets sysctls under /proc/sys (internal/sysctl); it implements
// Sysctls for the agent's own network namespace.
type ProcSysctls = sysctl.Proc

// NetnsSysctls reads and sets sysctls inside another network namespace.
type NetnsSysctls = sysctl.Netns

// RecordedIPv6Forwarding is the agent's IPv6Forwarder: the procedure the
// plugin uses too (sysctl.EnableIPv6ForwardingWith, leaving pod interfaces
// and overlays alone, podlink.NoRAInterface), reading and setting through
// Sysctls (the agent's uninstall.Recorder, so that uninstall restores
// forwarding and every accept_ra it raised) and listing the interfaces
// through Interfaces (the calling thread's network namespace).
type RecordedIPv6Forwarding struct {
	Sysctls    sysctl.GetSetter
	Interfaces sysctl.InterfaceLister
}

var _ IPv6Forwarder = RecordedIPv6Forwarding{}

// EnableIPv6Forwarding implements IPv6Forwarder.
func (f RecordedIPv6Forwarding) EnableIPv6Forwarding() ([]string, error) {
	return sysctl.EnableIPv6ForwardingWith(f.Sysctls, f.Interfaces, podlink.NoRAInterface())
}
