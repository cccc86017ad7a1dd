package sim

import (
	"net/http"
	"strings"
	"time"
)

// FaultKind is a way a simulated API misbehaves.
type FaultKind int

// The faults the simulator can inject.
const (
	// FaultNone serves normally.
	FaultNone FaultKind = iota
	// FaultStatus answers Status (500, 503, 429, ...) with the API's error
	// body; RetryAfter sets the Retry-After header.
	FaultStatus
	// FaultJunk answers 200 with truncated JSON.
	FaultJunk
	// FaultHTML answers Status (default 502) with an HTML error page.
	FaultHTML
	// FaultHang never answers until the client gives up.
	FaultHang
	// FaultReset closes the connection without a response.
	FaultReset
	// FaultSlowDrip sends a valid-looking body one byte every DripEvery.
	FaultSlowDrip
	// FaultOversize answers 200 with a body of Size bytes.
	FaultOversize
)

// Fault describes an injected failure.
type Fault struct {
	Kind       FaultKind
	Status     int
	RetryAfter string
	// Count is how many requests the fault affects; 0 means until cleared.
	Count int
	// DripEvery is the pause between bytes of FaultSlowDrip; 0 means 1s.
	DripEvery time.Duration
	// Size is FaultOversize's body size; 0 means 64 MiB.
	Size int64
	// Only, when set, limits the fault to requests whose path contains it.
	Only string
}

// SetFault makes api misbehave as f; a zero Fault clears it.
func (s *Sim) SetFault(api API, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Kind == FaultNone {
		delete(s.faults, api)
		return
	}
	s.faults[api] = &f
}

// ClearFaults removes every injected fault and latency.
func (s *Sim) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = map[API]*Fault{}
	s.latency = map[API]time.Duration{}
}

// takeFault returns the fault to apply to r, consuming one use of it.
func (s *Sim) takeFault(api API, r *http.Request) (Fault, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lat := s.latency[api]
	f := s.faults[api]
	if f == nil || (f.Only != "" && !strings.Contains(r.URL.Path, f.Only)) {
		return Fault{}, lat
	}
	out := *f
	if f.Count > 0 {
		f.Count--
		if f.Count == 0 {
			delete(s.faults, api)
		}
	}
	return out, lat
}

func (s *Sim) withFaults(api API, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, lat := s.takeFault(api, r)
		if lat > 0 {
			t := time.NewTimer(lat)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		switch f.Kind {
		case FaultNone:
			next.ServeHTTP(w, r)
		case FaultStatus:
			s.count(api, "fault")
			if f.RetryAfter != "" {
				w.Header().Set("Retry-After", f.RetryAfter)
			}
			status := f.Status
			if status == 0 {
				status = http.StatusInternalServerError
			}
			switch api {
			case E2E:
				writeJSON(w, status, e2eEnvelope(status, http.StatusText(status), map[string]any{}, http.StatusText(status)))
			case VPNBingo:
				writeJSON(w, status, map[string]any{"success": false, "data": nil, "error": map[string]any{"code": status, "message": http.StatusText(status)}})
			default:
				writeJSON(w, status, map[string]any{"detail": http.StatusText(status)})
			}
		case FaultJunk:
			s.count(api, "fault")
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"success": tru, "data": {"count": 3, "results": [{"id": `))
		case FaultHTML:
			s.count(api, "fault")
			status := f.Status
			if status == 0 {
				status = http.StatusBadGateway
			}
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(status)
			_, _ = w.Write([]byte("<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n"))
		case FaultHang:
			s.count(api, "fault")
			select {
			case <-r.Context().Done():
			case <-s.closed:
			}
		case FaultReset:
			s.count(api, "fault")
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					_ = conn.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		case FaultSlowDrip:
			s.count(api, "fault")
			every := f.DripEvery
			if every <= 0 {
				every = time.Second
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			fl, _ := w.(http.Flusher)
			for _, b := range []byte(`{"count": 1, "results": [{"id": 1}]}`) {
				if _, err := w.Write([]byte{b}); err != nil {
					return
				}
				if fl != nil {
					fl.Flush()
				}
				select {
				case <-time.After(every):
				case <-r.Context().Done():
					return
				case <-s.closed:
					return
				}
			}
		case FaultOversize:
			s.count(api, "fault")
			size := f.Size
			if size <= 0 {
				size = 64 << 20
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			chunk := []byte(strings.Repeat(" ", 32<<10))
			_, _ = w.Write([]byte(`{"count":0,"results":[]`))
			for written := int64(0); written < size; written += int64(len(chunk)) {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
			_, _ = w.Write([]byte("}"))
		}
	})
}
