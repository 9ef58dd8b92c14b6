package install

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/trellisnet/trellis/internal/lab/kube"
)

// revisionHashLabel is the label the DaemonSet controller puts on its pods
// and ControllerRevisions.
const revisionHashLabel = "controller-revision-hash"

// NodeTime is how long one node's agent was being replaced: from the moment
// its old pod was seen terminating (or the rollout started, if it was
// already gone) until its new pod was Ready.
type NodeTime struct {
	Node string
	Took time.Duration
}

// Revisions returns the DaemonSet's ControllerRevisions, oldest first.
func Revisions(ctx context.Context, cs kubernetes.Interface, name string) ([]appsv1.ControllerRevision, error) {
	ds, err := cs.AppsV1().DaemonSets(Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading DaemonSet %s/%s: %w", Namespace, name, err)
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("DaemonSet %s selector: %w", name, err)
	}
	list, err := cs.AppsV1().ControllerRevisions(Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("listing ControllerRevisions: %w", err)
	}
	var out []appsv1.ControllerRevision
	for _, r := range list.Items {
		if owner := metav1.GetControllerOf(&r); owner != nil && owner.UID == ds.UID {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Revision < out[j].Revision })
	return out, nil
}

// SetImage points the DaemonSet's agent container (and every other
// container of it) at image; the DaemonSet controller then rolls the nodes.
func SetImage(ctx context.Context, cs kubernetes.Interface, name, image string) error {
	ds, err := cs.AppsV1().DaemonSets(Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading DaemonSet %s/%s: %w", Namespace, name, err)
	}
	var cs1 []map[string]string
	for _, c := range ds.Spec.Template.Spec.Containers {
		cs1 = append(cs1, map[string]string{"name": c.Name, "image": image})
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"spec": map[string]any{"containers": cs1}}}})
	if err != nil {
		return err
	}
	if _, err := cs.AppsV1().DaemonSets(Namespace).Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("patching DaemonSet %s image: %w", name, err)
	}
	return nil
}

// Undo rolls the DaemonSet back to the revision before the current one, as
// `kubectl rollout undo` does: the previous ControllerRevision's template
// patched onto the DaemonSet. It returns the image it rolls back to.
func Undo(ctx context.Context, cs kubernetes.Interface, name string) (string, error) {
	revs, err := Revisions(ctx, cs, name)
	if err != nil {
		return "", err
	}
	if len(revs) < 2 {
		return "", fmt.Errorf("DaemonSet %s has %d revision(s): nothing to roll back to", name, len(revs))
	}
	prev := revs[len(revs)-2]
	if _, err := cs.AppsV1().DaemonSets(Namespace).Patch(ctx, name, types.StrategicMergePatchType, prev.Data.Raw, metav1.PatchOptions{}); err != nil {
		return "", fmt.Errorf("rolling DaemonSet %s back to revision %d: %w", name, prev.Revision, err)
	}
	var tmpl struct {
		Spec struct {
			Template corev1.PodTemplateSpec `json:"template"`
		} `json:"spec"`
	}
	image := ""
	if json.Unmarshal(prev.Data.Raw, &tmpl) == nil {
		for _, c := range tmpl.Spec.Template.Spec.Containers {
			if c.Name == AgentContainer {
				image = c.Image
			}
		}
	}
	return image, nil
}

// WaitRollout waits until every node runs a Ready agent pod of the
// DaemonSet's current revision, and reports per node how long its agent was
// being replaced (nodes whose pod did not change are not listed).
func WaitRollout(ctx context.Context, cs kubernetes.Interface, name string, timeout time.Duration) ([]NodeTime, error) {
	start := time.Now()
	gone := map[string]time.Time{} // node -> when its old pod was first seen terminating or missing
	done := map[string]time.Duration{}
	oldSeen := map[string]bool{}
	err := kube.Poll(ctx, 100*time.Millisecond, timeout, func(ctx context.Context) (bool, error) {
		ds, err := cs.AppsV1().DaemonSets(Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		revs, err := Revisions(ctx, cs, name)
		if err != nil || len(revs) == 0 {
			return false, err
		}
		hash := revs[len(revs)-1].Labels[revisionHashLabel]
		pods, err := cs.CoreV1().Pods(Namespace).List(ctx, metav1.ListOptions{LabelSelector: AgentSelectorOf(ds)})
		if err != nil {
			return false, err
		}
		now := time.Since(start)
		current := map[string]bool{}
		for i := range pods.Items {
			p := &pods.Items[i]
			n := p.Spec.NodeName
			isNew := p.Labels[revisionHashLabel] == hash
			switch {
			case !isNew && p.DeletionTimestamp == nil:
				oldSeen[n] = true
			case !isNew:
				oldSeen[n] = true
				if _, ok := gone[n]; !ok {
					gone[n] = time.Now()
				}
			case p.DeletionTimestamp == nil && kube.PodReady(p):
				current[n] = true
				if _, ok := done[n]; !ok && oldSeen[n] {
					if g, ok := gone[n]; ok {
						done[n] = time.Since(g)
					} else {
						done[n] = now
					}
				}
			}
		}
		for n := range oldSeen {
			if _, ok := gone[n]; !ok && !current[n] && !hasOld(pods.Items, n, hash) {
				gone[n] = time.Now()
			}
		}
		st := ds.Status
		return st.ObservedGeneration >= ds.Generation && st.DesiredNumberScheduled > 0 &&
			st.UpdatedNumberScheduled == st.DesiredNumberScheduled && st.NumberAvailable == st.DesiredNumberScheduled &&
			int32(len(current)) == st.DesiredNumberScheduled, nil
	})
	var out []NodeTime
	for n, d := range done {
		out = append(out, NodeTime{Node: n, Took: d})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	if err != nil {
		return out, fmt.Errorf("DaemonSet %s/%s rollout not complete after %s: %w", Namespace, name, timeout, err)
	}
	return out, nil
}

func hasOld(pods []corev1.Pod, node, hash string) bool {
	for _, p := range pods {
		if p.Spec.NodeName == node && p.Labels[revisionHashLabel] != hash {
			return true
		}
	}
	return false
}

// AgentSelectorOf returns the DaemonSet's pod selector as a string.
func AgentSelectorOf(ds *appsv1.DaemonSet) string {
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return AgentSelector
	}
	return sel.String()
}

// ErrNotInstalled says the lab does not run Trellis as a DaemonSet.
var ErrNotInstalled = errors.New("the lab does not run Trellis as a DaemonSet (it was brought up with --install process)")
