//go:build kernel

package policy_test

import (
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/trellisnet/trellis/internal/nftwatch"
	"github.com/trellisnet/trellis/internal/policy"
)

// openWatch subscribes to the nftables notifications of namespace n.
func openWatch(t *testing.T, n ns.NetNS) policy.TableWatch {
	t.Helper()
	var w *nftwatch.Watch
	if err := n.Do(func(ns.NetNS) error {
		var err error
		w, err = nftwatch.Open(unix.NFPROTO_INET, policy.TableName)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}
