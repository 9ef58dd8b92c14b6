package policy

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellisnet/trellis/internal/podlink"
)

// Endpoint is one end of a connection to explain: a pod of the snapshot, or
// an address that is no pod's (Pod nil).
type Endpoint struct {
	Pod *Pod
	// Addr is the address the other end's node sees: the pod's address of
	// the connection's family, or the external address.
	Addr netip.Addr
	// Pending: the pod's interface exists on its node but the agent has not
	// programmed it yet (it is then absent from the snapshot's pods).
	Pending bool
	// NamespaceUnknown: a pending pod whose interface carries no namespace
	// (device group podlink.GroupUnknown).
	NamespaceUnknown bool
}

// Explanation is the verdict on one new connection and why: the source's
// egress and the destination's ingress, each decided by the allow list the
// compiler renders into the enforcing node's table.
type Explanation struct {
	Allowed bool `json:"allowed"`
	Egress  Side `json:"egress"`
	Ingress Side `json:"ingress"`
}

// Side is the decision in one direction.
type Side struct {
	Direction string `json:"direction"`
	// Pod is "namespace/name" of the end this direction is enforced for
	// (the source for egress, the destination for ingress), "" for an
	// external address.
	Pod string `json:"pod,omitempty"`
	// Node is the node whose table decides ("" when nobody polices).
	Node     string `json:"node,omitempty"`
	Isolated bool   `json:"isolated"`
	Allowed  bool   `json:"allowed"`
	// Reason says in one sentence why.
	Reason string `json:"reason"`
	// Policies are every policy selecting Pod in this direction.
	Policies []PolicyMatch `json:"policies,omitempty"`
}

// PolicyMatch is one selecting policy and the parts of it that admit the
// connection (none: it selects the pod but admits nothing of this).
type PolicyMatch struct {
	Policy    string      `json:"policy"`
	Admitting []RuleMatch `json:"admitting,omitempty"`
}

// RuleMatch names one rule, peer and port entry that admits the connection.
// Indexes are 1-based; Peer or Port 0 means the rule has no peers (every
// address) or no ports (every port and protocol).
type RuleMatch struct {
	Rule int    `json:"rule"`
	Peer int    `json:"peer"`
	Port int    `json:"port"`
	Text string `json:"text"`
}

// Explain decides a new connection src→dst (protocol proto, destination
// port) with the compiler's own allow lists: the egress list of src and the
// ingress list of dst that Compile renders into their nodes' tables, plus
// the data path's fixed rules (host-network pods are never isolated, a
// node's own traffic to its pods and a pod reaching itself are not
// policed, pending interfaces follow the isolated-groups sets). A
// protocol other than TCP, UDP and SCTP matches only rules without ports.
// It has no side effects; snap.NodeName and pod interfaces are ignored.
//
// Which rule admitted the connection is computed here only, rule by rule
// with the compiler's rule code, so compilation pays nothing for it.
func Explain(snap *Snapshot, src, dst Endpoint, proto corev1.Protocol, port uint16) Explanation {
	ix := newIndex(snap)
	ex := Explanation{
		Egress:  ix.explainSide(egress, src, dst, proto, port),
		Ingress: ix.explainSide(ingress, dst, src, proto, port),
	}
	if src.Pod != nil && src.Pod == dst.Pod {
		for _, s := range []*Side{&ex.Egress, &ex.Ingress} {
			s.Allowed, s.Reason = true, "a pod reaching itself is not policed"
		}
	}
	ex.Allowed = ex.Egress.Allowed && ex.Ingress.Allowed
	return ex
}

// explainSide decides direction dir for the end `self` (the source for
// egress, the destination for ingress) talking to `other`.
func (ix *index) explainSide(dir direction, self, other Endpoint, proto corev1.Protocol, port uint16) Side {
	s := Side{Direction: dirName(dir), Allowed: true}
	p := self.Pod
	if p == nil {
		s.Reason = "external address: not policed by Trellis"
		return s
	}
	s.Pod, s.Node = p.Namespace+"/"+p.Name, p.NodeName
	switch {
	case p.HostNetwork:
		s.Node, s.Reason = "", "host-network pod: never isolated"
		return s
	case dir == ingress && other.Pod != nil && other.Pod.HostNetwork && other.Pod.NodeName == p.NodeName:
		s.Reason = "from its own node's host network: not policed"
		return s
	case self.Pending:
		return ix.explainPending(dir, self, s)
	}
	pols := ix.selectingPolicies(p, dir)
	for _, np := range pols {
		s.Policies = append(s.Policies, PolicyMatch{Policy: np.Namespace + "/" + np.Name})
	}
	if len(pols) == 0 {
		s.Reason = "not isolated for " + s.Direction + ": no NetworkPolicy selects it"
		return s
	}
	s.Isolated = true
	al := ix.allowFor(p, dir, pols)
	s.Allowed = al.admits(other.Addr, proto, port)
	for i, np := range pols {
		s.Policies[i].Admitting = ix.admittingRules(np, dir, p, other.Addr, proto, port)
	}
	if s.Allowed {
		s.Reason = fmt.Sprintf("isolated for %s by %d polic%s; admitted", s.Direction, len(pols), plural(len(pols)))
	} else {
		s.Reason = fmt.Sprintf("isolated for %s by %d polic%s; no rule admits %s/%d %s %s",
			s.Direction, len(pols), plural(len(pols)), protoLabel(proto), port, map[direction]string{ingress: "from", egress: "to"}[dir], other.Addr)
	}
	return s
}

func (ix *index) explainPending(dir direction, self Endpoint, s Side) Side {
	g := podlink.GroupForNamespace(self.Pod.Namespace)
	if self.NamespaceUnknown {
		g = podlink.GroupUnknown
	}
	if ix.isolatedGroups(dir)[g] {
		s.Isolated, s.Allowed = true, false
		s.Reason = "pending (not programmed yet): dropped, a policy of this direction could select it"
	} else {
		s.Reason = "pending (not programmed yet): allowed, no policy of this direction could select it"
	}
	return s
}

// admits reports whether the allow list holds the connection's peer
// address, protocol and port.
func (al allowList) admits(ip netip.Addr, proto corev1.Protocol, port uint16) bool {
	if inRanges(al.all, ip) {
		return true
	}
	n, ok := protoNumber(&proto)
	if !ok {
		return false
	}
	for _, b := range al.ports {
		if b.proto == n && b.src.contains(ip) && b.lo <= port && port <= b.hi {
			return true
		}
	}
	return false
}

// admittingRules lists the (rule, peer, port) entries of np that admit the
// connection, each evaluated alone through addRule.
func (ix *index) admittingRules(np *networkingv1.NetworkPolicy, dir direction, p *Pod, other netip.Addr,
	proto corev1.Protocol, port uint16) []RuleMatch {
	var out []RuleMatch
	ip := other
	n := len(np.Spec.Ingress)
	if dir == egress {
		n = len(np.Spec.Egress)
	}
	for i := 0; i < n; i++ {
		peers, ports := rulePeersPorts(np, dir, i)
		for pi := 0; pi < max(1, len(peers)); pi++ {
			sub, k := peers, peerKey{np: np, dir: dir, rule: i}
			if len(peers) > 0 {
				sub, k.peer = peers[pi:pi+1], pi+1
			}
			for qi := 0; qi < max(1, len(ports)); qi++ {
				subPorts := ports
				if len(ports) > 0 {
					subPorts = ports[qi : qi+1]
				}
				var al allowList
				ix.addRule(&al, k, sub, subPorts, p)
				al.all = mergeRanges(al.all)
				if !al.admits(ip, proto, port) {
					continue
				}
				m := RuleMatch{Rule: i + 1}
				if len(peers) > 0 {
					m.Peer = pi + 1
				}
				if len(ports) > 0 {
					m.Port = qi + 1
				}
				m.Text = describeRule(dir, m, sub, subPorts, p)
				out = append(out, m)
			}
		}
	}
	return out
}

func rulePeersPorts(np *networkingv1.NetworkPolicy, dir direction, i int) ([]networkingv1.NetworkPolicyPeer, []networkingv1.NetworkPolicyPort) {
	if dir == ingress {
		return np.Spec.Ingress[i].From, np.Spec.Ingress[i].Ports
	}
	return np.Spec.Egress[i].To, np.Spec.Egress[i].Ports
}

// describeRule renders e.g. "ingress rule 2, peer 1: podSelector app=x, port 80/TCP".
func describeRule(dir direction, m RuleMatch, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, p *Pod) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s rule %d", dirName(dir), m.Rule)
	if m.Peer > 0 {
		fmt.Fprintf(&b, ", peer %d: %s", m.Peer, describePeer(&peers[0]))
	} else {
		b.WriteString(": every address")
	}
	if m.Port > 0 {
		b.WriteString(", " + describePort(&ports[0], dir, p))
	} else {
		b.WriteString(", every port")
	}
	return b.String()
}

func describePeer(peer *networkingv1.NetworkPolicyPeer) string {
	if peer.IPBlock != nil {
		s := "ipBlock " + peer.IPBlock.CIDR
		if len(peer.IPBlock.Except) > 0 {
			s += " except " + strings.Join(peer.IPBlock.Except, ",")
		}
		return s
	}
	var parts []string
	if peer.NamespaceSelector != nil {
		parts = append(parts, "namespaceSelector "+formatSelector(peer.NamespaceSelector))
	}
	if peer.PodSelector != nil {
		parts = append(parts, "podSelector "+formatSelector(peer.PodSelector))
	}
	return strings.Join(parts, " ")
}

func formatSelector(ls *metav1.LabelSelector) string {
	s := metav1.FormatLabelSelector(ls)
	if s == "" || s == "<none>" {
		return "{} (all)"
	}
	return s
}

func describePort(pp *networkingv1.NetworkPolicyPort, dir direction, p *Pod) string {
	proto := corev1.ProtocolTCP
	if pp.Protocol != nil {
		proto = *pp.Protocol
	}
	switch {
	case pp.Port == nil:
		return "every " + string(proto) + " port"
	case pp.Port.Type == intstr.String && dir == ingress:
		pn, _ := protoNumber(&proto)
		n, _ := namedPort(p, pp.Port.StrVal, pn)
		return fmt.Sprintf("port %s/%s (=%d)", pp.Port.StrVal, proto, n)
	case pp.Port.Type == intstr.String:
		return fmt.Sprintf("port %s/%s (named on the destination)", pp.Port.StrVal, proto)
	case pp.EndPort != nil:
		return fmt.Sprintf("ports %d-%d/%s", pp.Port.IntVal, *pp.EndPort, proto)
	}
	return fmt.Sprintf("port %d/%s", pp.Port.IntVal, proto)
}

func dirName(d direction) string {
	if d == egress {
		return "egress"
	}
	return "ingress"
}

func plural(n int) string {
	if n == 1 {
		return "y"
	}
	return "ies"
}

func protoLabel(p corev1.Protocol) string {
	if _, ok := protoNumber(&p); ok {
		return string(p)
	}
	return string(p) + "(portless)"
}
