//go:build kernel

package fastpath

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/trellisnet/trellis/internal/nodesetup"
)

// With encryption on, a pod's packet to another node never leaves by an
// uplink from the fast path: a flow established (and fast-pathed) before
// encryption is turned on stops being redirected at once, and a new flow
// never is; every such packet takes the full path (where routing sends it
// into the WireGuard device).
func TestKernelFastPathEncryptedNeverRedirectsToUplink(t *testing.T) {
	a, b := topology(t)
	b.serve(t, 8080)
	var c net.Conn
	err := a.pod.Do(func(ns.NetNS) (err error) {
		c, err = net.DialTimeout("tcp4", b.podIP.String()+":8080", 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	h := sha256.New()
	write := func(size int) {
		t.Helper()
		data := make([]byte, size)
		if _, err := rand.Read(data); err != nil {
			t.Fatal(err)
		}
		h.Write(data)
		if _, err := c.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	s0 := a.stats(t)
	write(8 << 20)
	s1 := a.stats(t)
	if delta(s1, s0, StatFromPodRedirect) == 0 {
		t.Fatal("precondition: the plaintext flow was not fast-pathed out of the uplink")
	}

	// Encryption turned on: the agent's controller now syncs with Encrypted.
	enc, err := New(Config{Kernel: &Kernel{Handle: a.h}, Programs: a.progs, Sysctls: nodesetup.NetnsSysctls{NS: a.ns},
		Uplinks: func() []string { return []string{"ul0"} }, Encrypted: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := enc.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	// From here on (earlier writes may still be in flight: counted from the sync).
	s1 = a.stats(t)
	write(8 << 20)
	s2 := a.stats(t)
	if n := delta(s2, s1, StatFromPodRedirect); n != 0 {
		t.Errorf("established flow: %d packets redirected out of the uplink after encryption was turned on", n)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if want := h.Sum(nil); err != nil || string(got) != string(want) {
		t.Fatalf("server digest %x (%v), want %x", got, err, want)
	}
	a.send(t, b.podIP.String()+":8080", 8<<20)
	if n := delta(a.stats(t), s2, StatFromPodRedirect); n != 0 {
		t.Errorf("new flow: %d packets redirected out of the uplink with encryption on", n)
	}
	// Arriving traffic for the local pod keeps trellis_to_pod.
	if delta(a.stats(t), s0, StatToPodRedirect) == 0 {
		t.Error("no ACK entering node a's pod took the fast path (trellis_to_pod stays on the uplink)")
	}
}
