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

// PodEvent tells c what its pod informer's event handler would: obj was
// added, updated or deleted (tests that change an informer's indexer
// directly, without running the informer).
func (c *Controller) PodEvent(obj any) { c.podChanged(obj) }
