package install

import (
	"context"
	"encoding/json"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

func agentDS(image string) *appsv1.DaemonSet {
	sel := map[string]string{"app.kubernetes.io/name": "trellis-agent"}
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: DaemonSetName, Namespace: Namespace, UID: types.UID("ds-uid")},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: AgentContainer, Image: image}}}},
		},
	}
}

// revision is a ControllerRevision as the DaemonSet controller writes it:
// the template as a strategic-merge patch that replaces it.
func revision(t *testing.T, ds *appsv1.DaemonSet, n int64, image string) *appsv1.ControllerRevision {
	t.Helper()
	tmpl := ds.Spec.Template.DeepCopy()
	tmpl.Spec.Containers[0].Image = image
	raw, err := json.Marshal(map[string]any{"spec": map[string]any{"template": tmpl}})
	if err != nil {
		t.Fatal(err)
	}
	ctrl := true
	return &appsv1.ControllerRevision{
		ObjectMeta: metav1.ObjectMeta{Name: DaemonSetName + "-" + image[len(image)-4:], Namespace: Namespace,
			Labels:          map[string]string{"app.kubernetes.io/name": "trellis-agent", revisionHashLabel: image[len(image)-4:]},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: ds.Name, UID: ds.UID, Controller: &ctrl}}},
		Data: runtime.RawExtension{Raw: raw}, Revision: n,
	}
}

func TestUndoPatchesThePreviousRevision(t *testing.T) {
	ds := agentDS("repo:bbbb")
	cs := fake.NewClientset(ds, revision(t, ds, 2, "repo:bbbb"), revision(t, ds, 1, "repo:aaaa"),
		// a revision of another owner must not be picked
		func() *appsv1.ControllerRevision {
			r := revision(t, ds, 3, "repo:cccc")
			r.OwnerReferences[0].UID = "other"
			return r
		}())
	ctx := context.Background()
	image, err := Undo(ctx, cs, DaemonSetName)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cs.AppsV1().DaemonSets(Namespace).Get(ctx, DaemonSetName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if image != "repo:aaaa" || got.Spec.Template.Spec.Containers[0].Image != "repo:aaaa" {
		t.Errorf("Undo rolled back to %q, DaemonSet image %q; want repo:aaaa", image, got.Spec.Template.Spec.Containers[0].Image)
	}
}

func TestUndoWithoutHistoryFails(t *testing.T) {
	ds := agentDS("repo:aaaa")
	cs := fake.NewClientset(ds, revision(t, ds, 1, "repo:aaaa"))
	if _, err := Undo(context.Background(), cs, DaemonSetName); err == nil {
		t.Fatal("Undo with a single revision succeeded")
	}
}

func TestSetImage(t *testing.T) {
	cs := fake.NewClientset(agentDS("repo:aaaa"))
	ctx := context.Background()
	if err := SetImage(ctx, cs, DaemonSetName, "repo:bbbb"); err != nil {
		t.Fatal(err)
	}
	got, _ := cs.AppsV1().DaemonSets(Namespace).Get(ctx, DaemonSetName, metav1.GetOptions{})
	if c := got.Spec.Template.Spec.Containers; len(c) != 1 || c[0].Image != "repo:bbbb" || c[0].Name != AgentContainer {
		t.Errorf("containers after SetImage: %+v", c)
	}
}
