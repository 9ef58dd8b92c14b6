// Package kuberouter runs kube-router, the peer CNI of the side-by-side
// comparison, in a lab instead of Trellis (`trellis-lab up --cni
// kube-router`): the DaemonSet and RBAC it is deployed with (as kube-router's
// own generic example deploys it: hostNetwork, privileged, routing and
// NetworkPolicy on, its service proxy off), the CNI configuration it expects
// (the standard bridge and host-local plugins; kube-router inserts the node's
// pod CIDR), the static routes the lab's router needs for pod CIDRs in other
// subnets, and its image.
//
// kube-router is pinned (Version) and built from source through the Go
// module proxy (hack/build-pinned.sh). It is for measurement inside the
// lab's namespaces only and never shipped: the Go module list reports
// security advisories against this version.
package kuberouter

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/trellisnet/trellis/internal/lab/kube"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// Version is the kube-router release the lab runs.
const Version = "v2.1.0"

// Objects kube-router is deployed as.
const (
	Namespace     = "kube-system"
	DaemonSetName = "kube-router"
	Container     = "kube-router"
	// Selector selects the kube-router pods.
	Selector = "k8s-app=kube-router"
	// ConfPath is the CNI configuration kube-router reads and completes
	// with the node's pod CIDR (KUBE_ROUTER_CNI_CONF_FILE).
	ConfPath = "/etc/cni/net.d/10-kuberouter.conflist"
	// Bridge is the bridge the CNI bridge plugin attaches pods to.
	Bridge = "kube-bridge"
)

// Plugins are the CNI plugins (from containernetworking/plugins) the nodes
// need in /opt/cni/bin besides loopback.
var Plugins = []string{"bridge", "host-local"}

// Args is kube-router's command line: routing (iBGP between the nodes, pod
// CIDR routes to peers on the same subnet) and NetworkPolicy on, the service
// proxy off (kube-proxy stays: this kernel has no IPVS), and no overlay (no
// IPIP or GRE in this kernel; the lab's router carries pod traffic between
// subnets). Everything else is kube-router's default.
func Args() []string {
	return []string{
		"--run-router=true",
		"--run-firewall=true",
		"--run-service-proxy=false",
		"--bgp-graceful-restart=true",
		"--enable-overlay=false",
		"--service-cluster-ip-range=" + topology.ServiceCIDR,
	}
}

// CNIConf is the CNI configuration list the nodes start with, the one of
// kube-router's example DaemonSets: a bridge with host-local IPAM and no
// subnet (kube-router writes the node's pod CIDR and MTU into it).
func CNIConf() string {
	return `{
  "cniVersion": "0.3.0",
  "name": "mynet",
  "plugins": [
    {
      "name": "kubernetes",
      "type": "bridge",
      "bridge": "` + Bridge + `",
      "isDefaultGateway": true,
      "ipam": {"type": "host-local"}
    }
  ]
}
`
}

// ConfSubnet returns the subnet kube-router wrote into the CNI
// configuration list data ("" while it has not).
func ConfSubnet(data []byte) (string, error) {
	var conf struct {
		Plugins []struct {
			Type string `json:"type"`
			IPAM struct {
				Subnet string                `json:"subnet"`
				Ranges [][]map[string]string `json:"ranges"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(data, &conf); err != nil {
		return "", fmt.Errorf("parsing the kube-router CNI configuration: %w", err)
	}
	for _, p := range conf.Plugins {
		if p.Type != "bridge" {
			continue
		}
		if p.IPAM.Subnet != "" {
			return p.IPAM.Subnet, nil
		}
		for _, r := range p.IPAM.Ranges {
			for _, e := range r {
				if e["subnet"] != "" {
					return e["subnet"], nil
				}
			}
		}
	}
	return "", nil
}

// RouterRoutes are the `ip route replace` argument lists that make the lab's
// router forward each node's pod CIDRs to that node, as the upstream
// router a kube-router cluster peers with (--peer-router-ips) would learn
// them. Without an overlay, kube-router routes pod CIDRs only between nodes
// of one subnet; traffic to another subnet's pods follows the node's default
// route to this router. podCIDRs maps a node name to its Node.spec.podCIDRs.
func RouterRoutes(nodes []topology.Host, podCIDRs map[string][]string) ([][]string, error) {
	var out [][]string
	for _, n := range nodes {
		cidrs := append([]string(nil), podCIDRs[n.Name]...)
		if len(cidrs) == 0 {
			return nil, fmt.Errorf("node %s has no pod CIDR", n.Name)
		}
		sort.Strings(cidrs)
		for _, c := range cidrs {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				return nil, fmt.Errorf("node %s pod CIDR %q: %w", n.Name, c, err)
			}
			if !p.Addr().Is4() {
				continue // the lab's underlay is IPv4 only
			}
			out = append(out, []string{"route", "replace", p.Masked().String(), "via", n.Addr.String()})
		}
	}
	return out, nil
}

// Manifest returns the objects kube-router is deployed as, with image.
func Manifest(image string) ([]*unstructured.Unstructured, error) {
	if image == "" || strings.ContainsAny(image, " \n\"") {
		return nil, fmt.Errorf("kube-router image %q is not a valid reference", image)
	}
	args := make([]string, 0, len(Args()))
	for _, a := range Args() {
		args = append(args, fmt.Sprintf("        - %q", a))
	}
	return kube.DecodeManifest([]byte(fmt.Sprintf(manifest, image, strings.Join(args, "\n"), ConfPath)))
}
