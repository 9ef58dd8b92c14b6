package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/agentapi"
)

// DropsFilter selects the drops Drops reports.
type DropsFilter struct {
	// Since, when > 0, leaves out drops older than this (by each agent's
	// clock); 0 means every drop the agents keep.
	Since time.Duration
	// Follow keeps streaming new drops until ctx is cancelled.
	Follow bool
	// Namespace and Pod (a name in Namespace) match either end.
	Namespace, Pod string
}

func (f DropsFilter) query() agentapi.DropsQuery {
	return agentapi.DropsQuery{SinceAgo: f.Since, Follow: f.Follow, Namespace: f.Namespace, Pod: f.Pod}
}

// Drops reads the deny log of every node's agent (agentapi.DropsPath) and
// calls fn for each drop f selects. Without Follow it returns once every
// agent has answered, having called fn in time order; with Follow it calls
// fn as drops arrive (never concurrently) until ctx is cancelled or fn
// fails. A node whose agent cannot be read is reported on o.ErrOut and
// left out; Drops fails only when no node can be read.
func (o *Options) Drops(ctx context.Context, f DropsFilter, fn func(agentapi.Drop) error) error {
	pods, err := o.AgentPods(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex // serialises fn and the fields below
		fnErr    error
		failed   int
		buffered []agentapi.Drop
		wg       sync.WaitGroup
	)
	deliver := func(d agentapi.Drop) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case fnErr != nil:
		case !f.Follow:
			buffered = append(buffered, d)
		default:
			if fnErr = fn(d); fnErr != nil {
				cancel()
			}
		}
	}
	path := f.query().Path()
	for _, node := range sortedKeys(pods) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := o.nodeDrops(ctx, pods[node], path, f.Follow, deliver)
			if err != nil && ctx.Err() == nil {
				mu.Lock()
				failed++
				fmt.Fprintf(o.ErrOut, "warning: node %s: %v\n", node, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if fnErr != nil {
		return fnErr
	}
	if len(pods) > 0 && failed == len(pods) {
		return fmt.Errorf("no node's deny log could be read (%d nodes)", failed)
	}
	sort.SliceStable(buffered, func(i, j int) bool { return buffered[i].Time.Before(buffered[j].Time) })
	for _, d := range buffered {
		if err := fn(d); err != nil {
			return err
		}
	}
	return nil
}

// nodeDrops streams one agent's answer, decoding it line by line.
func (o *Options) nodeDrops(ctx context.Context, pod *corev1.Pod, path string, follow bool, deliver func(agentapi.Drop)) error {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		var err error
		if follow {
			err = o.AgentStream(ctx, pod, path, pw)
		} else {
			err = o.AgentGet(ctx, pod, path, pw)
		}
		pw.CloseWithError(err)
		done <- err
	}()
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	var decodeErr error
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var d agentapi.Drop
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			decodeErr = fmt.Errorf("bad line from the agent: %w", err)
			break
		}
		deliver(d)
	}
	pr.CloseWithError(io.ErrClosedPipe) // unblock the writer if we stopped early
	err := <-done
	if decodeErr != nil {
		return decodeErr
	}
	return err
}

func dropsCommand(o *Options) *cobra.Command {
	var f DropsFilter
	var output string
	cmd := &cobra.Command{
		Use:   "drops",
		Short: "Show packets dropped by NetworkPolicy and anti-spoofing, from every node's deny log",
		Long: `Reads the deny log every agent keeps (the last 1000 drops of the last 10 minutes per
node) and prints one line per dropped packet: time, node, source, destination,
port, protocol, the direction of the isolation that dropped it and the verdict
(the isolated pod and the policies selecting it, anti-spoofing, or a pod not
programmed yet). --follow keeps streaming new drops.`,
		Example: `  trellisctl drops --since 5m
  trellisctl drops -n shop --pod cart-0 --follow
  trellisctl drops -o json --follow`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ValidateOutput(output, OutputJSON, OutputWide); err != nil {
				return err
			}
			if err := o.checkDropsFilter(cmd.Context(), &f); err != nil {
				return err
			}
			p := newDropPrinter(o.Out, output)
			return o.Drops(cmd.Context(), f, p.print)
		},
	}
	cmd.Flags().BoolVarP(&f.Follow, "follow", "f", false, "keep streaming new drops until interrupted")
	cmd.Flags().DurationVar(&f.Since, "since", 0, "only drops newer than this (e.g. 30s, 5m); default: all the agents keep")
	cmd.Flags().StringVarP(&f.Namespace, "namespace", "n", "", "only drops from or to pods of this namespace")
	cmd.Flags().StringVar(&f.Pod, "pod", "", "only drops from or to this pod (NAME with -n, or NAMESPACE/NAME)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json (one object per line) or wide")
	return cmd
}

// checkDropsFilter validates the flags and that the namespace and pod
// exist (bad input, exit 2).
func (o *Options) checkDropsFilter(ctx context.Context, f *DropsFilter) error {
	if f.Since < 0 {
		return Usage("--since %s: must not be negative", f.Since)
	}
	if ns, name, ok := strings.Cut(f.Pod, "/"); ok {
		if f.Namespace != "" && f.Namespace != ns {
			return Usage("--pod %s is not in namespace %s", f.Pod, f.Namespace)
		}
		f.Namespace, f.Pod = ns, name
	}
	if f.Pod != "" && f.Namespace == "" {
		return Usage("--pod %s: give its namespace with -n or as NAMESPACE/NAME", f.Pod)
	}
	if f.Namespace == "" {
		return nil
	}
	cs, err := o.Clientset()
	if err != nil {
		return err
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, f.Namespace, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		return Usage("namespace %q not found", f.Namespace)
	} else if err != nil {
		return fmt.Errorf("reading namespace %s: %w", f.Namespace, err)
	}
	if f.Pod == "" {
		return nil
	}
	if _, err := cs.CoreV1().Pods(f.Namespace).Get(ctx, f.Pod, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		return Usage("pod %s/%s not found", f.Namespace, f.Pod)
	} else if err != nil {
		return fmt.Errorf("reading pod %s/%s: %w", f.Namespace, f.Pod, err)
	}
	return nil
}
