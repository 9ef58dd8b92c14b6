// Package cnirunner drives CNI plugins the way container runtimes do,
// through libcni, with every call made from inside a chosen "node" network
// namespace. The demo, the benchmarks and the real-kernel tests share it.
package cnirunner

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/trellisnet/trellis/internal/sysctl"
)

// Runner invokes one network configuration list.
type Runner struct {
	cni    *libcni.CNIConfig
	List   *libcni.NetworkConfigList
	NodeNS ns.NetNS // calls are made from inside this namespace
}

// New returns a runner for conflist (JSON) with plugins looked up in
// binDirs, results cached in cacheDir, calls made inside nodeNS.
func New(conflist []byte, binDirs []string, cacheDir string, nodeNS ns.NetNS) (*Runner, error) {
	list, err := libcni.ConfListFromBytes(conflist)
	if err != nil {
		return nil, fmt.Errorf("parse conflist: %w", err)
	}
	return &Runner{cni: libcni.NewCNIConfigWithCacheDir(binDirs, cacheDir, nil), List: list, NodeNS: nodeNS}, nil
}

func (r *Runner) rt(containerID, netnsPath, ifName string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: containerID, NetNS: netnsPath, IfName: ifName,
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "trellis"}, {"K8S_POD_NAME", containerID}, {"K8S_POD_UID", "uid-" + containerID}},
	}
}

func (r *Runner) in(fn func() error) error {
	if r.NodeNS == nil {
		return fn()
	}
	return r.NodeNS.Do(func(ns.NetNS) error { return fn() })
}

// Add runs ADD for one attachment.
func (r *Runner) Add(ctx context.Context, containerID, netnsPath, ifName string) (res types.Result, err error) {
	err = r.in(func() error {
		res, err = r.cni.AddNetworkList(ctx, r.List, r.rt(containerID, netnsPath, ifName))
		return err
	})
	return res, err
}

// Del runs DEL for one attachment.
func (r *Runner) Del(ctx context.Context, containerID, netnsPath, ifName string) error {
	return r.in(func() error { return r.cni.DelNetworkList(ctx, r.List, r.rt(containerID, netnsPath, ifName)) })
}

// Check runs CHECK for one attachment (with the cached prevResult).
func (r *Runner) Check(ctx context.Context, containerID, netnsPath, ifName string) error {
	return r.in(func() error { return r.cni.CheckNetworkList(ctx, r.List, r.rt(containerID, netnsPath, ifName)) })
}

// GC runs GC keeping only valid attachments.
func (r *Runner) GC(ctx context.Context, valid []types.GCAttachment) error {
	return r.in(func() error { return r.cni.GCNetworkList(ctx, r.List, &libcni.GCArgs{ValidAttachments: valid}) })
}

// Status runs STATUS.
func (r *Runner) Status(ctx context.Context) error {
	return r.in(func() error { return r.cni.GetStatusNetworkList(ctx, r.List) })
}

// NewNetNS creates a named network namespace with `ip netns add` (so it is
// visible to `ip netns list` and to operators) with loopback up.
func NewNetNS(name string) (ns.NetNS, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		_ = DeleteNetNS(name)
		return nil, fmt.Errorf("set lo up in %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	n, err := ns.GetNS(filepath.Join("/run/netns", name))
	if err != nil {
		_ = DeleteNetNS(name)
		return nil, err
	}
	return n, nil
}

// DeleteNetNS removes a namespace made by NewNetNS; absent is success.
func DeleteNetNS(name string) error {
	if _, err := os.Stat(filepath.Join("/run/netns", name)); os.IsNotExist(err) {
		return nil
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Sysctl writes a sysctl inside the namespace n (path like net/ipv4/ip_forward).
func Sysctl(n ns.NetNS, key, value string) error { return sysctl.Netns{NS: n}.Set(key, value) }

// BuildPlugin builds trellis-cni from this module into dir and returns its
// path (the kernel tests drive the real binary through libcni).
func BuildPlugin(dir string) (string, error) {
	bin := filepath.Join(dir, "trellis-cni")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/trellisnet/trellis/cmd/trellis-cni").CombinedOutput(); err != nil {
		return "", fmt.Errorf("build trellis-cni: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return bin, nil
}
