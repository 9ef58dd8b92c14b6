package ctl

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/policy"
)

// ExplainResult is `trellisctl explain -o json|yaml`.
type ExplainResult struct {
	Source      EndpointInfo `json:"source"`
	Destination EndpointInfo `json:"destination"`
	Protocol    string       `json:"protocol"`
	Port        uint16       `json:"port"`
	Allowed     bool         `json:"allowed"`
	Egress      policy.Side  `json:"egress"`
	Ingress     policy.Side  `json:"ingress"`
	// Verify holds the agents' traces through their live rulesets (--verify).
	Verify []VerifyResult `json:"verify,omitempty"`
}

// EndpointInfo is one end as resolved: a pod, or an external address.
type EndpointInfo struct {
	Pod         string `json:"pod,omitempty"`
	IP          string `json:"ip"`
	Node        string `json:"node,omitempty"`
	HostNetwork bool   `json:"hostNetwork,omitempty"`
}

func explainCommand(o *Options) *cobra.Command {
	var output string
	var verify bool
	cmd := &cobra.Command{
		Use:   "explain SRC DST PORT[/PROTO]",
		Short: "Say whether a new connection is allowed, and which NetworkPolicy rule decides it",
		Long: `Explain decides a new connection from SRC to DST (pods as namespace/name, or
IP addresses; PROTO is TCP, UDP or SCTP, TCP by default) with the same compiled
model the agents program into nftables, and names every NetworkPolicy that
selects either end and the rule, peer and port that admitted it.
Exit code 0: allowed; 1: denied (or --verify disagrees); 2: bad input.`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := ValidateOutput(output, OutputJSON, OutputYAML); err != nil {
				return err
			}
			proto, port, err := parsePortProto(args[2])
			if err != nil {
				return err
			}
			res, err := o.explain(cmd.Context(), args[0], args[1], proto, port, verify)
			if err != nil {
				return err
			}
			if output != OutputTable {
				err = PrintStructured(o.Out, output, res)
			} else {
				err = printExplain(o.Out, res)
			}
			if err != nil {
				return err
			}
			if d := disagreements(res); len(d) > 0 {
				return Failed("--verify disagrees with the compiled model: %s", strings.Join(d, "; "))
			}
			if !res.Allowed {
				return Failed("denied")
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json or yaml")
	cmd.Flags().BoolVar(&verify, "verify", false, "also trace the connection through the enforcing nodes' live nftables rulesets (needs exec in the agent pods)")
	return cmd
}

// parsePortProto reads "80", "80/TCP", "53/udp".
func parsePortProto(s string) (corev1.Protocol, uint16, error) {
	portS, protoS, _ := strings.Cut(s, "/")
	n, err := strconv.ParseUint(portS, 10, 16)
	if err != nil || n == 0 {
		return "", 0, Usage("bad port %q (want PORT[/PROTO], PORT 1-65535)", s)
	}
	proto := corev1.ProtocolTCP
	if protoS != "" {
		proto = corev1.Protocol(strings.ToUpper(protoS))
	}
	switch proto {
	case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
	default:
		return "", 0, Usage("bad protocol %q (one of TCP, UDP, SCTP)", protoS)
	}
	return proto, uint16(n), nil
}

// clusterState is what explain reads from the API server: the objects the
// agents compile their tables from.
type clusterState struct {
	pods     []*corev1.Pod
	nss      []*corev1.Namespace
	policies []*networkingv1.NetworkPolicy
}

func (o *Options) readCluster(ctx context.Context) (*clusterState, error) {
	cs, err := o.Clientset()
	if err != nil {
		return nil, err
	}
	st := &clusterState{}
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	for i := range pods.Items {
		st.pods = append(st.pods, &pods.Items[i])
	}
	nss, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing namespaces: %w", err)
	}
	for i := range nss.Items {
		st.nss = append(st.nss, &nss.Items[i])
	}
	nps, err := cs.NetworkingV1().NetworkPolicies("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing networkpolicies: %w", err)
	}
	for i := range nps.Items {
		st.policies = append(st.policies, &nps.Items[i])
	}
	return st, nil
}

func (o *Options) explain(ctx context.Context, srcArg, dstArg string, proto corev1.Protocol, port uint16, verify bool) (*ExplainResult, error) {
	st, err := o.readCluster(ctx)
	if err != nil {
		return nil, err
	}
	snap := policy.SnapshotFromAPI("", st.pods, st.nss, st.policies, nil)
	src, err := resolveEndpoint(ctx, o, st, snap, srcArg)
	if err != nil {
		return nil, err
	}
	dst, err := resolveEndpoint(ctx, o, st, snap, dstArg)
	if err != nil {
		return nil, err
	}
	if src, dst, err = sameFamily(src, dst, srcArg, dstArg); err != nil {
		return nil, err
	}
	if src.Pod == nil && dst.Pod == nil {
		return nil, Usage("neither %s nor %s is a pod: Trellis polices pods only", srcArg, dstArg)
	}
	ex := policy.Explain(snap, src, dst, proto, port)
	res := &ExplainResult{Source: endpointInfo(src), Destination: endpointInfo(dst), Protocol: string(proto), Port: port,
		Allowed: ex.Allowed, Egress: ex.Egress, Ingress: ex.Ingress}
	if verify {
		if res.Verify, err = o.verifyExplain(ctx, res, src, dst); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func endpointInfo(e policy.Endpoint) EndpointInfo {
	info := EndpointInfo{IP: e.Addr.String()}
	if e.Pod != nil {
		info.Pod, info.Node, info.HostNetwork = e.Pod.Namespace+"/"+e.Pod.Name, e.Pod.NodeName, e.Pod.HostNetwork
	}
	return info
}

// resolveEndpoint turns "namespace/name" or an IP into an endpoint of snap:
// an IP of a pod is that pod (a pod-network pod before a host-network one
// sharing a node's address); any other IP is an external peer.
func resolveEndpoint(ctx context.Context, o *Options, st *clusterState, snap *policy.Snapshot, arg string) (policy.Endpoint, error) {
	if a, err := netip.ParseAddr(arg); err == nil {
		a = a.Unmap()
		ep := policy.Endpoint{Addr: a}
		for i := range snap.Pods {
			p := &snap.Pods[i]
			if hasAddr(p, a) && (ep.Pod == nil || ep.Pod.HostNetwork && !p.HostNetwork) {
				ep.Pod = p
			}
		}
		return ep, nil
	}
	ns, name, ok := strings.Cut(arg, "/")
	if !ok || ns == "" || name == "" {
		return policy.Endpoint{}, Usage("%q is neither namespace/name nor an IP address", arg)
	}
	var found *corev1.Pod
	for _, p := range st.pods {
		if p.Namespace == ns && p.Name == name {
			found = p
		}
	}
	if found == nil {
		return policy.Endpoint{}, notFound(ctx, o, ns, name)
	}
	for i := range snap.Pods {
		p := &snap.Pods[i]
		if p.Namespace != ns || p.Name != name {
			continue
		}
		if len(p.IPs) == 0 {
			return policy.Endpoint{}, Usage("pod %s has no IP yet", arg)
		}
		return policy.Endpoint{Pod: p, Addr: p.IPs[0]}, nil // its primary address; see sameFamily
	}
	switch {
	case found.Status.Phase == corev1.PodSucceeded || found.Status.Phase == corev1.PodFailed:
		return policy.Endpoint{}, Usage("pod %s has finished (%s): it has no address", arg, found.Status.Phase)
	case found.Status.PodIP == "":
		return policy.Endpoint{}, Usage("pod %s has no IP yet", arg)
	}
	return policy.Endpoint{}, Usage("pod %s: its address %s is claimed by a newer pod", arg, found.Status.PodIP)
}

// sameFamily makes a connection of one family out of two endpoints: an end
// given by pod name (primary address first) takes its address of the other
// end's family when the families differ, the source first.
func sameFamily(src, dst policy.Endpoint, srcArg, dstArg string) (policy.Endpoint, policy.Endpoint, error) {
	if src.Addr.Is4() == dst.Addr.Is4() {
		return src, dst, nil
	}
	byName := func(arg string) bool { _, err := netip.ParseAddr(arg); return err != nil }
	if byName(dstArg) {
		if a, ok := addrOfFamily(dst.Pod, src.Addr.Is4()); ok {
			dst.Addr = a
			return src, dst, nil
		}
	}
	if byName(srcArg) {
		if a, ok := addrOfFamily(src.Pod, dst.Addr.Is4()); ok {
			src.Addr = a
			return src, dst, nil
		}
	}
	return src, dst, Usage("%s (%s) and %s (%s) have no address family in common", srcArg, src.Addr, dstArg, dst.Addr)
}

func addrOfFamily(p *policy.Pod, v4 bool) (netip.Addr, bool) {
	if p == nil {
		return netip.Addr{}, false
	}
	for _, a := range p.IPs {
		if a.Is4() == v4 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func hasAddr(p *policy.Pod, a netip.Addr) bool {
	for _, x := range p.IPs {
		if x == a {
			return true
		}
	}
	return false
}

// notFound says whether the namespace or the pod is missing (exit 2).
func notFound(ctx context.Context, o *Options, ns, name string) error {
	cs, err := o.Clientset()
	if err != nil {
		return err
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		return Usage("namespace %q not found", ns)
	}
	return Usage("pod %s/%s not found", ns, name)
}

func printExplain(w io.Writer, r *ExplainResult) error {
	verdict := "ALLOWED"
	if !r.Allowed {
		verdict = "DENIED"
	}
	fmt.Fprintf(w, "%s -> %s %d/%s: %s\n", describeEnd(r.Source), describeEnd(r.Destination), r.Port, r.Protocol, verdict)
	for _, s := range []policy.Side{r.Egress, r.Ingress} {
		who := s.Pod
		if who == "" {
			who = "external address"
		}
		where := ""
		if s.Node != "" {
			where = " (enforced on node " + s.Node + ")"
		}
		mark := "allowed"
		if !s.Allowed {
			mark = "DENIED"
		}
		fmt.Fprintf(w, "  %s of %s%s: %s: %s\n", s.Direction, who, where, mark, s.Reason)
		for _, pm := range s.Policies {
			if len(pm.Admitting) == 0 {
				fmt.Fprintf(w, "    policy %s selects it; admits nothing of this connection\n", pm.Policy)
				continue
			}
			for _, m := range pm.Admitting {
				fmt.Fprintf(w, "    policy %s admits it: %s\n", pm.Policy, m.Text)
			}
		}
	}
	for _, v := range r.Verify {
		fmt.Fprintf(w, "  verify on node %s (%s): %s\n", v.Node, v.Covers, v.Summary())
	}
	return nil
}

func describeEnd(e EndpointInfo) string {
	switch {
	case e.Pod == "":
		return e.IP + " (external)"
	case e.HostNetwork:
		return fmt.Sprintf("%s (%s, host network of %s)", e.Pod, e.IP, e.Node)
	}
	return fmt.Sprintf("%s (%s, node %s)", e.Pod, e.IP, e.Node)
}
