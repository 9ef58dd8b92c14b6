//go:build e2e

package scale

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
)

func sampleName(k int) string { return fmt.Sprintf("ghost-add-%02d", k) }

// nodeAdds creates n Nodes one at a time and times each from the API call
// to its route arriving in the measured node's kernel (an rtnetlink
// notification in the node's namespace, protocol trellis). Even samples
// are on the node's subnet (native route in auto mode), odd ones VXLAN
// peers. The sample Nodes are deleted again at the end.
func nodeAdds(ctx context.Context, w *world, nsName string, n int) ([]time.Duration, error) {
	h, err := vns.GetFromPath(netnsPath(nsName))
	if err != nil {
		return nil, err
	}
	defer h.Close()
	updates := make(chan netlink.RouteUpdate, 1<<14)
	done := make(chan struct{})
	defer close(done)
	var subErr error
	var mu sync.Mutex
	if err := netlink.RouteSubscribeWithOptions(updates, done, netlink.RouteSubscribeOptions{Namespace: &h,
		ErrorCallback: func(err error) { mu.Lock(); subErr = err; mu.Unlock() }}); err != nil {
		return nil, fmt.Errorf("subscribe to routes in %s: %w", nsName, err)
	}
	defer func() {
		_ = parallel(context.Background(), 0, n, 16, func(ctx context.Context, k int) error {
			return w.cs.CoreV1().Nodes().Delete(ctx, sampleName(k), metav1.DeleteOptions{})
		})
	}()
	var out []time.Duration
	for k := 0; k < n; k++ {
		i, addr := SampleNode(k, w.subnet)
		cidr := GhostCIDR(i)
		node := ghostNode(sampleName(k), cidr, addr)
		at := time.Now()
		if err := createNode(ctx, w.cs, node); err != nil {
			return out, err
		}
		deadline := time.After(10 * time.Second)
	wait:
		for {
			select {
			case u := <-updates:
				if u.Type == unix.RTM_NEWROUTE && u.Protocol == netlinkprog.RouteProtocol && u.Dst != nil && u.Dst.String() == cidr.String() {
					out = append(out, time.Since(at))
					break wait
				}
			case <-deadline:
				mu.Lock()
				defer mu.Unlock()
				return out, fmt.Errorf("node %s (%s, pod CIDR %s): no route within 10s (subscription error: %v)", node.Name, addr, cidr, subErr)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return out, nil
}

// nftMonitor follows `nft monitor` in a node's namespace: each committed
// nftables generation, when it was committed and how many objects its
// transaction touched (the lines nft printed for it; set elements that nft
// 1.0.6 cannot decode, because the transaction also re-declared their set,
// count one per warning).
type nftMonitor struct {
	cmd  *exec.Cmd
	gens chan generation
}

type generation struct {
	at    time.Time
	lines int
}

func startNftMonitor(nsName string) (*nftMonitor, error) {
	m := &nftMonitor{gens: make(chan generation, 1024)}
	m.cmd = exec.Command("ip", "netns", "exec", nsName, "nft", "monitor")
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	m.cmd.Stdout, m.cmd.Stderr = w, w
	if err := m.cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("nft monitor in %s: %w", nsName, err)
	}
	w.Close()
	go func() {
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		lines := 0
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "# new generation"):
				select {
				case m.gens <- generation{at: time.Now(), lines: lines}:
				default: // nobody listens: drop
				}
				lines = 0
			case strings.HasPrefix(line, "W: Unable to cache"):
			default:
				lines++
			}
		}
		close(m.gens)
	}()
	time.Sleep(300 * time.Millisecond) // the monitor subscribes
	return m, nil
}

// drain forgets the generations committed so far.
func (m *nftMonitor) drain() {
	for {
		select {
		case <-m.gens:
		default:
			return
		}
	}
}

func (m *nftMonitor) stop() {
	if m.cmd.Process != nil {
		_ = m.cmd.Process.Kill()
		_ = m.cmd.Wait()
	}
}

// hasElement reports whether a set of the node's policy table holds ip.
func hasElement(nsName, set, ip string) bool {
	return exec.Command("ip", "netns", "exec", nsName, "nft", "get", "element", "inet", "trellis-policy", set, "{ "+ip+" }").Run() == nil
}

// podAdds creates n API-only pods, role=a (a peer of the measured node's
// server, so each changes a peer set there), and times each from its
// status update (the moment it gets an address) to the commit of the
// nftables generation that put the address into the node's policy table
// (set pod-addrs; one transaction changes every set). Returns the
// latencies, the mean nftables operations per committed policy
// transaction over the samples (nil when the agent does not export
// mTxOps) and the mean lines `nft monitor` printed for those generations.
func podAdds(ctx context.Context, w *world, nsName string, n int) ([]time.Duration, *float64, float64, error) {
	mon, err := startNftMonitor(nsName)
	if err != nil {
		return nil, nil, 0, err
	}
	defer mon.stop()
	before, _ := scrape(netnsPath(nsName))
	var out []time.Duration
	lines := 0
	for k := 0; k < n; k++ {
		slot, err := w.place.Place(1, 0)
		if err != nil {
			return out, nil, 0, err
		}
		g, s := slot[0][0], slot[0][1]
		j := w.pods
		p := ghostPod(j, g, "a")
		p.Name, p.Namespace = fmt.Sprintf("add-%06d", j), ghostNS(k%w.nsCount)
		ip := GhostPodIP(g, s).String()
		var at time.Time
		if err := createPod(ctx, w.cs, p, GhostPodIP(g, s), GhostAddr(g, w.subnet), func() { mon.drain(); at = time.Now() }); err != nil {
			return out, nil, 0, err
		}
		w.pods++
		deadline := time.After(10 * time.Second)
	wait:
		for {
			select {
			case gen, ok := <-mon.gens:
				if !ok {
					return out, nil, 0, fmt.Errorf("nft monitor in %s ended", nsName)
				}
				if hasElement(nsName, "pod-addrs", ip) {
					out = append(out, gen.at.Sub(at))
					lines += gen.lines
					break wait
				}
			case <-deadline:
				return out, nil, 0, fmt.Errorf("pod %s/%s (%s): not in set pod-addrs of %s within 10s", p.Namespace, p.Name, ip, nsName)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	meanLines := float64(lines) / float64(max(1, len(out)))
	after, _ := scrape(netnsPath(nsName))
	s0, ok0 := before.get(mTxOps + "_sum")
	c0, _ := before.get(mTxOps + "_count")
	s1, ok1 := after.get(mTxOps + "_sum")
	c1, _ := after.get(mTxOps + "_count")
	if !ok0 || !ok1 || c1 <= c0 {
		return out, nil, meanLines, nil
	}
	ops := (s1 - s0) / (c1 - c0)
	return out, &ops, meanLines, nil
}

// policyProbe is the real client and server pods and the policies that
// make the server's ingress depend on a toggle.
type policyProbe struct {
	realNS         string
	client, server string // netns paths
	serverIP       string
	allow          networkingv1.NetworkPolicySpec
	stopSink       func()
}

// sink serves an accept-and-close server on 5202 inside netnsPath.
func sink(netnsPath string) (func(), error) {
	var ln net.Listener
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp4", ":5202")
		return err
	})
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return func() { ln.Close() }, nil
}

// flip probes client → server:5202 every few ms until the outcome is want.
func (p *policyProbe) flip(want bool, within time.Duration) error {
	start := time.Now()
	for time.Since(start) < within {
		c, err := topology.DialInNetns(p.client, "tcp4", net.JoinHostPort(p.serverIP, "5202"), 50*time.Millisecond)
		if err == nil {
			c.Close()
		}
		if (err == nil) == want {
			return nil
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && !strings.Contains(err.Error(), "timeout") {
			return fmt.Errorf("probe: %w", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("client -> server did not become %v within %s", want, within)
}

// flips deletes and re-creates the server's allow policy n times and
// times each change from the API call to the first probe that observes
// it: deny (policy deleted) and allow (policy created).
func (p *policyProbe) flips(ctx context.Context, n int) (deny, allow []time.Duration, err error) {
	nps := l.CS.NetworkingV1().NetworkPolicies(p.realNS)
	toggle := func() error {
		_, err := nps.Create(ctx, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "toggle"}, Spec: p.allow}, metav1.CreateOptions{})
		return err
	}
	if err := p.flip(true, 30*time.Second); err != nil {
		return nil, nil, fmt.Errorf("before the flips: %w", err)
	}
	for i := 0; i < n; i++ {
		at := time.Now()
		if err := nps.Delete(ctx, "toggle", metav1.DeleteOptions{}); err != nil {
			return deny, allow, err
		}
		if err := p.flip(false, 10*time.Second); err != nil {
			return deny, allow, err
		}
		deny = append(deny, time.Since(at))
		at = time.Now()
		if err := toggle(); err != nil {
			return deny, allow, err
		}
		if err := p.flip(true, 10*time.Second); err != nil {
			return deny, allow, err
		}
		allow = append(allow, time.Since(at))
	}
	return deny, allow, nil
}
