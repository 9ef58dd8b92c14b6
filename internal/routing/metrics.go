package routing

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// routingMetrics are the routing controller's gauges (trellis_routing_*).
type routingMetrics struct {
	routes       *prometheus.GaugeVec
	peers        *prometheus.GaugeVec
	peerProblems *prometheus.GaugeVec
	fdbEntries   prometheus.Gauge
	neighbors    prometheus.Gauge
}

const metricsPrefix = "trellis_routing_"

// peerPaths are the values of trellis_routing_peers' path label.
var peerPaths = []string{string(PathNative), string(PathVXLAN), string(PathWireGuard), string(PathBGP), "none"}

// routePaths are the values of trellis_routing_routes_programmed's path label.
var routePaths = []Path{PathNative, PathVXLAN, PathWireGuard}

// problemReasons are the values of trellis_routing_peer_problems' reason label.
var problemReasons = []string{ReasonNotOnSameSubnet, ReasonNoNodeIP, ReasonNoPodCIDR, ReasonBadVTEPMAC,
	ReasonPodCIDROutsideCluster, ReasonPodCIDROverlapsNode, ReasonConflict, ReasonForeignRoute, ReasonNoWireGuardKey}

func newRoutingMetrics() *routingMetrics {
	m := &routingMetrics{
		routes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricsPrefix + "routes_programmed",
			Help: "Routes to remote pod subnets programmed, by path (native, vxlan, wireguard).",
		}, []string{"path"}),
		peers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricsPrefix + "peers",
			Help: "Remote nodes known, by path (native, vxlan, wireguard, bgp, none).",
		}, []string{"path"}),
		peerProblems: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricsPrefix + "peer_problems",
			Help: "Remote nodes that are not programmed (unreachable in the configured mode, or their data rejected) or, encryption on, have no WireGuard key, by reason.",
		}, []string{"reason"}),
		fdbEntries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricsPrefix + "vxlan_fdb_entries",
			Help: "Static VXLAN FDB entries programmed (both VXLAN devices).",
		}),
		neighbors: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricsPrefix + "vxlan_neighbor_entries",
			Help: "Static VXLAN neighbour entries programmed (both devices, both families).",
		}),
	}
	// Every label value is exported from the start (0 until a sync says otherwise).
	for _, p := range routePaths {
		m.routes.WithLabelValues(string(p))
	}
	for _, p := range peerPaths {
		m.peers.WithLabelValues(p)
	}
	for _, r := range problemReasons {
		m.peerProblems.WithLabelValues(r)
	}
	return m
}

func (m *routingMetrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{m.routes, m.peers, m.peerProblems, m.fdbEntries, m.neighbors} {
		errs = append(errs, r.Register(c))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("register routing metrics: %w", err)
	}
	return nil
}

// observe sets the gauges from one desired state.
func (m *routingMetrics) observe(d *Desired) {
	counts := map[Path]int{}
	for _, r := range d.Routes {
		counts[r.Path]++
	}
	for _, p := range routePaths {
		m.routes.WithLabelValues(string(p)).Set(float64(counts[p]))
	}
	for _, p := range peerPaths {
		m.peers.WithLabelValues(p).Set(float64(d.Peers[p]))
	}
	byReason := map[string]int{}
	for _, p := range d.Problems {
		byReason[p.Reason]++
	}
	for _, r := range problemReasons {
		m.peerProblems.WithLabelValues(r).Set(float64(byReason[r]))
	}
	m.fdbEntries.Set(float64(len(d.FDB) + len(d.FDB6)))
	m.neighbors.Set(float64(len(d.Neighbors) + len(d.Neighbors6)))
}
