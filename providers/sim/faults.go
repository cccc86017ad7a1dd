package sim

import (
	"net/http"
	"strconv"
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
	// FaultEmpty answers Status (default 200) with an empty body: with
	// Served, an action the provider carried out whose answer a proxy
	// lost.
	FaultEmpty

	// faultThrottled is the throttle's 429 (SetThrottle).
	faultThrottled
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
	// Served, when set, lets the API carry the request out first (an
	// action takes effect, as the simulator's action log and the next
	// list show) and then answers with the fault instead of the API's
	// own answer: a proxy that mangled a provider's answer (FaultHTML
	// with Status 200, FaultEmpty, FaultJunk), or a connection lost
	// after the work was done (FaultReset, FaultHang).
	Served bool
}

// SetThrottle makes api answer 429 once more than perSecond requests a
// second arrive (a token bucket of burst tokens), as a throttling provider
// does: a Retry-After header and, for the DRF-style APIs, DRF's message
// "Request was throttled. Expected available in N seconds.". 0 clears it.
func (s *Sim) SetThrottle(api API, perSecond float64, burst int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if perSecond <= 0 {
		delete(s.throttles, api)
		return
	}
	s.throttles[api] = &bucket{rate: perSecond, burst: float64(max(burst, 1)), tokens: float64(max(burst, 1)), at: time.Now()}
}

// SetDetailFault makes the detail read (GET of the object) of one server
// of api misbehave as f; a zero Fault clears it. Lists and other servers
// are unaffected.
func (s *Sim) SetDetailFault(api API, id int, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Kind == FaultNone {
		delete(s.detailFaults[api], id)
		return
	}
	if s.detailFaults[api] == nil {
		s.detailFaults[api] = map[int]*Fault{}
	}
	s.detailFaults[api][id] = &f
}

// bucket is a server-side token bucket.
type bucket struct {
	rate, burst, tokens float64
	at                  time.Time
}

// take spends a token, or says how long until one is there.
func (b *bucket) take(now time.Time) (bool, time.Duration) {
	b.tokens = min(b.burst, b.tokens+now.Sub(b.at).Seconds()*b.rate)
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}

// detailPrefix is the object path prefix of each API.
func detailPrefix(api API) string {
	switch api {
	case VPNBingo:
		return "/api/v2/nodes/"
	case VPSOrg:
		return "/api/v1/servers/"
	}
	return "/myaccount/api/v1/nodes/"
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
	s.detailFaults = map[API]map[int]*Fault{}
	s.throttles = map[API]*bucket{}
}

// takeFault returns the fault to apply to r, consuming one use of it.
func (s *Sim) takeFault(api API, r *http.Request) (Fault, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lat := s.latency[api]
	if b := s.throttles[api]; b != nil {
		if ok, wait := b.take(time.Now()); !ok {
			secs := int(wait/time.Second) + 1
			s.requests[api]["throttled"]++
			return Fault{Kind: faultThrottled, Status: http.StatusTooManyRequests, RetryAfter: strconv.Itoa(secs)}, lat
		}
	}
	if r.Method == http.MethodGet {
		if id, rest, ok := pathID(r.URL.Path, detailPrefix(api)); ok && rest == "" {
			if f := s.detailFaults[api][id]; f != nil {
				out := *f
				if f.Count > 0 {
					if f.Count--; f.Count == 0 {
						delete(s.detailFaults[api], id)
					}
				}
				return out, lat
			}
		}
	}
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
		if f.Kind == FaultNone {
			next.ServeHTTP(w, r)
			return
		}
		if f.Served {
			next.ServeHTTP(&discardWriter{h: http.Header{}}, r)
		}
		switch f.Kind {
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
		case faultThrottled:
			w.Header().Set("Retry-After", f.RetryAfter)
			msg := "Request was throttled. Expected available in " + f.RetryAfter + " seconds."
			switch api {
			case E2E:
				writeJSON(w, f.Status, e2eEnvelope(f.Status, msg, map[string]any{}, msg))
			default:
				writeJSON(w, f.Status, map[string]any{"detail": msg})
			}
		case FaultJunk:
			s.count(api, "fault")
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"success": tru, "data": {"count": 3, "results": [{"id": `))
		case FaultEmpty:
			s.count(api, "fault")
			status := f.Status
			if status == 0 {
				status = http.StatusOK
			}
			w.Header().Set("Content-Length", "0")
			w.WriteHeader(status)
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

// discardWriter takes the API's own answer to a request served before
// its fault (Fault.Served) and drops it.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}
