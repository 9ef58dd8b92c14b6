package kuberouter

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/trellisnet/trellis/internal/lab/topology"
)

func TestManifestRendersTheDaemonSet(t *testing.T) {
	objs, err := Manifest("localhost/trellis-lab/kube-router:0123456789ab")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		kinds[o.GetKind()] = o
	}
	for _, k := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"} {
		if kinds[k] == nil {
			t.Fatalf("manifest has no %s (kinds %v)", k, kinds)
		}
	}
	ds := kinds["DaemonSet"]
	if ds.GetNamespace() != Namespace || ds.GetName() != DaemonSetName {
		t.Errorf("DaemonSet is %s/%s", ds.GetNamespace(), ds.GetName())
	}
	spec, _, _ := unstructured.NestedMap(ds.Object, "spec", "template", "spec")
	if spec["hostNetwork"] != true {
		t.Errorf("hostNetwork = %v, want true", spec["hostNetwork"])
	}
	cs, _, _ := unstructured.NestedSlice(ds.Object, "spec", "template", "spec", "containers")
	if len(cs) != 1 {
		t.Fatalf("containers = %d", len(cs))
	}
	c := cs[0].(map[string]any)
	if c["image"] != "localhost/trellis-lab/kube-router:0123456789ab" || c["imagePullPolicy"] != "Never" {
		t.Errorf("image %v pull %v", c["image"], c["imagePullPolicy"])
	}
	var args []string
	for _, a := range c["args"].([]any) {
		args = append(args, a.(string))
	}
	for _, want := range []string{"--run-router=true", "--run-firewall=true", "--run-service-proxy=false", "--enable-overlay=false",
		"--service-cluster-ip-range=" + topology.ServiceCIDR} {
		if !slices.Contains(args, want) {
			t.Errorf("args %v lack %s", args, want)
		}
	}
	env := map[string]string{}
	for _, e := range c["env"].([]any) {
		m := e.(map[string]any)
		v, _ := m["value"].(string)
		env[m["name"].(string)] = v
	}
	if env["KUBE_ROUTER_CNI_CONF_FILE"] != ConfPath {
		t.Errorf("KUBE_ROUTER_CNI_CONF_FILE = %q, want %q", env["KUBE_ROUTER_CNI_CONF_FILE"], ConfPath)
	}
	if _, ok := env["NODE_NAME"]; !ok {
		t.Error("no NODE_NAME: kube-router could not find its node")
	}
	rules, _, _ := unstructured.NestedSlice(kinds["ClusterRole"].Object, "rules")
	var watched []string
	for _, r := range rules {
		for _, res := range r.(map[string]any)["resources"].([]any) {
			watched = append(watched, res.(string))
		}
	}
	for _, want := range []string{"nodes", "pods", "namespaces", "networkpolicies"} {
		if !slices.Contains(watched, want) {
			t.Errorf("ClusterRole lacks %s: %v", want, watched)
		}
	}
}

func TestManifestRefusesABadImage(t *testing.T) {
	for _, img := range []string{"", "a b", "x\"y", "x\ny"} {
		if _, err := Manifest(img); err == nil {
			t.Errorf("Manifest(%q) succeeded", img)
		}
	}
}

func TestCNIConfIsABridgeWithoutSubnetUntilKubeRouterWritesIt(t *testing.T) {
	conf := CNIConf()
	var v struct {
		CNIVersion string           `json:"cniVersion"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(conf), &v); err != nil {
		t.Fatalf("CNIConf is not JSON: %v", err)
	}
	if len(v.Plugins) != 1 || v.Plugins[0]["type"] != "bridge" || v.Plugins[0]["bridge"] != Bridge {
		t.Fatalf("plugins = %v", v.Plugins)
	}
	if ipam := v.Plugins[0]["ipam"].(map[string]any); ipam["type"] != "host-local" {
		t.Errorf("ipam = %v", ipam)
	}
	sub, err := ConfSubnet([]byte(conf))
	if err != nil || sub != "" {
		t.Errorf("ConfSubnet(initial) = %q, %v; want none", sub, err)
	}
	// kube-router's two ways of writing the subnet.
	written := strings.Replace(conf, `{"type": "host-local"}`, `{"type": "host-local", "subnet": "10.244.1.0/24"}`, 1)
	if sub, err := ConfSubnet([]byte(written)); err != nil || sub != "10.244.1.0/24" {
		t.Errorf("ConfSubnet(subnet) = %q, %v", sub, err)
	}
	ranges := strings.Replace(conf, `{"type": "host-local"}`, `{"type": "host-local", "ranges": [[{"subnet": "10.244.2.0/24"}]]}`, 1)
	if sub, err := ConfSubnet([]byte(ranges)); err != nil || sub != "10.244.2.0/24" {
		t.Errorf("ConfSubnet(ranges) = %q, %v", sub, err)
	}
	if _, err := ConfSubnet([]byte("{")); err == nil {
		t.Error("ConfSubnet accepted broken JSON")
	}
}

func TestRouterRoutesPointEachPodCIDRAtItsNode(t *testing.T) {
	topo, err := topology.Plan(topology.Options{Nodes: 3, Subnets: 2, RoutingMode: "auto", APIPort: 16443})
	if err != nil {
		t.Fatal(err)
	}
	cidrs := map[string][]string{"node1": {"10.244.0.0/24"}, "node2": {"10.244.1.0/24", "fd00::/64"}, "node3": {"10.244.2.1/24"}}
	got, err := RouterRoutes(topo.Nodes, cidrs)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"route", "replace", "10.244.0.0/24", "via", topo.Nodes[0].Addr.String()},
		{"route", "replace", "10.244.1.0/24", "via", topo.Nodes[1].Addr.String()},
		{"route", "replace", "10.244.2.0/24", "via", topo.Nodes[2].Addr.String()},
	}
	if !slices.EqualFunc(got, want, slices.Equal[[]string]) {
		t.Errorf("RouterRoutes = %v, want %v", got, want)
	}
	if _, err := RouterRoutes(topo.Nodes, map[string][]string{"node1": {"10.244.0.0/24"}}); err == nil {
		t.Error("a node without a pod CIDR was accepted")
	}
	if _, err := RouterRoutes([]topology.Host{{Name: "n", Addr: netip.MustParseAddr("172.30.1.10")}}, map[string][]string{"n": {"bogus"}}); err == nil {
		t.Error("a malformed pod CIDR was accepted")
	}
}
