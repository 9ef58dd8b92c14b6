package nodesetup

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/podlink"
)

func (f *fixture) networkCondition(t *testing.T) *v1.NodeCondition {
	t.Helper()
	for _, c := range f.apiNode(t).Status.Conditions {
		if c.Type == v1.NodeNetworkUnavailable {
			return &c
		}
	}
	return nil
}

// The node state file's ready, its dataplane marker (the plugin's gate) and
// the NetworkUnavailable condition follow the base dataplane: no marker
// and not ready until the policy controller has synced; the marker with
// this boot's id and the tables once it has; a failing policy controller
// removes the marker, clears ready and sets NetworkUnavailable=True.
func TestDataplaneGatesReadinessAndMarker(t *testing.T) {
	f := newFixture(t, testNode("10.244.1.0/24"), config.ModeNative)
	f.routes.ready = true
	*f.dp = fakeDataplane{reason: "policy controller has not synced yet"}
	ctx := context.Background()
	sync := func() *podlink.NodeState {
		t.Helper()
		if err := f.c.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if err := f.idx.Update(f.apiNode(t)); err != nil {
			t.Fatal(err)
		}
		st, err := podlink.ReadNodeState(f.cfg.NodeStateFile)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := sync()
	if st.Ready || st.Dataplane != nil || !strings.Contains(st.Reason, "not synced") {
		t.Errorf("before the policy controller synced: %+v, want not ready, no marker, its reason", st)
	}
	if c := f.networkCondition(t); c != nil {
		t.Errorf("NetworkUnavailable set before the base dataplane is in place: %+v", c)
	}
	var conf struct {
		Plugins []map[string]any `json:"plugins"`
	}
	data, _ := os.ReadFile(f.conflistPath())
	if err := json.Unmarshal(data, &conf); err != nil || conf.Plugins[0]["requireDataplane"] != true {
		t.Errorf("the agent's conflist does not set requireDataplane:\n%s", data)
	}

	*f.dp = fakeDataplane{ready: true}
	st = sync()
	if !st.Ready || st.Dataplane == nil || st.Dataplane.BootID != "boot-1" ||
		len(st.Dataplane.Tables) != 1 || st.Dataplane.Tables[0].Name != "trellis-policy" {
		t.Errorf("with the base in place: %+v (dataplane %+v), want ready with this boot's marker", st, st.Dataplane)
	}
	if c := f.networkCondition(t); c == nil || c.Status != v1.ConditionFalse {
		t.Errorf("NetworkUnavailable %+v, want False", c)
	}

	*f.dp = fakeDataplane{failed: true, reason: "policy controller failing: nft: boom"}
	st = sync()
	if st.Ready || st.Dataplane != nil || !strings.Contains(st.Reason, "boom") {
		t.Errorf("with the policy controller failing: %+v, want not ready, no marker, its reason", st)
	}
	if c := f.networkCondition(t); c == nil || c.Status != v1.ConditionTrue || c.Reason != ConditionReasonDataplane ||
		!strings.Contains(c.Message, "boom") {
		t.Errorf("NetworkUnavailable %+v, want True (%s) naming the failure", c, ConditionReasonDataplane)
	}

	*f.dp = fakeDataplane{ready: true}
	if st = sync(); !st.Ready || st.Dataplane == nil {
		t.Errorf("after recovery: %+v, want ready with a marker", st)
	}
	if c := f.networkCondition(t); c == nil || c.Status != v1.ConditionFalse {
		t.Errorf("NetworkUnavailable %+v after recovery, want False", c)
	}
}

// A restarted agent (the policy controller has not synced yet) keeps the
// marker of this boot, so new pods are not held up; a marker from another
// boot (a reboot) is dropped until the policy controller has synced.
func TestDataplaneMarkerSurvivesAgentRestartNotReboot(t *testing.T) {
	f := newFixture(t, testNode("10.244.1.0/24"), config.ModeNative)
	f.routes.ready = true
	ctx := context.Background()
	if err := f.c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	*f.dp = fakeDataplane{reason: "policy controller has not synced yet"}
	if err := f.c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := podlink.ReadNodeState(f.cfg.NodeStateFile)
	if err != nil || st.Dataplane == nil || st.Dataplane.BootID != "boot-1" {
		t.Fatalf("restart in the same boot: state %+v (%v), want this boot's marker kept", st, err)
	}
	f.c.bootID = func() (string, error) { return "boot-2", nil }
	if err := f.c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	st, err = podlink.ReadNodeState(f.cfg.NodeStateFile)
	if err != nil || st.Dataplane != nil || st.Ready {
		t.Fatalf("after a reboot: state %+v (%v), want no marker and not ready", st, err)
	}
}
