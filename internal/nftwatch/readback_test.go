package nftwatch

import "testing"

func TestParseSetKey(t *testing.T) {
	for key, want := range map[string]string{"10.1.0.0/16": "10.1.0.0/16", "10.1.2.3": "10.1.2.3/32", "fd00::/64": "fd00::/64",
		"fd00::1": "fd00::1/128", "10.0.0.1-10.0.0.9": "", "": ""} {
		p, ok := ParseSetKey([]string{key})
		switch {
		case ok && p.String() != want:
			t.Errorf("ParseSetKey(%q) = %v, want %q", key, p, want)
		case !ok && want != "":
			t.Errorf("ParseSetKey(%q) failed, want %s", key, want)
		}
	}
	if _, ok := ParseSetKey([]string{"10.0.0.0/8", "x"}); ok {
		t.Error("a concatenated key parsed as a prefix")
	}
}
