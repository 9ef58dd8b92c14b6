package fastpath

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the programs' counters as
// trellis_fastpath_packets_total{result=...} (both families) and
// trellis_fastpath_ipv6_packets_total{result=...} (the IPv6 part of it),
// read from the per-CPU map at each scrape.
type Collector struct {
	progs      *Programs
	desc, v6   *prometheus.Desc
	collectors []collectorPart
}

type collectorPart struct {
	desc *prometheus.Desc
	read func(*Programs) (map[Stat]uint64, error)
}

// NewCollector returns a Prometheus collector for progs' counters.
func NewCollector(progs *Programs) *Collector {
	c := &Collector{progs: progs,
		desc: prometheus.NewDesc("trellis_fastpath_packets_total",
			"Pod TCP packets (IPv4 and IPv6) seen by the eBPF fast path, by result: redirected (from_pod_redirect, "+
				"from_pod_local, to_pod_redirect) or passed to the full path and why (pass_*).", []string{"result"}, nil),
		v6: prometheus.NewDesc("trellis_fastpath_ipv6_packets_total",
			"Pod IPv6 TCP packets seen by the eBPF fast path (a part of trellis_fastpath_packets_total), by result.",
			[]string{"result"}, nil)}
	c.collectors = []collectorPart{{c.desc, (*Programs).ReadStats}, {c.v6, (*Programs).ReadStatsIPv6}}
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, p := range c.collectors {
		ch <- p.desc
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.collectors {
		st, err := p.read(c.progs)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(p.desc, err)
			continue
		}
		for s, v := range st {
			m, err := prometheus.NewConstMetric(p.desc, prometheus.CounterValue, float64(v), s.String())
			if err != nil {
				m = prometheus.NewInvalidMetric(p.desc, err)
			}
			ch <- m
		}
	}
}
