// Package probe is the lab's connectivity.Prober: it probes between lab pods
// from inside their network namespaces (found through the lab's cgroups, no
// process per probe), including a raw-packet SCTP probe for this kernel,
// which has no SCTP sockets.
package probe

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trellisnet/trellis/internal/connectivity"
	"github.com/trellisnet/trellis/internal/lab/proc"
	"github.com/trellisnet/trellis/internal/lab/state"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// Target is what a probe connects to.
type Target struct {
	Addr  string // IP address
	Port  int
	Proto string // tcp or udp
}

// PodNetns returns the path of the network namespace of a running pod, found
// through its first running container's cgroup (the lab's kubelets put pod
// containers below /trellis-lab[-<name>]/<node>/kubepods/.../<container-id>).
func PodNetns(pod *corev1.Pod) (string, error) {
	for _, cs := range pod.Status.ContainerStatuses {
		if pids, err := ContainerPIDs(pod, cs.Name); err == nil {
			return fmt.Sprintf("/proc/%d/ns/net", pids[0]), nil
		}
	}
	return "", fmt.Errorf("pod %s/%s has no running container to probe from", pod.Namespace, pod.Name)
}

// ContainerPIDs returns the processes of a pod's running container (the
// container's own process first), found through the container's cgroup.
func ContainerPIDs(pod *corev1.Pod, container string) ([]int, error) {
	if pod.Spec.NodeName == "" {
		return nil, fmt.Errorf("pod %s/%s is not scheduled", pod.Namespace, pod.Name)
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name != container || cs.State.Running == nil {
			continue
		}
		_, id, ok := strings.Cut(cs.ContainerID, "://")
		if !ok {
			continue
		}
		procs := ""
		roots, _ := filepath.Glob(filepath.Join(proc.CgroupFS, "pids", state.CgroupBase+"*", pod.Spec.NodeName))
		for _, r := range roots {
			if procs = findCgroupProcs(r, id); procs != "" {
				break
			}
		}
		if procs == "" {
			continue
		}
		data, err := os.ReadFile(procs)
		if err != nil {
			continue
		}
		var pids []int
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		if len(pids) > 0 {
			return rootFirst(pids), nil
		}
	}
	return nil, fmt.Errorf("pod %s/%s has no running container %s", pod.Namespace, pod.Name, container)
}

// rootFirst moves the container's own process (the one whose parent is not
// in the container) to the front: cgroup.procs is not ordered, and a child
// the container runs (an nft the agent execs) may be listed first.
func rootFirst(pids []int) []int {
	in := map[int]bool{}
	for _, p := range pids {
		in[p] = true
	}
	for i, p := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at the last ')'.
		f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
		if len(f) > 1 {
			if ppid, err := strconv.Atoi(f[1]); err == nil && !in[ppid] {
				pids[0], pids[i] = pids[i], pids[0]
				break
			}
		}
	}
	return pids
}

// findCgroupProcs finds the cgroup.procs of the container cgroup named id
// below root (kubepods/<qos>/pod<uid>/<id>).
func findCgroupProcs(root, id string) string {
	found := ""
	_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || found != "" {
			return filepath.SkipDir
		}
		if d.IsDir() && d.Name() == id {
			found = filepath.Join(path, "cgroup.procs")
			return filepath.SkipAll
		}
		return nil
	})
	return found
}

// ProbeFromNetns connects to t from inside the network namespace at nsPath:
// TCP succeeds on an established connection; UDP succeeds when agnhost's
// netexec UDP server answers "hostname".
func ProbeFromNetns(nsPath string, t Target, timeout time.Duration) error {
	addr := net.JoinHostPort(t.Addr, strconv.Itoa(t.Port))
	conn, err := topology.DialInNetns(nsPath, t.Proto, addr, timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	if t.Proto != "udp" {
		return nil
	}
	buf := make([]byte, 512)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := conn.Write([]byte("hostname")); err != nil {
			return err
		}
		_ = conn.SetReadDeadline(time.Now().Add(min(300*time.Millisecond, time.Until(deadline))))
		n, err := conn.Read(buf)
		if err == nil && n > 0 {
			return nil
		}
	}
	return fmt.Errorf("no UDP answer from %s", addr)
}

// Netns probes between lab pods from inside the source pod's network
// namespace.
type Netns struct {
	CS      kubernetes.Interface
	Timeout time.Duration
}

var _ connectivity.Prober = Netns{}

// Probe implements connectivity.Prober.
func (pr Netns) Probe(ctx context.Context, src, target string, port int, proto string) (bool, error) {
	ns, name, err := connectivity.SplitPodRef(src)
	if err != nil {
		return false, err
	}
	pod, err := pr.CS.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("source pod %s: %w", src, err)
	}
	nsPath, err := PodNetns(pod)
	if err != nil {
		return false, err
	}
	addr, err := connectivity.ResolveTarget(ctx, pr.CS, target)
	if err != nil {
		return false, err
	}
	timeout := pr.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	if proto == "sctp" {
		return pr.probeSCTP(ctx, nsPath, addr, port, timeout)
	}
	return ProbeFromNetns(nsPath, Target{Addr: addr, Port: port, Proto: proto}, timeout) == nil, nil
}

// probeSCTP sends a crafted INIT from the source namespace and watches for
// it in the namespace of the pod that owns addr.
func (pr Netns) probeSCTP(ctx context.Context, srcNS, addr string, port int, timeout time.Duration) (bool, error) {
	dst, err := netip.ParseAddr(addr)
	if err != nil {
		return false, fmt.Errorf("%w: %q is not an IP address", connectivity.ErrUsage, addr)
	}
	pods, err := pr.CS.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "status.podIP=" + addr})
	if err != nil {
		return false, fmt.Errorf("finding the pod with %s: %w", addr, err)
	}
	for i := range pods.Items {
		if dstNS, err := PodNetns(&pods.Items[i]); err == nil {
			return ProbeSCTP(srcNS, dstNS, dst, uint16(port), timeout)
		}
	}
	return false, fmt.Errorf("%w: SCTP probes need a lab pod as the target (%s is none)", connectivity.ErrUsage, addr)
}
