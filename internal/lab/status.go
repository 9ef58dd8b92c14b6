package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"text/tabwriter"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trellisnet/trellis/internal/lab/clusterdns"
	"github.com/trellisnet/trellis/internal/lab/install"
	"github.com/trellisnet/trellis/internal/lab/kube"
	"github.com/trellisnet/trellis/internal/lab/node"
	"github.com/trellisnet/trellis/internal/lab/proc"
	"github.com/trellisnet/trellis/internal/lab/state"
	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/internal/lab/tor"
)

var errNoLab = errors.New("no lab is running (run `trellis-lab up`)")

// torSessions summarises the ToR's BGP sessions with the nodes.
func torSessions(ctx context.Context, p state.Paths) string {
	out, err := tor.Birdc(ctx, p, "show", "protocols")
	if err != nil {
		return "not answering"
	}
	up, all := 0, 0
	for name, pr := range tor.NodeSessions(tor.ParseProtocols(out)) {
		if strings.Contains(name, "_md5_") {
			continue
		}
		all++
		if strings.HasPrefix(pr.Info, "Established") {
			up++
		}
	}
	return fmt.Sprintf("%d of %d node sessions established", up, all)
}

// Status prints the lab's processes, nodes, cluster DNS and any pod whose
// sandbox (CNI ADD) failed.
func Status(ctx context.Context, p state.Paths, w io.Writer) error {
	st, err := state.LoadState(p)
	if err != nil {
		return errNoLab
	}
	t := st.Topology
	fmt.Fprintf(w, "lab: %d nodes, %d subnets, routing mode %s, encryption %s, phase %s, created %s\n", len(t.Nodes), len(t.Subnets),
		t.Options.RoutingMode, t.Options.EncryptionOrDefault(), st.Phase, st.CreatedAt.Format("15:04:05"))
	if t.HasIPv6() {
		fmt.Fprintf(w, "IP family: %s (pods %s, Services %s)\n", t.Options.IPFamily, joinPrefixes(t.ClusterCIDRs()), joinPrefixes(t.ServiceCIDRs()))
	}
	if t.Options.BGP {
		fmt.Fprintf(w, "bgp: on; ToR AS %d (BIRD in %s: %s), nodes AS %d, internal peering %s\n", topology.ToRASN,
			t.RouterNetns, torSessions(ctx, p), topology.NodeASN, t.Options.BGPPeeringOrDefault())
	}
	fmt.Fprintf(w, "kubeconfig: %s (API forwarded on 127.0.0.1:%d)\n", p.AdminKubeconfig(), t.Options.APIPort)
	switch {
	case st.Install.Mode == CNIKubeRouter:
		fmt.Fprintf(w, "cni: kube-router, image %s (Trellis is not installed)\n", st.Install.Image)
	case st.Install.AgentPod():
		fmt.Fprintf(w, "trellis: %s install, image %s\n", st.Install.Mode, st.Install.Image)
	case st.Install.Mode != "":
		fmt.Fprintf(w, "trellis: %s install\n", st.Install.Mode)
	}
	if st.AgentError != "" {
		fmt.Fprintf(w, "agent: %s\n", st.AgentError)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nPROCESS\tPID\tSTATE")
	for _, pr := range st.Processes {
		want := "__node"
		if !strings.HasPrefix(pr.Name, "node/") && len(pr.Argv) > 0 {
			want = pr.Argv[0]
		}
		state := "running"
		if !proc.Alive(pr.PID, want) {
			state = "STOPPED"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", pr.Name, pr.PID, state)
		if strings.HasPrefix(pr.Name, "node/") && state == "running" {
			np, err := node.ReadPIDs(p.Node(strings.TrimPrefix(pr.Name, "node/")))
			if err == nil {
				names := make([]string, 0, len(np.PIDs))
				for n := range np.PIDs {
					names = append(names, n)
				}
				sort.Strings(names)
				for _, n := range names {
					s := "running"
					if !proc.Alive(np.PIDs[n], n) {
						s = "STOPPED"
					}
					if r := np.Restarts[n]; r > 0 {
						s += fmt.Sprintf(" (%d restarts)", r)
					}
					fmt.Fprintf(tw, "  %s\t%d\t%s\n", n, np.PIDs[n], s)
				}
			}
		}
	}
	tw.Flush()
	cs, _, err := kube.Client(p.AdminKubeconfig())
	if err != nil {
		return err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Fprintf(w, "\nAPI server: unreachable: %v\n", err)
		return nil
	}
	agents := map[string]string{}
	if st.Install.AgentPod() {
		agents = agentPodStates(ctx, cs)
	}
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nNODE\tREADY\tADDRESS\tPOD CIDR\tSUBNET\tAGENT POD")
	for _, n := range nodes.Items {
		h, _ := t.Node(n.Name)
		sub, addr := "", h.Addr.String()
		if h.Subnet >= 0 && h.Subnet < len(t.Subnets) {
			sub = t.Subnets[h.Subnet].Prefix.String()
			if p6 := t.Subnets[h.Subnet].Prefix6; p6.IsValid() {
				sub += "," + p6.String()
			}
		}
		if t.HasIPv6() {
			addr = joinAddrs(t.HostIPs(h))
		}
		fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%s\t%s\n", n.Name, kube.NodeReady(&n), addr, strings.Join(n.Spec.PodCIDRs, ","), sub, agents[n.Name])
	}
	tw.Flush()
	if dns, err := clusterdns.Describe(ctx, cs); err != nil && apierrors.IsNotFound(err) {
		fmt.Fprintln(w, "\ncluster DNS: not deployed")
	} else if err != nil {
		fmt.Fprintf(w, "\ncluster DNS: %v\n", err)
	} else {
		fmt.Fprintf(w, "\ncluster DNS: %s\n", dns)
	}
	evs, err := cs.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "reason=FailedCreatePodSandBox"})
	if err == nil {
		seen := map[string]bool{}
		var lines []string
		for _, ev := range evs.Items {
			k := ev.InvolvedObject.Namespace + "/" + ev.InvolvedObject.Name
			if seen[k] || !podPending(ctx, p, ev.InvolvedObject) {
				continue
			}
			seen[k] = true
			lines = append(lines, fmt.Sprintf("  %s: %s", k, ev.Message))
		}
		if len(lines) > 0 {
			fmt.Fprintln(w, "\nPods whose network setup (CNI ADD) failed:")
			fmt.Fprintln(w, strings.Join(lines, "\n"))
		}
	}
	return nil
}

func podPending(ctx context.Context, p state.Paths, ref corev1.ObjectReference) bool {
	cs, _, err := kube.Client(p.AdminKubeconfig())
	if err != nil {
		return false
	}
	pod, err := cs.CoreV1().Pods(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	return err == nil && pod.UID == ref.UID && !kube.PodReady(pod)
}

// agentPodStates describes each node's agent pod: name, Ready, restarts.
func agentPodStates(ctx context.Context, cs kubernetes.Interface) map[string]string {
	out := map[string]string{}
	pods, err := cs.CoreV1().Pods(install.Namespace).List(ctx, metav1.ListOptions{LabelSelector: install.AgentSelector})
	if err != nil {
		return out
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		restarts := int32(0)
		for _, c := range p.Status.ContainerStatuses {
			restarts += c.RestartCount
		}
		s := fmt.Sprintf("%s ready=%v restarts=%d", p.Name, kube.PodReady(p), restarts)
		if p.DeletionTimestamp != nil {
			s += " terminating"
		}
		if prev := out[p.Spec.NodeName]; prev != "" {
			s = prev + "; " + s
		}
		out[p.Spec.NodeName] = s
	}
	return out
}

func joinAddrs(as []netip.Addr) string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.String())
	}
	return strings.Join(out, ",")
}

func joinPrefixes(ps []netip.Prefix) string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.String())
	}
	return strings.Join(out, ",")
}
