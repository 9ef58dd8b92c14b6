package compare

import "fmt"

// Method describes how each row is measured, for the report.
func (o Options) Method() []string {
	l := o.Latency
	return []string{
		"Each lab is brought up by this run (`trellis-lab up --nodes 3 --subnets 2`, plus `--cni kube-router` for the peer), measured, and taken down; the labs run one after the other, never at the same time, so neither competes with the other for the 2 cores.",
		fmt.Sprintf("NetworkPolicy e2e: the upstream specs from `e2e.test` v1.37.2, `--ginkgo.focus=%s --ginkgo.skip=%s` (no SCTP sockets in this kernel), counted from ginkgo's JUnit report; the same binary and flags as `make conformance-netpol`.", o.NetpolFocus, o.NetpolSkip),
		"`trellisctl connectivity test -o json` and `trellisctl bench -o json`, run with the lab's admin kubeconfig; scenarios counted by verdict, ratios as reported (pod→pod across nodes ÷ node→node over the same nodes).",
		fmt.Sprintf("Policy programming latency: a client pod on the first node, an agnhost server on a node of the other subnet, the server isolated by a deny-all ingress policy. One change: create one policy admitting the client to TCP/8080; latency = start of the first TCP connect (from the client pod's network namespace) that succeeds, minus the start of the create call. Probes start every %s, each with its own %s timeout, so the resolution is %s and a dropped and a rejected SYN are treated alike. The policy is then deleted and the denial confirmed (3 failing probes in a row) before the next sample; %d samples. 100 policies: 99 policies selecting the server and admitting labels no pod has, then the one admitting the client, created back to back; latency from the last create call; all 100 deleted and the denial confirmed between samples; %d samples. A change not seen within %s counts as never flipped. p99 is the nearest rank (with fewer than 100 samples, the maximum).", l.Interval, l.Timeout, l.Interval, l.Repeats, l.Bursts, l.FlipWithin),
		"Agent memory: after the other measurements, the PSS (smaps_rollup) and RSS (VmRSS) of every `trellis-agent` or `kube-router` process in each node's cgroups.",
	}
}

// Limits lists the versions and what the lab cannot show.
func Limits() []string {
	return []string{
		"kube-router v2.1.0, built here from source through the Go module proxy (tools/kube-router) and run as its generic DaemonSet example runs it (hostNetwork, privileged) in an image built here (its static binary with Debian's iptables (nftables backend) and ipset). Flags: `--run-router=true --run-firewall=true --run-service-proxy=false --bgp-graceful-restart=true --enable-overlay=false --service-cluster-ip-range=10.96.0.0/16`, everything else its defaults. Pod networking: the CNI bridge and host-local plugins v1.10.0 with the configuration from kube-router's examples. The Go module list reports security advisories against v2.1.0: the build is for this measurement inside the lab's namespaces only and is never shipped.",
		"kube-router's service proxy is off (this kernel has no IPVS); kube-proxy v1.37.2 in nftables mode serves Services in both labs. This kernel has no IPIP or GRE, so kube-router runs without its overlay: it routes pod CIDRs over iBGP between nodes of one subnet, and the lab's router carries pod traffic between subnets through static routes to each node's pod CIDR that the lab adds for the kube-router lab (standing in for the upstream router a kube-router cluster would peer with over BGP).",
		"Trellis is the image from `make image` of the commit above, installed from the shipped manifest (deploy/trellis.yaml) with the lab's settings (routing mode auto).",
		"Kubernetes v1.37.2 (control plane, kubelet, kube-proxy), containerd 1.6 and runc from Debian 12, kernel 6.18 with cgroup v1; 3 nodes over 2 subnets in network namespaces of one machine with 2 cores, shared with other work: throughput ratios and latencies are relative figures for this machine, not absolute ones.",
		"The kernel allows at most 256 ipsets per network namespace (CONFIG_IP_SET_MAX; ip_set is built in, so the limit cannot be raised without a reboot); kube-router's NetworkPolicy controller keeps its selectors in ipsets.",
	}
}
