//go:build kernel

package netlinkprog_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/netnstest"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// The scale harness: one node namespace (uplink ul0 holding 10.0.0.1/16,
// so half the peers share its subnet) running the real routing controller
// (auto mode) and netlinkprog against Nodes served by a fake API through
// real informers. Peer i (1-based) has pod CIDR 10.128.0.0/9's i-th /24;
// odd peers sit on 10.0.0.0/16 (native route), even peers on 10.1.0.0/16
// (VXLAN: FDB entry, neighbour entry and route).

const (
	scaleNodeName = "node-0"
	scaleVXLAN    = "trellis.vxlan"
)

var scaleClusterCIDR = netip.MustParsePrefix("10.128.0.0/9")

// scaleNode is the Node object of peer i (0: this node).
func scaleNode(i int) *v1.Node {
	native := i%2 == 1 || i == 0
	k := i / 2 // index within its subnet
	var ip netip.Addr
	if native {
		ip = addrAdd(netip.MustParseAddr("10.0.0.1"), k)
		if i > 0 {
			ip = addrAdd(netip.MustParseAddr("10.0.0.2"), k)
		}
	} else {
		ip = addrAdd(netip.MustParseAddr("10.1.0.2"), k)
	}
	cidr := netip.PrefixFrom(addrAdd(scaleClusterCIDR.Addr(), i*256), 24)
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%d", i),
		CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second))}}
	n.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: ip.String()}}
	n.Spec.PodCIDR = cidr.String()
	n.Spec.PodCIDRs = []string{cidr.String()}
	return n
}

func addrAdd(a netip.Addr, k int) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(k)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// scaleEntries are what peer i puts into the kernel: its route's
// destination, and for a VXLAN peer its VTEP address (neighbour) and its
// VTEP MAC (FDB).
type scaleEntries struct {
	route netip.Prefix
	vtep  netip.Addr // zero for a native peer
	mac   string
}

func scaleEntriesOf(i int) scaleEntries {
	n := scaleNode(i)
	cidr := netip.MustParsePrefix(n.Spec.PodCIDRs[0])
	e := scaleEntries{route: cidr}
	if i%2 == 0 {
		e.vtep, e.mac = cidr.Addr(), routing.VTEPMAC(n.Name)
	}
	return e
}

// syncLog records every sync of the controller (its Observer).
type syncLog struct {
	mu    sync.Mutex
	took  []time.Duration
	cpu   []time.Duration // CPU time of the runner's thread in each sync
	errs  []error
	count int
	ch    chan struct{}
	// lastCPU is the runner thread's CPU time at the end of the last sync.
	lastCPU time.Duration
}

// threadCPU is the calling thread's CPU time (user + system). The runner
// runs on one locked thread (the namespace's), which does nothing else:
// its CPU time between two syncs' ends is the later sync's, whatever the
// machine's load.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startCPU is called on the runner's thread before it runs.
func (s *syncLog) startCPU() {
	s.mu.Lock()
	s.lastCPU = threadCPU()
	s.mu.Unlock()
}

// cpuSince returns the CPU time of the syncs from the n-th on.
func (s *syncLog) cpuSince(n int) []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.cpu[n:]...)
}

func (s *syncLog) ObserveSync(_ string, took time.Duration, err error) {
	now := threadCPU()
	s.mu.Lock()
	s.cpu = append(s.cpu, now-s.lastCPU)
	s.lastCPU = now
	s.took = append(s.took, took)
	s.errs = append(s.errs, err)
	s.count++
	s.mu.Unlock()
	select {
	case s.ch <- struct{}{}:
	default:
	}
}

func (s *syncLog) since(n int) ([]time.Duration, []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.took[n:]...), append([]error(nil), s.errs[n:]...)
}

func (s *syncLog) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// settle returns once no sync finished for quiet.
func (s *syncLog) settle(quiet time.Duration) {
	for {
		n := s.len()
		time.Sleep(quiet)
		if s.len() == n {
			return
		}
	}
}

// waitFor waits until at least n syncs finished.
func (s *syncLog) waitFor(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for s.len() < n {
		select {
		case <-s.ch:
		case <-deadline:
			t.Fatalf("waited %v for sync %d, have %d", timeout, n, s.len())
		}
	}
}

// scaleHarness is a node namespace with the routing controller running.
type scaleHarness struct {
	t       *testing.T
	node    *netnstest.Node
	client  *fake.Clientset
	dp      *netlinkprog.Programmer
	ctl     *routing.Controller
	syncs   *syncLog
	events  *eventTimes
	started time.Time
	cancel  context.CancelFunc
	wait    func()
	peers   int
}

// eventTimes records when the informer delivered each Node's add.
type eventTimes struct {
	mu sync.Mutex
	at map[string]time.Time
}

func (e *eventTimes) get(name string) (time.Time, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.at[name]
	return t, ok
}

// newScaleHarness creates peers+1 Nodes (this node and its peers) in the
// fake API, syncs an informer on them and returns before the controller
// starts; start runs it.
func newScaleHarness(t *testing.T, peers int, minInterval time.Duration) *scaleHarness {
	t.Helper()
	node := netnstest.NewNode(t, "10.0.0.1/16")
	objs := make([]runtime.Object, 0, peers+1)
	for i := 0; i <= peers; i++ {
		objs = append(objs, scaleNode(i))
	}
	h := &scaleHarness{t: t, node: node, client: fake.NewSimpleClientset(objs...), peers: peers,
		syncs:  &syncLog{ch: make(chan struct{}, 1)},
		events: &eventTimes{at: map[string]time.Time{}},
		// nil Handle, run on a thread inside the namespace: a new netlink
		// socket per request, as in the agent.
		dp: &netlinkprog.Programmer{NetnsPath: node.NS.Path()},
	}
	factory := informers.NewSharedInformerFactory(h.client, 0)
	inf := factory.Core().V1().Nodes()
	ctl, err := routing.New(routing.Config{NodeName: scaleNodeName, Nodes: inf.Lister(), Kernel: h.dp,
		Params: routing.Params{Mode: config.ModeAuto, ClusterCIDRs: []netip.Prefix{scaleClusterCIDR},
			VXLAN:      config.VXLAN{Device: scaleVXLAN, VNI: 1, Port: 8472},
			Encryption: routing.Encryption{Device: "trellis.wg"}},
		Sync: syncrunner.Options{MinInterval: minInterval, MaxInterval: config.DefaultMaxSyncInterval, Observer: h.syncs}})
	if err != nil {
		t.Fatal(err)
	}
	h.ctl = ctl
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if n, ok := obj.(*v1.Node); ok {
				h.events.mu.Lock()
				h.events.at[n.Name] = time.Now()
				h.events.mu.Unlock()
			}
			ctl.Trigger()
		},
		UpdateFunc: func(any, any) { ctl.Trigger() },
		DeleteFunc: func(any) { ctl.Trigger() },
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	t.Cleanup(func() {
		cancel()
		if h.wait != nil {
			h.wait()
		}
		factory.Shutdown()
	})
	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			t.Fatalf("informer %v did not sync", typ)
		}
	}
	return h
}

// start runs the controller on a thread inside the node namespace.
func (h *scaleHarness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	prev := h.cancel
	h.cancel = func() { cancel(); prev() }
	done := make(chan struct{})
	h.started = time.Now()
	go func() {
		defer close(done)
		_ = h.node.NS.Do(func(ns.NetNS) error {
			h.syncs.startCPU()
			h.ctl.Run(ctx)
			return nil
		})
	}()
	h.wait = func() { cancel(); <-done }
}

// addNode creates peer i in the API.
func (h *scaleHarness) addNode(i int) {
	h.t.Helper()
	if _, err := h.client.CoreV1().Nodes().Create(context.Background(), scaleNode(i), metav1.CreateOptions{}); err != nil {
		h.t.Fatalf("create node %d: %v", i, err)
	}
}

// kernelCounts dumps the node's trellis routes, the VXLAN device's FDB
// and permanent neighbour entries.
func (h *scaleHarness) kernelCounts() (routes, fdb, neigh int) {
	h.t.Helper()
	rs, err := h.node.Handle.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: netlinkprog.RouteProtocol},
		netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		h.t.Fatal(err)
	}
	vx, err := h.node.Handle.LinkByName(scaleVXLAN)
	if err != nil {
		h.t.Fatal(err)
	}
	fs, err := h.node.Handle.NeighList(vx.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, f := range fs {
		if f.IP != nil && f.State&netlink.NUD_PERMANENT != 0 {
			fdb++
		}
	}
	ns4, err := h.node.Handle.NeighList(vx.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, e := range ns4 {
		if e.State&netlink.NUD_PERMANENT != 0 {
			neigh++
		}
	}
	return len(rs), fdb, neigh
}

// wantCounts are the entries peers 1..peers need: a route each plus this
// node's unreachable route, FDB and neighbour entries for every VXLAN peer.
func wantCounts(peers int) (routes, fdb, neigh int) {
	return peers + 1, peers / 2, peers / 2
}

// kernelWatch reports when entries appear in the node's kernel, from
// route and neighbour notifications (opened in the namespace).
type kernelWatch struct {
	mu     sync.Mutex
	routes map[netip.Prefix]time.Time
	neighs map[netip.Addr]time.Time
	fdb    map[string]time.Time
	errs   []error
	ch     chan struct{}
}

func (h *scaleHarness) watchKernel() *kernelWatch {
	h.t.Helper()
	w := &kernelWatch{routes: map[netip.Prefix]time.Time{}, neighs: map[netip.Addr]time.Time{}, fdb: map[string]time.Time{},
		ch: make(chan struct{}, 1)}
	done := make(chan struct{})
	h.t.Cleanup(func() { close(done) })
	nsh, err := vns.GetFromPath(h.node.NS.Path())
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { nsh.Close() })
	onErr := func(err error) {
		w.mu.Lock()
		w.errs = append(w.errs, err)
		w.mu.Unlock()
	}
	routes := make(chan netlink.RouteUpdate, 4096)
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: &nsh,
		ReceiveBufferSize: 8 << 20, ErrorCallback: onErr}); err != nil {
		h.t.Fatal(err)
	}
	neighs := make(chan netlink.NeighUpdate, 4096)
	if err := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{Namespace: &nsh,
		ReceiveBufferSize: 8 << 20, ErrorCallback: onErr}); err != nil {
		h.t.Fatal(err)
	}
	poke := func() {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
	go func() {
		for {
			select {
			case <-done:
				return
			case u, ok := <-routes:
				if !ok {
					return
				}
				now := time.Now()
				if u.Type == unix.RTM_NEWROUTE && u.Protocol == netlinkprog.RouteProtocol && u.Dst != nil {
					a, _ := netip.AddrFromSlice(u.Dst.IP)
					ones, _ := u.Dst.Mask.Size()
					w.mu.Lock()
					w.routes[netip.PrefixFrom(a.Unmap(), ones)] = now
					w.mu.Unlock()
					poke()
				}
			case u, ok := <-neighs:
				if !ok {
					return
				}
				now := time.Now()
				if u.Type != unix.RTM_NEWNEIGH || u.State&netlink.NUD_PERMANENT == 0 || u.IP == nil {
					continue
				}
				w.mu.Lock()
				if u.Family == unix.AF_BRIDGE {
					w.fdb[u.HardwareAddr.String()] = now
				} else {
					a, _ := netip.AddrFromSlice(u.IP)
					w.neighs[a.Unmap()] = now
				}
				w.mu.Unlock()
				poke()
			}
		}
	}()
	return w
}

// seen returns when the last of e's entries appeared (false: not all yet).
func (w *kernelWatch) seen(e scaleEntries) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	last, ok := w.routes[e.route]
	if !ok {
		return time.Time{}, false
	}
	if e.vtep.IsValid() {
		n, ok1 := w.neighs[e.vtep]
		f, ok2 := w.fdb[e.mac]
		if !ok1 || !ok2 {
			return time.Time{}, false
		}
		for _, x := range []time.Time{n, f} {
			if x.After(last) {
				last = x
			}
		}
	}
	return last, true
}

// waitSeen waits until e is in the kernel and returns when it appeared.
func (w *kernelWatch) waitSeen(t *testing.T, e scaleEntries, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.After(timeout)
	for {
		if at, ok := w.seen(e); ok {
			return at
		}
		select {
		case <-w.ch:
		case <-deadline:
			w.mu.Lock()
			errs := w.errs
			w.mu.Unlock()
			t.Fatalf("entries of %v not seen in the kernel within %v (watch errors: %v)", e, timeout, errs)
		}
	}
}
