package bgp

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
)

// Node status condition types besides the problem reasons (each problem
// reason is a condition type of its own, status True).
const (
	// ConditionEnabled: the speaker runs (False: no BGPConfiguration
	// default, or the speaker is not built into this agent).
	ConditionEnabled = "Enabled"
	// ConditionSessionsEstablished: every configured session is
	// Established (False names the ones that are not, and why).
	ConditionSessionsEstablished = "SessionsEstablished"
)

// buildStatus is the node's BGPNodeStatus: the speaker's identity, one
// entry per session (named after the BGPPeer or node/NAME that asked for
// it) and the conditions, transition times carried over from prev.
func buildStatus(node string, d Desired, offReason string, peers []PeerState, problems []Problem,
	prev []metav1.Condition, now time.Time) *v1alpha1.BGPNodeStatus {
	st := &v1alpha1.BGPNodeStatus{ObjectMeta: metav1.ObjectMeta{Name: node}}
	s := &st.Status
	s.ObservedAt = metav1.NewTime(now)
	var conds []metav1.Condition
	if !d.Enabled {
		conds = append(conds, metav1.Condition{Type: ConditionEnabled, Status: metav1.ConditionFalse, Reason: offReasonCode(offReason), Message: offReason})
	} else {
		s.ASN = int64(d.Global.ASN)
		if d.Global.RouterID.IsValid() {
			s.RouterID = d.Global.RouterID.String()
		}
		conds = append(conds, metav1.Condition{Type: ConditionEnabled, Status: metav1.ConditionTrue, Reason: "Running",
			Message: fmt.Sprintf("speaker AS %d, %d sessions configured", d.Global.ASN, len(d.Neighbors))})
		s.Peers = peerStatuses(d.Neighbors, peers)
		s.Configured = int32(len(d.Neighbors))
		var down []string
		reason := ""
		for _, p := range s.Peers {
			if p.State == string(StateEstablished) {
				s.Established++
				continue
			}
			why := p.State
			if p.Reason != "" {
				why += ", " + p.Reason
				if reason == "" && conditionReasonRE.MatchString(p.Reason) {
					reason = p.Reason
				}
			}
			if p.Message != "" {
				why += ": " + p.Message
			}
			down = append(down, fmt.Sprintf("%s (%s) %s", p.Peer, p.Address, why))
		}
		c := metav1.Condition{Type: ConditionSessionsEstablished, Status: metav1.ConditionTrue, Reason: "AllEstablished",
			Message: fmt.Sprintf("%d of %d sessions established", s.Established, s.Configured)}
		switch {
		case s.Configured == 0:
			c.Status, c.Reason, c.Message = metav1.ConditionFalse, "NoSessions", "no BGPPeer selects this node and no internal peering applies"
		case len(down) > 0:
			if reason == "" {
				reason = "NotEstablished"
			}
			c.Status, c.Reason = metav1.ConditionFalse, reason
			c.Message = fmt.Sprintf("%d of %d sessions established; not established: %s", s.Established, s.Configured, strings.Join(down, "; "))
		}
		conds = append(conds, c)
	}
	conds = append(conds, problemConditions(problems)...)
	for i := range conds {
		conds[i].LastTransitionTime = metav1.NewTime(now)
		conds[i].Message = truncateMessage(conds[i].Message, 32*1024)
	}
	// Keep the transition time of a condition whose status did not change.
	var out []metav1.Condition
	for _, c := range prev {
		if meta.FindStatusCondition(conds, c.Type) != nil {
			out = append(out, c)
		}
	}
	for _, c := range conds {
		meta.SetStatusCondition(&out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	s.Conditions = out
	return st
}

// problemConditions turns the problems into one True condition per reason.
func problemConditions(problems []Problem) []metav1.Condition {
	byReason := map[string][]string{}
	for _, p := range problems {
		if !conditionReasonRE.MatchString(p.Reason) || len(p.Reason) > 316 {
			p.Reason = "InvalidConfiguration"
		}
		msg := p.Message
		if p.Object != "" {
			msg = p.Object + ": " + msg
		}
		byReason[p.Reason] = append(byReason[p.Reason], msg)
	}
	var out []metav1.Condition
	for r, msgs := range byReason {
		sort.Strings(msgs)
		out = append(out, metav1.Condition{Type: r, Status: metav1.ConditionTrue, Reason: r, Message: strings.Join(msgs, "; ")})
	}
	return out
}

// conditionReasonRE is the API's pattern of a condition reason (and, as
// used here, type): anything else would make the whole apply fail.
var conditionReasonRE = regexp.MustCompile(`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`)

func offReasonCode(reason string) string {
	switch reason {
	case offSpeakerMissing:
		return "SpeakerNotBuiltIn"
	case offNoConfiguration:
		return "NoConfiguration"
	case offUnusable:
		return "ConfigurationUnusable"
	case offNotServed:
		return "CRDsNotInstalled"
	}
	return "Disabled"
}

// peerStatuses joins the speaker's sessions with the neighbours asked for.
func peerStatuses(neighbors []Neighbor, peers []PeerState) []v1alpha1.PeerStatus {
	state := map[string]PeerState{}
	for _, p := range peers {
		state[p.Address.String()] = p
	}
	out := make([]v1alpha1.PeerStatus, 0, len(neighbors))
	for _, n := range neighbors {
		ps := v1alpha1.PeerStatus{Peer: n.Source, Address: n.Address.String(), ASN: int64(n.ASN), State: string(StateIdle)}
		if n.BFD.Enabled {
			ps.BFD = "Down"
		} else {
			ps.BFD = "Off"
		}
		if p, ok := state[ps.Address]; ok {
			ps.State = string(p.State)
			if !p.Since.IsZero() {
				since := metav1.NewTime(p.Since)
				ps.Since = &since
			}
			ps.Received, ps.Accepted, ps.Advertised = int32(p.Received), int32(p.Accepted), int32(p.Advertised)
			if p.BFD != "" {
				ps.BFD = p.BFD
			}
			ps.GracefulRestart, ps.Reason, ps.Message = p.GracefulRestart, p.Reason, p.Message
		} else {
			ps.Reason, ps.Message = "NotStarted", "the speaker reports no session for this neighbour yet"
		}
		out = append(out, ps)
	}
	return out
}

// sameStatus compares two statuses, ignoring when they were observed.
func sameStatus(a, b *v1alpha1.BGPNodeStatus) bool {
	if a == nil || b == nil {
		return a == b
	}
	x, y := a.Status, b.Status
	x.ObservedAt, y.ObservedAt = metav1.Time{}, metav1.Time{}
	return equality.Semantic.DeepEqual(x, y)
}

func truncateMessage(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
