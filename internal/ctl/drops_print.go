package ctl

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/trellisnet/trellis/internal/agentapi"
)

// dropPrinter writes drops as they come: JSON lines, or fixed-width table
// rows (no tabwriter: a followed stream cannot wait for the widest row).
type dropPrinter struct {
	w      io.Writer
	output string
	header bool
}

func newDropPrinter(w io.Writer, output string) *dropPrinter {
	return &dropPrinter{w: w, output: output}
}

const dropRowFormat = "%-12s %-14s %-30s %-30s %-5s %-5s %-7s %s\n"

func (p *dropPrinter) print(d agentapi.Drop) error {
	if p.output == OutputJSON {
		b, err := json.Marshal(d)
		if err != nil {
			return err
		}
		_, err = p.w.Write(append(b, '\n'))
		return err
	}
	if !p.header {
		p.header = true
		if _, err := fmt.Fprintf(p.w, dropRowFormat, "TIME", "NODE", "SOURCE", "DESTINATION", "PORT", "PROTO", "DIR", "VERDICT"); err != nil {
			return err
		}
	}
	port := "-"
	if d.Dst.Port != 0 {
		port = strconv.Itoa(int(d.Dst.Port))
	}
	dir := d.Direction
	if dir == "" {
		dir = "-"
	}
	_, err := fmt.Fprintf(p.w, dropRowFormat, d.Time.Local().Format("15:04:05.000"), d.Node,
		endpointName(d.Src), endpointName(d.Dst), port, d.Protocol, dir, VerdictText(d, p.output == OutputWide))
	return err
}

// endpointName is the pod, or the address when no pod holds it.
func endpointName(e agentapi.Endpoint) string {
	if e.Pod != "" {
		return e.Pod
	}
	return e.IP
}

// VerdictText says in words why d was dropped; wide adds the group chain,
// the interface and the addresses.
func VerdictText(d agentapi.Drop, wide bool) string {
	var s string
	pod := d.Pod
	if pod == "" {
		pod = "the pod"
	}
	switch d.Verdict {
	case "policy":
		s = fmt.Sprintf("%s is isolated for %s; no rule admits it", pod, d.Direction)
		if len(d.Policies) > 0 {
			s += " (policies: " + strings.Join(d.Policies, ", ") + ")"
		}
	case "spoofed":
		s = fmt.Sprintf("anti-spoofing: %s sent from an address that is not its own", pod)
	case "pending":
		s = fmt.Sprintf("pending: %s is not programmed yet and its namespace may be isolated for %s", pod, d.Direction)
	case "pending known-address":
		s = "pending: a pod address on an interface not programmed yet"
	case "unencrypted":
		s = "strict encryption: a packet to another node's pod would have left unencrypted"
	default:
		s = d.Verdict
	}
	if wide {
		var extra []string
		if d.Group != "" {
			extra = append(extra, "group "+d.Group)
		}
		if d.Interface != "" {
			extra = append(extra, "interface "+d.Interface)
		}
		extra = append(extra, hostPort(d.Src.IP, d.Src.Port)+" > "+hostPort(d.Dst.IP, d.Dst.Port), d.Time.UTC().Format(time.RFC3339Nano))
		s += " [" + strings.Join(extra, "; ") + "]"
	}
	return s
}

// hostPort is ip, with ":port" when port is not 0 (an IPv6 address then
// in brackets: [fd00::1]:80).
func hostPort(ip string, port uint16) string {
	if port == 0 {
		return ip
	}
	return net.JoinHostPort(ip, strconv.Itoa(int(port)))
}
