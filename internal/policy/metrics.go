package policy

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
)

const metricsNamespace = "trellis_policy"

type controllerMetrics struct {
	latency   prometheus.Histogram
	txOps     prometheus.Histogram
	selected  *prometheus.GaugeVec
	isolated  *prometheus.GaugeVec
	groups    *prometheus.GaugeVec
	elements  prometheus.Gauge
	lastNames map[[3]string]bool

	mu   sync.Mutex
	last Counts
}

// Counts are the figures of the last successful sync (trellisctl status):
// the NetworkPolicies known, the local pods isolated and the groups (allow
// lists) per direction.
type Counts struct {
	Policies        int
	IsolatedIngress int
	IsolatedEgress  int
	GroupsIngress   int
	GroupsEgress    int
}

// counts returns the figures the last observe set.
func (m *controllerMetrics) counts() Counts {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

func newControllerMetrics() *controllerMetrics {
	return &controllerMetrics{
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "programming_latency_seconds",
			Help:    "Time from the first API change (pod, namespace, networkpolicy) seen to the policy table holding it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		txOps: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "transaction_operations",
			Help:    "nftables operations in each committed policy table transaction.",
			Buckets: prometheus.ExponentialBucketsRange(1, 100000, 16),
		}),
		selected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Name: "selected_local_pods",
			Help: "Local pods a NetworkPolicy selects, per policy and direction.",
		}, []string{"namespace", "policy", "direction"}),
		isolated: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Name: "isolated_local_pods",
			Help: "Local pods isolated by at least one policy, per direction.",
		}, []string{"direction"}),
		groups: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Name: "groups",
			Help: "Distinct allow lists (group chains) in the policy table, per direction.",
		}, []string{"direction"}),
		elements: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Name: "set_elements",
			Help: "Set and map elements in the policy table.",
		}),
		lastNames: map[[3]string]bool{},
	}
}

func (m *controllerMetrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{m.latency, m.txOps, m.selected, m.isolated, m.groups, m.elements} {
		if err := r.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("register policy metrics: %w", err)
	}
	return nil
}

// observe updates the gauges from one compiled state.
func (m *controllerMetrics) observe(snap *Snapshot, d *Desired) {
	counts := map[[3]string]int{}
	local := localPods(snap)
	for _, np := range snap.Policies {
		dirs := directionsOf(np)
		for _, dir := range dirs {
			counts[[3]string{np.Namespace, np.Name, dir}] += 0
		}
		for _, p := range local {
			if p.Namespace != np.Namespace || !selector(&np.Spec.PodSelector).Matches(labels.Set(p.Labels)) {
				continue
			}
			for _, dir := range dirs {
				counts[[3]string{np.Namespace, np.Name, dir}]++
			}
		}
	}
	for k := range m.lastNames {
		if _, ok := counts[k]; !ok {
			m.selected.DeleteLabelValues(k[0], k[1], k[2])
			delete(m.lastNames, k)
		}
	}
	for k, n := range counts {
		m.selected.WithLabelValues(k[0], k[1], k[2]).Set(float64(n))
		m.lastNames[k] = true
	}
	m.isolated.WithLabelValues("ingress").Set(float64(len(d.Maps[MapIngressPods].Elements)))
	m.isolated.WithLabelValues("egress").Set(float64(len(d.Maps[MapEgressPods].Elements)))
	groups := map[string]int{"ingress": 0, "egress": 0}
	for name, c := range d.Chains {
		if c.Static {
			continue
		}
		if strings.HasPrefix(name, "ing-") {
			groups["ingress"]++
		} else {
			groups["egress"]++
		}
	}
	for dir, n := range groups {
		m.groups.WithLabelValues(dir).Set(float64(n))
	}
	m.mu.Lock()
	m.last = Counts{Policies: len(snap.Policies),
		IsolatedIngress: len(d.Maps[MapIngressPods].Elements), IsolatedEgress: len(d.Maps[MapEgressPods].Elements),
		GroupsIngress: groups["ingress"], GroupsEgress: groups["egress"]}
	m.mu.Unlock()
	total := 0
	for _, s := range d.Sets {
		total += len(s.Elements)
	}
	for _, mp := range d.Maps {
		total += len(mp.Elements)
	}
	m.elements.Set(float64(total))
}

func directionsOf(np *networkingv1.NetworkPolicy) []string {
	in, eg := policyTypes(np)
	var out []string
	if in {
		out = append(out, "ingress")
	}
	if eg {
		out = append(out, "egress")
	}
	return out
}
