package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/agentapi"
)

// StaleAfter is how many of the agent's maxSyncInterval a controller may go
// without a successful sync before it counts as stale (the agent's own
// /healthz uses the same bound for routing).
const StaleAfter = 3

// StatusReport is `trellisctl status -o json|yaml`.
type StatusReport struct {
	Nodes   []NodeStatus  `json:"nodes"`
	Summary StatusSummary `json:"summary"`
}

// NodeStatus is one node: its agent pod, its NetworkUnavailable condition,
// its agent's /v1/status, and the verdict.
type NodeStatus struct {
	Node    string `json:"node"`
	Healthy bool   `json:"healthy"`
	// Unhealthy lists why the node is not healthy (empty when healthy).
	Unhealthy []string `json:"unhealthy,omitempty"`
	// Warnings are worth a look but do not make the node unhealthy.
	Warnings []string `json:"warnings,omitempty"`
	// AgentPod is the agent's pod ("" when the node has none).
	AgentPod      string `json:"agentPod,omitempty"`
	AgentPhase    string `json:"agentPhase,omitempty"`
	AgentPodReady bool   `json:"agentPodReady"`
	Restarts      int32  `json:"restarts"`
	// NetworkUnavailable is the Node condition's status ("" when absent)
	// and its reason.
	NetworkUnavailable       string `json:"networkUnavailable,omitempty"`
	NetworkUnavailableReason string `json:"networkUnavailableReason,omitempty"`
	// Agent is the agent's answer; AgentError why there is none.
	Agent      *agentapi.Status `json:"agent,omitempty"`
	AgentError string           `json:"agentError,omitempty"`
}

// StatusSummary adds the nodes up. Policies is the most any agent counts
// (every agent sees every NetworkPolicy); pods isolated and routes are
// per node, so they are summed.
type StatusSummary struct {
	Nodes           int `json:"nodes"`
	Healthy         int `json:"healthy"`
	Unhealthy       int `json:"unhealthy"`
	Policies        int `json:"policies"`
	IsolatedIngress int `json:"isolatedIngress"`
	IsolatedEgress  int `json:"isolatedEgress"`
	Routes          int `json:"routes"`
	FastPathActive  int `json:"fastPathActive"`
	// Encrypted counts the nodes with encryption on, and
	// EncryptedPeersNoHandshake their WireGuard peers without a handshake.
	Encrypted                 int `json:"encrypted,omitempty"`
	EncryptedPeersNoHandshake int `json:"encryptedPeersNoHandshake,omitempty"`
}

// statusFetcher asks a node's agent for its status; tests replace it.
type statusFetcher interface {
	FetchStatus(ctx context.Context, pod *corev1.Pod) (*agentapi.Status, error)
}

// execFetcher reaches the agent through exec in its pod (Options.AgentGet).
type execFetcher struct{ o *Options }

func (f execFetcher) FetchStatus(ctx context.Context, pod *corev1.Pod) (*agentapi.Status, error) {
	var buf bytes.Buffer
	if err := f.o.AgentGet(ctx, pod, agentapi.StatusPath, &buf); err != nil {
		return nil, err
	}
	var st agentapi.Status
	if err := json.Unmarshal(buf.Bytes(), &st); err != nil {
		return nil, fmt.Errorf("decoding the agent's status: %w", err)
	}
	return &st, nil
}

// statusFlags are the status command's own flags.
type statusFlags struct {
	output       string
	agentTimeout time.Duration
	parallel     int
}

func statusCommand(o *Options) *cobra.Command {
	f := statusFlags{}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every node's agent: health, version, routing, policy, fast path, syncs (exit 1 when a node is unhealthy)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.runStatus(cmd.Context(), execFetcher{o}, f)
		},
	}
	cmd.Flags().StringVarP(&f.output, "output", "o", "", "output format: wide, json or yaml")
	cmd.Flags().DurationVar(&f.agentTimeout, "agent-timeout", 10*time.Second, "how long to wait for each node's agent")
	cmd.Flags().IntVar(&f.parallel, "parallel", 8, "how many agents to ask at once")
	return cmd
}

// runStatus collects, prints and judges; an unhealthy node is exit 1, its
// name and reasons in the error.
func (o *Options) runStatus(ctx context.Context, fetch statusFetcher, f statusFlags) error {
	if err := ValidateOutput(f.output, OutputWide, OutputJSON, OutputYAML); err != nil {
		return err
	}
	if f.parallel < 1 || f.agentTimeout <= 0 {
		return Usage("--parallel must be at least 1 and --agent-timeout positive")
	}
	rep, err := o.collectStatus(ctx, fetch, f.agentTimeout, f.parallel)
	if err != nil {
		return err
	}
	switch f.output {
	case OutputJSON, OutputYAML:
		err = PrintStructured(o.Out, f.output, rep)
	default:
		err = printStatus(o.Out, rep, f.output == OutputWide)
	}
	if err != nil {
		return err
	}
	var bad []string
	for _, n := range rep.Nodes {
		if !n.Healthy {
			bad = append(bad, n.Node+" ("+strings.Join(n.Unhealthy, "; ")+")")
		}
	}
	if len(bad) > 0 {
		return Failed("%d of %d nodes unhealthy: %s", len(bad), len(rep.Nodes), strings.Join(bad, ", "))
	}
	return nil
}

// collectStatus lists the Nodes and agent pods, asks every running agent
// for its status (at most parallel at once, each within timeout) and
// judges each node.
func (o *Options) collectStatus(ctx context.Context, fetch statusFetcher, timeout time.Duration, parallel int) (*StatusReport, error) {
	pods, err := o.AgentPods(ctx)
	if err != nil {
		return nil, err
	}
	cs, err := o.Clientset()
	if err != nil {
		return nil, err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	sort.Slice(nodes.Items, func(i, j int) bool { return nodes.Items[i].Name < nodes.Items[j].Name })
	rep := &StatusReport{Nodes: make([]NodeStatus, len(nodes.Items))}
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range nodes.Items {
		n := &nodes.Items[i]
		ns := &rep.Nodes[i]
		ns.Node = n.Name
		pod := pods[n.Name]
		if pod == nil || pod.Status.Phase != corev1.PodRunning {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				ns.AgentError = ctx.Err().Error()
				return
			}
			defer func() { <-sem }()
			fctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			st, err := fetch.FetchStatus(fctx, pod)
			if err != nil && fctx.Err() != nil {
				err = fmt.Errorf("no answer within %s", timeout)
			}
			if err != nil {
				ns.AgentError = err.Error()
				return
			}
			ns.Agent = st
		}()
	}
	wg.Wait()
	for i := range nodes.Items {
		judge(&rep.Nodes[i], &nodes.Items[i], pods[nodes.Items[i].Name])
	}
	rep.Summary = summarize(rep.Nodes)
	return rep, nil
}

// judge fills in the node's pod and condition facts and decides whether it
// is healthy. A node is healthy when all of these hold:
//   - an agent pod runs on it and is Ready;
//   - its agent answered /v1/status and reports itself ready;
//   - every controller of the agent has synced successfully, its last sync
//     did not fail, and its last success is no older than StaleAfter ×
//     the agent's maxSyncInterval (measured on the agent's clock);
//   - the agent reports no problem;
//   - the Node's NetworkUnavailable condition is not True.
//
// Peers the routing controller could not program and a fast path the
// kernel refused are warnings: pod networking works without them. With
// encryption on, so are an unreadable WireGuard device, a WireGuard peer
// without a handshake and a peer reached without the tunnel (no key): the
// agent's own problems and controllers judge the node, these say where
// encrypted traffic does not flow (yet).
func judge(ns *NodeStatus, node *corev1.Node, pod *corev1.Pod) {
	bad := func(format string, a ...any) { ns.Unhealthy = append(ns.Unhealthy, fmt.Sprintf(format, a...)) }
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable {
			ns.NetworkUnavailable, ns.NetworkUnavailableReason = string(c.Status), c.Reason
			if c.Status == corev1.ConditionTrue {
				bad("Node condition NetworkUnavailable is True (%s)", c.Reason)
			}
		}
	}
	switch {
	case pod == nil:
		bad("no agent pod")
	default:
		ns.AgentPod, ns.AgentPhase = pod.Name, podState(pod)
		for _, c := range pod.Status.ContainerStatuses {
			ns.Restarts += c.RestartCount
		}
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				ns.AgentPodReady = true
			}
		}
		if pod.Status.Phase != corev1.PodRunning {
			bad("agent pod %s is %s", pod.Name, ns.AgentPhase)
		} else if !ns.AgentPodReady {
			bad("agent pod %s is not ready", pod.Name)
		}
	}
	if ns.Agent == nil {
		if ns.AgentError != "" {
			bad("agent unreachable: %s", ns.AgentError)
		}
		ns.Healthy = len(ns.Unhealthy) == 0
		return
	}
	st := ns.Agent
	if !st.Ready {
		bad("agent not ready: %s", strings.Join(st.NotReady, "; "))
	}
	for _, r := range sortedKeys(st.Problems) {
		bad("problem %s: %s", r, st.Problems[r])
	}
	for _, c := range st.Controllers {
		switch {
		case c.LastError != "":
			bad("controller %s failing: %s", c.Name, c.LastError)
		case c.LastSuccess == nil:
			bad("controller %s has not synced yet", c.Name)
		case st.MaxSyncInterval.Duration > 0 && st.Time.Sub(*c.LastSuccess) > StaleAfter*st.MaxSyncInterval.Duration:
			bad("controller %s stale: last successful sync %s ago (resync every %s)", c.Name,
				st.Time.Sub(*c.LastSuccess).Round(time.Second), st.MaxSyncInterval.Duration)
		}
	}
	for _, p := range st.Routing.Peers {
		if p.State != agentapi.PeerProgrammed {
			ns.Warnings = append(ns.Warnings, fmt.Sprintf("peer %s not programmed: %s", p.Node, p.Reason))
		}
	}
	if st.FastPath.State == agentapi.FastPathNotLoad {
		ns.Warnings = append(ns.Warnings, "fast path unavailable: "+st.FastPath.Reason)
	}
	encryptionWarnings(ns)
	ns.Healthy = len(ns.Unhealthy) == 0
}

// podState is the pod's phase, or the reason its agent container waits
// (CrashLoopBackOff, ImagePullBackOff, ...).
func podState(pod *corev1.Pod) string {
	for _, c := range pod.Status.ContainerStatuses {
		if c.Name == agentContainer && c.State.Waiting != nil && c.State.Waiting.Reason != "" {
			return c.State.Waiting.Reason
		}
	}
	if pod.DeletionTimestamp != nil {
		return "Terminating"
	}
	return string(pod.Status.Phase)
}

func summarize(nodes []NodeStatus) StatusSummary {
	s := StatusSummary{Nodes: len(nodes)}
	for _, n := range nodes {
		if n.Healthy {
			s.Healthy++
		} else {
			s.Unhealthy++
		}
		if n.Agent == nil {
			continue
		}
		s.Policies = max(s.Policies, n.Agent.Policy.Policies)
		s.IsolatedIngress += n.Agent.Policy.IsolatedIngress
		s.IsolatedEgress += n.Agent.Policy.IsolatedEgress
		s.Routes += n.Agent.Routing.Routes
		if n.Agent.FastPath.State == agentapi.FastPathActive {
			s.FastPathActive++
		}
		if encrypted(n.Agent) {
			s.Encrypted++
			s.EncryptedPeersNoHandshake += len(n.Agent.Encryption.Peers) - n.Agent.Encryption.PeersWithHandshake
		}
	}
	return s
}
