// Package slim holds the agent's compact copies of API objects: what its
// informer caches keep instead of the decoded core/v1 structs, which are
// sized for every field the API has (a Pod's struct alone is ~1.7 KiB
// before any of its strings). A slim object keeps only the fields some
// controller reads, as plain values (addresses parsed once, timestamps as
// integers), and shares its repeated strings and label sets with other
// objects through an Interner.
//
// Slim objects satisfy metav1.Object and runtime.Object, so that the
// informers key, index and hand them out like API objects. Like every
// object in an informer cache they are read-only: their label maps are
// shared between objects.
package slim

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Meta is the object metadata a slim object keeps: identity, version,
// labels and the two timestamps, as Unix nanoseconds (0: not set).
// It implements metav1.Object; the setters of fields it does not keep do
// nothing and their getters return the zero value.
type Meta struct {
	Namespace, Name string
	// UID is empty where no reader needs it (see the converters).
	UID             types.UID
	ResourceVersion string
	// Labels are shared with other objects holding the same set: never
	// modify them.
	Labels map[string]string
	// Created and Deleted are the creation and deletion timestamps in
	// Unix nanoseconds; Deleted is 0 unless the object is being deleted.
	Created, Deleted int64
}

var _ metav1.Object = (*Meta)(nil)

func metaOf(m *metav1.ObjectMeta, in *Interner) Meta {
	out := Meta{Namespace: in.String(m.Namespace), Name: m.Name, UID: m.UID, ResourceVersion: m.ResourceVersion,
		Labels: in.Labels(m.Labels), Created: nanos(&m.CreationTimestamp)}
	if m.DeletionTimestamp != nil {
		out.Deleted = max(1, nanos(m.DeletionTimestamp))
	}
	return out
}

func nanos(t *metav1.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func timeOf(ns int64) metav1.Time {
	if ns == 0 {
		return metav1.Time{}
	}
	return metav1.NewTime(time.Unix(0, ns))
}

func (m *Meta) GetNamespace() string                          { return m.Namespace }
func (m *Meta) SetNamespace(s string)                         { m.Namespace = s }
func (m *Meta) GetName() string                               { return m.Name }
func (m *Meta) SetName(s string)                              { m.Name = s }
func (m *Meta) GetGenerateName() string                       { return "" }
func (m *Meta) SetGenerateName(string)                        {}
func (m *Meta) GetUID() types.UID                             { return m.UID }
func (m *Meta) SetUID(u types.UID)                            { m.UID = u }
func (m *Meta) GetResourceVersion() string                    { return m.ResourceVersion }
func (m *Meta) SetResourceVersion(s string)                   { m.ResourceVersion = s }
func (m *Meta) GetGeneration() int64                          { return 0 }
func (m *Meta) SetGeneration(int64)                           {}
func (m *Meta) GetSelfLink() string                           { return "" }
func (m *Meta) SetSelfLink(string)                            {}
func (m *Meta) GetCreationTimestamp() metav1.Time             { return timeOf(m.Created) }
func (m *Meta) SetCreationTimestamp(t metav1.Time)            { m.Created = nanos(&t) }
func (m *Meta) GetDeletionGracePeriodSeconds() *int64         { return nil }
func (m *Meta) SetDeletionGracePeriodSeconds(*int64)          {}
func (m *Meta) GetLabels() map[string]string                  { return m.Labels }
func (m *Meta) SetLabels(l map[string]string)                 { m.Labels = l }
func (m *Meta) GetAnnotations() map[string]string             { return nil }
func (m *Meta) SetAnnotations(map[string]string)              {}
func (m *Meta) GetFinalizers() []string                       { return nil }
func (m *Meta) SetFinalizers([]string)                        {}
func (m *Meta) GetOwnerReferences() []metav1.OwnerReference   { return nil }
func (m *Meta) SetOwnerReferences([]metav1.OwnerReference)    {}
func (m *Meta) GetManagedFields() []metav1.ManagedFieldsEntry { return nil }
func (m *Meta) SetManagedFields([]metav1.ManagedFieldsEntry)  {}

// GetDeletionTimestamp is nil unless the object is being deleted.
func (m *Meta) GetDeletionTimestamp() *metav1.Time {
	if m.Deleted == 0 {
		return nil
	}
	t := timeOf(m.Deleted)
	return &t
}

// SetDeletionTimestamp sets or (nil) clears the deletion timestamp.
func (m *Meta) SetDeletionTimestamp(t *metav1.Time) {
	m.Deleted = 0
	if t != nil {
		m.Deleted = max(1, nanos(t))
	}
}
