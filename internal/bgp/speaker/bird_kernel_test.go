//go:build kernel

package speaker

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/bgp"
	"github.com/trellisnet/trellis/internal/netnstest"
)

// birdConf is BIRD 2 as a ToR: AS 65000, one neighbour (the speaker),
// graceful restart, BFD (a BFD failure is handled as a graceful restart:
// `bfd graceful`), originating 198.18.100.0/24.
const birdConf = `log "%[1]s/bird.log" all;
router id %[2]s;
protocol device {}
protocol bfd {
	interface "ul0" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; };
}
protocol static ext { ipv4; route 198.18.100.0/24 blackhole; }
protocol bgp node {
	local %[2]s as 65000;
	neighbor %[3]s as 64512;
	graceful restart on;
	bfd graceful;
	ipv4 { import all; export where proto = "ext"; };
}
`

type bird struct {
	t    *testing.T
	node *netnstest.Node
	dir  string
	cmd  *exec.Cmd
}

func ensureBird(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("bird"); err == nil {
		return
	}
	install := exec.Command("sh", "-c", "apt-get update -qq && apt-get install -y -qq --no-install-recommends bird2")
	install.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out, err := install.CombinedOutput()
	if err != nil {
		t.Fatalf("install bird2: %v\n%s", err, out)
	}
	if _, err := exec.LookPath("bird"); err != nil {
		t.Fatalf("bird2 installed but no bird binary: %v", err)
	}
}

// startBird runs BIRD in n with its own config, control socket and pid
// file in a temp dir; it is killed by PID in t.Cleanup.
func startBird(t *testing.T, n *netnstest.Node, self, neighbor string) *bird {
	t.Helper()
	ensureBird(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, birdConf, dir, self, neighbor), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", n.Name, "bird", "-f", "-c", conf,
		"-s", filepath.Join(dir, "bird.ctl"), "-P", filepath.Join(dir, "bird.pid"))
	out, err := os.Create(filepath.Join(dir, "bird.out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start bird: %v", err)
	}
	b := &bird{t: t, node: n, dir: dir, cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		out.Close()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "bird.log"))
			o, _ := os.ReadFile(filepath.Join(dir, "bird.out"))
			t.Logf("bird log:\n%s\n%s", tail(string(log), 4000), o)
		}
	})
	eventually(t, 10*time.Second, "bird control socket", func() string {
		if _, err := os.Stat(filepath.Join(dir, "bird.ctl")); err != nil {
			return err.Error()
		}
		return ""
	})
	return b
}

// birdc runs a birdc command against this BIRD.
func (b *bird) birdc(args ...string) string {
	b.t.Helper()
	out, err := exec.Command("birdc", append([]string{"-s", filepath.Join(b.dir, "bird.ctl")}, args...)...).CombinedOutput()
	if err != nil {
		b.t.Fatalf("birdc %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestKernelSpeakerWithBIRD: against BIRD 2 in a namespace: the session
// establishes, routes go both ways, BFD is up on both sides, and BIRD
// keeps the speaker's routes through a kill -9 and through Stop (no
// NOTIFICATION: BIRD records no received Cease) until the restarted
// speaker refreshes them.
func TestKernelSpeakerWithBIRD(t *testing.T) {
	na, nb := netnstest.NewLinkedNodes(t, addrA+"/24", addrB+"/24")
	br := startBird(t, nb, addrB, addrA)
	a := startSpeaker(t, na, "a")
	d := node(addrA, addrB, 64512, 65000, 60*time.Second, []string{"10.244.1.0/24"}, []string{"10.244.1.0/24"})
	d.Neighbors[0].BFD = bgp.BFD{Enabled: true, MinRx: 100 * time.Millisecond, MinTx: 100 * time.Millisecond, DetectMultiplier: 3}
	start := time.Now()
	a.Apply(d)
	established(t, a, addrB, 30*time.Second)
	t.Logf("MEASURE time to establish with BIRD: %v", time.Since(start).Round(time.Millisecond))

	eventually(t, 15*time.Second, "routes both ways", func() string {
		got := a.Learned()
		if len(got) != 1 || got[0].Prefix != pfx("198.18.100.0/24") || got[0].NextHop != addr(addrB) {
			return "speaker learned " + learnedString(got)
		}
		if out := br.birdc("show", "route", "protocol", "node"); !strings.Contains(out, "10.244.1.0/24") {
			return "BIRD: " + out
		}
		return ""
	})
	eventually(t, 15*time.Second, "BFD up on both sides, GR negotiated", func() string {
		p, _ := peerOf(a.Peers(), addrB)
		if p.BFD != "Up" || p.GracefulRestart != "Negotiated" || !p.EndOfRIB {
			return fmt.Sprintf("speaker: %+v", p)
		}
		if out := br.birdc("show", "bfd", "sessions"); !strings.Contains(out, addrA) || !strings.Contains(out, "Up") {
			return "BIRD: " + out
		}
		return ""
	})

	// kill -9: BIRD keeps the routes (graceful restart).
	a.Kill()
	eventually(t, 10*time.Second, "BIRD notices the restart", func() string {
		if out := br.birdc("show", "protocols", "all", "node"); !strings.Contains(out, "Neighbor graceful restart active") {
			return out
		}
		return ""
	})
	time.Sleep(3 * time.Second)
	if out := br.birdc("show", "route", "protocol", "node"); !strings.Contains(out, "10.244.1.0/24") {
		t.Fatalf("BIRD dropped the speaker's route after kill -9:\n%s", out)
	}

	// Back with the Restart State bit: BIRD refreshes and finishes.
	a2 := startSpeaker(t, na, "a2")
	d.Global.GracefulRestart.Restarting = true
	a2.Apply(d)
	established(t, a2, addrB, 30*time.Second)
	eventually(t, 20*time.Second, "BIRD done with the restart, routes both ways", func() string {
		out := br.birdc("show", "protocols", "all", "node")
		if strings.Contains(out, "Neighbor graceful restart active") || !strings.Contains(out, "Established") {
			return out
		}
		if out := br.birdc("show", "route", "protocol", "node"); !strings.Contains(out, "10.244.1.0/24") {
			return "BIRD: " + out
		}
		if got := a2.Learned(); len(got) != 1 {
			return "speaker learned " + learnedString(got)
		}
		return ""
	})

	// Stop: no NOTIFICATION.
	a2.Stop()
	eventually(t, 10*time.Second, "BIRD holds the routes after Stop", func() string {
		out := br.birdc("show", "protocols", "all", "node")
		if !strings.Contains(out, "Neighbor graceful restart active") {
			return out
		}
		if strings.Contains(out, "Received: Cease") || strings.Contains(out, "Received: ") {
			return "BIRD received a NOTIFICATION: " + out
		}
		if out := br.birdc("show", "route", "protocol", "node"); !strings.Contains(out, "10.244.1.0/24") {
			return "BIRD dropped the route: " + out
		}
		return ""
	})
	t.Logf("BIRD after Stop:\n%s%s", br.birdc("show", "protocols", "all", "node"), br.birdc("show", "route", "protocol", "node", "all"))
}
