package cni

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/trellisnet/trellis/internal/conntrack/ctnetlink"
	"github.com/trellisnet/trellis/internal/ipam"
	"github.com/trellisnet/trellis/internal/podlink"
)

// callTimeout bounds one plugin call (lock waits included).
const callTimeout = 60 * time.Second

// Funcs are the plugin's commands, ready for skel.PluginMainFuncs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{
		Add:    logged("ADD", cmdAdd),
		Del:    logged("DEL", cmdDel),
		Check:  logged("CHECK", cmdCheck),
		Status: logged("STATUS", cmdStatus),
		GC:     logged("GC", cmdGC),
	}
}

func openNetNS(path string) (ns.NetNS, error) {
	if path == "" {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is required", "")
	}
	n, err := ns.GetNS(path)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_NETNS=%s: %v", path, err), "")
	}
	return n, nil
}

func cmdAdd(args *skel.CmdArgs, cl *callLog) (err error) {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	podNS, err := openNetNS(args.Netns)
	if err != nil {
		return err
	}
	defer podNS.Close()
	if exists, err := podLinkExists(podNS.Path(), args.IfName); err != nil {
		return err
	} else if exists {
		return types.NewError(types.ErrInternal, fmt.Sprintf("interface %s already exists in %s", args.IfName, args.Netns), "")
	}
	st, err := conf.nodeState()
	if err != nil {
		return notReady(err)
	}
	if err := conf.dataplaneReady(st, nftTableExists); err != nil {
		return notReady(err)
	}
	ranges, mtu, err := conf.resolve(st)
	if err != nil {
		return err
	}

	store := ipam.NewStore(conf.IPAM.DataDir, conf.Name)
	key := ipam.Key{ContainerID: args.ContainerID, IfName: args.IfName}
	var addrs []netip.Addr
	var allocatedNew bool
	err = store.Update(ctx, func(s *ipam.State) error {
		var aerr error
		addrs, allocatedNew, aerr = s.Allocate(key, ranges)
		return aerr
	})
	if err != nil {
		return ipamError(err)
	}
	cl.add("addresses", addrs)
	defer func() {
		if err == nil {
			return
		}
		// Roll back everything this call did. Own variables: the rollback's
		// errors must never shadow or replace the one being returned.
		if terr := teardown(conf.Name, args.ContainerID, args.IfName); terr != nil {
			cl.add("rollbackError", terr.Error())
		}
		if allocatedNew {
			if rerr := store.Update(context.Background(), func(s *ipam.State) error {
				s.Release(key)
				return nil
			}); rerr != nil {
				cl.add("rollbackError", rerr.Error())
			}
		}
	}()

	// Before the pod's interface exists: a flow of the addresses' last
	// holder (a DEL that never came) must not reach the new pod.
	if err := ctnetlink.Forget(addrs); err != nil {
		return types.NewError(types.ErrTryAgainLater, err.Error(), "")
	}
	pl, err := setupPod(podNS, attachment(conf.Name, args), mtu, addrs)
	if err != nil {
		return err
	}
	raised, err := enableForwarding(addrs)
	if len(raised) > 0 {
		cl.add("acceptRA2", raised)
	}
	if err != nil {
		return types.NewError(types.ErrInternal, "cannot enable IP forwarding on this host, so the pod could reach nothing: "+err.Error(), "")
	}
	return types.PrintResult(buildResult(args, pl, addrs), conf.CNIVersion)
}

// attachment is the alias of the attachment's host-side interface: the
// network, container ID and ifname, and the pod as the runtime names it in
// CNI_ARGS (containerd and CRI-O pass K8S_POD_NAMESPACE, K8S_POD_NAME and
// K8S_POD_UID), so the agent can pair the interface with its pod at once.
func attachment(network string, args *skel.CmdArgs) podlink.Alias {
	return podlink.Alias{Network: network, ContainerID: args.ContainerID, IfName: args.IfName,
		PodNamespace: podNamespace(args.Args), PodName: cniArg(args.Args, "K8S_POD_NAME"),
		PodUID: cniArg(args.Args, "K8S_POD_UID")}
}

func ipamError(err error) error {
	var te *types.Error
	switch {
	case errors.As(err, &te):
		return te
	case errors.Is(err, ipam.ErrExhausted):
		return types.NewError(types.ErrInternal, "IPAM: "+err.Error(), "")
	case errors.Is(err, ipam.ErrLockTimeout):
		return types.NewError(types.ErrTryAgainLater, "IPAM: "+err.Error(), "")
	}
	return types.NewError(types.ErrIOFailure, "IPAM: "+err.Error(), "")
}

func podLinkExists(netnsPath, ifName string) (bool, error) {
	h, err := nsHandle(netnsPath)
	if err != nil {
		return false, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_NETNS=%s: %v", netnsPath, err), "")
	}
	defer h.Close()
	_, err = h.LinkByName(ifName)
	if err == nil {
		return true, nil
	}
	if isNotFound(err) {
		return false, nil
	}
	return false, fmt.Errorf("look up %s in %s: %w", ifName, netnsPath, err)
}

func buildResult(args *skel.CmdArgs, pl *podLink, addrs []netip.Addr) *current.Result {
	r := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: pl.hostName, Mac: pl.hostMAC.String()},
			{Name: args.IfName, Mac: pl.podMAC.String(), Sandbox: args.Netns},
		},
	}
	for _, a := range addrs {
		gw := net.IP(gatewayFor(a).AsSlice())
		r.IPs = append(r.IPs, &current.IPConfig{Interface: current.Int(1), Address: *hostPrefix(a), Gateway: gw})
		r.Routes = append(r.Routes, &types.Route{Dst: *defaultRoute(a), GW: gw})
	}
	return r
}

func cmdDel(args *skel.CmdArgs, cl *callLog) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	// Interface first, address second: an address is never free while a
	// route to it still points at the old pod.
	if err := teardown(conf.Name, args.ContainerID, args.IfName); err != nil {
		return types.NewError(types.ErrInternal, err.Error(), "")
	}
	key := ipam.Key{ContainerID: args.ContainerID, IfName: args.IfName}
	err = ipam.NewStore(conf.IPAM.DataDir, conf.Name).Update(ctx, func(s *ipam.State) error {
		// Their conntrack entries go before the addresses can be reused.
		if err := ctnetlink.ForgetAllocations(s.Lookup(key)); err != nil {
			return types.NewError(types.ErrTryAgainLater, err.Error(), "")
		}
		cl.add("released", s.Release(key))
		return nil
	})
	if err != nil {
		return ipamError(err)
	}
	return nil
}

// cmdGC removes every attachment of the network that is not valid. It goes
// on past failures and reports them all at the end (an attachment whose
// interface could not be removed keeps its addresses).
func cmdGC(args *skel.CmdArgs, cl *callLog) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	valid := map[ipam.Key]bool{}
	for _, a := range conf.ValidAttachments {
		valid[ipam.Key{ContainerID: a.ContainerID, IfName: a.IfName}] = true
	}
	var errs []error
	// keep are the attachments whose addresses stay: the valid ones and
	// those whose interface could not be removed.
	keep := maps.Clone(valid)
	// Interfaces first (see cmdDel), then addresses.
	links, err := ownedLinks(conf.Name)
	if err != nil {
		errs = append(errs, err)
	}
	var removed []string
	for _, l := range links {
		k := ipam.Key{ContainerID: l.Alias.ContainerID, IfName: l.Alias.IfName}
		if valid[k] {
			continue
		}
		if err := teardown(conf.Name, k.ContainerID, k.IfName); err != nil {
			errs = append(errs, err)
			keep[k] = true
			continue
		}
		removed = append(removed, l.Name)
	}
	store := ipam.NewStore(conf.IPAM.DataDir, conf.Name)
	var stale []ipam.Key
	if err := store.View(ctx, func(s *ipam.State) error {
		for _, a := range s.Allocations {
			if !valid[a.Key] {
				stale = append(stale, a.Key)
			}
		}
		return nil
	}); err != nil {
		errs = append(errs, fmt.Errorf("IPAM: %w", err))
	}
	for _, k := range stale { // interfaces whose alias was lost
		if keep[k] {
			continue
		}
		if err := teardown(conf.Name, k.ContainerID, k.IfName); err != nil {
			errs = append(errs, err)
			keep[k] = true
		}
	}
	var freed []ipam.Allocation
	if err := store.Update(ctx, func(s *ipam.State) error {
		freed = s.GC(keep)
		return nil
	}); err != nil {
		errs = append(errs, fmt.Errorf("IPAM: %w", err))
	}
	cl.add("removedInterfaces", removed)
	cl.add("releasedAllocations", len(freed))
	if len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = e.Error()
		}
		return types.NewError(types.ErrInternal, fmt.Sprintf("GC: %d failure(s): %s", len(errs), strings.Join(msgs, "; ")), "")
	}
	return nil
}
