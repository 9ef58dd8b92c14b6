//go:build e2e

package bgp

import (
	"context"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/lab/tor"
)

// holdTime is the BGP hold time the measurement without BFD runs with
// (TRELLIS_E2E_BGP_HOLD_TIME, default 9 s; BGP's usual 90 s makes the suite
// wait that long).
func holdTime() time.Duration {
	if v, err := strconv.Atoi(os.Getenv("TRELLIS_E2E_BGP_HOLD_TIME")); err == nil && v >= 3 {
		return time.Duration(v) * time.Second
	}
	return 9 * time.Second
}

// setLink sets the switch's port of node (the switch end of its uplink)
// up or down: the node's link is cut, its namespace and processes are not.
func setLink(t *testing.T, node, state string) {
	t.Helper()
	if _, err := inNetns(l.State.Topology.SwitchNetns, "ip", "link", "set", "dev", node, state); err != nil {
		t.Fatal(err)
	}
}

// cutAndMeasure cuts node's link and returns how long the ToR kept its pod
// CIDR (polled every 20 ms, up to limit); the link is restored after.
func cutAndMeasure(t *testing.T, node string, limit time.Duration) time.Duration {
	t.Helper()
	h := nodeHost(t, node)
	cidr := podCIDR(t, node)
	restored := false
	restore := func() {
		if !restored {
			restored = true
			setLink(t, node, "up")
		}
	}
	t.Cleanup(restore)
	cut := time.Now()
	setLink(t, node, "down")
	for {
		// The whole table: `show route PREFIX` fails for a prefix not there.
		out, err := tor.Birdc(context.Background(), l.Paths, "show", "route")
		if err != nil {
			t.Fatal(err)
		}
		gone := true
		for _, a := range tor.BestNextHops(tor.ParseRoutes(out))[cidr] {
			gone = gone && a != h.Addr
		}
		if gone {
			took := time.Since(cut)
			restore()
			return took
		}
		if time.Since(cut) > limit {
			restore()
			t.Fatalf("%s still on the ToR via %s %s after %s's link was cut", cidr, h.Addr, limit, node)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// holdTimer is the hold time the ToR negotiated with the node at addr
// (0 when not shown).
func holdTimer(t *testing.T, addr netip.Addr) time.Duration {
	t.Helper()
	_, blk := torSession(t, addr)
	for _, line := range strings.Split(blk, "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "Hold" && f[1] == "timer:" {
			_, neg, _ := strings.Cut(f[2], "/")
			if s, err := strconv.Atoi(neg); err == nil {
				return time.Duration(s) * time.Second
			}
		}
	}
	return 0
}

// A node whose link is cut is withdrawn from the ToR within 1 s with BFD
// (100 ms x 3 on both ends), and only when the hold time runs out without.
func TestE2EBGPBFDLinkCut(t *testing.T) {
	requireBGPLab(t)
	waitToR(t, 90*time.Second)
	node := l.Nodes()[1]
	h := nodeHost(t, node)
	peer := tor.PeerName(h.Subnet)
	cidr := podCIDR(t, node)
	t.Cleanup(func() {
		mergePatch(t, peers, peer, map[string]any{"spec": map[string]any{"bfd": map[string]any{"enabled": false}, "timers": nil}})
	})

	// With BFD.
	mergePatch(t, peers, peer, map[string]any{"spec": map[string]any{"bfd": map[string]any{"enabled": true}}})
	up := eventually(t, 60*time.Second, "the ToR's BFD session with "+node+" up", func() bool { return bfdUp(t, h.Addr) && established(t, h.Addr) })
	t.Logf("BFD up with %s %s after enabling it on the BGPPeer %s:\n%s", node, up.Round(time.Millisecond), peer, birdc(t, "show", "bfd", "sessions"))
	withBFD := cutAndMeasure(t, node, 30*time.Second)
	figure(t, "link of %s cut: withdrawn from the ToR after %s with BFD (%d ms x %d)", node, withBFD.Round(time.Millisecond),
		tor.BFDIntervalMs, tor.BFDMultiplier)
	if withBFD > time.Second {
		t.Errorf("with BFD, %s was withdrawn only after %s, want within 1 s", cidr, withBFD.Round(time.Millisecond))
	}
	eventually(t, 60*time.Second, cidr.String()+" back on the ToR after the link came back", func() bool { return torHas(t, cidr, h.Addr) })

	// Without BFD: the hold time.
	hold := holdTime()
	mergePatch(t, peers, peer, map[string]any{"spec": map[string]any{"bfd": map[string]any{"enabled": false},
		"timers": map[string]any{"holdTimeSeconds": int(hold.Seconds()), "keepaliveSeconds": max(1, int(hold.Seconds())/3)}}})
	eventually(t, 60*time.Second, "the ToR's session with "+node+" on hold time "+hold.String()+" without BFD", func() bool {
		return established(t, h.Addr) && !bfdUp(t, h.Addr) && holdTimer(t, h.Addr) == hold && torHas(t, cidr, h.Addr)
	})
	withoutBFD := cutAndMeasure(t, node, hold+30*time.Second)
	figure(t, "link of %s cut: withdrawn from the ToR after %s without BFD (hold time %s)", node, withoutBFD.Round(time.Millisecond), hold)
	keepalive := hold / 3
	if withoutBFD < hold-keepalive-time.Second || withoutBFD > hold+3*time.Second {
		t.Errorf("without BFD, withdrawn after %s, want the hold time %s (less up to a keepalive interval)", withoutBFD.Round(time.Millisecond), hold)
	}
	if withoutBFD <= withBFD {
		t.Errorf("without BFD (%s) not slower than with BFD (%s)", withoutBFD, withBFD)
	}
	eventually(t, 60*time.Second, cidr.String()+" back on the ToR after the link came back", func() bool { return torHas(t, cidr, h.Addr) })
}
