//go:build kernel

package cni_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
)

// 100 ADDs from separate plugin processes in parallel through libcni give
// 100 distinct addresses; 100 DELs leave no allocation, link or route.
func TestKernelConcurrentAddDel(t *testing.T) {
	const n = 100
	f := newFixture(t, confOpts{subnets: []string{"10.89.0.0/24"}})
	pods := make([]*pod, n)
	for i := range pods {
		pods[i] = f.newPodNS()
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = f.add(p) }()
	}
	wg.Wait()
	seen := map[netip.Addr]string{}
	for i, p := range pods {
		if errs[i] != nil {
			t.Fatalf("ADD %d: %v", i, errs[i])
		}
		if other, dup := seen[p.addr]; dup {
			t.Fatalf("%s handed to both %s and %s", p.addr, other, p.id)
		}
		seen[p.addr] = p.id
	}
	if got := len(f.allocations()); got != n {
		t.Fatalf("%d allocations after %d ADDs", got, n)
	}
	if got := len(f.hostLinks()); got != n {
		t.Fatalf("%d host links after %d ADDs", got, n)
	}
	serveEcho(t, pods[n-1].ns, 8080)
	mustReach(t, pods[0].ns, pods[n-1].addr, 8080, "first -> last pod")
	for i, p := range pods {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = f.del(p) }()
	}
	wg.Wait()
	for i := range pods {
		if errs[i] != nil {
			t.Fatalf("DEL %d: %v", i, errs[i])
		}
	}
	if l, al, r := f.hostLinks(), f.allocations(), f.podRoutes(); len(l)+len(al)+len(r) != 0 {
		t.Fatalf("after 100 DELs: %d links, %d allocations, %d routes", len(l), len(al), len(r))
	}
}

// kill -9 the plugin at random points during ADD, many times (some kills in
// parallel with each other); afterwards the store loads, no address is held
// twice, new ADDs never get an address already held, and GC reclaims every
// attachment not declared valid.
func TestKernelCrashSafetyKill9DuringAdd(t *testing.T) {
	f := newFixture(t, confOpts{subnets: []string{"10.89.1.0/24"}})
	conf := f.runner.List.Plugins[0].Bytes
	var stdin map[string]any
	_ = json.Unmarshal(conf, &stdin)
	stdin["cniVersion"], stdin["name"] = "1.1.0", "trellis-test"
	confBytes, _ := json.Marshal(stdin)

	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	seed := r.Uint64()
	t.Logf("kill schedule seed %d", seed)
	r = rand.New(rand.NewPCG(seed, 1))
	const rounds = 40
	killed, finished := 0, 0
	for round := range rounds {
		var wg sync.WaitGroup
		for j := range 3 { // three racing processes per round
			p := f.newPodNS()
			delay := time.Duration(r.IntN(12000)) * time.Microsecond
			wg.Add(1)
			go func() {
				defer wg.Done()
				if startAndKill(t, f.node, p, confBytes, delay) {
					killed++
				} else {
					finished++
				}
			}()
			_ = j
		}
		wg.Wait()
		_ = round
	}
	t.Logf("%d plugin processes killed mid-ADD, %d finished first", killed, finished)
	if killed == 0 {
		t.Fatal("no ADD was interrupted: the kill schedule tests nothing")
	}
	// The store loads and holds no address twice.
	held := map[netip.Addr]bool{}
	for _, a := range f.allocations() {
		if held[a.Addr] {
			t.Fatalf("address %s held twice after kills", a.Addr)
		}
		held[a.Addr] = true
	}
	// New pods never get an address still held by an earlier attachment.
	var valid []types.GCAttachment
	for range 5 {
		p := f.newPodNS()
		f.mustAdd(p)
		if held[p.addr] {
			t.Fatalf("new pod got %s, still held by an interrupted attachment", p.addr)
		}
		held[p.addr] = true
		valid = append(valid, types.GCAttachment{ContainerID: p.id, IfName: "eth0"})
	}
	if err := f.runner.GC(context.Background(), valid); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if al, l := f.allocations(), f.hostLinks(); len(al) != len(valid) || len(l) != len(valid) {
		t.Fatalf("after GC: %d allocations, %d links; want %d each", len(al), len(l), len(valid))
	}
}

// startAndKill runs one plugin ADD process inside node and SIGKILLs it after
// delay unless it finished first. It reports whether it was killed.
func startAndKill(t *testing.T, node ns.NetNS, p *pod, conf []byte, delay time.Duration) bool {
	var cmd *exec.Cmd
	err := node.Do(func(ns.NetNS) error {
		cmd = exec.Command(filepath.Join(pluginDir, "trellis-cni"))
		cmd.Env = append(os.Environ(), "CNI_COMMAND=ADD", "CNI_CONTAINERID="+p.id, "CNI_NETNS="+p.ns.Path(),
			"CNI_IFNAME=eth0", "CNI_PATH="+pluginDir)
		cmd.Stdin = bytes.NewReader(conf)
		cmd.Stdout, cmd.Stderr = &bytes.Buffer{}, &bytes.Buffer{}
		return cmd.Start()
	})
	if err != nil {
		t.Error(err)
		return false
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Error(fmt.Errorf("ADD failed on its own: %v: %s", err, cmd.Stdout))
		}
		return false
	case <-time.After(delay):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		err := <-done
		return err != nil
	}
}
