// Package tor is the lab's top-of-rack router: BIRD 2 in the router
// network namespace, peering with every node over BGP (`trellis-lab up
// --bgp`). Config renders the pinned configuration (bird.conf.tmpl) from
// the lab's topology as pure data; Start runs BIRD as a lab process;
// Objects are the Kubernetes objects that peer the nodes with it.
package tor

import (
	"bytes"
	_ "embed"
	"fmt"
	"net/netip"
	"text/template"

	"github.com/trellisnet/trellis/internal/lab/topology"
)

// Template is the BIRD configuration template (bird.conf.tmpl), the one
// docs/bgp.md cites as the BIRD example.
//
//go:embed bird.conf.tmpl
var Template string

var tmpl = template.Must(template.New("bird.conf").Option("missingkey=error").Parse(Template))

// The ToR's settings that do not depend on the topology.
const (
	// BIRDVersion is the BIRD the lab's configuration is written for
	// (Debian 12's bird2).
	BIRDVersion = "2.0.12"
	// HoldTimeSeconds is BGP's usual 90 (BIRD's own default is 240); a
	// session takes the lower of both ends' hold times.
	HoldTimeSeconds = 90
	// RestartTimeSeconds is the graceful-restart time the ToR announces
	// for itself; a node's routes are kept for the time the node announces.
	RestartTimeSeconds = 120
	// BFDIntervalMs x BFDMultiplier is the BFD detection time.
	BFDIntervalMs = 100
	BFDMultiplier = 3
	// Password is the TCP-MD5 key of the ToR's MD5 sessions (on each
	// subnet's MD5 address): a lab secret, for the password tests.
	Password = "trellis-lab-md5"
)

// Config is the data the template is rendered with.
type Config struct {
	BIRDVersion   string
	RouterID      netip.Addr
	ASN           uint32
	OriginPrefix  netip.Prefix
	OriginNextHop netip.Addr
	// PodPrefix holds every node's pod CIDRs (the cluster CIDR).
	PodPrefix netip.Prefix
	// AcceptPrefixes are what the nodes may announce: PodPrefix and the
	// Service address range.
	AcceptPrefixes     []netip.Prefix
	HoldTimeSeconds    int
	RestartTimeSeconds int
	BFDIntervalMs      int
	BFDMultiplier      int
	Password           string
	Subnets            []Subnet
}

// Subnet is one node subnet the ToR accepts sessions from.
type Subnet struct {
	Index      int // 1-based, as in the subnet's bridge and interface names
	Name       string
	Interface  string
	Prefix     netip.Prefix
	Address    netip.Addr // the ToR's address: the nodes' gateway
	MD5Address netip.Addr // the ToR's address for TCP-MD5 sessions
}

// ConfigFor is the ToR's configuration for t (a topology planned with
// --bgp).
func ConfigFor(t topology.Topology) (Config, error) {
	if !t.Options.BGP || !t.OriginPrefix.IsValid() {
		return Config{}, fmt.Errorf("the lab was planned without --bgp: no ToR")
	}
	c := Config{
		BIRDVersion: BIRDVersion, RouterID: t.ExternalGW.Addr(), ASN: topology.ToRASN,
		OriginPrefix: t.OriginPrefix, OriginNextHop: t.External.Addr,
		PodPrefix:       t.Primary().ClusterCIDR, // --bgp labs are IPv4-only
		AcceptPrefixes:  []netip.Prefix{t.Primary().ClusterCIDR, t.ServicePrefix},
		HoldTimeSeconds: HoldTimeSeconds, RestartTimeSeconds: RestartTimeSeconds,
		BFDIntervalMs: BFDIntervalMs, BFDMultiplier: BFDMultiplier, Password: Password,
	}
	for _, s := range t.Subnets {
		if !s.MD5Addr.IsValid() || s.RouterIf == "" {
			return Config{}, fmt.Errorf("subnet %s has no ToR addresses", s.Prefix)
		}
		c.Subnets = append(c.Subnets, Subnet{Index: s.Index + 1, Name: fmt.Sprintf("subnet%d", s.Index+1),
			Interface: s.RouterIf, Prefix: s.Prefix, Address: s.Gateway, MD5Address: s.MD5Addr})
	}
	return c, nil
}

// Render is BIRD's configuration for c.
func Render(c Config) ([]byte, error) {
	var b bytes.Buffer
	if err := tmpl.Execute(&b, c); err != nil {
		return nil, fmt.Errorf("rendering the ToR's BIRD configuration: %w", err)
	}
	return b.Bytes(), nil
}
