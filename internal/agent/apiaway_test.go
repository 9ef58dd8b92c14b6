package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/kubeclient"
	"github.com/trellisnet/trellis/internal/masq"
	"github.com/trellisnet/trellis/internal/nodesetup"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
)

var errAway = errors.New("dial tcp 10.96.0.1:443: connect: connection refused")

// awayAPI is an API server that is away: every call fails.
func awayAPI(t *testing.T) api {
	t.Helper()
	s, err := kubeclient.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	lw := &cache.ListWatch{
		ListWithContextFunc:  func(context.Context, metav1.ListOptions) (runtime.Object, error) { return nil, errAway },
		WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) { return nil, errAway },
	}
	return api{lw: kubeclient.ListWatches{Nodes: lw, Pods: lw, Namespaces: lw, NetworkPolicies: lw},
		nodes: awayNodes{}, events: awayEvents{}, scheme: s}
}

type awayNodes struct{}

func (awayNodes) Patch(context.Context, string, types.PatchType, []byte, metav1.PatchOptions, ...string) (*v1.Node, error) {
	return nil, errAway
}

type awayEvents struct{}

func (awayEvents) Create(*v1.Event) (*v1.Event, error)        { return nil, errAway }
func (awayEvents) Update(*v1.Event) (*v1.Event, error)        { return nil, errAway }
func (awayEvents) Patch(*v1.Event, []byte) (*v1.Event, error) { return nil, errAway }

type noSysctls struct{ t *testing.T }

func (s noSysctls) Set(p, v string) error {
	s.t.Errorf("sysctl %s=%s set with the API server away", p, v)
	return nil
}

var _ nodesetup.Sysctls = noSysctls{}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func httpStatus(url string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// An agent that starts while the API server is away touches nothing (no
// nftables transaction, no sysctl, no node state file) and stays alive:
// /healthz answers 200 (the kubelet's liveness probe must not kill it in a
// loop) while /readyz answers 503 until its caches have synced.
func TestAgentStartsWithAPIServerAway(t *testing.T) {
	dir := t.TempDir()
	status := filepath.Join(dir, "status")
	if err := os.WriteFile(status, []byte(fmt.Sprintf("Name:\tx\nCapEff:\t%016x\n", ^uint64(0)>>23)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.NodeName = "n1"
	cfg.MetricsBindAddress = freeAddr(t)
	cfg.NodeStateFile = filepath.Join(dir, "node-state.json")
	cfg.CNIConfDir = filepath.Join(dir, "net.d")
	masqNFT := knftables.NewFake(knftables.IPv4Family, masq.TableName)
	policyNFT := knftables.NewFake(knftables.InetFamily, policy.TableName)
	d := deps{version: "test", api: awayAPI(t), routes: &netlinkprog.Programmer{}, sysctls: noSysctls{t},
		nft: masqNFT, policyNFT: policyNFT, procStatus: status}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, d) }()

	base := "http://" + cfg.MetricsBindAddress
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, err := httpStatus(base + "/healthz")
		if err == nil && code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("/healthz with the API server away: %d, %v; want 200 (alive, not ready)", code, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // give a wrong agent time to touch something
	if code, err := httpStatus(base + "/readyz"); err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("/readyz with the API server away: %d, %v; want 503", code, err)
	}
	if masqNFT.Table != nil || policyNFT.Table != nil {
		t.Errorf("nftables programmed with the API server away: masq %v, policy %v", masqNFT.Table != nil, policyNFT.Table != nil)
	}
	for _, f := range []string{cfg.NodeStateFile, cfg.CNIConfDir} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s written with the API server away", f)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after its context was cancelled")
	}
}

// An agent that lacks a capability changes nothing it would have to
// maintain, but withdraws the dataplane marker and readiness an earlier
// agent of this boot left: the tables stay, yet nobody keeps them current,
// so the plugin must stop wiring pods until an agent that can run has
// programmed the node.
func TestAgentMissingCapabilityWithdrawsDataplaneMarker(t *testing.T) {
	dir := t.TempDir()
	status := filepath.Join(dir, "status")
	if err := os.WriteFile(status, []byte("Name:\tx\nCapEff:\t0000000000000000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.NodeName = "n1"
	cfg.MetricsBindAddress = freeAddr(t)
	cfg.NodeStateFile = filepath.Join(dir, "node-state.json")
	cfg.CNIConfDir = filepath.Join(dir, "net.d")
	before := &podlink.NodeState{NodeName: "n1", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, Ready: true,
		Dataplane: &podlink.Dataplane{BootID: "this-boot", Tables: []podlink.NFTable{{Family: "inet", Name: policy.TableName}}}}
	if err := podlink.WriteNodeState(cfg.NodeStateFile, before); err != nil {
		t.Fatal(err)
	}
	policyNFT := knftables.NewFake(knftables.InetFamily, policy.TableName)
	d := deps{version: "test", api: awayAPI(t), routes: &netlinkprog.Programmer{}, sysctls: noSysctls{t},
		nft: knftables.NewFake(knftables.IPv4Family, masq.TableName), policyNFT: policyNFT, procStatus: status}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, d) }()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := podlink.ReadNodeState(cfg.NodeStateFile)
		if err == nil && !st.Ready && st.Dataplane == nil {
			if !strings.Contains(st.Reason, "NET_ADMIN") || len(st.PodCIDRs) != 1 {
				t.Errorf("withdrawn node state: reason %q, pod CIDRs %v; want the missing capability named and the CIDRs kept", st.Reason, st.PodCIDRs)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node state still %+v (err %v); want ready false and no dataplane marker", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if policyNFT.Table != nil {
		t.Error("an agent lacking capabilities programmed nftables")
	}
}
