package slim

import (
	"slices"
	"strconv"
	"sync"

	corev1 "k8s.io/api/core/v1"
)

// Interner shares equal strings, label sets and port lists between the objects
// it converts: the namespace of 10,000 pods, the node names they run on,
// and the label set the pods of one ReplicaSet all carry, are then held
// once. It is safe for concurrent use; a nil Interner shares nothing.
//
// It forgets everything it holds whenever it has grown to twice the size
// it had after the previous reset (at least minEntries), so the values of
// objects long gone (old pod-template-hash labels, deleted namespaces) are
// not held forever: the objects already converted keep their (shared)
// values, new ones share from then on among themselves.
type Interner struct {
	mu      sync.Mutex
	strs    map[string]string
	sets    map[string]map[string]string
	ports   map[string][]Port
	limit   int
	scratch []string
}

// minEntries is the smallest size at which an Interner resets.
const minEntries = 1 << 14

// NewInterner returns an empty Interner.
func NewInterner() *Interner {
	return &Interner{strs: map[string]string{}, sets: map[string]map[string]string{}, ports: map[string][]Port{}, limit: minEntries}
}

// String returns the held copy of s (s itself the first time).
func (in *Interner) String(s string) string {
	if in == nil || s == "" {
		return s
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.str(s)
}

func (in *Interner) str(s string) string {
	if held, ok := in.strs[s]; ok {
		return held
	}
	in.grow()
	in.strs[s] = s
	return s
}

// grow makes room for one more entry, resetting when the limit is reached.
func (in *Interner) grow() {
	n := len(in.strs) + len(in.sets) + len(in.ports)
	if n < in.limit {
		return
	}
	in.limit = max(minEntries, 2*n)
	in.strs, in.sets, in.ports = map[string]string{}, map[string]map[string]string{}, map[string][]Port{}
}

// Labels returns a label set equal to l that may be shared with other
// objects (nil for an empty one); its keys and values are interned.
func (in *Interner) Labels(l map[string]string) map[string]string {
	if len(l) == 0 {
		return nil
	}
	if in == nil {
		return l
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	keys := in.scratch[:0]
	for k := range l {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	// The set's identity: each key and value preceded by its length, so
	// unambiguous whatever the strings hold.
	var id []byte
	for _, k := range keys {
		id = strconv.AppendInt(id, int64(len(k)), 10)
		id = append(append(id, ':'), k...)
		id = strconv.AppendInt(id, int64(len(l[k])), 10)
		id = append(append(id, ':'), l[k]...)
	}
	in.scratch = keys[:0]
	if held, ok := in.sets[string(id)]; ok { // no allocation for the lookup
		return held
	}
	in.grow()
	out := make(map[string]string, len(l))
	for _, k := range keys {
		out[in.str(k)] = in.str(l[k])
	}
	in.sets[string(id)] = out
	return out
}

// Ports returns a list equal to ports that may be shared with other
// objects (nil for an empty one), its names interned.
func (in *Interner) Ports(ports []Port) []Port {
	if len(ports) == 0 {
		return nil
	}
	if in == nil {
		return ports
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	var id []byte
	for _, p := range ports {
		id = strconv.AppendInt(id, int64(len(p.Name)), 10)
		id = append(append(id, ':'), p.Name...)
		id = append(append(id, ':'), p.Protocol...)
		id = strconv.AppendInt(append(id, ':'), int64(p.Port), 10)
		id = append(id, ';')
	}
	if held, ok := in.ports[string(id)]; ok {
		return held
	}
	in.grow()
	out := make([]Port, len(ports))
	for i, p := range ports {
		out[i] = Port{Name: in.str(p.Name), Protocol: corev1.Protocol(in.str(string(p.Protocol))), Port: p.Port}
	}
	in.ports[string(id)] = out
	return out
}
