//go:build kernel

package policy_test

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	networkingv1 "k8s.io/api/networking/v1"
)

// nflogRecord is what the deny log carries that an operator reads: the log
// prefix and the input/output interface indexes (IN= / OUT=).
type nflogRecord struct {
	prefix        string
	indev, outdev uint32
}

// NFLOG TLV types (linux/netfilter/nfnetlink_log.h).
const (
	nfulaIfindexIndev  = 4
	nfulaIfindexOutdev = 5
	nfulaPrefix        = 10
)

// readNflogPcap parses a pcap file of LINKTYPE_NFLOG records written by
// tcpdump -i nflog:N (little-endian pcap, host-endian TLV headers).
func readNflogPcap(data []byte) ([]nflogRecord, error) {
	if len(data) < 24 || binary.LittleEndian.Uint32(data) != 0xa1b2c3d4 {
		return nil, fmt.Errorf("not a little-endian pcap file (%d bytes)", len(data))
	}
	if lt := binary.LittleEndian.Uint32(data[20:]); lt != 239 {
		return nil, fmt.Errorf("pcap link type %d, want 239 (NFLOG)", lt)
	}
	var out []nflogRecord
	for off := 24; off+16 <= len(data); {
		n := int(binary.LittleEndian.Uint32(data[off+8:]))
		rec := data[off+16 : min(off+16+n, len(data))]
		off += 16 + n
		if len(rec) < 4 {
			return nil, fmt.Errorf("short nflog record (%d bytes)", len(rec))
		}
		var r nflogRecord
		for t := rec[4:]; len(t) >= 4; {
			l, typ := int(binary.LittleEndian.Uint16(t)), binary.LittleEndian.Uint16(t[2:])&0x7fff
			if l < 4 || l > len(t) {
				return nil, fmt.Errorf("bad nflog TLV length %d", l)
			}
			v := t[4:l]
			switch typ {
			case nfulaPrefix:
				r.prefix = strings.TrimRight(string(v), "\x00")
			case nfulaIfindexIndev:
				r.indev = binary.BigEndian.Uint32(v)
			case nfulaIfindexOutdev:
				r.outdev = binary.BigEndian.Uint32(v)
			}
			t = t[min((l+3)&^3, len(t)):]
		}
		out = append(out, r)
	}
	return out, nil
}

// nflogFlush is how long a logged packet may sit in the kernel's nflog
// queue before it is sent to the listener (nfnetlink_log batches messages
// until its queue threshold or a 1 s flush timeout).
const nflogFlush = 1500 * time.Millisecond

// startNflogCapture runs tcpdump on nflog group in the node namespace and
// returns a function that waits out the kernel's flush timeout, stops it
// and returns the records seen.
func startNflogCapture(t *testing.T, k *kernelNode, group int) func() []nflogRecord {
	t.Helper()
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Fatalf("FAIL: tcpdump is needed to read the nflog group (hack/install-deps.sh installs it): %v", err)
	}
	file := filepath.Join(t.TempDir(), "nflog.pcap")
	cmd := exec.Command("ip", "netns", "exec", filepath.Base(k.node.Path()), "tcpdump", "-i", fmt.Sprintf("nflog:%d", group), "-U", "-w", file)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start tcpdump: %v", err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = cmd.Process.Signal(os.Interrupt)
			_ = cmd.Wait()
		}
	}
	t.Cleanup(stop)
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		var lines []string
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if strings.Contains(sc.Text(), "listening on") {
				listening <- ""
				for sc.Scan() { // drain until tcpdump exits
				}
				return
			}
		}
		listening <- strings.Join(lines, "\n")
	}()
	select {
	case msg := <-listening:
		if msg != "" {
			t.Fatalf("tcpdump on nflog:%d did not start: %s", group, msg)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("tcpdump on nflog:%d: not listening after 5 s", group)
	}
	return func() []nflogRecord {
		time.Sleep(nflogFlush)
		stop()
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		recs, err := readNflogPcap(data)
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}
}

// TestKernelDenyLogNamesInterfaceAndDirection: with DenyLogGroup set, a
// packet denied on ingress is logged to that nflog group with the prefix
// "trellis-deny ingress ..." and OUT= the destination pod's host interface,
// one denied on egress with "trellis-deny egress ..." and IN= the source
// pod's host interface; an allowed connection logs nothing.
func TestKernelDenyLogNamesInterfaceAndDirection(t *testing.T) {
	const group = 4711
	w := singleNodeWorld(t)
	w.denyLogGroup = group
	w.addNamespace("x", map[string]string{"ns": "x"})
	w.addPod("x", "a", "n1", "10.244.1.20", false, map[string]string{"pod": "a"})
	w.addPod("x", "b", "n1", "10.244.1.21", false, map[string]string{"pod": "b"})
	w.addPod("x", "c", "n1", "10.244.1.22", false, map[string]string{"pod": "c"})
	w.addPolicy(np("x", "a-no-ingress", networkingv1.NetworkPolicySpec{PodSelector: *sel("pod", "a"), PolicyTypes: ingressOnly}))
	w.addPolicy(np("x", "b-no-egress", networkingv1.NetworkPolicySpec{PodSelector: *sel("pod", "b"), PolicyTypes: egressOnly}))

	k := newKernelNode(t)
	ifindex := map[string]uint32{}
	for i := range w.cluster.Pods {
		p := &w.cluster.Pods[i]
		k.addPod(p.Namespace+"/"+p.Name, ifaceFor(p), netip.MustParseAddr(p.Status.PodIP))
		k.serve(p.Namespace+"/"+p.Name, 80)
		if err := k.node.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName(ifaceFor(p))
			if err != nil {
				return err
			}
			ifindex[p.Name] = uint32(l.Attrs().Index)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	k.apply(w)

	// Allowed first (c -> c's neighbours are open): nothing may be logged.
	collect := startNflogCapture(t, k, group)
	if !k.connect("x/c", netip.Addr{}, netip.MustParseAddr("10.244.1.21"), 80) {
		t.Fatal("x/c -> x/b:80 should be allowed (b is isolated for egress only)")
	}
	if recs := collect(); len(recs) != 0 {
		t.Fatalf("an allowed connection was logged as denied: %+v", recs)
	}

	collect = startNflogCapture(t, k, group)
	if k.connect("x/c", netip.Addr{}, netip.MustParseAddr("10.244.1.20"), 80) {
		t.Fatal("x/c -> x/a:80 should be denied (a is isolated for ingress)")
	}
	if k.connect("x/b", netip.Addr{}, netip.MustParseAddr("10.244.1.22"), 80) {
		t.Fatal("x/b -> x/c:80 should be denied (b is isolated for egress)")
	}
	recs := collect()
	var sawIngress, sawEgress bool
	for _, r := range recs {
		if !strings.HasPrefix(r.prefix, "trellis-deny ") {
			t.Errorf("nflog record with prefix %q, want trellis-deny …", r.prefix)
		}
		switch {
		case strings.HasPrefix(r.prefix, "trellis-deny ingress") && r.outdev == ifindex["a"]:
			sawIngress = true
		case strings.HasPrefix(r.prefix, "trellis-deny egress") && r.indev == ifindex["b"]:
			sawEgress = true
		default:
			t.Errorf("unexpected deny record %q IN=%d OUT=%d (pod interfaces: %v)", r.prefix, r.indev, r.outdev, ifindex)
		}
	}
	if !sawIngress || !sawEgress {
		t.Fatalf("deny log (group %d) missing ingress=%v egress=%v; records: %+v", group, sawIngress, sawEgress, recs)
	}
	t.Logf("%d deny records, e.g. %q", len(recs), recs[0].prefix)
}
