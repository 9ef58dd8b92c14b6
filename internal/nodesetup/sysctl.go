package nodesetup

import "github.com/trellisnet/trellis/internal/sysctl"

// ProcSysctls sets sysctls under /proc/sys (internal/sysctl); it implements
// Sysctls for the agent's own network namespace.
type ProcSysctls = sysctl.Proc

// NetnsSysctls reads and sets sysctls inside another network namespace.
type NetnsSysctls = sysctl.Netns
