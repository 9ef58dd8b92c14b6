package agent

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/kubeclient"
	"github.com/trellisnet/trellis/internal/metrics"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// newPolicyNFT opens the policy table's nftables interface. A failure is
// fatal only when enforcement is enabled (nil then disables the runner).
func newPolicyNFT(cfg *config.Config) (knftables.Interface, error) {
	nft, err := knftables.New(knftables.InetFamily, policy.TableName)
	if err != nil && cfg.NetworkPolicyEnabled() {
		return nil, fmt.Errorf("nftables for the policy table: %w", err)
	}
	if err != nil {
		return nil, nil
	}
	return nft, nil
}

// newPolicyRunner returns the NetworkPolicy controller's runner: the full
// controller (adding its pod, namespace and networkpolicy informers to
// infs, which must not be started yet) when enforcement is enabled, or a
// runner that removes the policy table when it is disabled.
// The controller reads the local pod interfaces from pods and syncs on
// every change of them.
func newPolicyRunner(cfg *config.Config, lw kubeclient.ListWatches, infs *informerSet, nft knftables.Interface,
	pods *podlink.Watcher, m *metrics.Metrics, opts syncrunner.Options) (*syncrunner.Runner, error) {
	if !cfg.NetworkPolicyEnabled() {
		ctrl, err := policy.New(policy.Config{Disabled: true, NFT: nft, Sync: opts})
		if err != nil {
			return nil, err
		}
		return ctrl.Runner, nil
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
		NodeName: cfg.NodeName, Informers: pi, NFT: nft, Interfaces: pods,
		Registerer: m.Registry, DenyLogGroup: uint16(cfg.PolicyDenyLog), Sync: opts,
	})
	if err != nil {
		return nil, err
	}
	pods.OnChange(ctrl.InterfacesChanged)
	return ctrl.Runner, nil
}
