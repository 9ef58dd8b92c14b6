package ctl

import (
	"fmt"

	"github.com/trellisnet/trellis/internal/agentapi"
)

// showBGP: the BGP column appears when a node runs a BGP speaker.
func showBGP(rep *StatusReport) bool {
	for _, n := range rep.Nodes {
		if n.Agent != nil && n.Agent.BGP != nil && n.Agent.BGP.Enabled {
			return true
		}
	}
	return false
}

// bgpCell is "off", or the established of the configured sessions
// ("2/3"); kubectl get bgpnodestatuses shows each session.
func bgpCell(st *agentapi.Status) string {
	switch {
	case st == nil:
		return ""
	case st.BGP == nil || !st.BGP.Enabled:
		return "off"
	}
	return fmt.Sprintf("%d/%d", st.BGP.Established, st.BGP.Configured)
}
