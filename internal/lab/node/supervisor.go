package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/trellisnet/trellis/internal/atomicfile"
	"github.com/trellisnet/trellis/internal/lab/proc"
)

// child is one supervised process of a node.
type child struct {
	name string
	argv []string
	env  []string
}

// Run is the body of `trellis-lab __node`: it runs in the node's network
// namespace and a fresh mount namespace, sets the mounts up, then runs
// containerd, imports the images, and keeps kubelet, kube-proxy and (in the
// process install mode) the Trellis agent running (restarting them when they exit, as kubelet restarts
// a DaemonSet pod) until ctx is cancelled, when it stops everything of the
// node, containers included.
func Run(ctx context.Context, s Spec) error {
	if err := setupNodeMounts(s); err != nil {
		return err
	}
	logs := filepath.Join(s.Dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", logs, err)
	}
	sup := &supervisor{dir: s.Dir, logs: logs, pids: map[string]int{}, restarts: map[string]int{}}
	defer func() {
		_ = proc.KillCgroup(s.Group, 5*time.Second)
	}()

	var wg sync.WaitGroup
	runCtx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		sup.keep(runCtx, child{name: "containerd", argv: []string{s.Bin["containerd"], "--config", containerdConfPath}})
	}()
	if err := waitSocket(ctx, containerdSock, 60*time.Second); err != nil {
		return fmt.Errorf("containerd did not start (see %s): %w", filepath.Join(logs, "containerd.log"), err)
	}
	for _, img := range s.Images {
		if err := proc.Run(ctx, "ctr", "--address", containerdSock, "-n", "k8s.io", "images", "import", img); err != nil {
			return fmt.Errorf("importing %s: %w", img, err)
		}
	}
	children := []child{
		{name: "kubelet", argv: []string{s.Bin["kubelet"], "--config=" + kubeletConfigPath, "--kubeconfig=" + kubeletKubeconfig,
			"--node-ip=" + strings.Join(s.cluster().NodeIPs, ","), "--hostname-override=" + s.Name, "--v=1"}},
		{name: "kube-proxy", argv: []string{s.Bin["kube-proxy"], "--config=" + kubeProxyConfig, "--v=1"}},
	}
	if _, err := os.Stat(agentInstallDir + "/trellis-agent"); err == nil && s.AgentProcess {
		children = append(children, child{name: "trellis-agent", argv: AgentArgs(s), env: []string{"NODE_NAME=" + s.Name}})
	}
	for _, c := range children {
		wg.Add(1)
		go func() { defer wg.Done(); sup.keep(runCtx, c) }()
	}
	<-ctx.Done()
	return nil
}

// PIDs is what the supervisor publishes about its children.
type PIDs struct {
	PIDs     map[string]int `json:"pids"`
	Restarts map[string]int `json:"restarts"`
}

// ReadPIDs reads a node's published child PIDs.
func ReadPIDs(nodeDir string) (PIDs, error) {
	var np PIDs
	data, err := os.ReadFile(filepath.Join(nodeDir, "pids.json"))
	if err != nil {
		return np, err
	}
	return np, json.Unmarshal(data, &np)
}

type supervisor struct {
	dir, logs string
	mu        sync.Mutex
	pids      map[string]int
	restarts  map[string]int
}

func (s *supervisor) publish(name string, pid int, restarted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pids[name] = pid
	if restarted {
		s.restarts[name]++
	}
	data, err := json.Marshal(PIDs{PIDs: s.pids, Restarts: s.restarts})
	if err == nil {
		_ = atomicfile.Write(filepath.Join(s.dir, "pids.json"), data, 0o644)
	}
}

// keep runs c until ctx ends, restarting it with backoff when it exits.
func (s *supervisor) keep(ctx context.Context, c child) {
	backoff := time.Second
	for attempt := 0; ctx.Err() == nil; attempt++ {
		lf, err := os.OpenFile(filepath.Join(s.logs, c.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return
		}
		cmd := exec.Command(c.argv[0], c.argv[1:]...)
		cmd.Stdout, cmd.Stderr = lf, lf
		cmd.Env = append(os.Environ(), c.env...)
		start := time.Now()
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(lf, "trellis-lab: starting %s: %v\n", c.name, err)
		} else {
			s.publish(c.name, cmd.Process.Pid, attempt > 0)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				fmt.Fprintf(lf, "trellis-lab: %s exited: %v\n", c.name, err)
			case <-ctx.Done():
				_ = cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-done:
				case <-time.After(5 * time.Second):
					_ = cmd.Process.Kill()
					<-done
				}
				lf.Close()
				return
			}
		}
		lf.Close()
		if time.Since(start) > 30*time.Second {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func waitSocket(ctx context.Context, path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
