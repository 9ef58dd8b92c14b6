//go:build e2e

package framework

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trellisnet/trellis/internal/connectivity"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// Families are the lab cluster's IP families, primary first: [ipv4] in an
// IPv4 lab, [ipv4 ipv6] in a dual-stack one, [ipv6] in an IPv6-only one.
func (l *Lab) Families() []topology.ClusterFamily { return l.State.Topology.ClusterFamilies() }

// FamilyAddr is p's address of family f (PodIPs are one per family at
// most); false when p has none.
func FamilyAddr(p *corev1.Pod, f topology.ClusterFamily) (netip.Addr, bool) {
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil && a.Is6() == f.IPv6 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// PodAddr is the address of family f of pod ref (NS/POD); it fails t when
// the pod has none.
func (l *Lab) PodAddr(t testing.TB, ref string, f topology.ClusterFamily) netip.Addr {
	t.Helper()
	p := l.Pod(t, ref)
	a, ok := FamilyAddr(p, f)
	if !ok {
		t.Fatalf("pod %s has no %s address (podIPs %v)", ref, f.Name(), p.Status.PodIPs)
	}
	return a
}

// HostAddr is h's underlay address of family f.
func HostAddr(h topology.Host, f topology.ClusterFamily) netip.Addr {
	if f.IPv6 {
		return h.Addr6
	}
	return h.Addr
}

// FamilyProber probes between lab pods over one IP family: a pod target
// (NS/POD) is resolved to its address of that family, not to its primary
// one; an address target is probed as it is.
type FamilyProber struct {
	CS     kubernetes.Interface
	Inner  connectivity.Prober
	Family topology.ClusterFamily
}

var _ connectivity.Prober = FamilyProber{}

// Probe implements connectivity.Prober.
func (p FamilyProber) Probe(ctx context.Context, from, to string, port int, proto string) (bool, error) {
	if _, err := netip.ParseAddr(to); err == nil {
		return p.Inner.Probe(ctx, from, to, port, proto)
	}
	ns, name, err := connectivity.SplitPodRef(to)
	if err != nil {
		return false, err
	}
	pod, err := p.CS.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("target pod %s: %w", to, err)
	}
	a, ok := FamilyAddr(pod, p.Family)
	if !ok {
		return false, fmt.Errorf("target pod %s has no %s address (podIPs %v)", to, p.Family.Name(), pod.Status.PodIPs)
	}
	return p.Inner.Probe(ctx, from, a.String(), port, proto)
}

// ProberFor is the lab's prober over family f.
func (l *Lab) ProberFor(f topology.ClusterFamily) FamilyProber {
	return FamilyProber{CS: l.CS, Inner: l.Prober, Family: f}
}

// ExpectMatrixFamily is ExpectMatrix over family f: every pod is probed at
// its address of that family.
func (l *Lab) ExpectMatrixFamily(t testing.TB, f topology.ClusterFamily, pods []string, port int, proto string, expected *connectivity.Matrix) {
	t.Helper()
	observed, err := connectivity.Expect(context.Background(), l.ProberFor(f), expected, port, proto, 3)
	if err != nil {
		t.Fatalf("probing over %s: %v", f.Name(), err)
	}
	if expected.Diff(observed) == 0 {
		t.Logf("%s %d/%s truth table as expected over %d pods", f.Name(), port, proto, len(pods))
		return
	}
	t.Errorf("%s %d/%s connectivity differs from the expectation:\n%s", f.Name(), port, proto, connectivity.Report(expected, observed))
}
