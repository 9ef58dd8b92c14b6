package policy_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/policy/nfttrace"
	"github.com/trellisnet/trellis/internal/policy/oracle"
)

// world is a small cluster: API objects (the oracle's input) and, per
// node, a fake nftables table programmed by Compile+Apply.
type world struct {
	nodes   []string
	nodeIP  map[string]string
	nodeIP6 map[string]string
	// families are the address families of a random world's pods (see
	// worldFamilies).
	families string
	cluster  oracle.Cluster
	fakes    map[string]*knftables.Fake
	// denyLogGroup is passed to the compiler (nflog of drops).
	denyLogGroup uint16
}

const underlayIface = "eth0"

func newWorld() *world {
	return &world{
		nodes:   []string{"n1", "n2"},
		nodeIP:  map[string]string{"n1": "192.168.0.1", "n2": "192.168.0.2"},
		nodeIP6: map[string]string{"n1": "fd00:192::1", "n2": "fd00:192::2"},
	}
}

func ifaceFor(p *corev1.Pod) string {
	h := sha256.Sum256([]byte(p.Namespace + "/" + p.Name))
	return podlink.Prefix + hex.EncodeToString(h[:])[:11]
}

func (w *world) addNamespace(name string, lbl map[string]string) {
	l := map[string]string{"kubernetes.io/metadata.name": name}
	for k, v := range lbl {
		l[k] = v
	}
	w.cluster.Namespaces = append(w.cluster.Namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}})
}

// addPod adds a pod; ips is its address, or its addresses separated by
// a comma (a dual-stack pod: "10.244.1.2,fd00:244:1::2"). For hostNetwork
// pods the node's addresses of the same families replace them.
func (w *world) addPod(ns, name, node, ips string, hostNet bool, lbl map[string]string, ports ...corev1.ContainerPort) {
	list := strings.Split(ips, ",")
	if hostNet {
		for i, ip := range list {
			if strings.Contains(ip, ":") {
				list[i] = w.nodeIP6[node]
			} else {
				list[i] = w.nodeIP[node]
			}
		}
	}
	st := corev1.PodStatus{PodIP: list[0]}
	for _, ip := range list {
		st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip})
	}
	w.cluster.Pods = append(w.cluster.Pods, corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbl},
		Spec: corev1.PodSpec{NodeName: node, HostNetwork: hostNet,
			Containers: []corev1.Container{{Name: "c", Ports: ports}}},
		Status: st,
	})
}

// markPending makes a pod pending: its interface exists on its node, but
// no agent has seen it (see oracle.Cluster.Pending).
func (w *world) markPending(ns, name string, namespaceUnknown bool) {
	if w.cluster.Pending == nil {
		w.cluster.Pending = map[string]oracle.PendingPod{}
	}
	w.cluster.Pending[ns+"/"+name] = oracle.PendingPod{NamespaceUnknown: namespaceUnknown}
}

// groupOf is the device group the plugin gives a pod's host interface.
func (w *world) groupOf(p *corev1.Pod) uint32 {
	if pp, ok := w.cluster.Pending[p.Namespace+"/"+p.Name]; ok && pp.NamespaceUnknown {
		return podlink.GroupUnknown
	}
	return podlink.GroupForNamespace(p.Namespace)
}

func (w *world) addPolicy(np networkingv1.NetworkPolicy) {
	w.cluster.Policies = append(w.cluster.Policies, np)
}

// snapshot converts the API objects to the compiler's input for one node.
func (w *world) snapshot(node string) *policy.Snapshot {
	s := &policy.Snapshot{NodeName: node, DenyLogGroup: w.denyLogGroup}
	for i := range w.cluster.Namespaces {
		s.Namespaces = append(s.Namespaces, policy.NamespaceFromAPI(&w.cluster.Namespaces[i]))
	}
	for i := range w.cluster.Pods {
		p := &w.cluster.Pods[i]
		if _, pending := w.cluster.Pending[p.Namespace+"/"+p.Name]; pending {
			continue // the agents have not seen it yet
		}
		iface := ""
		if p.Spec.NodeName == node && !p.Spec.HostNetwork {
			iface = ifaceFor(p)
		}
		s.Pods = append(s.Pods, policy.PodFromAPI(p, iface))
	}
	for i := range w.cluster.Policies {
		s.Policies = append(s.Policies, &w.cluster.Policies[i])
	}
	return s
}

// program compiles and applies every node's table (on top of whatever the
// fakes already hold) and validates the result.
func (w *world) program(t testing.TB) {
	t.Helper()
	if w.fakes == nil {
		w.fakes = map[string]*knftables.Fake{}
	}
	for _, n := range w.nodes {
		if w.fakes[n] == nil {
			w.fakes[n] = knftables.NewFake(knftables.InetFamily, policy.TableName)
		}
		if _, err := policy.Apply(context.Background(), w.fakes[n], policy.Compile(w.snapshot(n))); err != nil {
			t.Fatalf("apply on %s: %v", n, err)
		}
		if err := nfttrace.Validate(w.fakes[n]); err != nil {
			t.Fatalf("node %s table would be refused by the kernel: %v", n, err)
		}
	}
}

var protoNum = map[corev1.Protocol]uint8{corev1.ProtocolTCP: 6, corev1.ProtocolUDP: 17, corev1.ProtocolSCTP: 132, oracle.ProtocolICMP: 1}

// traced answers whether a new connection src→dst passes every hook on its
// way, the way the routed data path takes it (primary addresses).
func (w *world) traced(src, dst *corev1.Pod, proto corev1.Protocol, port int32) (bool, error) {
	return w.tracedIn("", src, dst, proto, port)
}

// tracedIn is traced for a connection of family fam ("" for the primary
// addresses).
func (w *world) tracedIn(fam oracle.Family, src, dst *corev1.Pod, proto corev1.Protocol, port int32) (bool, error) {
	type step struct {
		node string
		pkt  nfttrace.Packet
	}
	base := nfttrace.Packet{
		Src: netip.MustParseAddr(oracle.PodIP(src, fam)), Dst: netip.MustParseAddr(oracle.PodIP(dst, fam)),
		Proto: protoNum[proto], DPort: uint16(port), CTState: "new",
	}
	if base.Src.Is6() && proto == oracle.ProtocolICMP {
		base.Proto, base.ICMPType = 58, 128 // echo request
	}
	at := func(node, hook, iif, oif string) step {
		p := base
		p.Hook, p.IIF, p.OIF = hook, iif, oif
		if !src.Spec.HostNetwork && node == src.Spec.NodeName {
			p.SrcRoute = ifaceFor(src) // the plugin's /32 host route
			p.IIFGroup = w.groupOf(src)
		} else {
			p.SrcRoute = underlayIface
		}
		if !dst.Spec.HostNetwork && node == dst.Spec.NodeName {
			p.OIFGroup = w.groupOf(dst)
		}
		return step{node, p}
	}
	sameNode := src.Spec.NodeName == dst.Spec.NodeName
	dstIf := underlayIface
	if sameNode {
		dstIf = "lo"
	}
	if !dst.Spec.HostNetwork {
		dstIf = ifaceFor(dst)
	}
	var steps []step
	switch {
	case src.Spec.HostNetwork && sameNode:
		steps = append(steps, at(src.Spec.NodeName, "output", "", dstIf))
	case src.Spec.HostNetwork:
		steps = append(steps, at(src.Spec.NodeName, "output", "", underlayIface))
	case sameNode && dst.Spec.HostNetwork:
		steps = append(steps, at(src.Spec.NodeName, "input", ifaceFor(src), ""))
	case sameNode:
		steps = append(steps, at(src.Spec.NodeName, "forward", ifaceFor(src), dstIf))
	default:
		steps = append(steps, at(src.Spec.NodeName, "forward", ifaceFor(src), underlayIface))
	}
	if !sameNode {
		if dst.Spec.HostNetwork {
			steps = append(steps, at(dst.Spec.NodeName, "input", underlayIface, ""))
		} else {
			steps = append(steps, at(dst.Spec.NodeName, "forward", underlayIface, dstIf))
		}
	}
	for _, s := range steps {
		v, err := nfttrace.Trace(w.fakes[s.node], s.pkt)
		if err != nil {
			return false, fmt.Errorf("trace on %s: %w", s.node, err)
		}
		if v != nfttrace.Accept {
			return false, nil
		}
	}
	return true, nil
}

type probe struct {
	proto corev1.Protocol
	port  int32
}

var defaultProbes = []probe{
	{corev1.ProtocolTCP, 80}, {corev1.ProtocolTCP, 81}, {corev1.ProtocolTCP, 8080},
	{corev1.ProtocolUDP, 80}, {corev1.ProtocolUDP, 81}, {corev1.ProtocolSCTP, 80},
	{corev1.ProtocolSCTP, 81}, {oracle.ProtocolICMP, 0},
}

// mismatches compares tracer and oracle over every ordered pod pair, every
// family both pods have an address in, and every probe, returning a
// readable list of disagreements.
func (w *world) mismatches(t testing.TB, probes []probe) []string {
	t.Helper()
	var out []string
	for i := range w.cluster.Pods {
		for j := range w.cluster.Pods {
			if i == j {
				continue
			}
			src, dst := &w.cluster.Pods[i], &w.cluster.Pods[j]
			for _, fam := range []oracle.Family{oracle.IPv4, oracle.IPv6} {
				if oracle.PodIP(src, fam) == "" || oracle.PodIP(dst, fam) == "" {
					continue
				}
				for _, pr := range probes {
					want := w.cluster.AllowedIn(fam, src, dst, pr.proto, pr.port)
					got, err := w.tracedIn(fam, src, dst, pr.proto, pr.port)
					if err != nil {
						t.Fatalf("%s/%s -> %s/%s %s %s/%d: %v", src.Namespace, src.Name, dst.Namespace, dst.Name, fam, pr.proto, pr.port, err)
					}
					if got != want {
						out = append(out, fmt.Sprintf("%s/%s(%s) -> %s/%s(%s) %s/%d: tracer=%v oracle=%v",
							src.Namespace, src.Name, oracle.PodIP(src, fam), dst.Namespace, dst.Name, oracle.PodIP(dst, fam), pr.proto, pr.port, got, want))
					}
				}
			}
		}
	}
	return out
}
