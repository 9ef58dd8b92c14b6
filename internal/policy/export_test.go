package policy

// GuardLive reports whether the table guard's watch runs (tests).
func (c *Controller) GuardLive() bool {
	if c.guard == nil {
		return false
	}
	c.guard.mu.Lock()
	defer c.guard.mu.Unlock()
	return c.guard.live
}
