// Package providertest has helpers for the provider clients' tests: a
// loopback server that answers fixed payloads and records what it was sent.
package providertest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sync"
	"testing"

	"github.com/vps-exporter/vps_exporter/providers/apiclient"
)

// Route is one canned answer.
type Route struct {
	Status int
	Body   string
	// File, when set, is read for the body.
	File string
}

// Recorded is one request the server received.
type Recorded struct {
	Method string
	Path   string
	Query  url.Values
	Header http.Header
	Body   string
}

// Server answers "METHOD /path" keys from its routes and records requests.
type Server struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []Recorded
}

// NewServer starts a replay server on loopback, closed when t ends.
func NewServer(t testing.TB, routes map[string]Route) *Server {
	t.Helper()
	s := &Server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.reqs = append(s.reqs, Recorded{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Header: r.Header.Clone(), Body: string(body)})
		s.mu.Unlock()
		rt, ok := routes[r.Method+" "+r.URL.Path]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"detail":"Not found."}`))
			return
		}
		b := []byte(rt.Body)
		if rt.File != "" {
			var err error
			if b, err = os.ReadFile(rt.File); err != nil {
				w.WriteHeader(http.StatusInternalServerError)
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		if rt.Status != 0 {
			w.WriteHeader(rt.Status)
		}
		_, _ = w.Write(b)
	}))
	t.Cleanup(s.Close)
	return s
}

// Wrap serves h on loopback, closed when t ends.
func Wrap(t testing.TB, h http.Handler) *Server {
	t.Helper()
	s := &Server{Server: httptest.NewServer(h)}
	t.Cleanup(s.Close)
	return s
}

// Requests returns what the server received so far.
func (s *Server) Requests() []Recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Recorded(nil), s.reqs...)
}

// BaseURL is the server's URL parsed.
func (s *Server) BaseURL(t testing.TB) *url.URL {
	u, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// FastHTTP is a client config for tests: short back-off.
func FastHTTP() apiclient.Config {
	return apiclient.Config{BackoffBase: 5 * 1e6}
}
