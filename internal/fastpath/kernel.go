package fastpath

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/trellisnet/trellis/internal/podlink"
)

// FilterPriority is the tc priority of the fast path's filters on ingress.
// Every other filter keeps working: the programs return TC_ACT_UNSPEC for
// what they do not redirect, so later filters still see the packet.
const FilterPriority = 0x7e11

// filterHandle is the handle of the fast path's filter at FilterPriority.
const filterHandle = 0x1

// PodInterfaces is where the fast path learns the local pod interfaces
// (the agent's podlink.Watcher).
type PodInterfaces interface {
	PodInterfaces() ([]podlink.Interface, error)
}

// Kernel programs the fast path with netlink (tc) and the BPF maps. The zero
// Handle uses the calling thread's network namespace; a nil Pods lists the
// pod interfaces through Handle on every sync.
type Kernel struct {
	Handle *netlink.Handle
	Pods   PodInterfaces
}

func (k *Kernel) h() *netlink.Handle {
	if k.Handle != nil {
		return k.Handle
	}
	return &netlink.Handle{}
}

// Links lists the node's interfaces, marking the pod interfaces with the
// pod address routed to each (read through internal/podlink).
func (k *Kernel) Links() ([]Link, error) {
	var pods []podlink.Interface
	var err error
	if k.Pods != nil {
		pods, err = k.Pods.PodInterfaces()
	} else {
		pods, err = podlink.List(k.Handle)
	}
	if err != nil {
		return nil, fmt.Errorf("pod interfaces: %w", err)
	}
	ls, err := netlinksafe.Handle{Handle: k.h()}.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	byIndex := map[int]podlink.Interface{}
	for _, p := range pods {
		byIndex[p.Index] = p
	}
	out := make([]Link, 0, len(ls))
	for _, l := range ls {
		a := l.Attrs()
		// A pod interface newer than the watched list is attached at once;
		// its address follows at the sync its notification triggers.
		link := Link{Index: a.Index, Name: a.Name, Pod: podlink.IsHostName(a.Name)}
		if p, ok := byIndex[a.Index]; ok && p.Name == a.Name {
			link.PodIPv4, _ = p.IPv4()
			link.PodIPv6 = firstIPv6(p.Addrs)
		}
		out = append(out, link)
	}
	return out, nil
}

// firstIPv6 returns the first of addrs a pod may own on the fast path
// (podIPv6), or the invalid Addr.
func firstIPv6(addrs []netip.Addr) netip.Addr {
	for _, a := range addrs {
		if podIPv6(a) {
			return a
		}
	}
	return netip.Addr{}
}

// Attached reports, per interface index, the BPF program ID of the fast
// path's filter on its ingress (only interfaces that have one).
func (k *Kernel) Attached(links []Link) (map[int]uint32, error) {
	out := map[int]uint32{}
	for _, l := range links {
		f, err := k.ourFilter(l.Index)
		if err != nil {
			return nil, err
		}
		if f != nil {
			out[l.Index] = uint32(f.Id)
		}
	}
	return out, nil
}

func (k *Kernel) ourFilter(index int) (*netlink.BpfFilter, error) {
	link := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: index}}
	h := netlinksafe.Handle{Handle: k.h()}
	fs, err := h.FilterList(link, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil, nil // gone, or no clsact qdisc
		}
		return nil, fmt.Errorf("list ingress filters of interface %d: %w", index, err)
	}
	for _, f := range fs {
		b, ok := f.(*netlink.BpfFilter)
		if ok && b.Priority == FilterPriority && strings.HasPrefix(b.Name, "trellis_") {
			return b, nil
		}
	}
	return nil, nil
}

// Attach puts prog on the ingress of interface index (adding a clsact qdisc
// if there is none), replacing an earlier fast-path filter atomically.
func (k *Kernel) Attach(index int, name string, prog *ebpf.Program) error {
	if err := k.ensureClsact(index); err != nil {
		return err
	}
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: index, Parent: netlink.HANDLE_MIN_INGRESS,
			Handle: filterHandle, Priority: FilterPriority, Protocol: unix.ETH_P_ALL},
		Fd: prog.FD(), Name: name, DirectAction: true,
	}
	if err := k.h().FilterReplace(f); err != nil {
		return fmt.Errorf("attach %s to interface %d: %w", name, index, err)
	}
	return nil
}

func (k *Kernel) ensureClsact(index int) error {
	link := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: index}}
	h := netlinksafe.Handle{Handle: k.h()}
	qs, err := h.QdiscList(link)
	if err != nil {
		return fmt.Errorf("list qdiscs of interface %d: %w", index, err)
	}
	for _, q := range qs {
		if q.Attrs().LinkIndex == index && q.Type() == "clsact" {
			return nil
		}
	}
	q := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: index,
		Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
	if err := k.h().QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc to interface %d: %w", index, err)
	}
	return nil
}

// Detach removes the fast path's filter from interface index (the clsact
// qdisc stays: other filters may use it). Absent filters are not an error.
func (k *Kernel) Detach(index int) error {
	f, err := k.ourFilter(index)
	if err != nil || f == nil {
		return err
	}
	if err := k.h().FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("detach fast path from interface %d: %w", index, err)
	}
	return nil
}

// SyncMap makes a BPF hash map hold exactly want (stale keys deleted,
// missing or different values written).
func SyncMap[K, V comparable](m *ebpf.Map, want map[K]V) (changed int, err error) {
	var (
		key   K
		val   V
		stale []K
	)
	it := m.Iterate()
	for it.Next(&key, &val) {
		if _, ok := want[key]; !ok {
			stale = append(stale, key)
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("iterate fast-path map: %w", err)
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return changed, fmt.Errorf("delete %v from the fast-path map: %w", k, err)
		}
		changed++
	}
	for k, v := range want {
		var cur V
		if err := m.Lookup(k, &cur); err == nil && cur == v {
			continue
		}
		if err := m.Put(k, v); err != nil {
			return changed, fmt.Errorf("write %v to the fast-path map: %w", k, err)
		}
		changed++
	}
	return changed, nil
}

// DetachAll removes the fast path's filter from every interface (the
// fastPath: false setting).
func (k *Kernel) DetachAll() (int, error) {
	links, err := k.Links()
	if err != nil {
		return 0, err
	}
	have, err := k.Attached(links)
	if err != nil {
		return 0, err
	}
	for idx := range have {
		if err := k.Detach(idx); err != nil {
			return 0, err
		}
	}
	return len(have), nil
}
