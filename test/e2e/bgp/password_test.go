//go:build e2e

package bgp

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	bgpv1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
	"github.com/trellisnet/trellis/internal/lab/install"
	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/internal/lab/tor"
)

// md5Established reports whether the ToR has an established TCP-MD5
// session (on the subnet's MD5 address) with the node at addr.
func md5Established(t *testing.T, node string) bool {
	t.Helper()
	h := nodeHost(t, node)
	out := birdc(t, "show", "protocols", "all")
	for _, blk := range strings.Split(out, "\n\n") {
		head := strings.Fields(blk)
		if len(head) > 0 && strings.Contains(head[0], "_md5_") &&
			// With the protocol's interface set, BIRD shows ADDR%IFACE.
			(strings.Contains(blk, "Neighbor address: "+h.Addr.String()+"\n") ||
				strings.Contains(blk, "Neighbor address: "+h.Addr.String()+"%")) &&
			strings.Contains(blk, "Established") {
			return true
		}
	}
	return false
}

// A session with a wrong TCP-MD5 password never establishes, and the node's
// BGPNodeStatus says why; with the right password (the control) the same
// session establishes.
func TestE2EBGPWrongPassword(t *testing.T) {
	requireBGPLab(t)
	node := l.Nodes()[0]
	h := nodeHost(t, node)
	md5Addr := l.State.Topology.Subnets[h.Subnet].MD5Addr
	const key, peer = "tor-md5", "tor-md5"
	ctx := context.Background()
	secrets := l.CS.CoreV1().Secrets(install.Namespace)
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: bgpv1.PasswordSecretName},
		StringData: map[string]string{key: "not-" + tor.Password}}
	if _, err := secrets.Create(ctx, sec, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	} else if apierrors.IsAlreadyExists(err) {
		setPassword(t, key, "not-"+tor.Password)
	}
	t.Cleanup(func() { _ = secrets.Delete(context.Background(), bgpv1.PasswordSecretName, metav1.DeleteOptions{}) })
	createObject(t, peers, "BGPPeer", &bgpv1.BGPPeer{
		ObjectMeta: metav1.ObjectMeta{Name: peer},
		Spec: bgpv1.BGPPeerSpec{
			NodeSelector:      &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelHostname: node}},
			PeerAddress:       md5Addr.String(),
			PeerASN:           topology.ToRASN,
			AllowOwnAS:        1,
			PasswordSecretKey: key,
		},
	})
	var st bgpv1.PeerStatus
	deadline := time.Now().Add(60 * time.Second)
	for {
		st = peerStatus(t, node, peer)
		if st.Peer == peer && st.State != "" && st.State != "Established" && st.Reason != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's BGPNodeStatus has no session %s that is not established with a reason within 60 s; last: %+v\nthe status: %+v",
				node, peer, st, nodeStatus(t, node))
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("%s's session %s (%s) with the wrong password: state %s, reason %s: %s", node, peer, md5Addr, st.State, st.Reason, st.Message)
	// It never establishes (watched for 15 s, several connect retries).
	deadline = time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if s := peerStatus(t, node, peer); s.State == "Established" {
			t.Fatalf("the session with the wrong password established: %+v", s)
		}
		if md5Established(t, node) {
			t.Fatalf("the ToR established an MD5 session with %s despite the wrong password:\n%s", node, birdc(t, "show", "protocols"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	st = peerStatus(t, node, peer)
	if st.Reason == "" {
		t.Errorf("no reason in %s's BGPNodeStatus for %s: %+v", node, peer, st)
	}
	if why := strings.ToLower(st.Reason + " " + st.Message); !strings.Contains(why, "password") && !strings.Contains(why, "md5") {
		t.Errorf("%s's BGPNodeStatus for %s does not point at the password: %s: %s", node, peer, st.Reason, st.Message)
	}
	figure(t, "wrong TCP-MD5 password: %s's session %s not established after 15 s, status %s reason %q", node, peer, st.State, st.Reason)

	// The control: the right password, the same session establishes.
	setPassword(t, key, tor.Password)
	took := eventually(t, 60*time.Second, peer+" established once the Secret holds the right password (a password changed in the Secret must apply live)", func() bool {
		return peerStatus(t, node, peer).State == "Established" && md5Established(t, node)
	})
	figure(t, "right TCP-MD5 password: %s's session %s established %s after the Secret changed", node, peer, took.Round(time.Millisecond))
	if s := peerStatus(t, node, peer); s.Reason != "" {
		t.Errorf("an established session keeps the reason %q", s.Reason)
	}
}

func setPassword(t *testing.T, key, password string) {
	t.Helper()
	secrets := l.CS.CoreV1().Secrets(install.Namespace)
	s, err := secrets.Get(context.Background(), bgpv1.PasswordSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	s.Data[key] = []byte(password)
	if _, err := secrets.Update(context.Background(), s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}
