package metrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHandlerServesMetricsAndChecks(t *testing.T) {
	m := New(Build{Version: "v1.2.3"})
	m.SetFeature(FeatureVXLAN, true)
	m.ObserveSync("routing", 3*time.Millisecond, nil)
	m.ObserveSync("routing", time.Millisecond, errors.New("x"))
	notReady := errors.New("routes not programmed yet")
	h := m.Handler(nil, []Check{{Name: "routing", Fn: func() error { return notReady }}})

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`trellis_agent_sync_errors_total{controller="routing"} 1`,
		`trellis_agent_syncs_total{controller="routing"} 2`,
		`trellis_agent_last_successful_sync_timestamp_seconds{controller="routing"}`,
		`trellis_agent_sync_duration_seconds_count{controller="routing"} 2`,
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
