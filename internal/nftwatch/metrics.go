package nftwatch

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a guarded table is rewritten completely (label of
// Metrics.Changes).
const (
	ReasonForeign = "foreign" // another process changed the table
	ReasonUnknown = "unknown" // notifications lost, or the watch (re)started
)

// Metrics are the figures of a controller that guards its table with a
// Watch: trellis_<subsystem>_table_changes_total{reason} and
// trellis_<subsystem>_table_repair_seconds.
type Metrics struct {
	Changes *prometheus.CounterVec
	Repair  prometheus.Histogram
}

// NewMetrics returns the guard metrics of the controller whose metrics
// namespace is namespace (e.g. trellis_policy); table names the table in
// their help ("policy table").
func NewMetrics(namespace, table string) *Metrics {
	return &Metrics{
		Changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "table_changes_total",
			Help: "Reasons the " + table + " was rewritten completely: reason=\"foreign\" counts changes by another process that touched it (e.g. nft flush ruleset), reason=\"unknown\" lost notifications and watch starts.",
		}, []string{"reason"}),
		Repair: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "table_repair_seconds",
			Help:    "Time from the notification of a foreign change of the " + table + " to the commit of its complete rewrite.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
	}
}

// Register registers the metrics with r.
func (m *Metrics) Register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.Changes, m.Repair} {
		if err := r.Register(c); err != nil {
			return fmt.Errorf("register table guard metrics: %w", err)
		}
	}
	return nil
}
