package syncrunner

import "k8s.io/client-go/tools/cache"

// EventHandler returns an informer event handler that calls changed on
// every add, delete and update, except updates that carry the same
// resourceVersion (an informer resync: nothing changed).
func EventHandler(changed func()) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { changed() },
		UpdateFunc: func(oldObj, newObj any) {
			type versioned interface{ GetResourceVersion() string }
			if o, ok := oldObj.(versioned); ok {
				if n, ok := newObj.(versioned); ok && o.GetResourceVersion() != "" &&
					o.GetResourceVersion() == n.GetResourceVersion() {
					return
				}
			}
			changed()
		},
		DeleteFunc: func(any) { changed() },
	}
}
