package ctl

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	bgpv1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
)

// The BGP resources trellisctl reads.
var (
	BGPNodeStatusResource    = bgpv1alpha1.SchemeGroupVersion.WithResource("bgpnodestatuses")
	BGPConfigurationResource = bgpv1alpha1.SchemeGroupVersion.WithResource("bgpconfigurations")
)

// BGPStatusReport is `trellisctl bgp status -o json|yaml`.
type BGPStatusReport struct {
	Nodes   []BGPNode  `json:"nodes"`
	Summary BGPSummary `json:"summary"`
}

// BGPNode is one node: its BGPNodeStatus as its agent wrote it, and the
// sessions that are not established.
type BGPNode struct {
	Node string `json:"node"`
	// Status is the BGPNodeStatus's status; nil when the node has none
	// (its agent does not run BGP, or has not reported yet).
	Status *bgpv1alpha1.NodeStatus `json:"status,omitempty"`
	// NodeGone: a BGPNodeStatus whose Node no longer exists.
	NodeGone bool `json:"nodeGone,omitempty"`
	// NotEstablished names each configured session that is not
	// Established, with its state and reason.
	NotEstablished []string `json:"notEstablished,omitempty"`
}

// BGPSummary adds the nodes up.
type BGPSummary struct {
	Nodes int `json:"nodes"`
	// NodesWithoutStatus have no BGPNodeStatus.
	NodesWithoutStatus int `json:"nodesWithoutStatus"`
	// Sessions configured, and how many of them are Established.
	Sessions    int `json:"sessions"`
	Established int `json:"established"`
}

type bgpStatusFlags struct {
	output string
	now    func() time.Time
}

func bgpCommand(o *Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bgp",
		Short: "BGP route distribution (docs/bgp.md)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return Usage("bgp needs a subcommand: status")
		},
	}
	cmd.AddCommand(bgpStatusCommand(o))
	return cmd
}

func bgpStatusCommand(o *Options) *cobra.Command {
	f := bgpStatusFlags{}
	cmd := &cobra.Command{
		Use:   "status [NODE...]",
		Short: "Show every node's BGP sessions (exit 1 when a configured session is not Established)",
		Long: `Reads the BGPNodeStatus objects (bgp.trellis.dev/v1alpha1) the agents write
and prints one row per session: node, peer, address, ASN, state and since
when, prefixes received/accepted/advertised, BFD, graceful restart, and why
a session is not established.

Exit codes: 0 every configured session Established; 1 some session is not;
2 BGP is not installed or off (no BGPConfiguration "default"), an unknown
node; 3 the API server cannot be read.`,
		Example: `  trellisctl bgp status
  trellisctl bgp status node-a -o wide
  trellisctl bgp status -o json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.runBGPStatus(cmd.Context(), args, f)
		},
	}
	cmd.Flags().StringVarP(&f.output, "output", "o", "", "output format: wide, json or yaml")
	return cmd
}

func (o *Options) runBGPStatus(ctx context.Context, nodes []string, f bgpStatusFlags) error {
	if err := ValidateOutput(f.output, OutputWide, OutputJSON, OutputYAML); err != nil {
		return err
	}
	rep, err := o.BGPStatus(ctx, nodes)
	if err != nil {
		return err
	}
	switch f.output {
	case OutputJSON, OutputYAML:
		err = PrintStructured(o.Out, f.output, rep)
	default:
		now := time.Now
		if f.now != nil {
			now = f.now
		}
		err = printBGPStatus(o.Out, rep, f.output == OutputWide, now())
	}
	if err != nil {
		return err
	}
	var bad []string
	for _, n := range rep.Nodes {
		bad = append(bad, n.NotEstablished...)
	}
	if len(bad) > 0 {
		return Failed("%d of %d BGP sessions not established: %s", rep.Summary.Sessions-rep.Summary.Established,
			rep.Summary.Sessions, strings.Join(bad, ", "))
	}
	return nil
}

// BGPStatus reads every BGPNodeStatus and every Node (only those named in
// nodes, when given) and judges the sessions. BGP not installed (the API
// does not serve the kinds), BGP off (no BGPConfiguration "default") and
// an unknown node are bad input (exit 2).
func (o *Options) BGPStatus(ctx context.Context, nodes []string) (*BGPStatusReport, error) {
	dyn, err := o.Dynamic()
	if err != nil {
		return nil, err
	}
	list, err := dyn.Resource(BGPNodeStatusResource).List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) {
		return nil, Usage("BGP is not installed in this cluster: the API server does not serve %s (the CRDs ship in deploy/trellis.yaml and the Helm chart)",
			schema.GroupResource{Group: bgpv1alpha1.GroupName, Resource: BGPNodeStatusResource.Resource})
	} else if err != nil {
		return nil, fmt.Errorf("listing BGPNodeStatuses: %w", err)
	}
	_, err = dyn.Resource(BGPConfigurationResource).Get(ctx, bgpv1alpha1.ConfigurationName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, Usage("BGP is off in this cluster: there is no BGPConfiguration %q (docs/bgp.md)", bgpv1alpha1.ConfigurationName)
	} else if err != nil {
		return nil, fmt.Errorf("reading BGPConfiguration %s: %w", bgpv1alpha1.ConfigurationName, err)
	}
	statuses := map[string]*bgpv1alpha1.NodeStatus{}
	for i := range list.Items {
		var s bgpv1alpha1.BGPNodeStatus
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(list.Items[i].Object, &s); err != nil {
			return nil, fmt.Errorf("decoding BGPNodeStatus %s: %w", list.Items[i].GetName(), err)
		}
		statuses[s.Name] = &s.Status
	}
	cs, err := o.Clientset()
	if err != nil {
		return nil, err
	}
	nodeList, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	exists := map[string]bool{}
	for _, n := range nodeList.Items {
		exists[n.Name] = true
	}
	names := nodes
	if len(names) == 0 {
		for n := range exists {
			names = append(names, n)
		}
		for n := range statuses {
			if !exists[n] {
				names = append(names, n)
			}
		}
	}
	sort.Strings(names)
	rep := &BGPStatusReport{}
	for _, name := range names {
		st, ok := statuses[name]
		if !ok && !exists[name] {
			return nil, Usage("node %q not found", name)
		}
		if len(rep.Nodes) > 0 && rep.Nodes[len(rep.Nodes)-1].Node == name {
			continue // named twice
		}
		rep.Nodes = append(rep.Nodes, judgeBGPNode(name, st, !exists[name]))
	}
	for _, n := range rep.Nodes {
		rep.Summary.Nodes++
		if n.Status == nil {
			rep.Summary.NodesWithoutStatus++
			continue
		}
		rep.Summary.Sessions += max(len(n.Status.Peers), int(n.Status.Configured))
		for _, p := range n.Status.Peers {
			if p.State == string(bgpStateEstablished) {
				rep.Summary.Established++
			}
		}
	}
	return rep, nil
}

const bgpStateEstablished = "Established"

// judgeBGPNode lists the node's sessions that are not Established; a
// status counting more configured sessions than it lists names the
// difference too.
func judgeBGPNode(name string, st *bgpv1alpha1.NodeStatus, gone bool) BGPNode {
	n := BGPNode{Node: name, Status: st, NodeGone: gone}
	if st == nil {
		return n
	}
	for _, p := range st.Peers {
		if p.State == bgpStateEstablished {
			continue
		}
		why := p.State
		if why == "" {
			why = "no state"
		}
		if p.Reason != "" {
			why += ", " + p.Reason
		}
		n.NotEstablished = append(n.NotEstablished, fmt.Sprintf("%s → %s (%s): %s", name, bgpPeerName(p), p.Address, why))
	}
	if missing := int(st.Configured) - len(st.Peers); missing > 0 {
		n.NotEstablished = append(n.NotEstablished, fmt.Sprintf("%s: %d configured session(s) not reported", name, missing))
	}
	return n
}

func bgpPeerName(p bgpv1alpha1.PeerStatus) string {
	if p.Peer == "" {
		return p.Address
	}
	return p.Peer
}
