package ctl

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/trellisnet/trellis/internal/agentapi"
)

// printStatus writes the table (one row per node), the unhealthy nodes'
// reasons and warnings, then the summary line.
func printStatus(w io.Writer, rep *StatusReport, wide bool) error {
	headers := []string{"NODE", "AGENT", "READY", "VERSION", "MODE", "MTU", "PEERS", "ROUTES", "POLICIES", "ISOLATED", "FASTPATH", "LAST SYNC", "ERRORS"}
	enc := showEncryption(rep)
	if enc {
		headers = append(headers[:11], append([]string{"ENCRYPTION"}, headers[11:]...)...)
	}
	bgp := showBGP(rep)
	if bgp {
		at := len(headers) - 2 // before LAST SYNC
		headers = append(headers[:at], append([]string{"BGP"}, headers[at:]...)...)
	}
	if wide {
		headers = append(headers, "RESTARTS", "SYNCS", "REASON")
	}
	t := NewTable(w, headers...)
	for _, n := range rep.Nodes {
		row := statusRow(n, wide)
		if enc {
			row = append(row[:11], append([]string{encryptionCell(n.Agent)}, row[11:]...)...)
		}
		if bgp {
			at := 11
			if enc {
				at = 12
			}
			row = append(row[:at], append([]string{bgpCell(n.Agent)}, row[at:]...)...)
		}
		t.Row(row...)
	}
	if err := t.Flush(); err != nil {
		return err
	}
	for _, n := range rep.Nodes {
		if !n.Healthy {
			fmt.Fprintf(w, "%s unhealthy: %s\n", n.Node, strings.Join(n.Unhealthy, "; "))
		}
		for _, warn := range n.Warnings {
			fmt.Fprintf(w, "%s warning: %s\n", n.Node, warn)
		}
	}
	_, err := fmt.Fprintln(w, summaryLine(rep.Summary))
	return err
}

func statusRow(n NodeStatus, wide bool) []string {
	agent := n.AgentPhase
	if n.AgentPod == "" {
		agent = "missing"
	} else if n.Agent == nil && n.AgentError != "" {
		agent += ",unreachable"
	}
	ready := "no"
	if n.Healthy {
		ready = "yes"
	}
	row := []string{n.Node, agent, ready}
	st := n.Agent
	if st == nil {
		row = append(row, make([]string, 10)...)
		row[len(row)-1] = strconv.Itoa(len(n.Unhealthy))
		if wide {
			row = append(row, strconv.Itoa(int(n.Restarts)), "", strings.Join(n.Unhealthy, "; "))
		}
		return row
	}
	programmed := 0
	for _, p := range st.Routing.Peers {
		if p.State == agentapi.PeerProgrammed {
			programmed++
		}
	}
	mtu := ""
	if st.MTU > 0 {
		mtu = strconv.Itoa(st.MTU)
	}
	policies := strconv.Itoa(st.Policy.Policies)
	isolated := fmt.Sprintf("%d/%d", st.Policy.IsolatedIngress, st.Policy.IsolatedEgress)
	if !st.Policy.Enforced {
		policies, isolated = "off", "off"
	}
	row = append(row, st.Version, modeCell(st), mtu,
		fmt.Sprintf("%d/%d", programmed, len(st.Routing.Peers)), strconv.Itoa(st.Routing.Routes),
		policies, isolated, st.FastPath.State, lastSyncCell(st), strconv.Itoa(len(n.Unhealthy)))
	if wide {
		row = append(row, strconv.Itoa(int(n.Restarts)), syncAges(st), strings.Join(append(n.Unhealthy, n.Warnings...), "; "))
	}
	return row
}

// modeCell is the configured mode; for auto, with the paths the peers
// take: auto(native), auto(vxlan) or auto(2 native,1 vxlan).
func modeCell(st *agentapi.Status) string {
	if st.RoutingMode != "auto" {
		return st.RoutingMode
	}
	count := map[string]int{}
	for _, p := range st.Routing.Peers {
		if p.Mode != "" {
			count[p.Mode]++
		}
	}
	switch keys := sortedKeys(count); len(keys) {
	case 0:
		return "auto"
	case 1:
		return "auto(" + keys[0] + ")"
	default:
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%d %s", count[k], k)
		}
		return "auto(" + strings.Join(parts, ",") + ")"
	}
}

// lastSyncCell is the age of the stalest controller's last success: every
// controller synced at least this recently.
func lastSyncCell(st *agentapi.Status) string {
	var oldest time.Time
	for _, c := range st.Controllers {
		if c.LastSuccess == nil {
			return "never"
		}
		if oldest.IsZero() || c.LastSuccess.Before(oldest) {
			oldest = *c.LastSuccess
		}
	}
	if oldest.IsZero() {
		return ""
	}
	return age(st.Time.Sub(oldest))
}

// syncAges lists each controller's last success age (wide output).
func syncAges(st *agentapi.Status) string {
	cs := append([]agentapi.Controller(nil), st.Controllers...)
	sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
	parts := make([]string, len(cs))
	for i, c := range cs {
		a := "never"
		if c.LastSuccess != nil {
			a = age(st.Time.Sub(*c.LastSuccess))
		}
		parts[i] = c.Name + "=" + a
	}
	return strings.Join(parts, ",")
}

// age prints d the way kubectl prints ages (s, m, h).
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	default:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
}

func summaryLine(s StatusSummary) string {
	return fmt.Sprintf("%d nodes: %d healthy, %d unhealthy; %d policies; %d pods isolated for ingress, %d for egress; %d routes; fast path active on %d/%d%s",
		s.Nodes, s.Healthy, s.Unhealthy, s.Policies, s.IsolatedIngress, s.IsolatedEgress, s.Routes, s.FastPathActive, s.Nodes,
		encryptionSummary(s))
}
