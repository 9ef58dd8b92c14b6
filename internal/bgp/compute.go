package bgp

// Compute returns this node's desired speaker state and the problems
// found in the configuration.
func Compute(in Input) (Desired, []Problem) {
	// Filled in by the desired-state work: until then BGP stays off.
	return Desired{}, nil
}
