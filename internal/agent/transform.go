package agent

import (
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
)

// trimForCache drops what no controller of the agent reads before objects
// enter the informer caches: managedFields on every object, and a Node's
// image list (kubelet reports every image it holds, often the largest part
// of a Node). It keeps the agent's memory proportional to what it uses.
func trimForCache(obj any) (any, error) {
	if acc, err := meta.Accessor(obj); err == nil {
		acc.SetManagedFields(nil)
	}
	if n, ok := obj.(*v1.Node); ok {
		n.Status.Images = nil
	}
	return obj, nil
}
