package fastpath

import (
	"hash/fnv"
	"net/netip"
	"sort"
)

// Link is what the kernel reports about one interface.
type Link struct {
	Index int
	Name  string
	// Pod is set for a pod's host-side interface (internal/podlink).
	Pod bool
	// PodIPv4 is the pod address routed to a pod interface (the plugin's
	// /32 host route); invalid when there is none (yet).
	PodIPv4 netip.Addr
	// PodIPv6 is the pod's IPv6 address routed to it (the /128 host
	// route); invalid when there is none.
	PodIPv6 netip.Addr
}

// Attachment is one program on one interface's tc ingress.
type Attachment struct {
	Index   int
	Name    string
	Program string // ProgFromPod or ProgToPod
}

// State is the fast path's desired kernel state.
type State struct {
	Ifaces map[uint32]Iface
	// PodAddrs maps each local pod's IPv4 address to its interface.
	PodAddrs map[[4]byte]uint32
	// PodAddrs6 maps each local pod's IPv6 address to its interface.
	PodAddrs6 map[[16]byte]uint32
	Attach    []Attachment
}

// Generation is an interface's incarnation in the ifaces map (the Gen
// field): the 32-bit FNV-1a hash of its name. A pod's host-side interface is
// named after its container (podlink.HostName), so a new pod's interface
// that gets the index of a deleted pod's has another generation, and the
// programs' flow cache stops using the verdicts decided for the old one.
// The hash depends on nothing but the name: a restarted agent writes the
// same generations, and established flows keep their cached verdicts.
func Generation(name string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	return h.Sum32()
}

// Desired computes the interface table and the attachments: every pod
// interface gets trellis_from_pod (and, once an address is known, an entry
// saying which source address of each family it owns); every uplink present gets
// trellis_to_pod and an entry allowing it as an egress. Each entry carries
// its interface's Generation.
//
// With encrypted set (encryption: wireguard) no uplink gets an entry:
// trellis_from_pod redirects only to interfaces in the table, so a pod's
// packet to another node always takes the full path, where routing sends
// it into the WireGuard device and strict mode's table sees it; it can
// never leave by an Ethernet uplink unencrypted. Same-node pod to pod
// flows keep the fast path, and trellis_to_pod stays on the uplinks for
// packets arriving for local pods.
func Desired(links []Link, uplinks []string, encrypted bool) State {
	up := map[string]bool{}
	for _, u := range uplinks {
		if u != "" {
			up[u] = true
		}
	}
	s := State{Ifaces: map[uint32]Iface{}, PodAddrs: map[[4]byte]uint32{}, PodAddrs6: map[[16]byte]uint32{}}
	for _, l := range links {
		switch {
		case l.Pod:
			s.Attach = append(s.Attach, Attachment{Index: l.Index, Name: l.Name, Program: ProgFromPod})
			v4, v6 := l.PodIPv4.Is4(), podIPv6(l.PodIPv6)
			if !v4 && !v6 {
				break
			}
			e := Iface{Kind: KindPod, Gen: Generation(l.Name)}
			if v4 {
				e.Ipv4 = be32(l.PodIPv4)
				s.PodAddrs[l.PodIPv4.As4()] = uint32(l.Index)
			}
			if v6 {
				e.Ipv6 = l.PodIPv6.As16()
				s.PodAddrs6[l.PodIPv6.As16()] = uint32(l.Index)
			}
			s.Ifaces[uint32(l.Index)] = e
		case up[l.Name]:
			s.Attach = append(s.Attach, Attachment{Index: l.Index, Name: l.Name, Program: ProgToPod})
			if !encrypted {
				s.Ifaces[uint32(l.Index)] = Iface{Kind: KindUplink, Gen: Generation(l.Name)}
			}
		}
	}
	sort.Slice(s.Attach, func(i, j int) bool { return s.Attach[i].Index < s.Attach[j].Index })
	return s
}

// podIPv6 reports whether a is an IPv6 address a pod may own on the fast
// path: a global (or unique local) unicast address. A link-local address is
// never a pod's routed address, and an IPv4-mapped one is IPv4's.
func podIPv6(a netip.Addr) bool {
	return a.Is6() && !a.Is4In6() && a.IsGlobalUnicast()
}
