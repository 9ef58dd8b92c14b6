package cni

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
)

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, errUnknownLevel
}

// callLog accumulates the fields of the one log line a call writes.
type callLog struct {
	attrs []slog.Attr
}

func (l *callLog) add(key string, value any) { l.attrs = append(l.attrs, slog.Any(key, value)) }

// openLogger opens the plugin's log file as named by the (possibly invalid)
// configuration on stdin. Logging must never fail a call: on any problem it
// logs nowhere.
func openLogger(stdin []byte) (*slog.Logger, func()) {
	var c struct {
		LogFile  string `json:"logFile"`
		LogLevel string `json:"logLevel"`
	}
	_ = json.Unmarshal(stdin, &c)
	if c.LogFile == "" {
		c.LogFile = DefaultLogFile
	}
	level, err := parseLevel(c.LogLevel)
	if err != nil {
		level = slog.LevelInfo
	}
	var w io.Writer = io.Discard
	closeFn := func() {}
	if filepath.IsAbs(c.LogFile) {
		if err := os.MkdirAll(filepath.Dir(c.LogFile), 0o755); err == nil {
			if f, err := os.OpenFile(c.LogFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
				w = f
				closeFn = func() { _ = f.Close() }
			}
		}
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})), closeFn
}

// logged wraps a command so that every call writes exactly one structured
// line: command, container ID, interface, pod, duration and result.
func logged(command string, fn func(*skel.CmdArgs, *callLog) error) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error {
		start := time.Now()
		cl := &callLog{}
		err := fn(args, cl)
		logger, closeLog := openLogger(args.StdinData)
		defer closeLog()
		attrs := []slog.Attr{
			slog.String("command", command),
			slog.String("containerID", args.ContainerID),
			slog.String("ifname", args.IfName),
			slog.String("netns", args.Netns),
			slog.Float64("durationMs", float64(time.Since(start).Microseconds())/1000),
		}
		if pod := podName(args.Args); pod != "" {
			attrs = append(attrs, slog.String("pod", pod))
		}
		attrs = append(attrs, cl.attrs...)
		level, msg := slog.LevelInfo, "ok"
		if err != nil {
			level, msg = slog.LevelError, "failed"
			attrs = append(attrs, slog.String("error", err.Error()))
		}
		logger.LogAttrs(context.Background(), level, msg, attrs...)
		return err
	}
}

// cniArg returns the value of key in CNI_ARGS ("K1=V1;K2=V2").
func cniArg(cniArgs, key string) string {
	for _, kv := range strings.Split(cniArgs, ";") {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v
		}
	}
	return ""
}

// podNamespace is the pod's Kubernetes namespace as the runtime passes it.
func podNamespace(cniArgs string) string { return cniArg(cniArgs, "K8S_POD_NAMESPACE") }

// podName is namespace/name of the pod, "" when the runtime passed no name.
func podName(cniArgs string) string {
	name := cniArg(cniArgs, "K8S_POD_NAME")
	if name == "" {
		return ""
	}
	return podNamespace(cniArgs) + "/" + name
}
