package drops

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/trellisnet/trellis/internal/agentapi"
)

// Drops is what the handler serves: the ring, and why the deny log cannot
// be read ("" when it can).
type Drops interface {
	Follow(q agentapi.DropsQuery) (past []agentapi.Drop, next <-chan agentapi.Drop, cancel func() int)
	Unavailable() string
}

// Served pairs a Ring with its Source for the handler.
type Served struct {
	*Ring
	*Source
}

// Handler serves agentapi.DropsPath: the kept drops the query selects, one
// JSON object per line, oldest first; with follow=1 it then streams new
// ones, flushing each line, until the client goes away. When the deny log
// cannot be read and nothing was kept, it answers 503 with the reason.
func Handler(d Drops, now func() time.Time) http.Handler {
	if now == nil {
		now = time.Now
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, err := agentapi.ParseDropsQuery(r.URL.Query(), now())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		past, next, cancel := d.Follow(q)
		defer cancel()
		if why := d.Unavailable(); why != "" && len(past) == 0 {
			http.Error(w, "drops are unavailable: "+why, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		enc := json.NewEncoder(w)
		flusher, _ := w.(http.Flusher)
		flush := func() {
			if flusher != nil {
				flusher.Flush()
			}
		}
		for i := range past {
			if err := enc.Encode(&past[i]); err != nil {
				return
			}
		}
		flush()
		if !q.Follow {
			return
		}
		for {
			select {
			case <-r.Context().Done():
				return
			case dr := <-next:
				if err := enc.Encode(&dr); err != nil {
					return
				}
				flush()
			}
		}
	})
}

// String describes the ring's bounds (for logs).
func (r *Ring) String() string {
	return fmt.Sprintf("last %d drops, %s", r.size, r.maxAge)
}
