package cni

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseConfigValid(t *testing.T) {
	conf, err := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"trellis-cni","mtu":1400,
		"ipam":{"subnets":["10.1.2.0/24","fd00::7/120"],"dataDir":"/x/ipam"},"logFile":"/x/log","logLevel":"debug"}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.MTU != 1400 || conf.IPAM.DataDir != "/x/ipam" || len(conf.Subnets()) != 2 {
		t.Fatalf("unexpected config: %+v", conf)
	}
	if got := conf.Subnets()[1].String(); got != "fd00::/120" {
		t.Fatalf("subnet not masked: %s", got)
	}
}

func TestParseConfigDefaults(t *testing.T) {
	conf, err := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"trellis-cni"}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.IPAM.DataDir != "/var/lib/trellis/ipam" || conf.NodeStateFile != "/var/lib/trellis/node-state.json" {
		t.Fatalf("defaults not applied: %+v", conf)
	}
}

func TestParseConfigInvalidNamesFieldAndValue(t *testing.T) {
	cases := map[string]string{
		`{"name":"n","mtu":100000}`:                       "mtu=100000",
		`{"name":"n","mtu":-1}`:                           "mtu=-1",
		`{"name":"n","ipam":{"subnets":["10.0.0.0/33"]}}`: "ipam.subnets[0]=10.0.0.0/33",
		`{"name":"n","ipam":{"subnets":["10.0.0.0/31"]}}`: "ipam.subnets[0]=10.0.0.0/31",
		`{"name":"n","ipam":{"dataDir":"relative/dir"}}`:  "ipam.dataDir=relative/dir",
		`{"name":"n","nodeStateFile":"state.json"}`:       "nodeStateFile=state.json",
		`{"name":"n","logFile":"cni.log"}`:                "logFile=cni.log",
		`{"name":"n","logLevel":"loud"}`:                  "logLevel=loud",
		`{"name":"n","type":"bridge"}`:                    "type=bridge",
	}
	for in, want := range cases {
		_, err := ParseConfig([]byte(in))
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig {
			t.Errorf("%s: want CNI error 7, got %v", in, err)
			continue
		}
		if !strings.Contains(te.Msg, want) {
			t.Errorf("%s: message %q does not name %q", in, te.Msg, want)
		}
	}
}

func TestParseConfigReportsAllProblems(t *testing.T) {
	_, err := ParseConfig([]byte(`{"name":"n","mtu":1,"logLevel":"x","ipam":{"subnets":["nope"]}}`))
	for _, want := range []string{"mtu=1", "logLevel=x", "ipam.subnets[0]=nope"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %s", err, want)
		}
	}
}

func TestParseConfigMalformedJSON(t *testing.T) {
	_, err := ParseConfig([]byte(`{"name":`))
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrDecodingFailure {
		t.Fatalf("want CNI error 6, got %v", err)
	}
}

func TestPodName(t *testing.T) {
	if got := podName("IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=a;K8S_POD_INFRA_CONTAINER_ID=c"); got != "x/a" {
		t.Fatalf("got %q", got)
	}
	if got := podName(""); got != "" {
		t.Fatalf("got %q", got)
	}
}

// FuzzParseConfig: arbitrary stdin never panics and every error is a CNI
// error with code 6 (decoding) or 7 (invalid config).
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"n","type":"trellis-cni","mtu":1400,"ipam":{"subnets":["10.0.0.0/24"]}}`,
		`{"name":"n","ipam":{"subnets":["fd00::/64","10.0.0.0/8"],"dataDir":"/d"}}`,
		`{"name":"n","ipam":{"subnets":[1,2]}}`,
		`{"name":"n","mtu":"big"}`,
		`{"name":"n","logLevel":"DEBUG","logFile":"/l"}`,
		`{"name":"n","prevResult":{"ips":[{"address":"10.0.0.2/32"}]}}`,
		`[]`, `null`, `{`, ``, "\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		conf, err := ParseConfig(data)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) || (te.Code != types.ErrDecodingFailure && te.Code != types.ErrInvalidNetworkConfig) {
				t.Fatalf("unexpected error kind: %#v", err)
			}
			return
		}
		for _, p := range conf.Subnets() {
			if !p.IsValid() {
				t.Fatalf("accepted invalid subnet %v", p)
			}
		}
	})
}
