package agent

import (
	"context"
	"fmt"
	"net/netip"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/hostfw"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// newHostFWRunner keeps pod forwarding working on a host whose iptables or
// ip6tables FORWARD policy is DROP (internal/hostfw): at every sync
// (periodic, so a Docker restart that rebuilds the chain is repaired
// within one maxSyncInterval) it appends the accepts for the pod CIDRs
// (hostFWCIDRs) and reports adding them (log and a Warning Event on this
// Node).
func newHostFWRunner(cfg *config.Config, nft hostfw.NFT, nodes corelisters.NodeLister, recorder record.EventRecorder,
	opts syncrunner.Options) *syncrunner.Runner {
	self := &v1.ObjectReference{Kind: "Node", Name: cfg.NodeName, UID: types.UID(cfg.NodeName)}
	return syncrunner.New("hostfw", func(ctx context.Context) error {
		all, err := nodes.List(labels.Everything())
		if err != nil {
			return fmt.Errorf("host forward: list nodes: %w", err)
		}
		cidrs := hostFWCIDRs(cfg.ClusterCIDRs, all)
		st, added, removed, err := hostfw.Sync(ctx, nft, cidrs)
		if err != nil {
			return fmt.Errorf("host forward: %w", err)
		}
		if added > 0 {
			msg := fmt.Sprintf("the host's iptables or ip6tables FORWARD policy is DROP: appended %d accepts for the pod CIDRs %v to ip/ip6 filter FORWARD "+
				"(uninstall removes them)", added, cidrs)
			klog.FromContext(ctx).Info("Host forward policy is DROP: accepted pod forwarding", "added", added, "cidrs", cidrs)
			recorder.Event(self, v1.EventTypeWarning, "HostForwardPolicyDrop", msg)
		}
		if removed > 0 {
			klog.FromContext(ctx).Info("Removed pod forwarding accepts no longer needed", "removed", removed, "policyDrop", st.PolicyDrop)
		}
		return nil
	}, opts)
}

// hostFWCIDRs are the pod CIDRs the FORWARD accepts cover, per family: the
// configured clusterCIDRs of the family, else every Node's pod CIDRs of
// it (a cluster configured with IPv4 clusterCIDRs only still gets its
// Nodes' IPv6 pod CIDRs).
func hostFWCIDRs(clusterCIDRs []netip.Prefix, nodes []*v1.Node) []netip.Prefix {
	var out []netip.Prefix
	for _, v6 := range []bool{false, true} {
		of := func(p netip.Prefix) bool { return p.IsValid() && p.Addr().Is6() == v6 }
		n := len(out)
		for _, p := range clusterCIDRs {
			if of(p) {
				out = append(out, p)
			}
		}
		if len(out) > n {
			continue
		}
		for _, node := range nodes {
			for _, c := range node.Spec.PodCIDRs {
				if p, err := netip.ParsePrefix(c); err == nil && of(p) {
					out = append(out, p)
				}
			}
		}
	}
	return out
}
