package agent

import (
	"path/filepath"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/nodesetup"
	"github.com/trellisnet/trellis/internal/uninstall"
)

// recordedIPv6Forwarding is how node setup turns IPv6 forwarding on: the
// previous values of net.ipv6.conf.all.forwarding and of every accept_ra
// it raises are recorded first (uninstall.Recorder, the record the fast
// path's sysctls share), so that uninstall puts them back. IPv4's
// ip_forward is set without a record, as it always was.
func recordedIPv6Forwarding(cfg *config.Config) nodesetup.IPv6Forwarder {
	proc := nodesetup.ProcSysctls{Root: cfg.SysctlRoot}
	return nodesetup.RecordedIPv6Forwarding{
		Sysctls:    uninstall.Recorder{Sysctls: proc, File: uninstall.RecordPath(filepath.Dir(cfg.NodeStateFile))},
		Interfaces: proc,
	}
}
