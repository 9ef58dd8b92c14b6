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

// newHostFWRunner keeps pod forwarding working on a host whose iptables
// FORWARD policy is DROP (internal/hostfw): at every sync (periodic, so a
// Docker restart that rebuilds the chain is repaired within one
// maxSyncInterval) it appends the accepts for the pod CIDRs (the
// configured clusterCIDRs, else every Node's pod CIDRs) and reports adding
// them (log and a Warning Event on this Node).
func newHostFWRunner(cfg *config.Config, nft hostfw.NFT, nodes corelisters.NodeLister, recorder record.EventRecorder,
	opts syncrunner.Options) *syncrunner.Runner {
	self := &v1.ObjectReference{Kind: "Node", Name: cfg.NodeName, UID: types.UID(cfg.NodeName)}
	return syncrunner.New("hostfw", func(ctx context.Context) error {
		cidrs := cfg.ClusterCIDRs
		if len(cidrs) == 0 {
			all, err := nodes.List(labels.Everything())
			if err != nil {
				return fmt.Errorf("host forward: list nodes: %w", err)
			}
			for _, n := range all {
				for _, c := range n.Spec.PodCIDRs {
					if p, err := netip.ParsePrefix(c); err == nil {
						cidrs = append(cidrs, p)
					}
				}
			}
		}
		st, added, removed, err := hostfw.Sync(ctx, nft, cidrs)
		if err != nil {
			return fmt.Errorf("host forward: %w", err)
		}
		if added > 0 {
			msg := fmt.Sprintf("the host's iptables FORWARD policy is DROP: appended %d accepts for the pod CIDRs %v to ip filter FORWARD "+
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
