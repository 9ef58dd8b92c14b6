package policy

import (
	"context"
	"fmt"
	"math/rand"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/slim"
)

// viewChurn is a pod cache changed at random the way an informer's is
// (objects replaced, never modified), with the keys each change touched:
// what the controller's pod event handler records.
type viewChurn struct {
	r      *rand.Rand
	store  cache.Store
	nss    []*corev1.Namespace
	nps    []*networkingv1.NetworkPolicy
	ifaces map[string]podlink.Interface // by pod key, local pods only
	next   int
	links  int // interfaces made so far (names are unique, as in a kernel)
	dirty  map[podKey]struct{}
	// family: 0 IPv4 pods, 1 dual-stack pods, 2 IPv6 pods (by seed).
	family int
}

func newViewChurn(seed int64) *viewChurn {
	c := &viewChurn{r: rand.New(rand.NewSource(seed)), store: cache.NewStore(cache.MetaNamespaceKeyFunc),
		ifaces: map[string]podlink.Interface{}, dirty: map[podKey]struct{}{}, family: int(seed % 3)}
	for _, ns := range []string{"x", "y"} {
		c.nss = append(c.nss, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"ns": ns}}})
	}
	c.nps = []*networkingv1.NetworkPolicy{viewPolicy("x", "web", "a"), viewPolicy("y", "db", "b")}
	for range 30 {
		c.addPod()
	}
	return c
}

// viewPolicy isolates the pods app=app of ns for ingress, admitting the
// pods role=role of every namespace and 10.9.0.0/16 but 10.9.1.0/24, and
// for egress, admitting its own namespace's pods role=role.
func viewPolicy(ns, app, role string) *networkingv1.NetworkPolicy {
	port := intstr.FromString("serve")
	peer := networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": role}},
		NamespaceSelector: &metav1.LabelSelector{}}
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "np-" + app},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{peer,
				{IPBlock: &networkingv1.IPBlock{CIDR: "10.9.0.0/16", Except: []string{"10.9.1.0/24"}}},
				{IPBlock: &networkingv1.IPBlock{CIDR: "fd00:9::/32", Except: []string{"fd00:9:1::/48"}}}}}},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				To:    []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": role}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: &port}}}},
		}}
}

func (c *viewChurn) pick(s ...string) string { return s[c.r.Intn(len(s))] }

// addr is one of few addresses, so that pods contest them: of the churn's
// families, comma-separated when there are two. A dual-stack pod's two
// addresses are drawn apart, so one family's address is reused while the
// other's is not.
func (c *viewChurn) addr() string {
	n, h := c.r.Intn(2), c.r.Intn(12)+1
	n6, h6 := n, h
	if c.family == 1 {
		n6, h6 = c.r.Intn(2), c.r.Intn(12)+1
	}
	v4, v6 := fmt.Sprintf("10.9.%d.%d", n, h), fmt.Sprintf("fd00:9:%d::%x", n6, h6)
	switch c.family {
	case 1:
		return v4 + "," + v6
	case 2:
		return v6
	}
	return v4
}

// setIPs sets the pod's status addresses from addr's form.
func setIPs(p *corev1.Pod, ips string) {
	p.Status.PodIP, p.Status.PodIPs = "", nil
	if ips == "" {
		return
	}
	for _, ip := range strings.Split(ips, ",") {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	p.Status.PodIP = p.Status.PodIPs[0].IP
}

// addrsOf parses addr's form.
func addrsOf(ips string) []netip.Addr {
	var out []netip.Addr
	for _, ip := range strings.Split(ips, ",") {
		out = append(out, netip.MustParseAddr(ip))
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func (c *viewChurn) put(p *corev1.Pod) {
	sp := slim.PodOf(p, nil)
	if err := c.store.Update(sp); err != nil {
		panic(err)
	}
	c.dirty[podKey{p.Namespace, p.Name}] = struct{}{}
	if p.Spec.NodeName == "n1" && !p.Spec.HostNetwork {
		var ips []string
		for _, a := range p.Status.PodIPs {
			ips = append(ips, a.IP)
		}
		ip := strings.Join(ips, ",")
		if ip == "" || c.r.Intn(4) == 0 {
			ip = c.addr() // the kernel knows another address, or one the status does not show yet
		}
		c.links++
		c.ifaces[p.Namespace+"/"+p.Name] = podlink.Interface{Name: fmt.Sprintf("trl%011d", c.links), Index: c.links,
			Addrs: addrsOf(ip),
			Alias: podlink.Alias{PodNamespace: p.Namespace, PodName: p.Name, PodUID: string(p.UID)}}
	}
}

func (c *viewChurn) addPod() string {
	c.next++
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: c.pick("x", "y"), Name: fmt.Sprintf("p%d", c.next%40),
		UID: types.UID(fmt.Sprintf("uid-%d", c.next)), CreationTimestamp: metav1.NewTime(time.Unix(int64(c.r.Intn(50)), 0)),
		Labels: map[string]string{"app": c.pick("web", "db"), "role": c.pick("a", "b")}},
		Spec: corev1.PodSpec{NodeName: c.pick("n1", "n2"), Containers: []corev1.Container{{Name: "c",
			Ports: []corev1.ContainerPort{{Name: "serve", ContainerPort: int32(80 + c.r.Intn(2)), Protocol: corev1.ProtocolTCP}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	switch c.r.Intn(8) {
	case 0: // no address yet
	case 1:
		p.Spec.HostNetwork = true
		setIPs(p, "192.168.0.1")
	default:
		setIPs(p, c.addr())
	}
	c.put(p)
	return "add " + p.Namespace + "/" + p.Name + " " + p.Status.PodIP
}

func (c *viewChurn) some() *corev1.Pod {
	objs := c.store.List()
	if len(objs) == 0 {
		return nil
	}
	sp := objs[c.r.Intn(len(objs))].(*slim.Pod)
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: sp.Namespace, Name: sp.Name, UID: sp.UID, Labels: sp.Labels,
		CreationTimestamp: metav1.NewTime(time.Unix(sp.Created, 0))},
		Spec:   corev1.PodSpec{NodeName: sp.NodeName, HostNetwork: sp.HostNetwork},
		Status: corev1.PodStatus{Phase: sp.Phase}}
	if sp.Deleted != 0 {
		d := metav1.NewTime(time.Unix(sp.Deleted, 0))
		p.DeletionTimestamp = &d
	}
	for _, port := range sp.Ports {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "c",
			Ports: []corev1.ContainerPort{{Name: port.Name, ContainerPort: port.Port, Protocol: port.Protocol}}})
	}
	for _, a := range sp.IPs {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: a.String()})
	}
	if len(sp.IPs) > 0 {
		p.Status.PodIP = sp.IPs[0].String()
	}
	return p
}

// step makes one random change and says which.
func (c *viewChurn) step() string {
	switch k := c.r.Intn(12); {
	case k < 3:
		return c.addPod()
	case k < 5:
		p := c.some()
		if p == nil {
			return "nothing"
		}
		_ = c.store.Delete(slim.PodOf(p, nil))
		delete(c.ifaces, p.Namespace+"/"+p.Name)
		c.dirty[podKey{p.Namespace, p.Name}] = struct{}{}
		return "delete " + p.Namespace + "/" + p.Name
	case k < 8:
		p := c.some()
		if p == nil {
			return "nothing"
		}
		what := ""
		switch c.r.Intn(5) {
		case 0:
			p.Labels = map[string]string{"app": c.pick("web", "db"), "role": c.pick("a", "b")}
			what = "labels"
		case 1:
			p.Status.Phase = corev1.PodSucceeded
			what = "finished"
		case 2:
			d := metav1.NewTime(time.Unix(60, 0))
			p.DeletionTimestamp = &d
			what = "deleting"
		case 3:
			if !p.Spec.HostNetwork {
				setIPs(p, c.addr())
			}
			what = "address"
		default:
			what = "resync" // the same content, a new object
		}
		c.put(p)
		return what + " " + p.Namespace + "/" + p.Name
	case k < 9: // a local interface changes without any pod event
		for key, i := range c.ifaces {
			i.Addrs = addrsOf(c.addr())
			c.ifaces[key] = i
			return "interface of " + key
		}
		return "nothing"
	case k < 10:
		i := c.r.Intn(len(c.nps))
		np := c.nps[i].DeepCopy()
		np.Spec.Ingress[0].From[0].PodSelector.MatchLabels["role"] = c.pick("a", "b")
		c.nps[i] = np
		return "policy " + np.Name
	case k < 11:
		i := c.r.Intn(len(c.nss))
		ns := c.nss[i].DeepCopy()
		ns.Labels["team"] = c.pick("red", "blue")
		c.nss[i] = ns
		return "namespace " + ns.Name
	}
	return "nothing"
}

func (c *viewChurn) ifaceList() []podlink.Interface {
	out := make([]podlink.Interface, 0, len(c.ifaces))
	for _, i := range c.ifaces {
		out = append(out, i)
	}
	return out
}

func sortedTable(t *testing.T, d *Desired) string {
	t.Helper()
	f := knftables.NewFake(knftables.InetFamily, TableName)
	if _, err := Apply(context.Background(), f, d); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(CanonicalGroupNames(f.Dump()), "\n")
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// TestPodViewMatchesAFullSnapshot: the controller's partial snapshots
// (podView fed the keys of the pod events since the last sync, then
// Compiler.compilePartial) give, after every random change — pods added,
// deleted, relabelled, finished, being deleted, readdressed, contesting
// addresses, local interfaces changing without an event, policies and
// namespace labels changing — the table Compile builds from a complete
// snapshot of the whole cache (SnapshotFromCache).
func TestPodViewMatchesAFullSnapshot(t *testing.T) {
	partials := 0
	for seed := int64(1); seed <= 60; seed++ {
		c := newViewChurn(seed)
		comp := NewCompiler()
		v := newPodView("n1", comp)
		full := true
		var log []string
		for step := 0; step < 60; step++ {
			if step > 0 {
				log = append(log, c.step())
			}
			snap := &Snapshot{NodeName: "n1", Policies: c.nps}
			for _, ns := range c.nss {
				snap.Namespaces = append(snap.Namespaces, NamespaceFromAPI(ns))
			}
			dirty := c.dirty
			c.dirty = map[podKey]struct{}{}
			var got *Desired
			for got == nil {
				pods, removed, err := v.update(c.store, dirty, full, c.ifaceList())
				if err != nil {
					t.Fatal(err)
				}
				snap.Pods = pods
				if full {
					got = comp.Compile(snap)
					break
				}
				snap.partial, snap.removed = true, removed
				d, ok := comp.compilePartial(snap)
				if ok {
					got = d
					partials++
					break
				}
				full, dirty, snap.partial, snap.removed = true, nil, false, nil
			}
			full = false
			var all []*slim.Pod
			for _, o := range c.store.List() {
				all = append(all, o.(*slim.Pod))
			}
			ref := SnapshotFromCache("n1", all, c.nss, c.nps, c.ifaceList())
			if have, want := sortedTable(t, got), sortedTable(t, Compile(ref)); have != want {
				t.Fatalf("seed %d step %d: the partial snapshot's table differs from a full one's after %v:\n%s\n---\n%s",
					seed, step, log, have, want)
			}
		}
	}
	if partials < 1000 {
		t.Fatalf("only %d compilations were partial: the test does not exercise the view", partials)
	}
}
