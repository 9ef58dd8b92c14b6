//go:build e2e

package scale

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/lab/install"
	"github.com/trellisnet/trellis/internal/lab/probe"
	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
)

// restartResult is what one agent restart showed.
type restartResult struct {
	started      time.Time // the new process's start
	listSeconds  *float64  // start → every informer synced
	resync       *float64  // informers synced → every controller synced once
	synced       time.Time // absolute: informers synced (zero if unknown)
	routingFirst *float64  // informers synced → routing's first sync (metric)
	routingTook  *float64  // how long routing's first sync took (metric)
	routesAt     time.Time // cold: when the kernel held every route again
	source       string    // where the figures came from
}

// agentPID is the trellis-agent process of node's agent pod (0 if none
// runs).
func agentPID(node string) int {
	pod, err := install.AgentPod(context.Background(), l.CS, node)
	if err != nil {
		return 0
	}
	pids, err := probe.ContainerPIDs(pod, install.AgentContainer)
	if err != nil {
		return 0
	}
	for _, pid := range pids {
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(comm)) == "trellis-agent" {
			return pid
		}
	}
	return 0
}

// controllers returns the controllers the agent reports syncs of.
func controllers(m metrics) []string {
	var out []string
	for c := range m.byLabel(mLastSuccess, "controller") {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// restartAgent replaces the agent pod on node (the DaemonSet's way: the
// pod deleted, the old process stopping gracefully, a new pod). With
// cold, every Trellis route and the VXLAN device (with its FDB and
// neighbour entries) are removed from the node between the old process's
// exit and the new one's start. It then follows the new agent until every
// controller has synced once.
func restartAgent(t *testing.T, node, nsName string, cold bool) (restartResult, error) {
	t.Helper()
	ctx := context.Background()
	var r restartResult
	m0, err := scrape(netnsPath(nsName))
	if err != nil {
		return r, err
	}
	want := controllers(m0)
	old := agentPID(node)
	if old == 0 {
		return r, fmt.Errorf("no agent process on %s", node)
	}
	var flushed time.Time
	var routes <-chan time.Time
	if cold {
		// Frozen (so that it repairs nothing), the node flushed, then
		// killed: kubelet restarts the container in the same pod.
		n, err := routeCount(nsName)
		if err != nil {
			return r, err
		}
		nh, closeNS, err := nsHandle(nsName)
		if err != nil {
			return r, err
		}
		defer closeNS()
		if err := syscall.Kill(old, syscall.SIGSTOP); err != nil {
			return r, fmt.Errorf("stop the agent %d: %w", old, err)
		}
		if err := flushNode(nh); err != nil {
			_ = syscall.Kill(old, syscall.SIGCONT)
			return r, fmt.Errorf("flush %s: %w", nsName, err)
		}
		flushed = time.Now()
		if routes, err = watchRoutes(nsName, n, 3*time.Minute); err != nil {
			_ = syscall.Kill(old, syscall.SIGCONT)
			return r, err
		}
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			return r, fmt.Errorf("kill the agent %d: %w", old, err)
		}
	} else {
		pod, err := install.AgentPod(ctx, l.CS, node)
		if err != nil {
			return r, err
		}
		if err := l.CS.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
			return r, fmt.Errorf("delete the agent pod %s: %w", pod.Name, err)
		}
	}
	deadline := time.Now().Add(3 * time.Minute)
	pid := 0
	for pid == 0 || pid == old {
		if time.Now().After(deadline) {
			return r, fmt.Errorf("no new agent on %s within 3 minutes", node)
		}
		time.Sleep(20 * time.Millisecond)
		pid = agentPID(node)
	}
	_, r.started, err = procStat(pid)
	if err != nil {
		return r, err
	}
	if cold && r.started.Before(flushed) {
		return r, fmt.Errorf("the new agent started %s before the node was flushed: not a cold start", flushed.Sub(r.started))
	}
	// Follow the metrics until every controller reports a first sync;
	// keep the first value of each last-success timestamp seen (a later
	// sync overwrites it).
	first := map[string]float64{}
	var last metrics
	for {
		if time.Now().After(deadline) {
			return r, fmt.Errorf("the new agent on %s: controllers %v synced, want %v, within 3 minutes", node, keys(first), want)
		}
		m, err := scrape(netnsPath(nsName))
		if err == nil {
			last = m
			for c, v := range m.byLabel(mLastSuccess, "controller") {
				if _, ok := first[c]; !ok && v > 0 {
					first[c] = v
				}
			}
			if len(first) >= len(want) && allIn(want, first) {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if cold {
		r.routesAt = <-routes
		if r.routesAt.IsZero() {
			return r, fmt.Errorf("%s: the routes did not all come back within 3 minutes of a cold start", node)
		}
	}
	// The agent's own figures when it exports them (seconds since its
	// start), else the log line and the first sync timestamps.
	if inf, ok := last.get(mInformerSync); ok {
		initial := last.byLabel(mInitialSync, "controller")
		r.listSeconds, r.synced = &inf, r.started.Add(time.Duration(inf*float64(time.Second)))
		if len(initial) > 0 {
			mx := 0.0
			for _, v := range initial {
				mx = max(mx, v)
			}
			rs := mx - inf
			r.resync = &rs
			if v, ok := initial["routing"]; ok {
				rt := v - inf
				r.routingFirst = &rt
			}
			if v, ok := last.byLabel(mInitialSyncTook, "controller")["routing"]; ok {
				r.routingTook = &v
			}
			r.source = mInformerSync + " and " + mInitialSync
			return r, nil
		}
	} else {
		at, ok := logTime(l.AgentLogs(t, node, 400), logInformerSync)
		if !ok {
			r.source = "no " + mInformerSync + " and no log line " + logInformerSync
			return r, nil
		}
		ls := at.Sub(r.started).Seconds()
		r.listSeconds, r.synced = &ls, at
	}
	mx := 0.0
	for _, v := range first {
		mx = max(mx, v)
	}
	rs := mx - float64(r.synced.UnixNano())/1e9
	r.resync = &rs
	if v, ok := first["routing"]; ok {
		rt := v - float64(r.synced.UnixNano())/1e9
		r.routingFirst = &rt
	}
	r.source = "log line " + logInformerSync + " and the first " + mLastSuccess + " of each controller (no " + mInitialSync + ")"
	return r, nil
}

func keys(m map[string]float64) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func allIn(want []string, have map[string]float64) bool {
	for _, w := range want {
		if _, ok := have[w]; !ok {
			return false
		}
	}
	return true
}

// watchRoutes follows the Trellis routes in a node's namespace (rtnetlink
// notifications, with a dump every 250 ms in case notifications were
// lost) and sends when the node holds n of them (zero time after within).
func watchRoutes(nsName string, n int, within time.Duration) (<-chan time.Time, error) {
	h, err := vns.GetFromPath(netnsPath(nsName))
	if err != nil {
		return nil, err
	}
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		h.Close()
		return nil, err
	}
	updates := make(chan netlink.RouteUpdate, 1<<16)
	done := make(chan struct{})
	if err := netlink.RouteSubscribeWithOptions(updates, done, netlink.RouteSubscribeOptions{Namespace: &h,
		ReceiveBufferSize: 64 << 20, ReceiveBufferForceSize: true, ErrorCallback: func(error) {}}); err != nil {
		nh.Close()
		h.Close()
		return nil, fmt.Errorf("subscribe to routes in %s: %w", nsName, err)
	}
	dp := &netlinkprog.Programmer{Handle: nh}
	out := make(chan time.Time, 1)
	go func() {
		defer h.Close()
		defer nh.Close()
		defer close(done)
		have := map[string]bool{}
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		end := time.After(within)
		for {
			select {
			case u := <-updates:
				if u.Protocol != netlinkprog.RouteProtocol || u.Dst == nil {
					continue
				}
				if u.Type == unix.RTM_NEWROUTE {
					have[u.Dst.String()] = true
				} else {
					delete(have, u.Dst.String())
				}
				if len(have) >= n {
					out <- time.Now()
					return
				}
			case <-tick.C:
				if rs, err := dp.ListRoutes(); err == nil && len(rs) >= n {
					out <- time.Now()
					return
				}
			case <-end:
				out <- time.Time{}
				return
			}
		}
	}()
	return out, nil
}

// nsHandle opens a netlink handle in a node's namespace.
func nsHandle(nsName string) (*netlink.Handle, func(), error) {
	h, err := vns.GetFromPath(netnsPath(nsName))
	if err != nil {
		return nil, nil, err
	}
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		h.Close()
		return nil, nil, err
	}
	return nh, func() { nh.Close(); h.Close() }, nil
}

// flushNode removes the VXLAN device (with its routes, FDB and neighbour
// entries) and every other Trellis route.
func flushNode(nh *netlink.Handle) error {
	if link, err := nh.LinkByName(config.DefaultVXLANDevice); err == nil {
		if err := nh.LinkDel(link); err != nil {
			return fmt.Errorf("delete %s: %w", config.DefaultVXLANDevice, err)
		}
	}
	rs, err := (&netlinkprog.Programmer{Handle: nh}).ListRoutes()
	if err != nil {
		return err
	}
	for i := range rs {
		if err := nh.RouteDel(&rs[i]); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("delete route %s: %w", rs[i].Dst, err)
		}
	}
	return nil
}

// routeCount is the number of Trellis routes on the node.
func routeCount(nsName string) (int, error) {
	out, err := exec.Command("ip", "-n", nsName, "-4", "route", "show", "proto", "158").Output()
	return strings.Count(string(out), "\n"), err
}
