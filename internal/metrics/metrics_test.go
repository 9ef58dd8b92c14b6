package metrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestHandlerServesMetricsAndChecks(t *testing.T) {
	m := New(Build{Version: "v1.2.3"})
	m.SetFeature(FeatureVXLAN, true)
	m.ObserveSync("routing", 3*time.Millisecond, nil)
	m.ObserveSync("routing", time.Millisecond, errors.New("x"))
	m.ObserveSync("routing", 5*time.Millisecond, nil)
	notReady := errors.New("routes not programmed yet")
	h := m.Handler(nil, []Check{{Name: "routing", Fn: func() error { return notReady }}})

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`trellis_agent_sync_errors_total{controller="routing"} 1`,
		`trellis_agent_syncs_total{controller="routing"} 3`,
		`trellis_agent_initial_sync_duration_seconds{controller="routing"} 0.003`,
		`trellis_agent_last_successful_sync_timestamp_seconds{controller="routing"}`,
		`trellis_agent_sync_duration_seconds_count{controller="routing"} 3`,
		`trellis_feature_enabled{feature="vxlan"} 1`,
		`trellis_feature_enabled{feature="fastpath"} 0`,
		`trellis_feature_enabled{feature="encryption"} 0`,
		`trellis_build_info{goversion="go`, `",version="v1.2.3"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != 200 {
		t.Errorf("/healthz = %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "routing: routes not programmed yet") {
		t.Errorf("/readyz = %d %q, want 503 naming the failing check", rec.Code, rec.Body.String())
	}
}

// The initial sync gauge holds the time from the start to a controller's
// first successful sync (failures and later syncs do not move it); the
// informer gauge is absent until the caches synced.
func TestInitialAndInformerSyncSeconds(t *testing.T) {
	start := time.Now().Add(-3 * time.Second)
	m := New(Build{Start: start})
	if n := testutil.CollectAndCount(m.InformerSync); n != 0 {
		t.Fatalf("informer sync gauge has %d series before the caches synced, want none", n)
	}
	m.ObserveSync("policy", time.Millisecond, errors.New("x"))
	if n := testutil.CollectAndCount(m.InitialSync); n != 0 {
		t.Fatalf("a failed sync set the initial sync gauge (%d series)", n)
	}
	m.InformersSynced()
	informer := testutil.ToFloat64(m.InformerSync.WithLabelValues())
	if informer < 3 || informer > 60 {
		t.Errorf("informer sync = %v s, want about 3 s after the start", informer)
	}
	m.ObserveSync("policy", time.Millisecond, nil)
	first := testutil.ToFloat64(m.InitialSync.WithLabelValues("policy"))
	if first < informer {
		t.Errorf("initial sync of policy = %v s, before the informers synced (%v s)", first, informer)
	}
	time.Sleep(20 * time.Millisecond)
	m.ObserveSync("policy", time.Millisecond, nil)
	if again := testutil.ToFloat64(m.InitialSync.WithLabelValues("policy")); again != first {
		t.Errorf("a second sync moved the initial sync gauge from %v to %v", first, again)
	}
	m.ObserveSync("routing", time.Millisecond, nil)
	if r := testutil.ToFloat64(m.InitialSync.WithLabelValues("routing")); r <= first {
		t.Errorf("initial sync of routing = %v s, want after policy's %v s", r, first)
	}
}
