package agent

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/kubeclient"
	"github.com/trellisnet/trellis/internal/metrics"
	"github.com/trellisnet/trellis/internal/podlink"
)

// problems are conditions that keep the node NotReady until they are gone:
// a missing capability, a foreign CNI config that sorts first, an invalid
// configuration. Each is reported once when it appears or changes: one log
// line, a Warning Event on the Node and trellis_agent_problem{reason} = 1.
type problems struct {
	mu       sync.Mutex
	active   map[string]string
	gauge    *prometheus.GaugeVec
	recorder record.EventRecorder
	node     *v1.ObjectReference
}

func newProblems(reg prometheus.Registerer, recorder record.EventRecorder, nodeName string) (*problems, error) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trellis_agent_problem",
		Help: "1 while a problem keeps this node's Trellis agent NotReady, by reason (the Node's Events and the agent log say more).",
	}, []string{"reason"})
	if err := reg.Register(g); err != nil {
		return nil, fmt.Errorf("register trellis_agent_problem: %w", err)
	}
	return &problems{active: map[string]string{}, gauge: g, recorder: recorder,
		node: &v1.ObjectReference{Kind: "Node", Name: nodeName, UID: types.UID(nodeName)}}, nil
}

// Report records the problem reason (a CamelCase Event reason) with msg.
func (p *problems) Report(ctx context.Context, reason, msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.active[reason] == msg {
		return
	}
	p.active[reason] = msg
	p.gauge.WithLabelValues(reason).Set(1)
	klog.FromContext(ctx).Error(errors.New(msg), "Node not ready", "reason", reason)
	if p.recorder != nil {
		p.recorder.Event(p.node, v1.EventTypeWarning, reason, msg)
	}
}

// Clear ends the problem reason.
func (p *problems) Clear(reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.active[reason]; ok {
		delete(p.active, reason)
		p.gauge.WithLabelValues(reason).Set(0)
	}
}

// Active returns the active problems, message by reason.
func (p *problems) Active() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]string, len(p.active))
	for r, m := range p.active {
		out[r] = m
	}
	return out
}

// Check fails while any problem is active (the readiness check).
func (p *problems) Check() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.active) == 0 {
		return nil
	}
	var s []string
	for r, m := range p.active {
		s = append(s, r+": "+m)
	}
	sort.Strings(s)
	return errors.New(strings.Join(s, "; "))
}

// blockNotReady serves /metrics, /healthz and a failing /readyz until ctx
// ends, touching nothing on the node: what the agent does when it must not
// configure anything (never a half configuration).
func blockNotReady(ctx context.Context, cfg *config.Config, m *metrics.Metrics, p *problems) error {
	if cfg.MetricsBindAddress == "" {
		<-ctx.Done()
		return nil
	}
	h := m.Handler(nil, []metrics.Check{{Name: "problems", Fn: p.Check}})
	return metrics.Serve(ctx, cfg.MetricsBindAddress, h)
}

// withdrawDataplane marks the node state at path not ready and removes its
// dataplane marker: an agent that cannot run leaves the tables of an earlier
// agent in place but will not keep them current, so the plugin must stop
// wiring pods (CNI error 11) until an agent that can has programmed the
// node. A missing file means the node was never set up: nothing to do.
func withdrawDataplane(path, reason string) error {
	st, err := podlink.ReadNodeState(path)
	if errors.Is(err, podlink.ErrNoNodeState) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the node state to withdraw its dataplane marker: %w", err)
	}
	if !st.Ready && st.Dataplane == nil {
		return nil
	}
	st.Ready, st.Reason, st.Dataplane, st.UpdatedAt = false, reason, nil, time.Time{}
	if err := podlink.WriteNodeState(path, st); err != nil {
		return fmt.Errorf("withdrawing the dataplane marker: %w", err)
	}
	return nil
}

// ReasonInvalidConfiguration is the problem reported for a configuration
// that does not load or validate.
const ReasonInvalidConfiguration = "InvalidConfiguration"

// RunInvalid is the agent with a configuration it cannot use: it changes
// nothing on the node, reports cfgErr once (log line, Warning Event on the
// Node when the API is reachable, trellis_agent_problem), serves a failing
// /readyz on metricsAddr so the pod stays NotReady rather than crash
// looping, and waits for ctx (a fixed ConfigMap rolls the pod).
func RunInvalid(ctx context.Context, version, nodeName, kubeconfig, metricsAddr string, cfgErr error) error {
	m := metrics.New(metrics.Build{Version: version})
	var recorder record.EventRecorder
	if rc, err := RESTConfig(kubeconfig, ""); err == nil {
		if client, err := kubeclient.New(rc); err == nil && nodeName != "" {
			b := record.NewBroadcaster(record.WithContext(ctx))
			b.StartRecordingToSink(client.EventSink())
			defer b.Shutdown()
			recorder = b.NewRecorder(client.Scheme, v1.EventSource{Component: "trellis-agent", Host: nodeName})
		}
	}
	p, err := newProblems(m.Registry, recorder, nodeName)
	if err != nil {
		return err
	}
	msg := strings.ReplaceAll(strings.ReplaceAll(cfgErr.Error(), ":\n", ": "), "\n", "; ")
	p.Report(ctx, ReasonInvalidConfiguration, msg)
	return blockNotReady(ctx, &config.Config{MetricsBindAddress: metricsAddr}, m, p)
}
