package remediation

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// seen is one request a loopback leader received.
type seen struct {
	method, path, query, auth, forwarded, contentType string
	body                                              []byte
}

// fakeLeader is a real HTTP server on loopback that records what it
// receives and answers with answer.
type fakeLeader struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []seen
}

func newFakeLeader(t *testing.T, answer http.HandlerFunc) *fakeLeader {
	t.Helper()
	l := &fakeLeader{}
	l.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		l.mu.Lock()
		l.reqs = append(l.reqs, seen{method: r.Method, path: r.URL.Path, query: r.URL.RawQuery, auth: r.Header.Get("Authorization"),
			forwarded: r.Header.Get(ForwardedHeader), contentType: r.Header.Get("Content-Type"), body: b})
		l.mu.Unlock()
		answer(w, r)
	}))
	t.Cleanup(l.srv.Close)
	return l
}

func (l *fakeLeader) got() []seen {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]seen(nil), l.reqs...)
}

// localAnswer is what the wrapped handler answers: the replica's own.
func localAnswer(hits *atomic.Int32) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusTeapot)
		_, _ = w.Write([]byte("local"))
	})
}

func TestForwarderRoles(t *testing.T) {
	const token = "s3cret-remediation-token"
	leader := newFakeLeader(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "7")
		w.Header().Set("X-Not-Relayed", "x")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"leader":"` + r.URL.Path + `"}`))
	})
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close() // nothing listens there any more
	tests := []struct {
		name      string
		role      Role
		leaderURL string
		forwarded bool
		method    string
		target    string
		body      string
		// want
		status     int
		local      bool // the wrapped handler answered
		relayed    bool // the leader answered through this replica
		retryAfter bool
		outcome    string
	}{
		{name: "single: no change", role: RoleSingle, method: "POST", target: "/webhook/alertmanager", body: "{}", status: http.StatusTeapot, local: true},
		{name: "leader answers itself", role: RoleLeader, leaderURL: leader.srv.URL, method: "POST", target: "/webhook/alertmanager", body: "{}", status: http.StatusTeapot, local: true},
		{name: "leader answers a forwarded request", role: RoleLeader, leaderURL: leader.srv.URL, forwarded: true, method: "POST", target: "/api/v1/remediation/pause", status: http.StatusTeapot, local: true},
		{name: "standby forwards the webhook", role: RoleStandby, leaderURL: leader.srv.URL, method: "POST", target: "/webhook/alertmanager", body: `{"version":"4"}`,
			status: http.StatusAccepted, relayed: true, retryAfter: true, outcome: forwardRelayed},
		{name: "standby forwards a control with its query", role: RoleStandby, leaderURL: leader.srv.URL + "/", method: "POST", target: "/api/v1/remediation/reset?x=1", body: `{"provider":"p"}`,
			status: http.StatusAccepted, relayed: true, retryAfter: true, outcome: forwardRelayed},
		{name: "standby forwards the history", role: RoleStandby, leaderURL: leader.srv.URL, method: "GET", target: "/api/v1/remediation?limit=5&id=a%2Fb",
			status: http.StatusAccepted, relayed: true, retryAfter: true, outcome: forwardRelayed},
		{name: "standby without a leader", role: RoleStandby, method: "POST", target: "/webhook/alertmanager", body: "{}", status: http.StatusServiceUnavailable, retryAfter: true, outcome: forwardNoLeader},
		{name: "no quorum", role: RoleUnavailable, leaderURL: leader.srv.URL, method: "POST", target: "/webhook/alertmanager", body: "{}", status: http.StatusServiceUnavailable, retryAfter: true, outcome: forwardNoLeader},
		{name: "forwarded to a standby: no second hop", role: RoleStandby, leaderURL: leader.srv.URL, forwarded: true, method: "POST", target: "/webhook/alertmanager", body: "{}",
			status: http.StatusServiceUnavailable, retryAfter: true, outcome: forwardLoop},
		{name: "leader unreachable", role: RoleStandby, leaderURL: closedURL, method: "POST", target: "/webhook/alertmanager", body: "{}", status: http.StatusServiceUnavailable, retryAfter: true, outcome: forwardUnreachable},
		{name: "body too large", role: RoleStandby, leaderURL: leader.srv.URL, method: "POST", target: "/webhook/alertmanager", body: strings.Repeat("x", MaxForwardBody+1),
			status: http.StatusRequestEntityTooLarge, outcome: forwardTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			reg := prometheus.NewRegistry()
			f, err := NewForwarder(func() (Role, string) { return tc.role, tc.leaderURL }, ForwardOptions{Registerer: reg, Logger: log.NewLogfmtLogger(log.NewSyncWriter(&logs))})
			if err != nil {
				t.Fatal(err)
			}
			var hits atomic.Int32
			replica := httptest.NewServer(f.Wrap(localAnswer(&hits)))
			defer replica.Close()
			before := len(leader.got())
			req, err := http.NewRequest(tc.method, replica.URL+tc.target, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Content-Type", "application/json")
			if tc.forwarded {
				req.Header.Set(ForwardedHeader, "1")
			}
			resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if got := hits.Load() == 1; got != tc.local {
				t.Errorf("local handler answered: %v, want %v", got, tc.local)
			}
			if ra := resp.Header.Get("Retry-After") != ""; ra != tc.retryAfter {
				t.Errorf("Retry-After %q, want one: %v", resp.Header.Get("Retry-After"), tc.retryAfter)
			}
			got := leader.got()[before:]
			if !tc.relayed {
				if len(got) != 0 {
					t.Errorf("the leader received %d requests, want none", len(got))
				}
			} else {
				if len(got) != 1 {
					t.Fatalf("the leader received %d requests, want 1", len(got))
				}
				path, query, _ := strings.Cut(tc.target, "?")
				g := got[0]
				if g.method != tc.method || g.path != strings.ReplaceAll(path, "%2F", "/") || g.query != query || g.auth != "Bearer "+token ||
					g.forwarded == "" || g.contentType != "application/json" || string(g.body) != tc.body {
					t.Errorf("the leader received %+v, want %s %s?%s with the Authorization header, the body and %s", g, tc.method, path, query, ForwardedHeader)
				}
				if want := `{"leader":"` + g.path + `"}`; string(body) != want || resp.Header.Get("Content-Type") != "application/json" ||
					resp.Header.Get("Retry-After") != "7" || resp.Header.Get(LeaderHeader) != tc.leaderURL || resp.Header.Get("X-Not-Relayed") != "" {
					t.Errorf("relayed %q with %v, want the leader's answer %s, its Content-Type and Retry-After, and %s", body, resp.Header, want, LeaderHeader)
				}
			}
			if tc.outcome != "" {
				if n := testutil.ToFloat64(f.requests.WithLabelValues(tc.outcome)); n != 1 {
					t.Errorf("vps_remediation_forwarded_requests_total{outcome=%q} = %v, want 1", tc.outcome, n)
				}
			}
			if n, err := testutil.GatherAndCount(reg, "vps_remediation_forwarded_requests_total"); err != nil || n != 5 {
				t.Errorf("registered %d series (%v), want 5", n, err)
			}
			if strings.Contains(logs.String(), token) || strings.Contains(string(body), token) {
				t.Errorf("the credential leaked: logs %q, answer %q", logs.String(), body)
			}
		})
	}
}

// TestForwarderNoLoop: two standbys that each believe the other leads
// (the leadership moved between their views): a request goes one hop and
// is refused with 503, not bounced between them.
func TestForwarderNoLoop(t *testing.T) {
	var hitsA, hitsB, calls atomic.Int32
	var urlA, urlB atomic.Value
	count := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1); h.ServeHTTP(w, r) })
	}
	fa, _ := NewForwarder(func() (Role, string) { return RoleStandby, urlB.Load().(string) }, ForwardOptions{})
	fb, _ := NewForwarder(func() (Role, string) { return RoleStandby, urlA.Load().(string) }, ForwardOptions{})
	a := httptest.NewServer(count(fa.Wrap(localAnswer(&hitsA))))
	defer a.Close()
	b := httptest.NewServer(count(fb.Wrap(localAnswer(&hitsB))))
	defer b.Close()
	urlA.Store(a.URL)
	urlB.Store(b.URL)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Post(a.URL+"/webhook/alertmanager", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("status %d Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d requests between the replicas, want 2 (the client's and one forward)", n)
	}
	if hitsA.Load()+hitsB.Load() != 0 {
		t.Error("a standby answered by itself")
	}
}

// TestForwarderTimeout: a leader that does not answer within the timeout
// gets the sender a 503 within a bound, not a hang.
func TestForwarderTimeout(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	f, _ := NewForwarder(func() (Role, string) { return RoleStandby, slow.URL }, ForwardOptions{Timeout: 300 * time.Millisecond})
	var hits atomic.Int32
	replica := httptest.NewServer(f.Wrap(localAnswer(&hits)))
	defer replica.Close()
	start := time.Now()
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Post(replica.URL+"/api/v1/remediation/resume", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("status %d, want 503 with Retry-After", resp.StatusCode)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 10*time.Second {
		t.Errorf("answered after %s, want after the 300ms timeout and well before 10s", d)
	}
	if n := testutil.ToFloat64(f.requests.WithLabelValues(forwardUnreachable)); n != 1 {
		t.Errorf("leader_unreachable = %v, want 1", n)
	}
}
