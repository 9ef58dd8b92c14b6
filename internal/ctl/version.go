package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"sort"

	"github.com/spf13/cobra"

	"github.com/trellisnet/trellis/internal/agentapi"
)

// VersionInfo is `trellisctl version -o json`.
type VersionInfo struct {
	Client string             `json:"client"`
	Agents []agentapi.Version `json:"agents,omitempty"`
	// Unreachable names the nodes whose agent did not answer, with why.
	Unreachable map[string]string `json:"unreachable,omitempty"`
}

func versionCommand(o *Options) *cobra.Command {
	var output string
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print trellisctl's version and each node's agent version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ValidateOutput(output, OutputJSON, OutputYAML); err != nil {
				return err
			}
			info := VersionInfo{Client: o.Version}
			if !clientOnly {
				if err := o.agentVersions(cmd.Context(), &info); err != nil {
					return err
				}
			}
			if output != OutputTable {
				return PrintStructured(o.Out, output, info)
			}
			t := NewTable(o.Out, "COMPONENT", "NODE", "VERSION")
			t.Row("trellisctl", "", info.Client)
			for _, a := range info.Agents {
				t.Row("trellis-agent", a.Node, a.Version)
			}
			for _, n := range sortedKeys(info.Unreachable) {
				t.Row("trellis-agent", n, "unreachable: "+info.Unreachable[n])
			}
			return t.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json or yaml")
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print trellisctl's version only")
	return cmd
}

func (o *Options) agentVersions(ctx context.Context, info *VersionInfo) error {
	pods, err := o.AgentPods(ctx)
	if err != nil {
		return err
	}
	for _, node := range sortedKeys(pods) {
		var buf bytes.Buffer
		var v agentapi.Version
		err := o.AgentGet(ctx, pods[node], "/v1/version", &buf)
		if err == nil {
			err = json.Unmarshal(buf.Bytes(), &v)
		}
		if err != nil {
			if info.Unreachable == nil {
				info.Unreachable = map[string]string{}
			}
			info.Unreachable[node] = err.Error()
			continue
		}
		info.Agents = append(info.Agents, v)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
