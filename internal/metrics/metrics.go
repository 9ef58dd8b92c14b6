// Package metrics holds the agent's Prometheus metrics (in their own
// registry, no globals) and the HTTP server for /metrics, /healthz, /readyz.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"
)

// Every Trellis metric is named trellis_<subsystem>_<name>; the agent-wide
// ones here use the subsystems agent (syncs), build and feature. Each
// controller registers its own (trellis_routing_*, trellis_masq_*,
// trellis_policy_*, trellis_fastpath_*); docs/metrics.md lists them all.
const namespace = "trellis_agent"

// Feature names of trellis_feature_enabled.
const (
	FeatureFastPath      = "fastpath"
	FeatureNetworkPolicy = "networkpolicy"
	FeatureMasquerade    = "masquerade"
	FeatureVXLAN         = "vxlan"
	// FeatureEncryption: pod traffic between nodes is encrypted (WireGuard).
	FeatureEncryption = "encryption"
)

// Build describes the running binary for trellis_build_info.
type Build struct {
	// Version is the release (set at link time; "dev" when built without).
	Version string
	// Start is when the agent started (the origin of the informer and
	// initial sync gauges); zero means when New is called.
	Start time.Time
}

// Metrics is the set of agent metrics.
type Metrics struct {
	Registry        *prometheus.Registry
	SyncDuration    *prometheus.HistogramVec
	SyncErrors      *prometheus.CounterVec
	Syncs           *prometheus.CounterVec
	LastSuccessSync *prometheus.GaugeVec
	// InformerSync is the time from Build.Start until every informer
	// cache synced (set by InformersSynced): the API list.
	// It has no labels; a vector so that it is absent until set.
	InformerSync *prometheus.GaugeVec
	// InitialSync is the time from Build.Start until each controller's
	// first successful sync (set by ObserveSync).
	InitialSync *prometheus.GaugeVec
	// InitialSyncDuration is how long each controller's first successful
	// sync took (set by ObserveSync): on a cold node, programming
	// everything from nothing.
	InitialSyncDuration *prometheus.GaugeVec
	features            *prometheus.GaugeVec

	start       time.Time
	mu          sync.Mutex
	firstSynced map[string]bool
}

// New creates and registers the metrics in a fresh registry.
func New(b Build) *Metrics {
	if b.Version == "" {
		b.Version = "dev"
	}
	if b.Start.IsZero() {
		b.Start = time.Now()
	}
	m := &Metrics{
		start: b.Start, firstSynced: map[string]bool{},
		Registry: prometheus.NewRegistry(),
		features: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trellis_feature_enabled",
			Help: "1 when a feature is active on this node (configured on and, for the fast path, loaded), else 0.",
		}, []string{"feature"}),
		SyncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "sync_duration_seconds",
			Help:    "Duration of full-state syncs, per controller.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"controller"}),
		SyncErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "sync_errors_total",
			Help: "Failed syncs, per controller.",
		}, []string{"controller"}),
		Syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "syncs_total",
			Help: "Syncs attempted, per controller.",
		}, []string{"controller"}),
		LastSuccessSync: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "last_successful_sync_timestamp_seconds",
			Help: "Unix time of the last successful sync, per controller.",
		}, []string{"controller"}),
		InformerSync: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "informer_sync_seconds",
			Help: "Seconds from the agent's start until every informer cache synced (the API list); absent before.",
		}, nil),
		InitialSync: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "initial_sync_seconds",
			Help: "Seconds from the agent's start until the controller's first successful sync, per controller.",
		}, []string{"controller"}),
		InitialSyncDuration: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "initial_sync_duration_seconds",
			Help: "How long the controller's first successful sync took, per controller (on a cold node: programming everything).",
		}, []string{"controller"}),
	}
	for _, f := range []string{FeatureFastPath, FeatureNetworkPolicy, FeatureMasquerade, FeatureVXLAN, FeatureEncryption} {
		m.features.WithLabelValues(f)
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "trellis_build_info",
		Help:        "Always 1; the labels describe the running binary.",
		ConstLabels: prometheus.Labels{"version": b.Version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	m.Registry.MustRegister(m.SyncDuration, m.SyncErrors, m.Syncs, m.LastSuccessSync, m.InformerSync, m.InitialSync, m.InitialSyncDuration, m.features, buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// SetFeature sets trellis_feature_enabled{feature=name}.
func (m *Metrics) SetFeature(name string, on bool) {
	v := 0.0
	if on {
		v = 1
	}
	m.features.WithLabelValues(name).Set(v)
}

// ObserveSync implements syncrunner.Observer.
func (m *Metrics) ObserveSync(name string, took time.Duration, err error) {
	m.Syncs.WithLabelValues(name).Inc()
	m.SyncDuration.WithLabelValues(name).Observe(took.Seconds())
	if err != nil {
		m.SyncErrors.WithLabelValues(name).Inc()
		return
	}
	m.LastSuccessSync.WithLabelValues(name).SetToCurrentTime()
	m.mu.Lock()
	first := !m.firstSynced[name]
	m.firstSynced[name] = true
	m.mu.Unlock()
	if first {
		m.InitialSync.WithLabelValues(name).Set(time.Since(m.start).Seconds())
		m.InitialSyncDuration.WithLabelValues(name).Set(took.Seconds())
	}
}

// InformersSynced records trellis_agent_informer_sync_seconds: every
// informer cache has synced now. Before the first call a scrape shows no
// value rather than a misleading 0.
func (m *Metrics) InformersSynced() {
	m.InformerSync.WithLabelValues().Set(time.Since(m.start).Seconds())
}

// Check is a named health or readiness check; nil means OK.
type Check struct {
	Name string
	Fn   func() error
}

// Handler returns the HTTP handler serving /metrics, /healthz and /readyz.
func (m *Metrics) Handler(healthz, readyz []Check) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry}))
	mux.HandleFunc("/healthz", checkHandler(healthz))
	mux.HandleFunc("/readyz", checkHandler(readyz))
	return mux
}

func checkHandler(checks []Check) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		var failed []error
		for _, c := range checks {
			if err := c.Fn(); err != nil {
				failed = append(failed, fmt.Errorf("%s: %w", c.Name, err))
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := errors.Join(failed...); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, err.Error())
			return
		}
		fmt.Fprintln(w, "ok")
	}
}

// Serve listens on addr and serves h until ctx is cancelled.
func Serve(ctx context.Context, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on metrics address %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	klog.FromContext(ctx).Info("Serving metrics and health", "address", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics server: %w", err)
	}
	return nil
}
