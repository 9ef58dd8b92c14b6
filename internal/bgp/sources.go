package bgp

import (
	"fmt"
	"net/netip"
	"sort"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	v1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
	"github.com/trellisnet/trellis/internal/routing"
)

// Store is what the controller reads of an informer's cache
// (cache.Store satisfies it).
type Store interface {
	List() []any
}

// Sources are the caches of the BGP objects the controller reads.
type Sources struct {
	// Configurations, Peers, Advertisements hold the v1alpha1 objects.
	Configurations, Peers, Advertisements Store
	// Services hold *v1.Service (trimmed to what Service keeps).
	Services Store
	// Passwords holds the Secret trellis-bgp-passwords alone (or nothing).
	Passwords Store
}

// input lists the objects Compute reads.
func (c *Controller) input(self *v1.Node, src *Sources) (Input, error) {
	in := Input{Mode: c.cfg.Mode, ClusterCIDRs: c.cfg.ClusterCIDRs, Local: nodeFromAPI(self)}
	nodes, err := c.cfg.Nodes.List(labels.Everything())
	if err != nil {
		return in, fmt.Errorf("list nodes: %w", err)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	for _, n := range nodes {
		in.Nodes = append(in.Nodes, nodeFromAPI(n))
	}
	for _, o := range storeList(src.Configurations) {
		if cfg, ok := o.(*v1alpha1.BGPConfiguration); ok && cfg.Name == v1alpha1.ConfigurationName {
			in.Config = cfg
		}
	}
	for _, o := range storeList(src.Peers) {
		if p, ok := o.(*v1alpha1.BGPPeer); ok {
			in.Peers = append(in.Peers, p)
		}
	}
	sort.Slice(in.Peers, func(i, j int) bool { return in.Peers[i].Name < in.Peers[j].Name })
	for _, o := range storeList(src.Advertisements) {
		if a, ok := o.(*v1alpha1.BGPAdvertisement); ok {
			in.Advertisements = append(in.Advertisements, a)
		}
	}
	sort.Slice(in.Advertisements, func(i, j int) bool { return in.Advertisements[i].Name < in.Advertisements[j].Name })
	for _, o := range storeList(src.Services) {
		if s, ok := o.(*v1.Service); ok {
			in.Services = append(in.Services, serviceFromAPI(s))
		}
	}
	sort.Slice(in.Services, func(i, j int) bool {
		return in.Services[i].Namespace+"/"+in.Services[i].Name < in.Services[j].Namespace+"/"+in.Services[j].Name
	})
	for _, o := range storeList(src.Passwords) {
		if s, ok := o.(*v1.Secret); ok && s.Name == v1alpha1.PasswordSecretName {
			in.Passwords = map[string]string{}
			for k, v := range s.Data {
				in.Passwords[k] = string(v)
			}
		}
	}
	return in, nil
}

func storeList(s Store) []any {
	if s == nil {
		return nil
	}
	return s.List()
}

func nodeFromAPI(n *v1.Node) Node {
	return Node{Name: n.Name, Labels: n.Labels, InternalIP: routing.NodeIP(n), PodCIDRs: routing.PodCIDRs(n),
		Created: n.CreationTimestamp.Time}
}

// serviceFromAPI reads the addresses advertisements may announce.
func serviceFromAPI(s *v1.Service) Service {
	out := Service{Namespace: s.Namespace, Name: s.Name, Labels: s.Labels}
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	out.ClusterIPs = parseServiceAddrs(ips)
	out.ExternalIPs = parseServiceAddrs(s.Spec.ExternalIPs)
	var lb []string
	for _, in := range s.Status.LoadBalancer.Ingress {
		lb = append(lb, in.IP)
	}
	out.LoadBalancerIPs = parseServiceAddrs(lb)
	return out
}

// parseServiceAddrs keeps the valid addresses ("None" of a headless Service and
// garbage are dropped).
func parseServiceAddrs(in []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range in {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}
