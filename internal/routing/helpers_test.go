package routing

import "fmt"

// fmtSscanHex parses a two-digit hex byte.
func fmtSscanHex(s string, b *byte) (int, error) { return fmt.Sscanf(s, "%02x", b) }
