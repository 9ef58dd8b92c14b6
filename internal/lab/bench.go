package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trellisnet/trellis/internal/lab/images"
	"github.com/trellisnet/trellis/internal/lab/kube"
	"github.com/trellisnet/trellis/internal/lab/proc"
	"github.com/trellisnet/trellis/internal/lab/state"
)

// BenchPods creates n agnhost pods in a fresh namespace (kube-scheduler
// spreads them), waits until all are Ready, reports the time, and deletes
// the namespace.
func BenchPods(ctx context.Context, cs kubernetes.Interface, n int, timeout time.Duration, w io.Writer) (time.Duration, error) {
	ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "bench-"}}, metav1.CreateOptions{})
	if err != nil {
		return 0, fmt.Errorf("creating namespace: %w", err)
	}
	defer func() {
		_ = cs.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	}()
	zero := int64(0)
	start := time.Now()
	for i := 0; i < n; i++ {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%03d", i), Labels: map[string]string{"bench": ns.Name}},
			Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &zero, Containers: []corev1.Container{{
				Name: "agnhost", Image: images.AgnhostImage, ImagePullPolicy: corev1.PullIfNotPresent,
				Args: []string{"netexec", "--http-port=80", "--udp-port=81"},
			}}},
		}
		if _, err := cs.CoreV1().Pods(ns.Name).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			return 0, fmt.Errorf("creating pod %d: %w", i, err)
		}
	}
	perNode := map[string]int{}
	err = kube.Poll(ctx, 250*time.Millisecond, timeout, func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().Pods(ns.Name).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		ready := 0
		clear(perNode)
		for i := range list.Items {
			if kube.PodReady(&list.Items[i]) {
				ready++
				perNode[list.Items[i].Spec.NodeName]++
			}
		}
		return ready == n, nil
	})
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("%d pods not Ready after %s: %w", n, timeout, err)
	}
	fmt.Fprintf(w, "%d pods Ready in %s (per node: %v)\n", n, took.Round(10*time.Millisecond), perNode)
	return took, nil
}

// Memory prints the memory (PSS) of every lab process, grouped by
// component (control plane, and per node: containerd, kubelet, kube-proxy,
// trellis-agent, shims, pod processes).
func Memory(p state.Paths, w io.Writer) error {
	root := filepath.Join(proc.CgroupFS, "pids", p.CgroupRoot())
	type agg struct {
		procs int
		kib   int64
	}
	by := map[string]*agg{}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		where := strings.SplitN(rel, "/", 2)[0]
		pod := strings.Contains(rel, "kubepods")
		data, _ := os.ReadFile(path)
		for _, f := range strings.Fields(string(data)) {
			pid, _ := strconv.Atoi(f)
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			name := strings.TrimSpace(string(comm))
			if pod && !IsAgent(name) { // the agent pod counts as the agent
				name = "pods"
			}
			key := where + "\t" + name
			if by[key] == nil {
				by[key] = &agg{}
			}
			by[key].procs++
			by[key].kib += rssKiB(pid)
		}
		return nil
	})
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(by))
	var total int64
	for k, a := range by {
		keys = append(keys, k)
		total += a.kib
	}
	sort.Strings(keys)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WHERE\tPROCESS\tCOUNT\tPSS MiB")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%d\t%.1f\n", k, by[k].procs, float64(by[k].kib)/1024)
	}
	fmt.Fprintf(tw, "total\t\t\t%.1f\n", float64(total)/1024)
	return tw.Flush()
}

// rssKiB returns the proportional set size of pid (shared pages, such as
// one binary mapped by many pods, are divided among their users), falling
// back to VmRSS when smaps_rollup is unavailable.
func rssKiB(pid int) int64 {
	for _, src := range [][2]string{{"smaps_rollup", "Pss:"}, {"status", "VmRSS:"}} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, src[0]))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == src[1] {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				return v
			}
		}
	}
	return 0
}
