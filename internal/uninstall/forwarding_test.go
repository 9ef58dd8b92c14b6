package uninstall

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/trellisnet/trellis/internal/sysctl"
	"github.com/trellisnet/trellis/internal/sysctl/sysctltest"
)

// orderedSysctls records the order of Set calls.
type orderedSysctls struct {
	sysctl.Proc
	sets *[]string
}

func (o orderedSysctls) Set(path, value string) error {
	*o.sets = append(*o.sets, path+"="+value)
	return o.Proc.Set(path, value)
}

// IPv6 forwarding turned on through the recorder (as node setup does) is
// undone by Restore: forwarding back off first, then each raised
// accept_ra back to 1; a raised interface that is gone meanwhile is
// skipped, and nothing else is touched.
func TestIPv6ForwardingRecordedAndRestored(t *testing.T) {
	root := t.TempDir()
	before := map[string]string{
		"net/ipv4/ip_forward":             "1",
		"net/ipv6/conf/all/forwarding":    "0",
		"net/ipv6/conf/default/accept_ra": "1",
		"net/ipv6/conf/eth0/accept_ra":    "1",
		"net/ipv6/conf/eth1/accept_ra":    "1",
		"net/ipv6/conf/eth2/accept_ra":    "0",
		"net/ipv6/conf/trl0a/accept_ra":   "1",
	}
	sysctltest.WriteTree(t, root, before)
	proc := sysctl.Proc{Root: root}
	file := RecordPath(t.TempDir())
	raised, err := sysctl.EnableIPv6ForwardingWith(Recorder{Sysctls: proc, File: file}, proc,
		func(n string) bool { return strings.HasPrefix(n, "trl") })
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"eth0", "eth1"}; !reflect.DeepEqual(raised, want) {
		t.Fatalf("raised %v, want %v", raised, want)
	}
	for k, want := range map[string]string{"net/ipv6/conf/all/forwarding": "1", "net/ipv6/conf/eth0/accept_ra": "2"} {
		if v, _ := proc.Get(k); v != want {
			t.Fatalf("%s = %q, want %q", k, v, want)
		}
	}
	// A second call (forwarding on) records nothing more.
	if again, err := sysctl.EnableIPv6ForwardingWith(Recorder{Sysctls: proc, File: file}, proc, nil); err != nil || again != nil {
		t.Fatalf("second call: %v, %v", again, err)
	}
	if err := os.RemoveAll(filepath.Join(root, "net/ipv6/conf/eth1")); err != nil { // eth1 unplugged
		t.Fatal(err)
	}
	var sets []string
	n, err := Restore(orderedSysctls{proc, &sets}, file)
	if err != nil || n != 2 {
		t.Fatalf("Restore = %d, %v; want 2 restored (eth1 gone)", n, err)
	}
	if want := []string{"net/ipv6/conf/all/forwarding=0", "net/ipv6/conf/eth0/accept_ra=1", "net/ipv6/conf/eth1/accept_ra=1"}; !reflect.DeepEqual(sets, want) {
		t.Errorf("restore order %v, want %v", sets, want)
	}
	for k, want := range before {
		if strings.Contains(k, "eth1") {
			continue
		}
		if v, _ := proc.Get(k); v != want {
			t.Errorf("after restore %s = %q, want %q", k, v, want)
		}
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("record left after restore: %v", err)
	}
}

// A value that cannot be restored for another reason than a vanished
// interface fails Restore and keeps the record for the next run.
func TestRestoreKeepsRecordOnFailure(t *testing.T) {
	root := t.TempDir()
	proc := sysctl.Proc{Root: root}
	sysctltest.WriteTree(t, root, map[string]string{"net/ipv6/conf/all/forwarding": "0"})
	file := RecordPath(t.TempDir())
	if err := (Recorder{Sysctls: proc, File: file}).Set("net/ipv6/conf/all/forwarding", "1"); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(root, "net")); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(proc, file); err == nil {
		t.Fatal("Restore of a missing global sysctl succeeded")
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("record gone after a failed restore: %v", err)
	}
}

func TestRestoreOrderAndPerInterface(t *testing.T) {
	for p, want := range map[string]bool{
		"net/ipv6/conf/eth0/accept_ra": true, "net/ipv4/conf/eth0/rp_filter": true,
		"net/ipv6/conf/all/forwarding": false, "net/ipv6/conf/default/accept_ra": false, "net/core/bpf_jit_enable": false,
	} {
		if perInterface(p) != want {
			t.Errorf("perInterface(%s) = %v", p, !want)
		}
	}
	if restoreOrder("net/ipv6/conf/all/forwarding") >= restoreOrder("net/ipv6/conf/a0/accept_ra") {
		t.Error("forwarding does not come first")
	}
}
