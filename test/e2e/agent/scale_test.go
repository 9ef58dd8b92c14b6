//go:build e2e

package agent

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/trellisnet/trellis/internal/lab/images"
)

// agentMem reads the agent's resident set on node in MiB: total (VmRSS),
// anonymous (its own heap, stacks, runtime) and file-backed (pages of the
// executable, shared with the page cache).
type mem struct{ total, anon, file float64 }

func agentMem(t *testing.T, node string) mem {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", agentPID(t, node)))
	if err != nil {
		t.Fatal(err)
	}
	var m mem
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "VmRSS:":
			m.total = float64(kb) / 1024
		case "RssAnon:":
			m.anon = float64(kb) / 1024
		case "RssFile:":
			m.file = float64(kb) / 1024
		}
	}
	return m
}

// agentSmaps returns the agent's /proc/<pid>/smaps_rollup figures that
// explain its resident set (Rss, Anonymous, AnonHugePages, FilePmdMapped,
// Pss_File), for the log.
func agentSmaps(t *testing.T, node string) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", agentPID(t, node)))
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (f[0] == "Rss:" || f[0] == "Anonymous:" || f[0] == "AnonHugePages:" || f[0] == "FilePmdMapped:" || f[0] == "Pss_File:") {
			out = append(out, f[0]+" "+f[1]+" kB")
		}
	}
	return strings.Join(out, ", ")
}

// parallel runs f(i) for i in [0,n) on 16 workers and returns the first error.
func parallel(n int, f func(i int) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

// Agent memory while watching 100 nodes and 2,000 pods (97 nodes and all
// the pods exist only in the API). Target: under 40 MiB.
func TestE2EAgentMemoryAt100Nodes2000Pods(t *testing.T) {
	requireAgent(t)
	const ghosts, pods = 97, 2000
	ctx := context.Background()
	node := l.Nodes()[0]
	before := agentMem(t, node)
	base := l.NodeHost(t, node).Addr.As4()
	t.Cleanup(func() {
		_ = parallel(ghosts, func(i int) error {
			return l.CS.CoreV1().Nodes().Delete(context.Background(), fmt.Sprintf("e2e-scale-%d", i), metav1.DeleteOptions{})
		})
	})
	start := time.Now()
	err := parallel(ghosts, func(i int) error {
		name := fmt.Sprintf("e2e-scale-%d", i)
		cidr := fmt.Sprintf("10.244.%d.0/24", 100+i)
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}}}
		if _, err := l.CS.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			return err
		}
		// Half on the first node's subnet (native path), half elsewhere (VXLAN in auto).
		addr := netip.AddrFrom4([4]byte{base[0], base[1], base[2] + byte(i%2)*100, byte(10 + i)})
		patch := fmt.Sprintf(`{"status":{"addresses":[{"type":"InternalIP","address":%q}]}}`, addr)
		_, err := l.CS.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "status")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	nsName := l.Namespace(t, "agent-scale", nil)
	zero := int64(0)
	t.Cleanup(func() {
		_ = l.CS.CoreV1().Pods(nsName).DeleteCollection(context.Background(),
			metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
	})
	err = parallel(pods, func(i int) error {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s%d", i), Namespace: nsName, Labels: map[string]string{"app": fmt.Sprintf("a%d", i%50)}},
			Spec: corev1.PodSpec{NodeName: fmt.Sprintf("e2e-scale-%d", i%ghosts), TerminationGracePeriodSeconds: &zero,
				Containers: []corev1.Container{{Name: "c", Image: images.AgnhostImage}}},
		}
		_, err := l.CS.CoreV1().Pods(nsName).Create(ctx, p, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("created %d nodes and %d pods in %v", ghosts, pods, time.Since(start).Round(time.Second))
	dp := nodeDataplane(t, node)
	want := ghosts
	if mode() == "native" {
		want = (ghosts + 1) / 2 // only the same-subnet half is routable
	}
	eventually(t, 60*time.Second, "routes to the scale nodes on "+node, func() bool {
		rs, err := dp.ListRoutes()
		return err == nil && len(rs) >= want
	})
	// Let informers, the policy controller and the GC settle.
	var peak mem
	for i := 0; i < 10; i++ {
		time.Sleep(time.Second)
		m := agentMem(t, node)
		if m.total > peak.total {
			peak = m
		}
	}
	t.Logf("agent memory on %s before: RSS %.1f MiB (anonymous %.1f, executable pages %.1f)", node, before.total, before.anon, before.file)
	t.Logf("agent memory on %s watching 100 nodes and %d pods, peak of 10 samples over 10 s: RSS %.1f MiB (anonymous %.1f, executable pages %.1f); issue target RSS < 40 MiB: %s",
		node, pods, peak.total, peak.anon, peak.file, map[bool]string{true: "met", false: "MISSED"}[peak.total < 40])
	t.Logf("agent smaps_rollup on %s: %s", node, agentSmaps(t, node))
	// The figure is the whole resident set (VmRSS): the agent's own
	// memory plus the pages of its executable.
	if peak.total >= 40 {
		t.Errorf("agent RSS %.1f MiB (anonymous %.1f, executable pages %.1f) at 100 nodes / %d pods, want < 40 MiB",
			peak.total, peak.anon, peak.file, pods)
	}
}
