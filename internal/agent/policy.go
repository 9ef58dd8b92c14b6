package agent

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/kubeclient"
	"github.com/trellisnet/trellis/internal/metrics"
	"github.com/trellisnet/trellis/internal/nftwatch"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// newPolicyNFT opens the policy table's nftables interface. The table holds
// anti-spoofing whatever the networkPolicy setting, so nftables is required
// either way.
func newPolicyNFT(cfg *config.Config) (knftables.Interface, error) {
	nft, err := knftables.New(knftables.InetFamily, policy.TableName)
	if err != nil {
		return nil, fmt.Errorf("nftables for the policy table (NetworkPolicy %v, anti-spoofing always): %w",
			cfg.NetworkPolicyEnabled(), err)
	}
	return nft, nil
}

// newTableWatch subscribes to the nftables notifications of the agent's
// network namespace for one of its tables (see internal/nftwatch).
func newTableWatch(family uint8, table string) (*nftwatch.Watch, error) {
	w, err := nftwatch.Open(family, table)
	if err != nil {
		return nil, fmt.Errorf("watch nftables table %s: %w", table, err)
	}
	return w, nil
}

// policyKernel is the policy controller's kernel side: the table's nftables
// interface and, when not nil, the watch of changes made to it by others.
type policyKernel struct {
	nft   knftables.Interface
	watch *nftwatch.Watch
}

func (k policyKernel) tableWatch() policy.TableWatch {
	if k.watch == nil {
		return nil
	}
	return k.watch
}

// newPolicyController returns the NetworkPolicy controller (run its
// Runner, and its Watch beside it: it follows changes of its table made by
// others): the full controller (adding its pod, namespace and
// networkpolicy informers to infs, which must not be started yet) when
// enforcement is enabled, or one that keeps the table to anti-spoofing
// alone when it is disabled.
// The controller reads the local pod interfaces from pods and syncs on
// every change of them.
func newPolicyController(cfg *config.Config, lw kubeclient.ListWatches, infs *informerSet, k policyKernel,
	pods *podlink.Watcher, events record.EventRecorder, m *metrics.Metrics, opts syncrunner.Options,
) (*policy.Controller, error) {
	if !cfg.NetworkPolicyEnabled() {
		ctrl, err := policy.New(policy.Config{
			Disabled: true, NFT: k.nft, Watch: k.tableWatch(), NodeName: cfg.NodeName, Events: events,
			Registerer: m.Registry, DenyLogGroup: uint16(cfg.PolicyDenyLog), Sync: opts,
		})
		if err != nil {
			return nil, err
		}
		return ctrl, nil
	}
	var pi policy.Informers
	var err error
	if pi.Pods, err = infs.add(lw.Pods, &corev1.Pod{}); err != nil {
		return nil, err
	}
	if pi.Namespaces, err = infs.add(lw.Namespaces, &corev1.Namespace{}); err != nil {
		return nil, err
	}
	if pi.NetworkPolicies, err = infs.add(lw.NetworkPolicies, &networkingv1.NetworkPolicy{}); err != nil {
		return nil, err
	}
	ctrl, err := policy.New(policy.Config{
		NodeName: cfg.NodeName, Informers: pi, NFT: k.nft, Watch: k.tableWatch(), Events: events, Interfaces: pods,
		Registerer: m.Registry, DenyLogGroup: uint16(cfg.PolicyDenyLog), Sync: opts,
	})
	if err != nil {
		return nil, err
	}
	pods.OnChange(ctrl.InterfacesChanged)
	return ctrl, nil
}
