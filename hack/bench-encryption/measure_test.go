package main

import "testing"

func TestOnFeatures(t *testing.T) {
	ethtool := `Features for hwg0:
rx-checksumming: off [fixed]
tx-checksumming: on
	tx-checksum-ipv4: off [fixed]
tcp-segmentation-offload: on
	tx-tcp-segmentation: on
	tx-tcp6-segmentation: on
generic-segmentation-offload: on
generic-receive-offload: on
rx-gro-list: off
tx-udp-segmentation: on
rx-udp-gro-forwarding: off
`
	want := "generic-receive-offload, generic-segmentation-offload, tx-checksumming, tx-tcp-segmentation, tx-tcp6-segmentation, tx-udp-segmentation"
	if got := onFeatures(ethtool); got != want {
		t.Errorf("onFeatures = %q, want %q", got, want)
	}
	if got := onFeatures("Features for x:\ntx-checksumming: off\n"); got != "none" {
		t.Errorf("onFeatures with all off = %q, want none", got)
	}
}
