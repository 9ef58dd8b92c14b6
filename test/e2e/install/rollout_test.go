//go:build e2e

package install

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/connectivity"
	"github.com/trellisnet/trellis/internal/lab/install"
	"github.com/trellisnet/trellis/internal/lab/probe"
	"github.com/trellisnet/trellis/test/e2e/framework"
)

// variantImage writes a second image built from the lab's image with an
// extra label: the same binaries, a different content-addressed tag, so
// the DaemonSet rolls when it is pointed at it.
func variantImage(t *testing.T) (string, string) {
	t.Helper()
	src := l.State.Install.ImageTar
	ref0, err := install.ImageRef(src)
	if err != nil {
		t.Fatal(err)
	}
	tag0, err := name.NewTag(ref0)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(src, &tag0)
	if err != nil {
		t.Fatalf("loading %s: %v", src, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	if cf.Config.Labels == nil {
		cf.Config.Labels = map[string]string{}
	}
	cf.Config.Labels["dev.trellis.e2e.variant"] = "rollout"
	img2, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	d, err := img2.Digest()
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(tag0.Context().Name() + ":" + d.Hex[:12])
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "trellis-variant.tar")
	if err := tarball.WriteToFile(out, tag, img2); err != nil {
		t.Fatal(err)
	}
	return out, tag.Name()
}

// isolationProbe probes, continuously, from pods to pods that a default-deny
// policy isolates (every answer is a violation) and to open pods (the
// control: they must keep answering).
type isolationProbe struct {
	probes, violations, controlOK, controlAll atomic.Int64
	mu                                        sync.Mutex
	firstViolation                            string
	stop                                      chan struct{}
	done                                      sync.WaitGroup
}

type probeTarget struct {
	ref, ip string
}

func startIsolationProbe(t *testing.T, from []string, isolated, open []probeTarget) *isolationProbe {
	t.Helper()
	ip := &isolationProbe{stop: make(chan struct{})}
	var srcNS []string
	for _, f := range from {
		srcNS = append(srcNS, l.PodNetns(t, f))
	}
	ip.done.Add(1)
	go func() {
		defer ip.done.Done()
		for {
			select {
			case <-ip.stop:
				return
			default:
			}
			for i, ns := range srcNS {
				for _, d := range isolated {
					ip.probes.Add(1)
					if probe.ProbeFromNetns(ns, probe.Target{Addr: d.ip, Port: 80, Proto: "tcp"}, 300*time.Millisecond) == nil {
						ip.violations.Add(1)
						ip.mu.Lock()
						if ip.firstViolation == "" {
							ip.firstViolation = fmt.Sprintf("%s -> %s at %s", from[i], d.ref, time.Now().Format("15:04:05.000"))
						}
						ip.mu.Unlock()
					}
				}
				for _, d := range open {
					ip.controlAll.Add(1)
					if probe.ProbeFromNetns(ns, probe.Target{Addr: d.ip, Port: 80, Proto: "tcp"}, time.Second) == nil {
						ip.controlOK.Add(1)
					}
				}
			}
		}
	}()
	return ip
}

func (ip *isolationProbe) finish(t *testing.T, what string) {
	t.Helper()
	close(ip.stop)
	ip.done.Wait()
	t.Logf("%s: %d probes of isolated pods, %d answered; control probes %d/%d answered",
		what, ip.probes.Load(), ip.violations.Load(), ip.controlOK.Load(), ip.controlAll.Load())
	if ip.violations.Load() > 0 {
		t.Errorf("%s: an isolated pod answered %d times (first: %s)", what, ip.violations.Load(), ip.firstViolation)
	}
	if ip.probes.Load() < 20 || ip.controlOK.Load() < ip.controlAll.Load()*95/100 {
		t.Errorf("%s: probing did not work: %d isolation probes, control %d/%d", what, ip.probes.Load(), ip.controlOK.Load(), ip.controlAll.Load())
	}
}

// isolate creates a namespace with an agnhost pod per node and a
// default-deny ingress policy, and waits until every node enforces it.
func isolate(t *testing.T, nodes []string, from string) []probeTarget {
	t.Helper()
	ns, pods := createPods(t, "rollout-iso", nil, nodes)
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default-deny", Namespace: ns},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	if _, err := l.CS.NetworkingV1().NetworkPolicies(ns).Create(context.Background(), np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var out []probeTarget
	for _, p := range pods {
		out = append(out, probeTarget{ref: p, ip: l.Pod(t, p).Status.PodIP})
	}
	srcNS := l.PodNetns(t, from)
	deadline := time.Now().Add(20 * time.Second)
	for _, d := range out {
		for probe.ProbeFromNetns(srcNS, probe.Target{Addr: d.ip, Port: 80, Proto: "tcp"}, 300*time.Millisecond) == nil {
			if time.Now().After(deadline) {
				t.Fatalf("the default-deny policy in %s is not enforced on %s after 20s", ns, d.ref)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return out
}

// podDuringRollout creates a pod on node once the rollout has begun, and
// checks it gets Ready and reachable from src.
func podDuringRollout(t *testing.T, ns, node, podName, src string, begun func() bool) <-chan error {
	errc := make(chan error, 1)
	go func() {
		for deadline := time.Now().Add(time.Minute); !begun(); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				errc <- fmt.Errorf("the rollout did not begin within a minute")
				return
			}
		}
		created := time.Now()
		pod := framework.AgnhostPod(ns, framework.PodSpec{Name: podName, Node: node})
		if _, err := l.CS.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
			errc <- err
			return
		}
		for {
			p, err := l.CS.CoreV1().Pods(ns).Get(context.Background(), podName, metav1.GetOptions{})
			if err == nil && p.Status.PodIP != "" && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].Ready {
				srcNS, err := probe.PodNetns(mustPod(src))
				if err != nil {
					errc <- err
					return
				}
				for i := 0; ; i++ {
					err := probe.ProbeFromNetns(srcNS, probe.Target{Addr: p.Status.PodIP, Port: 80, Proto: "tcp"}, time.Second)
					if err == nil {
						t.Logf("pod %s/%s created on %s during the rollout: Ready and reachable from %s after %s",
							ns, podName, node, src, time.Since(created).Round(time.Millisecond))
						errc <- nil
						return
					}
					if i == 10 {
						errc <- fmt.Errorf("pod %s/%s (%s) created during the rollout is not reachable from %s: %v", ns, podName, p.Status.PodIP, src, err)
						return
					}
					time.Sleep(time.Second)
				}
			}
			if time.Since(created) > 2*time.Minute {
				errc <- fmt.Errorf("pod %s/%s created on %s during the rollout not Ready after 2m", ns, podName, node)
				return
			}
			time.Sleep(250 * time.Millisecond)
		}
	}()
	return errc
}

func mustPod(ref string) *corev1.Pod {
	ns, n, _ := connectivity.SplitPodRef(ref)
	p, err := l.CS.CoreV1().Pods(ns).Get(context.Background(), n, metav1.GetOptions{})
	if err != nil {
		return &corev1.Pod{}
	}
	return p
}

// rolling reports whether the DaemonSet is replacing pods (some node runs
// an old revision while the new one is the template).
func rolling() bool {
	ds, err := l.CS.AppsV1().DaemonSets(install.Namespace).Get(context.Background(), install.DaemonSetName, metav1.GetOptions{})
	if err != nil {
		return false
	}
	return ds.Status.ObservedGeneration >= ds.Generation && ds.Status.UpdatedNumberScheduled < ds.Status.DesiredNumberScheduled
}

// A rolling update of the agent DaemonSet to a new image, then a rollback:
// long-lived TCP streams between pods on every pair of nodes see no reset
// and under 1% UDP loss, a default-deny namespace is never reachable, and
// pods created while the agents are being replaced are wired.
func TestE2EInstallRollingUpdateAndRollback(t *testing.T) {
	requireDaemonSet(t)
	nodes := l.Nodes()
	ns, pods := createPods(t, "rollout", nil, nodes)
	iso := isolate(t, nodes, pods[0])
	var open []probeTarget
	for _, p := range pods {
		open = append(open, probeTarget{ref: p, ip: l.Pod(t, p).Status.PodIP})
	}
	before := agentDaemonSet(t).Spec.Template.Spec.Containers[0].Image
	tarPath, ref := variantImage(t)
	t.Logf("rolling %s -> %s and back", before, ref)

	type pair struct {
		what string
		s    *framework.Stream
	}
	var streams []pair
	for i := range pods {
		for j := i + 1; j < len(pods); j++ {
			s := l.StartStream(t, pods[i], pods[j], 19000+10*len(streams))
			streams = append(streams, pair{fmt.Sprintf("stream %s (%s) -> %s (%s)", pods[i], nodes[i], pods[j], nodes[j]), s})
		}
	}
	ip := startIsolationProbe(t, pods, iso, open)
	time.Sleep(2 * time.Second)

	during := podDuringRollout(t, ns, nodes[len(nodes)-1], "during-upgrade", pods[0], rolling)
	up := labCmd(t, "upgrade", "--image-tar", tarPath)
	if err := <-during; err != nil {
		t.Error(err)
	}
	if got := agentDaemonSet(t).Spec.Template.Spec.Containers[0].Image; got != ref {
		t.Errorf("after upgrade the DaemonSet runs %s, want %s", got, ref)
	}
	time.Sleep(2 * time.Second)
	during = podDuringRollout(t, ns, nodes[0], "during-rollback", pods[1], rolling)
	down := labCmd(t, "rollback")
	if err := <-during; err != nil {
		t.Error(err)
	}
	if got := agentDaemonSet(t).Spec.Template.Spec.Containers[0].Image; got != before {
		t.Errorf("after rollback the DaemonSet runs %s, want %s", got, before)
	}
	time.Sleep(2 * time.Second)

	ip.finish(t, "isolation through the upgrade and the rollback")
	resets, maxLoss := 0, 0.0
	for _, p := range streams {
		loss, failed := p.s.Finish(t, p.what+" through the upgrade and the rollback")
		if failed {
			resets++
		}
		maxLoss = max(maxLoss, loss)
	}
	t.Logf("rollout figures: %d streams, %d reset or incomplete, max UDP loss %.2f%%; %s; %s", len(streams), resets, maxLoss,
		lastLine(up), lastLine(down))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
