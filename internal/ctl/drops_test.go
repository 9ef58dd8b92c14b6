package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"github.com/trellisnet/trellis/internal/agentapi"
)

func TestDropsFilterBadInput(t *testing.T) {
	o := &Options{Namespace: "kube-system"}
	o.SetClients(&rest.Config{}, fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: "shop"}},
	))
	for _, tc := range []struct {
		f    DropsFilter
		want int // 0: accepted
		msg  string
	}{
		{DropsFilter{}, 0, ""},
		{DropsFilter{Namespace: "shop"}, 0, ""},
		{DropsFilter{Namespace: "shop", Pod: "db-0"}, 0, ""},
		{DropsFilter{Pod: "shop/db-0"}, 0, ""},
		{DropsFilter{Namespace: "nope"}, ExitUsage, `namespace "nope" not found`},
		{DropsFilter{Namespace: "shop", Pod: "gone"}, ExitUsage, "pod shop/gone not found"},
		{DropsFilter{Pod: "db-0"}, ExitUsage, "give its namespace"},
		{DropsFilter{Namespace: "other", Pod: "shop/db-0"}, ExitUsage, "not in namespace"},
		{DropsFilter{Since: -time.Second}, ExitUsage, "negative"},
	} {
		f := tc.f
		err := o.checkDropsFilter(context.Background(), &f)
		if tc.want == 0 {
			if err != nil {
				t.Errorf("%+v: %v", tc.f, err)
			}
			continue
		}
		if ExitCode(err) != tc.want || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%+v: %v (exit %d), want exit %d with %q", tc.f, err, ExitCode(err), tc.want, tc.msg)
		}
	}
	f := DropsFilter{Pod: "shop/db-0", Since: time.Minute, Follow: true}
	if err := o.checkDropsFilter(context.Background(), &f); err != nil {
		t.Fatal(err)
	}
	if got := f.query().Path(); got != "/v1/drops?follow=1&namespace=shop&pod=db-0&since=1m0s" {
		t.Fatalf("path %q", got)
	}
}

func TestDropPrinter(t *testing.T) {
	d := agentapi.Drop{Time: time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC), Node: "n2", Protocol: "TCP",
		Direction: "ingress", Verdict: "policy", Pod: "shop/db-0", Group: "ing-0123", Interface: "trl1",
		Policies: []string{"shop/db-only-from-api"},
		Src:      agentapi.Endpoint{IP: "10.244.1.5", Port: 40000, Pod: "shop/web-1"},
		Dst:      agentapi.Endpoint{IP: "10.244.2.7", Port: 5432, Pod: "shop/db-0"}}
	var js bytes.Buffer
	p := newDropPrinter(&js, OutputJSON)
	for range 2 {
		if err := p.print(d); err != nil {
			t.Fatal(err)
		}
	}
	lines := strings.Split(strings.TrimSpace(js.String()), "\n")
	var back agentapi.Drop
	if len(lines) != 2 || json.Unmarshal([]byte(lines[1]), &back) != nil || back.Dst.Port != 5432 || back.Policies[0] != "shop/db-only-from-api" {
		t.Fatalf("json output %q", js.String())
	}
	var tab bytes.Buffer
	p = newDropPrinter(&tab, OutputWide)
	_ = p.print(d)
	d.Verdict, d.Direction, d.Pod = "spoofed", "", "shop/web-1"
	_ = p.print(d)
	d.Verdict = "unencrypted"
	_ = p.print(d)
	d.Src.IP, d.Dst.IP, d.Protocol = "fd00:10:244:1::5", "fd00:10:244:2::7", "ICMPv6"
	d.Src.Port, d.Dst.Port = 0, 0
	_ = p.print(d)
	d.Protocol, d.Dst.Port = "TCP", 443
	_ = p.print(d)
	out := tab.String()
	for _, want := range []string{"TIME", "NODE", "shop/web-1", "shop/db-0", "5432", "TCP", "ingress",
		"isolated for ingress", "policies: shop/db-only-from-api", "group ing-0123", "10.244.1.5:40000 > 10.244.2.7:5432", "anti-spoofing",
		"fd00:10:244:1::5 > fd00:10:244:2::7;", "fd00:10:244:1::5 > [fd00:10:244:2::7]:443;",
		"would have left unencrypted"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "TIME") != 1 {
		t.Errorf("header printed more than once:\n%s", out)
	}
}
