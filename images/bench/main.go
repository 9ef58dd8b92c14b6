// Command trellis-bench is the request/response side of the benchmark
// image (dpbench.Image; iperf3 is the throughput side):
//
//	trellis-bench serve PORT        echo server for the 1-byte loop
//	trellis-bench rr ADDR SECONDS   1-byte round trips to ADDR; prints {"transactions_per_second": N}
//	trellis-bench cc                the kernel's available TCP congestion controls, one line
//	trellis-bench sleep             hold the pod until SIGTERM
//
// It only hands over to internal/dpbench.
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/trellisnet/trellis/internal/dpbench"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "trellis-bench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: trellis-bench serve PORT | rr ADDR SECONDS | cc | sleep")
	}
	switch {
	case args[0] == "serve" && len(args) == 2:
		ln, err := net.Listen("tcp", net.JoinHostPort("", args[1]))
		if err != nil {
			return err
		}
		return dpbench.Echo(ln)
	case args[0] == "rr" && len(args) == 3:
		secs, err := strconv.Atoi(args[2])
		if err != nil || secs < 1 {
			return fmt.Errorf("rr: SECONDS %q is not a positive integer", args[2])
		}
		c, err := net.DialTimeout("tcp", args[1], 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		tps, err := dpbench.RRLoop(c, time.Duration(secs)*time.Second)
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(dpbench.RRResult{TransactionsPerSecond: tps})
	case args[0] == "cc" && len(args) == 1:
		b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
		if err != nil {
			return err
		}
		fmt.Println(strings.TrimSpace(string(b)))
		return nil
	case args[0] == "sleep" && len(args) == 1:
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		<-sigs
		return nil
	}
	return fmt.Errorf("unknown command %q", strings.Join(args, " "))
}
