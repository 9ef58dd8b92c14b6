package agent

import (
	"context"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/bgp"
	"github.com/trellisnet/trellis/internal/conntrack"
	"github.com/trellisnet/trellis/internal/conntrack/ctnetlink"
	"github.com/trellisnet/trellis/internal/drops"
	"github.com/trellisnet/trellis/internal/fastpath"
	"github.com/trellisnet/trellis/internal/masq"
	"github.com/trellisnet/trellis/internal/metrics"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/wireguard/strict"
)

type noKernel struct{}

func (noKernel) Underlay(netip.Addr) (routing.Underlay, error) { return routing.Underlay{}, nil }
func (noKernel) Apply(context.Context, *routing.Desired) error { return nil }

// agentRegistry registers every metric the agent can export, the way the
// agent's controllers register them, with fakes for the kernel and API.
func agentRegistry(t *testing.T) *prometheus.Registry {
	t.Helper()
	m := metrics.New(metrics.Build{Version: "test"})
	nodes := corelisters.NewNodeLister(cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}))
	if _, err := routing.New(routing.Config{NodeName: "n1", Nodes: nodes, Kernel: noKernel{}, Registerer: m.Registry}); err != nil {
		t.Fatal(err)
	}
	if _, err := masq.New(masq.Config{NodeName: "n1", Nodes: nodes,
		NFT: knftables.NewFake(knftables.IPv4Family, masq.TableName), Registerer: m.Registry}); err != nil {
		t.Fatal(err)
	}
	f := informers.NewSharedInformerFactory(fake.NewClientset(), 0)
	if _, err := policy.New(policy.Config{NodeName: "n1", NFT: knftables.NewFake(knftables.InetFamily, policy.TableName),
		Interfaces: podlink.NewWatcher(podlink.WatchOptions{}), Registerer: m.Registry,
		Informers: policy.Informers{Pods: f.Core().V1().Pods().Informer(), Namespaces: f.Core().V1().Namespaces().Informer(),
			NetworkPolicies: f.Networking().V1().NetworkPolicies().Informer()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := strict.New(strict.Config{NodeName: "n1", Nodes: nodes, Device: "trellis.wg",
		NFT: knftables.NewFake(knftables.InetFamily, strict.TableName), Registerer: m.Registry}); err != nil {
		t.Fatal(err)
	}
	if _, err := bgp.New(bgp.Config{NodeName: "n1", Nodes: nodes, Sources: func() (*bgp.Sources, bool) { return nil, false }, Registerer: m.Registry}); err != nil {
		t.Fatal(err)
	}
	if _, err := conntrack.New(conntrack.Config{Kernel: &ctnetlink.Netlink{}, Registerer: m.Registry}); err != nil {
		t.Fatal(err)
	}
	if _, err := newProblems(m.Registry, nil, "n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := drops.NewSource(drops.Config{Ring: drops.NewRing(1, 0, nil), Registerer: m.Registry}); err != nil {
		t.Fatal(err)
	}
	// The fast path's collector is registered once its programs load; its
	// description does not need them.
	if err := m.Registry.Register(fastpath.NewCollector(nil)); err != nil {
		t.Fatal(err)
	}
	return m.Registry
}

var descRE = regexp.MustCompile(`^Desc\{fqName: "([^"]+)", .*constLabels: \{([^}]*)\}, variableLabels: \{([^}]*)\}\}$`)

// described returns every metric name in reg with its sorted label names.
func described(t *testing.T, reg *prometheus.Registry) map[string][]string {
	t.Helper()
	ch := make(chan *prometheus.Desc)
	go func() { reg.Describe(ch); close(ch) }()
	out := map[string][]string{}
	for d := range ch {
		m := descRE.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot parse %s", d)
		}
		var labels []string
		for _, part := range []string{m[2], m[3]} {
			for _, l := range strings.Split(part, ",") {
				if l = strings.TrimSpace(l); l != "" {
					labels = append(labels, strings.SplitN(l, "=", 2)[0])
				}
			}
		}
		sort.Strings(labels)
		out[m[1]] = labels
	}
	return out
}

// docRowRE matches a metric row of docs/metrics.md: | `name` | type | labels | meaning |
var docRowRE = regexp.MustCompile("^\\| `(trellis_[a-z0-9_]+)` \\| (counter|gauge|histogram) \\| ([^|]*) \\|")

// documented returns the metrics docs/metrics.md lists, with their labels.
func documented(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		m := docRowRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		var labels []string
		for _, l := range strings.Split(m[3], ",") {
			if l = strings.Trim(strings.TrimSpace(l), "`"); l != "" && l != "—" {
				labels = append(labels, l)
			}
		}
		sort.Strings(labels)
		out[m[1]] = labels
	}
	return out
}

var metricNameRE = regexp.MustCompile(`^trellis_(agent|routing|masq|policy|fastpath|conntrack|encryption|bgp)_[a-z0-9]+(_[a-z0-9]+)*$`)

// Every metric the agent registers is named trellis_<subsystem>_<name>
// (or is trellis_build_info, trellis_feature_enabled, or one of
// client_golang's go_*/process_* collectors) and docs/metrics.md lists it
// with its labels; the document lists no metric the agent lacks.
func TestMetricNamesFollowTheSchemeAndAreDocumented(t *testing.T) {
	have := described(t, agentRegistry(t))
	docs := documented(t)
	if len(have) < 20 || len(docs) == 0 {
		t.Fatalf("found %d registered and %d documented metrics; the test is not seeing them", len(have), len(docs))
	}
	for name, labels := range have {
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		if !metricNameRE.MatchString(name) && name != "trellis_build_info" && name != "trellis_feature_enabled" {
			t.Errorf("metric %s does not follow trellis_<subsystem>_<name> (subsystems agent, routing, masq, policy, fastpath, conntrack, encryption, bgp)", name)
		}
		doc, ok := docs[name]
		if !ok {
			t.Errorf("metric %s is not listed in docs/metrics.md", name)
			continue
		}
		if !slices.Equal(doc, labels) {
			t.Errorf("docs/metrics.md gives %s the labels %v; it has %v", name, doc, labels)
		}
	}
	for name := range docs {
		if _, ok := have[name]; !ok {
			t.Errorf("docs/metrics.md lists %s, which the agent does not register", name)
		}
	}
}
