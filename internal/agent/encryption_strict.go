package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/nftwatch"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/syncrunner"
	"github.com/trellisnet/trellis/internal/wireguard/strict"
)

// strictTable names encryption's strict table in the dataplane marker.
var strictTable = podlink.NFTable{Family: "inet", Name: strict.TableName}

// strictKernel is the strict table's kernel side: its nftables interface
// (nil: unavailable, err says why) and the watch of changes made to it by
// others (nil: the periodic sync repairs them; watchErr says why).
type strictKernel struct {
	nft      knftables.Interface
	err      error
	watch    *nftwatch.Watch
	watchErr error
}

// openStrictKernel opens the strict table's nftables interface whatever
// the configuration (with strict mode off, the controller still runs to
// remove a table an earlier configuration left) and, when strict mode is
// on, its watch. Close it when done.
func openStrictKernel(on bool) strictKernel {
	var k strictKernel
	if k.nft, k.err = strict.NewNFT(); k.err != nil || !on {
		return k
	}
	k.watch, k.watchErr = newTableWatch(unix.NFPROTO_INET, strict.TableName)
	return k
}

// close releases the watch.
func (k strictKernel) close() {
	if k.watch != nil {
		k.watch.Close()
	}
}

// strictEncryption is what run starts for strict mode: the controller's
// runner (none without nftables) and its table watch.
type strictEncryption struct {
	runners []*syncrunner.Runner
	watch   func(context.Context) error
}

// newStrictEncryption wires encryption's strict mode (internal/wireguard/
// strict): a controller keeping the table from the Nodes (triggered by
// node changes through its own handler on nodeInf), or removing it when
// encryption or strict mode is off. With strict mode on, the table is part
// of the base dataplane (dp): the dataplane marker names it and appears
// only after the controller's first successful sync, so the plugin wires
// no pod on a node before its plaintext is blocked; without nftables the
// dataplane stays failed.
func newStrictEncryption(cfg *config.Config, k strictKernel, nodeInf cache.SharedIndexInformer, nodes corelisters.NodeLister,
	dp *dataplaneStatus, reg prometheus.Registerer, opts syncrunner.Options,
) (strictEncryption, error) {
	on := cfg.EncryptionStrictEnabled()
	if k.nft == nil {
		if on {
			why := k.err
			if why == nil {
				why = errors.New("no nftables")
			}
			dp.require(strict.RunnerName, "strict encryption controller", strictTable,
				fmt.Errorf("encryptionStrict needs nftables for table inet %s: %w", strict.TableName, why))
		}
		return strictEncryption{}, nil
	}
	opts.Observer = dp // passes the outcome on to the metrics
	sc := strict.Config{NodeName: cfg.NodeName, Disabled: !on, ClusterCIDRs: cfg.ClusterCIDRs,
		Device: cfg.WireGuard.Device, LogGroup: uint16(cfg.PolicyDenyLog),
		Nodes: nodes, NFT: k.nft, Sync: opts, Registerer: reg}
	if k.watch != nil {
		sc.Watch = k.watch
	}
	c, err := strict.New(sc)
	if err != nil {
		return strictEncryption{}, err
	}
	if on {
		dp.require(strict.RunnerName, "strict encryption controller", strictTable, nil)
		dp.watchMarker(func() *podlink.Dataplane { return thisBootMarker(cfg.NodeStateFile) })
	}
	if _, err := nodeInf.AddEventHandler(strictNodeHandler(c.Runner)); err != nil {
		return strictEncryption{}, fmt.Errorf("add node event handler: %w", err)
	}
	watch := c.Watch
	if k.watchErr != nil {
		watch = func(context.Context) error { return k.watchErr }
	}
	return strictEncryption{runners: []*syncrunner.Runner{c.Runner}, watch: watch}, nil
}

// thisBootMarker returns the node state file's dataplane marker when it
// was written during this boot, else nil.
func thisBootMarker(stateFile string) *podlink.Dataplane {
	st, err := podlink.ReadNodeState(stateFile)
	if err != nil || st.Dataplane == nil {
		return nil
	}
	if boot, err := podlink.BootID(); err != nil || st.Dataplane.BootID != boot {
		return nil
	}
	return st.Dataplane
}

// strictNodeHandler triggers the strict controller when a Node comes,
// goes, or changes what the agent reads (pod CIDRs among it).
func strictNodeHandler(r *syncrunner.Runner) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { r.Trigger() },
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*v1.Node)
			n, ok2 := newObj.(*v1.Node)
			if !ok1 || !ok2 || relevantChange(o, n) {
				r.Trigger()
			}
		},
		DeleteFunc: func(any) { r.Trigger() },
	}
}
