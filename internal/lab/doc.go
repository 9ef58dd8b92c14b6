// Package lab runs a real Kubernetes cluster on one Linux machine: a control
// plane and kubelet+containerd nodes, each in its own network namespace,
// joined by bridge underlays in a switch namespace and a router namespace. It
// is the engine behind cmd/trellis-lab and the e2e test harness.
//
// This package orchestrates (Up, Down, Status, the agent's access, benches);
// each concern lives in a subpackage:
//
//	topology      the lab's shape (pure plan) and its netns/veth/bridge network
//	state         the lab's name, paths and state file
//	proc          processes the lab spawns, its cgroups, command helpers
//	pki           CA, certificates, kubeconfigs
//	controlplane  etcd, kube-apiserver, controller manager, scheduler, API forward
//	node          a node: spec, component configs, mounts, supervisor
//	images        agnhost and pause images built without a registry
//	kube          client-go helpers: admin client, polling, readiness
//	probe         the lab's connectivity.Prober: probes from inside pod namespaces
//	cli           the trellis-lab command line
package lab
