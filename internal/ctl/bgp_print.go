package ctl

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// printBGPStatus writes one row per session (a node without sessions or
// without a status gets one row saying so), then with wide every node's
// conditions, the sessions not established, and the summary line. Ages
// are measured from now.
func printBGPStatus(w io.Writer, rep *BGPStatusReport, wide bool, now time.Time) error {
	headers := []string{"NODE", "PEER", "ADDRESS", "ASN", "STATE", "SINCE", "RCV/ACC/ADV", "BFD", "GR", "REASON"}
	if wide {
		headers = append(headers, "LOCAL ASN", "ROUTER ID", "OBSERVED", "MESSAGE")
	}
	t := NewTable(w, headers...)
	for _, n := range rep.Nodes {
		for _, row := range bgpRows(n, wide, now) {
			t.Row(row...)
		}
	}
	if err := t.Flush(); err != nil {
		return err
	}
	if wide {
		for _, n := range rep.Nodes {
			if n.Status == nil {
				continue
			}
			for _, c := range n.Status.Conditions {
				fmt.Fprintf(w, "%s condition %s=%s: %s %s\n", n.Node, c.Type, c.Status, c.Reason, c.Message)
			}
		}
	}
	for _, n := range rep.Nodes {
		for _, s := range n.NotEstablished {
			fmt.Fprintf(w, "not established: %s\n", s)
		}
	}
	s := rep.Summary
	line := fmt.Sprintf("%d nodes, %d sessions: %d established, %d not", s.Nodes, s.Sessions, s.Established, s.Sessions-s.Established)
	if s.NodesWithoutStatus > 0 {
		line += fmt.Sprintf("; %d node(s) without a BGPNodeStatus", s.NodesWithoutStatus)
	}
	_, err := fmt.Fprintln(w, line)
	return err
}

func bgpRows(n BGPNode, wide bool, now time.Time) [][]string {
	cols := 10
	if wide {
		cols = 14
	}
	note := func(reason string) []string {
		row := make([]string, cols)
		row[0], row[9] = n.Node, reason
		return row
	}
	switch {
	case n.Status == nil:
		return [][]string{note("no BGPNodeStatus (BGP not running on this node, or not reported yet)")}
	case len(n.Status.Peers) == 0:
		row := note("no session configured")
		if n.NodeGone {
			row[9] = "node deleted; " + row[9]
		}
		return [][]string{row}
	}
	var rows [][]string
	for _, p := range n.Status.Peers {
		reason := p.Reason
		if n.NodeGone {
			reason = strings.TrimSuffix("node deleted; "+reason, "; ")
		}
		row := []string{n.Node, bgpPeerName(p), p.Address, asn(p.ASN), p.State, sinceAge(p.Since, now),
			fmt.Sprintf("%d/%d/%d", p.Received, p.Accepted, p.Advertised), p.BFD, p.GracefulRestart, reason}
		if wide {
			row = append(row, asn(n.Status.ASN), n.Status.RouterID, sinceAge(&n.Status.ObservedAt, now), p.Message)
		}
		rows = append(rows, row)
	}
	return rows
}

func asn(a int64) string {
	if a == 0 {
		return ""
	}
	return strconv.FormatInt(a, 10)
}

func sinceAge(t *metav1.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return age(now.Sub(t.Time))
}
