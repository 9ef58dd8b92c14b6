// Package sysctl reads and writes kernel parameters under /proc/sys: the
// one sysctl writer of the plugin and the agent. Paths are relative to
// /proc/sys with slashes ("net/ipv4/ip_forward"); values apply to the
// network namespace of the calling thread (or the one given).
package sysctl

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Proc sets sysctls under /proc/sys (Root overrides it, for tests).
type Proc struct{ Root string }

// Set writes value to <root>/<path> unless it already holds it.
func (p Proc) Set(path, value string) error {
	file := p.file(path)
	cur, err := os.ReadFile(file)
	if err == nil && string(bytes.TrimSpace(cur)) == value {
		return nil
	}
	if err := os.WriteFile(file, []byte(value), 0o644); err != nil {
		return fmt.Errorf("set sysctl %s=%s: %w", path, value, err)
	}
	return nil
}

// Get reads <root>/<path>, trimmed.
func (p Proc) Get(path string) (string, error) {
	b, err := os.ReadFile(p.file(path))
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", path, err)
	}
	return string(bytes.TrimSpace(b)), nil
}

func (p Proc) file(path string) string {
	root := p.Root
	if root == "" {
		root = "/proc/sys"
	}
	return filepath.Join(root, path)
}

// Set writes path in the calling thread's network namespace (see Proc.Set).
func Set(path, value string) error { return Proc{}.Set(path, value) }

// SetAt writes path inside the network namespace at netnsPath ("" is the
// calling thread's).
func SetAt(netnsPath, path, value string) error {
	if netnsPath == "" {
		return Set(path, value)
	}
	return ns.WithNetNSPath(netnsPath, func(ns.NetNS) error { return Set(path, value) })
}

// Netns reads and sets sysctls inside another network namespace
// (benchmarks and tests that play a node in a namespace).
type Netns struct{ NS ns.NetNS }

// Get reads path inside the namespace.
func (s Netns) Get(path string) (v string, err error) {
	err = s.NS.Do(func(ns.NetNS) error { v, err = (Proc{}).Get(path); return err })
	return v, err
}

// Set writes path inside the namespace (unless already set).
func (s Netns) Set(path, value string) error {
	return s.NS.Do(func(ns.NetNS) error { return (Proc{}).Set(path, value) })
}
