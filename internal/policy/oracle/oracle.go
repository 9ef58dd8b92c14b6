// Package oracle is a reference evaluator of networking.k8s.io/v1
// NetworkPolicy semantics, written straight from the specification for use
// as a test oracle. It shares no code with internal/policy on purpose: it
// answers "is this connection allowed?" for one connection at a time, by
// brute force, with no precomputation.
package oracle

import (
	"net"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	netutils "k8s.io/utils/net"
)

// ProtocolICMP stands for any protocol without ports.
const ProtocolICMP corev1.Protocol = "ICMP"

// Cluster is the API state the answer depends on.
type Cluster struct {
	Namespaces []corev1.Namespace
	Pods       []corev1.Pod
	Policies   []networkingv1.NetworkPolicy
	// Pending are pods whose interface exists on their node but which the
	// enforcing agents have not seen yet ("namespace/name" keys). Trellis
	// gives them a cautious all-or-nothing verdict per direction instead of
	// their policies: denied when some policy of that direction could select
	// them (one exists in their namespace, or anywhere if their namespace is
	// unknown to the node), allowed otherwise; and no selector matches them
	// as a peer yet (only ipBlocks do).
	Pending map[string]PendingPod
	// HostSource, when set, returns the source address a connection from
	// the host-network pod src has when it reaches the pod dst on another
	// node, if that is not src's own IP. Trellis sends host traffic to a
	// remote pod from the node IP over a native route, and from the
	// sending node's VTEP address (the first address of its pod CIDR)
	// over VXLAN; ipBlock peers are matched against that address.
	HostSource func(src, dst *corev1.Pod) string
}

// sourceIP is the address dst sees for a connection from src in family
// fam. HostSource is consulted for the family of the address it returns.
func (c *Cluster) sourceIP(src, dst *corev1.Pod, fam Family) string {
	if src.Spec.HostNetwork && src.Spec.NodeName != dst.Spec.NodeName && c.HostSource != nil {
		if ip := c.HostSource(src, dst); ip != "" && (fam == "" || familyOf(ip) == fam) {
			return ip
		}
	}
	return PodIP(src, fam)
}

// Family is an address family: IPv4, IPv6, or "" for a pod's primary
// address (status.podIP).
type Family string

const (
	IPv4 Family = "IPv4"
	IPv6 Family = "IPv6"
)

func familyOf(ip string) Family {
	a := net.ParseIP(ip)
	switch {
	case a == nil:
		return ""
	case a.To4() != nil:
		return IPv4
	}
	return IPv6
}

// PodIP is p's address of family fam (status.podIPs; status.podIP for ""),
// "" when it has none. A dual-stack pod is one endpoint with an address in
// each family; a connection uses the addresses of one.
func PodIP(p *corev1.Pod, fam Family) string {
	if fam == "" {
		return p.Status.PodIP
	}
	for _, ip := range p.Status.PodIPs {
		if familyOf(ip.IP) == fam {
			return ip.IP
		}
	}
	if len(p.Status.PodIPs) == 0 && familyOf(p.Status.PodIP) == fam {
		return p.Status.PodIP
	}
	return ""
}

// PendingPod describes one pending pod.
type PendingPod struct {
	// NamespaceUnknown: the runtime did not pass the pod's namespace to the
	// CNI plugin, so the node cannot tell which namespace it belongs to.
	NamespaceUnknown bool
}

func (c *Cluster) pending(p *corev1.Pod) (PendingPod, bool) {
	pp, ok := c.Pending[p.Namespace+"/"+p.Name]
	return pp, ok
}

// pendingIsolated: could a policy of type typ select the pending pod p?
func (c *Cluster) pendingIsolated(p *corev1.Pod, pp PendingPod, typ networkingv1.PolicyType) bool {
	for i := range c.Policies {
		np := &c.Policies[i]
		if hasType(np, typ) && (pp.NamespaceUnknown || np.Namespace == p.Namespace) {
			return true
		}
	}
	return false
}

// Allowed reports whether a new connection from src to dst with protocol
// proto and destination port is allowed: src's egress policies must allow it
// and dst's ingress policies must allow it.
func (c *Cluster) Allowed(src, dst *corev1.Pod, proto corev1.Protocol, port int32) bool {
	return c.AllowedIn("", src, dst, proto, port)
}

// AllowedIn is Allowed for a connection of family fam (IPv4 or IPv6; ""
// uses the pods' primary addresses): the peers are matched by their
// addresses of that family. Both pods must have one (false otherwise).
func (c *Cluster) AllowedIn(fam Family, src, dst *corev1.Pod, proto corev1.Protocol, port int32) bool {
	if fam != "" && (PodIP(src, fam) == "" || PodIP(dst, fam) == "") {
		return false
	}
	return c.egressAllowed(src, dst, fam, proto, port) && c.ingressAllowed(src, dst, fam, proto, port)
}

func (c *Cluster) egressAllowed(src, dst *corev1.Pod, fam Family, proto corev1.Protocol, port int32) bool {
	if src.Spec.HostNetwork {
		return true // host-network pods are not isolated
	}
	if pp, ok := c.pending(src); ok {
		return !c.pendingIsolated(src, pp, networkingv1.PolicyTypeEgress)
	}
	isolated := false
	for i := range c.Policies {
		np := &c.Policies[i]
		if !appliesTo(np, src, networkingv1.PolicyTypeEgress) {
			continue
		}
		isolated = true
		for _, rule := range np.Spec.Egress {
			if c.peersMatch(np.Namespace, rule.To, dst, PodIP(dst, fam)) && c.portsMatch(rule.Ports, dst, proto, port) {
				return true
			}
		}
	}
	return !isolated
}

func (c *Cluster) ingressAllowed(src, dst *corev1.Pod, fam Family, proto corev1.Protocol, port int32) bool {
	if dst.Spec.HostNetwork {
		return true
	}
	// Traffic from the destination pod's own node is always allowed.
	if src.Spec.HostNetwork && src.Spec.NodeName == dst.Spec.NodeName {
		return true
	}
	if pp, ok := c.pending(dst); ok {
		return !c.pendingIsolated(dst, pp, networkingv1.PolicyTypeIngress)
	}
	isolated := false
	for i := range c.Policies {
		np := &c.Policies[i]
		if !appliesTo(np, dst, networkingv1.PolicyTypeIngress) {
			continue
		}
		isolated = true
		for _, rule := range np.Spec.Ingress {
			if c.peersMatch(np.Namespace, rule.From, src, c.sourceIP(src, dst, fam)) && c.portsMatch(rule.Ports, dst, proto, port) {
				return true
			}
		}
	}
	return !isolated
}

// appliesTo: the policy is in the pod's namespace, its podSelector selects
// the pod, and it has the policy type (with the API's defaulting).
func appliesTo(np *networkingv1.NetworkPolicy, pod *corev1.Pod, typ networkingv1.PolicyType) bool {
	if pod.Spec.HostNetwork || np.Namespace != pod.Namespace {
		return false
	}
	return selectorMatches(&np.Spec.PodSelector, pod.Labels) && hasType(np, typ)
}

// hasType: the policy has type typ, with the API's defaulting.
func hasType(np *networkingv1.NetworkPolicy, typ networkingv1.PolicyType) bool {
	types := np.Spec.PolicyTypes
	if len(types) == 0 {
		types = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		if len(np.Spec.Egress) > 0 {
			types = append(types, networkingv1.PolicyTypeEgress)
		}
	}
	for _, t := range types {
		if t == typ {
			return true
		}
	}
	return false
}

func selectorMatches(sel *metav1.LabelSelector, l map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false
	}
	return s.Matches(labels.Set(l))
}

// peersMatch: an empty peer list matches everyone; otherwise any peer.
// addr is other's address as the enforcing node sees it.
func (c *Cluster) peersMatch(policyNS string, peers []networkingv1.NetworkPolicyPeer, other *corev1.Pod, addr string) bool {
	if len(peers) == 0 {
		return true
	}
	for _, peer := range peers {
		if c.peerMatches(policyNS, peer, other, addr) {
			return true
		}
	}
	return false
}

func (c *Cluster) peerMatches(policyNS string, peer networkingv1.NetworkPolicyPeer, other *corev1.Pod, addr string) bool {
	if peer.IPBlock != nil {
		return ipBlockMatches(peer.IPBlock, addr)
	}
	if _, pending := c.pending(other); other.Spec.HostNetwork || pending {
		return false // host-network and pending pods match only ipBlock peers
	}
	if peer.NamespaceSelector != nil {
		if !selectorMatches(peer.NamespaceSelector, c.namespaceLabels(other.Namespace)) {
			return false
		}
	} else if other.Namespace != policyNS {
		return false
	}
	if peer.PodSelector != nil {
		return selectorMatches(peer.PodSelector, other.Labels)
	}
	return peer.NamespaceSelector != nil
}

func (c *Cluster) namespaceLabels(name string) map[string]string {
	for _, ns := range c.Namespaces {
		if ns.Name == name {
			return ns.Labels
		}
	}
	return nil
}

func ipBlockMatches(b *networkingv1.IPBlock, ip string) bool {
	addr := net.ParseIP(ip)
	if addr == nil {
		return false
	}
	// The API server reads CIDRs sloppily (leading zeros allowed, as
	// decimal) for objects stored before validation tightened; an except it
	// cannot read makes the block admit nothing rather than more.
	_, cidr, err := netutils.ParseCIDRSloppy(b.CIDR)
	if err != nil || !cidr.Contains(addr) {
		return false
	}
	for _, e := range b.Except {
		_, ex, err := netutils.ParseCIDRSloppy(e)
		if err != nil || ex.Contains(addr) {
			return false
		}
	}
	return true
}

// portsMatch: an empty list matches everything (every protocol); otherwise
// some entry must have the protocol and cover the port. A named port is
// looked up on the destination pod.
func (c *Cluster) portsMatch(ports []networkingv1.NetworkPolicyPort, dst *corev1.Pod, proto corev1.Protocol, port int32) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		pp := corev1.ProtocolTCP
		if p.Protocol != nil {
			pp = *p.Protocol
		}
		if pp != proto {
			continue
		}
		if p.Port == nil {
			return true
		}
		if p.Port.Type == intstr.String {
			if _, pending := c.pending(dst); pending {
				continue // nobody knows a pending pod's ports yet
			}
			if n, ok := namedPort(dst, p.Port.StrVal, proto); ok && n == port {
				return true
			}
			continue
		}
		end := p.Port.IntVal
		if p.EndPort != nil {
			end = *p.EndPort
		}
		if p.Port.IntVal <= port && port <= end {
			return true
		}
	}
	return false
}

func namedPort(pod *corev1.Pod, name string, proto corev1.Protocol) (int32, bool) {
	if pod.Spec.HostNetwork {
		return 0, false
	}
	// Services resolve named ports on regular containers and on native
	// sidecars (init containers with restartPolicy Always), in that order.
	ctrs := append([]corev1.Container(nil), pod.Spec.Containers...)
	for _, ic := range pod.Spec.InitContainers {
		if ic.RestartPolicy != nil && *ic.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			ctrs = append(ctrs, ic)
		}
	}
	for _, ctr := range ctrs {
		for _, cp := range ctr.Ports {
			p := cp.Protocol
			if p == "" {
				p = corev1.ProtocolTCP
			}
			if cp.Name == name && p == proto {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}
