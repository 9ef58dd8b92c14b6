package netlinkprog

import "sync/atomic"

// Ops counts the netlink operations a Programmer issued for routes, FDB
// and neighbour entries since it was created: what a sync costs the
// kernel, independent of timing.
type Ops struct {
	// Dumps are full listings (routes of the table, FDB or neighbours of
	// the VXLAN device).
	Dumps uint64
	// Writes are entries added or replaced.
	Writes uint64
	// Deletes are entries removed.
	Deletes uint64
}

type opCounters struct {
	dumps, writes, deletes atomic.Uint64
}

// Ops returns the operations issued so far.
func (n *Programmer) Ops() Ops {
	return Ops{Dumps: n.ops.dumps.Load(), Writes: n.ops.writes.Load(), Deletes: n.ops.deletes.Load()}
}

// Sub is o - prev, the operations issued between two calls of Ops.
func (o Ops) Sub(prev Ops) Ops {
	return Ops{Dumps: o.Dumps - prev.Dumps, Writes: o.Writes - prev.Writes, Deletes: o.Deletes - prev.Deletes}
}
