package bgp

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

const metricsPrefix = "trellis_bgp_"

// sessionStates are the values of trellis_bgp_sessions' state label.
var sessionStates = []SessionState{StateIdle, StateConnect, StateActive, StateOpenSent, StateOpenConfirm, StateEstablished}

type bgpMetrics struct {
	enabled, restarting, sweepWithheld prometheus.Gauge
	sessions                           *prometheus.GaugeVec
	learned, installed, advertised     prometheus.Gauge
	problems                           *prometheus.GaugeVec
	statusWrites                       *prometheus.CounterVec
}

func newBGPMetrics() *bgpMetrics {
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: metricsPrefix + name, Help: help})
	}
	m := &bgpMetrics{
		enabled:       g("enabled", "1 when this node runs a BGP speaker (the CRDs are installed, BGPConfiguration default exists, the speaker is built in)."),
		restarting:    g("graceful_restart_restarting", "1 when the speaker announced the Restart State bit: the agent restarted within this boot."),
		sweepWithheld: g("stale_sweep_withheld", "1 while stale BGP kernel routes are kept: End-of-RIB is missing from an established neighbour and the restart time has not passed."),
		learned:       g("routes_learned", "Best paths learned from neighbours that the import policy accepts."),
		installed:     g("routes_installed", "Learned routes programmed into the kernel (route protocol 159)."),
		advertised:    g("paths_originated", "Prefixes this node originates (its pod CIDRs, advertised Service addresses)."),
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: metricsPrefix + "sessions",
			Help: "BGP sessions of this node, by FSM state."}, []string{"state"}),
		problems: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: metricsPrefix + "problems",
			Help: "BGP configuration problems this node reports (node status conditions), by reason."}, []string{"reason"}),
		statusWrites: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricsPrefix + "node_status_writes_total",
			Help: "Server-side applies of this node's BGPNodeStatus, by result (ok, error)."}, []string{"result"}),
	}
	for _, s := range sessionStates {
		m.sessions.WithLabelValues(string(s))
	}
	m.statusWrites.WithLabelValues("ok")
	m.statusWrites.WithLabelValues("error")
	return m
}

func (m *bgpMetrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{m.enabled, m.restarting, m.sweepWithheld, m.sessions, m.learned, m.installed,
		m.advertised, m.problems, m.statusWrites} {
		errs = append(errs, r.Register(c))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("register BGP metrics: %w", err)
	}
	return nil
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// observe sets the gauges from one sync's outcome.
func (m *bgpMetrics) observe(r syncResult) {
	m.enabled.Set(boolGauge(r.desired.Enabled))
	m.restarting.Set(boolGauge(r.desired.Global.GracefulRestart.Restarting))
	m.sweepWithheld.Set(boolGauge(r.desired.Enabled && !r.sweep))
	counts := map[SessionState]int{}
	for _, p := range r.peers {
		counts[p.State]++
	}
	for _, s := range sessionStates {
		m.sessions.WithLabelValues(string(s)).Set(float64(counts[s]))
	}
	m.learned.Set(float64(len(r.routes)))
	m.installed.Set(float64(len(r.routes) - len(r.foreign)))
	m.advertised.Set(float64(len(r.desired.Paths)))
	m.problems.Reset()
	for _, p := range r.problems {
		m.problems.WithLabelValues(p.Reason).Add(1)
	}
}
