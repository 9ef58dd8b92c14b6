package fastpath

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the programs' counters as
// trellis_fastpath_packets_total{result=...}, read from the per-CPU map at
// each scrape.
type Collector struct {
	progs *Programs
	desc  *prometheus.Desc
}

// NewCollector returns a Prometheus collector for progs' counters.
func NewCollector(progs *Programs) *Collector {
	return &Collector{progs: progs, desc: prometheus.NewDesc("trellis_fastpath_packets_total",
		"Pod TCP packets seen by the eBPF fast path, by result: redirected (from_pod_redirect, from_pod_local, "+
			"to_pod_redirect) or passed to the full path and why (pass_*).", []string{"result"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.progs.ReadStats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for s, v := range st {
		m, err := prometheus.NewConstMetric(c.desc, prometheus.CounterValue, float64(v), s.String())
		if err != nil {
			m = prometheus.NewInvalidMetric(c.desc, err)
		}
		ch <- m
	}
}
