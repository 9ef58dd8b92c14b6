// Package metrics holds the agent's Prometheus metrics (in their own
// registry, no globals) and the HTTP server for /metrics, /healthz, /readyz.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"
)

const namespace = "trellis_agent"

// Metrics is the set of agent metrics.
type Metrics struct {
	Registry        *prometheus.Registry
	SyncDuration    *prometheus.HistogramVec
	SyncErrors      *prometheus.CounterVec
	Syncs           *prometheus.CounterVec
	LastSuccessSync *prometheus.GaugeVec
}

// New creates and registers the metrics in a fresh registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
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
	}
	m.Registry.MustRegister(m.SyncDuration, m.SyncErrors, m.Syncs, m.LastSuccessSync,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
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
