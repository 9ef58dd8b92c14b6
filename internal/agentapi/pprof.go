package agentapi

import (
	"net/http"
	"net/http/pprof"
)

// PprofPath is the prefix under which the agent serves the Go runtime's
// profiles (net/http/pprof): /debug/pprof/heap, /debug/pprof/allocs,
// /debug/pprof/goroutine, /debug/pprof/profile?seconds=N (CPU),
// /debug/pprof/trace?seconds=N and the index at /debug/pprof/. They are
// served only on the local socket, like everything here: reading one takes
// root on the node or pods/exec on the agent's pod.
const PprofPath = "/debug/pprof/"

// RegisterPprof adds the profile handlers to mux under PprofPath.
func RegisterPprof(mux *http.ServeMux) {
	mux.HandleFunc(PprofPath, pprof.Index) // the index and every named profile (heap, allocs, goroutine, ...)
	mux.HandleFunc(PprofPath+"cmdline", pprof.Cmdline)
	mux.HandleFunc(PprofPath+"profile", pprof.Profile)
	mux.HandleFunc(PprofPath+"symbol", pprof.Symbol)
	mux.HandleFunc(PprofPath+"trace", pprof.Trace)
}
