package masq

import (
	"context"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"
)

func nodeLister(t *testing.T, cidrs map[string]string) corelisters.NodeLister {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for name, cidr := range cidrs {
		n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.NodeSpec{PodCIDRs: []string{cidr}}}
		if err := idx.Add(n); err != nil {
			t.Fatal(err)
		}
	}
	return corelisters.NewNodeLister(idx)
}

// The controller masquerades this node's pod CIDR, exempts every node's
// pod CIDR and the configured ranges, exports the exempt count, and
// removes the table once masquerade is disabled.
func TestControllerProgramsFromNodesAndRemovesWhenDisabled(t *testing.T) {
	ctx := context.Background()
	nft := knftables.NewFake(knftables.IPv4Family, TableName)
	reg := prometheus.NewRegistry()
	cfg := Config{NodeName: "n1", NFT: nft, Registerer: reg,
		NonMasqueradeCIDRs: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")},
		Nodes:              nodeLister(t, map[string]string{"n1": "10.244.1.0/24", "n2": "10.244.2.0/24"})}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	src, err := nft.ListElements(ctx, "set", SetPodSources)
	if err != nil || len(src) != 1 || src[0].Key[0] != "10.244.1.0/24" {
		t.Fatalf("pod sources %v (%v), want this node's 10.244.1.0/24", src, err)
	}
	if got := testutil.ToFloat64(c.exempt); got != 3 {
		t.Errorf("trellis_masq_exempt_cidrs = %v, want 3 (two pod CIDRs, one configured range)", got)
	}
	if n, err := testutil.GatherAndCount(reg, "trellis_masq_exempt_cidrs"); err != nil || n != 1 {
		t.Errorf("registry holds %d trellis_masq_exempt_cidrs (%v), want 1", n, err)
	}

	cfg.Disabled, cfg.Registerer = true, nil
	off, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := off.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if nft.Table != nil {
		t.Errorf("table still present with masquerade disabled: %s", nft.Dump())
	}
	if err := off.Sync(ctx); err != nil {
		t.Errorf("second removal: %v, want nil (no table is the goal)", err)
	}
}
