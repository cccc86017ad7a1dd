// Package providertest has helpers for the provider clients' tests: a
// loopback server that answers fixed payloads and records what it was sent.
package providertest

import (
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/apiclient"
	"github.com/vps-exporter/vps_exporter/providers/sim"
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

// Canned answers a request for its path with that path's body and any
// other request with the default body (200, application/json): fuzz
// targets set both per input.
type Canned struct {
	mu    sync.Mutex
	paths map[string][]byte
	dflt  []byte
}

// Set sets the body for one path and the default for all others.
func (c *Canned) Set(path string, body, dflt []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paths = map[string][]byte{path: body}
	c.dflt = dflt
}

// ServeHTTP implements http.Handler.
func (c *Canned) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	body, ok := c.paths[r.URL.Path]
	if !ok {
		body = c.dflt
	}
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// FuzzHTTP is a client config for fuzzing: no retries, short timeouts.
func FuzzHTTP() apiclient.Config {
	return apiclient.Config{MaxRetries: -1, Timeout: 2 * time.Second}
}

// SimBody returns the simulator's answer to GET path of one API, for seeds.
func SimBody(t testing.TB, api sim.API, path string) []byte {
	t.Helper()
	creds := map[sim.API]sim.Credentials{api: {Token: "t", APIKey: "k", ProjectID: "1"}}
	s := sim.New(sim.Options{Servers: 12, Seed: 3, PageSize: 5, Credentials: creds})
	defer s.Close()
	req := httptest.NewRequest(http.MethodGet, path+"?apikey=k&project_id=1", nil)
	req.Header.Set("Authorization", "Bearer t")
	rec := httptest.NewRecorder()
	s.Handler(api).ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("simulator %s %s: %d %s", api, path, rec.Code, rec.Body.String())
	}
	return rec.Body.Bytes()
}

// CheckServers fails t unless every server is well-formed: an id, a
// normalized state, finite values, and no more servers than the response
// bytes could describe.
func CheckServers(t testing.TB, servers []providers.Server, inputBytes int) {
	t.Helper()
	if len(servers) > inputBytes {
		t.Fatalf("%d servers from %d bytes", len(servers), inputBytes)
	}
	for _, s := range servers {
		if _, ok := providers.ParseState(string(s.State)); s.ID == "" || !ok {
			t.Fatalf("server id %q state %q", s.ID, s.State)
		}
		rv := reflect.ValueOf(s)
		for i := 0; i < rv.NumField(); i++ {
			v, ok := rv.Field(i).Interface().(providers.Value)
			if ok && v.OK && (math.IsNaN(v.V) || math.IsInf(v.V, 0)) {
				t.Fatalf("server %s: %s = %v", s.ID, rv.Type().Field(i).Name, v.V)
			}
		}
	}
}

// Fuzz runs the common fuzz body for a provider client served by canned:
// the first input answers listPath, the second every other request
// (details and action answers). Whatever arrives, the client returns
// well-formed servers or an error, within its deadline, never a panic.
func Fuzz(f *testing.F, canned *Canned, p providers.Provider, listPath string, action providers.Action) {
	f.Fuzz(func(t *testing.T, list, other []byte) {
		canned.Set(listPath, list, other)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if servers, err := p.List(ctx); err == nil {
			CheckServers(t, servers, len(list)+len(other))
		}
		if s, err := p.Get(ctx, "1"); err == nil {
			CheckServers(t, []providers.Server{s}, len(other))
		}
		_, _ = p.Do(ctx, "1", action, providers.ActionParams{})
		if ctx.Err() != nil {
			t.Fatal("the client outlived its deadline on a loopback answer")
		}
	})
}

// AddFileSeeds adds every pair of the files as a seed of a two-input fuzz
// target.
func AddFileSeeds(f *testing.F, files ...string) {
	f.Helper()
	for _, a := range files {
		for _, b := range files {
			x, err := os.ReadFile(a)
			if err != nil {
				f.Fatal(err)
			}
			y, err := os.ReadFile(b)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(x, y)
		}
	}
}
