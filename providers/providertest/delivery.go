package providertest

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/apiclient"
	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// SimCredentials are what the simulator accepts in the delivery tests;
// NewClient must send them.
var SimCredentials = sim.Credentials{Token: "fake-canary-delivery-token", APIKey: "fake-canary-delivery-key", ProjectID: "77"}

// ActionTarget is a provider client under test against the simulator.
type ActionTarget struct {
	API    sim.API
	Action providers.Action
	// NewClient returns a client of the account at base with
	// SimCredentials and the given transport settings.
	NewClient func(base *url.URL, cfg apiclient.Config) providers.Provider
}

// actionable picks a server of api that the simulator carries action out
// on.
func actionable(t testing.TB, s *sim.Sim, api sim.API) string {
	t.Helper()
	for _, m := range s.Machines(api) {
		switch api {
		case sim.VPSOrg:
			if m.Status == "active" {
				return strconv.Itoa(m.ID)
			}
		case sim.E2E:
			if sim.StateIsRunningE2E(m.Status) {
				return strconv.Itoa(m.ID)
			}
		case sim.VPNBingo:
			if m.CanRedepl && (m.Code == 9 || m.Code == 10 || m.Code == 18 || m.Code == 19) {
				return strconv.Itoa(m.ID)
			}
		}
	}
	t.Fatalf("no server of %s the simulator acts on", api)
	return ""
}

// CheckDeliveries runs the action of tgt against the simulator under
// every fault an action can meet and checks what apiclient.DeliveryOf
// makes of the client's error, and whether the simulator carried the
// action out: a 2xx whose body the client cannot use (HTML, empty, junk)
// is Unanswered although the action happened; so is a 5xx (a gateway's
// 502 after the provider carried the action out is the case that proves
// it); the provider's no (a 4xx, a revoked key) is Refused; a reset is
// Unanswered; a refused dial and a deadline inside a 429 pause are
// NotSent and reach nothing.
func CheckDeliveries(t *testing.T, tgt ActionTarget) {
	type tc struct {
		name    string
		fault   sim.Fault
		revoke  bool // a revoked key: the API's documented 401
		dial    bool // a port nobody listens on
		pause   bool // a 429 asking for 60 s first, then a 2 s deadline
		want    apiclient.Delivery
		carried bool // the simulator carried the action out
		auth    bool // errors.Is(err, providers.ErrUnauthorized)
	}
	for _, c := range []tc{
		{name: "accepted", want: apiclient.Accepted, carried: true},
		{name: "HTML 200 after the action", fault: sim.Fault{Kind: sim.FaultHTML, Status: 200, Served: true}, want: apiclient.Unanswered, carried: true},
		{name: "empty 200 after the action", fault: sim.Fault{Kind: sim.FaultEmpty, Served: true}, want: apiclient.Unanswered, carried: true},
		{name: "junk 200 after the action", fault: sim.Fault{Kind: sim.FaultJunk, Served: true}, want: apiclient.Unanswered, carried: true},
		{name: "reset after the action", fault: sim.Fault{Kind: sim.FaultReset, Served: true}, want: apiclient.Unanswered, carried: true},
		{name: "reset", fault: sim.Fault{Kind: sim.FaultReset}, want: apiclient.Unanswered},
		{name: "400", fault: sim.Fault{Kind: sim.FaultStatus, Status: 400}, want: apiclient.Refused},
		{name: "402", fault: sim.Fault{Kind: sim.FaultStatus, Status: 402}, want: apiclient.Refused},
		{name: "404", fault: sim.Fault{Kind: sim.FaultStatus, Status: 404}, want: apiclient.Refused},
		// A 5xx is no answer: the provider, or a proxy in front of it,
		// failed, perhaps after the action was carried out.
		{name: "500", fault: sim.Fault{Kind: sim.FaultStatus, Status: 500}, want: apiclient.Unanswered},
		{name: "503", fault: sim.Fault{Kind: sim.FaultStatus, Status: 503}, want: apiclient.Unanswered},
		{name: "504", fault: sim.Fault{Kind: sim.FaultStatus, Status: 504}, want: apiclient.Unanswered},
		{name: "502 HTML from a proxy", fault: sim.Fault{Kind: sim.FaultHTML}, want: apiclient.Unanswered},
		{name: "502 HTML from a proxy after the action", fault: sim.Fault{Kind: sim.FaultHTML, Status: 502, Served: true}, want: apiclient.Unanswered, carried: true},
		{name: "500 after the action", fault: sim.Fault{Kind: sim.FaultStatus, Status: 500, Served: true}, want: apiclient.Unanswered, carried: true},
		{name: "504 from a proxy after the action", fault: sim.Fault{Kind: sim.FaultHTML, Status: 504, Served: true}, want: apiclient.Unanswered, carried: true},
		{name: "revoked key", revoke: true, want: apiclient.Refused, auth: true},
		{name: "refused dial", dial: true, want: apiclient.NotSent},
		{name: "deadline during a 429 pause", pause: true, want: apiclient.NotSent},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := sim.New(sim.Options{Servers: 12, Seed: 3, Credentials: map[sim.API]sim.Credentials{tgt.API: SimCredentials}})
			t.Cleanup(s.Close)
			id := actionable(t, s, tgt.API)
			var reached atomic.Int32
			inner := s.Handler(tgt.API)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				reached.Add(1)
				inner.ServeHTTP(w, r)
			}))
			t.Cleanup(srv.Close)
			base, _ := url.Parse(srv.URL)
			if c.dial {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				base, _ = url.Parse("http://" + l.Addr().String())
				_ = l.Close()
			}
			p := tgt.NewClient(base, apiclient.Config{BackoffBase: time.Millisecond, Timeout: 2 * time.Second})
			if c.revoke {
				s.SetCredentials(tgt.API, sim.Credentials{Token: "another", APIKey: "another", ProjectID: SimCredentials.ProjectID})
			}
			if c.fault.Kind != sim.FaultNone {
				c.fault.Only = "/" + id + "/"
				s.SetFault(tgt.API, c.fault)
			}
			ctx := context.Background()
			if c.pause {
				s.SetFault(tgt.API, sim.Fault{Kind: sim.FaultStatus, Status: http.StatusTooManyRequests, RetryAfter: "60", Count: 1})
				first, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := p.Do(first, id, tgt.Action, providers.ActionParams{})
				cancel()
				if apiclient.DeliveryOf(err) != apiclient.Refused {
					t.Fatalf("the 429: %v", err)
				}
				var cancel2 context.CancelFunc
				ctx, cancel2 = context.WithTimeout(ctx, 2*time.Second)
				defer cancel2()
			}
			before := reached.Load()
			start := time.Now()
			_, err := p.Do(ctx, id, tgt.Action, providers.ActionParams{})
			if got := apiclient.DeliveryOf(err); got != c.want {
				t.Errorf("delivery %v, want %v (err %v)", got, c.want, err)
			}
			if got := errors.Is(err, providers.ErrUnauthorized); got != c.auth {
				t.Errorf("errors.Is(err, ErrUnauthorized) = %v, want %v (err %v)", got, c.auth, err)
			}
			if err != nil {
				for _, secret := range []string{SimCredentials.Token, SimCredentials.APIKey} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("secret in error: %v", err)
					}
				}
			}
			carried := false
			for _, a := range s.Actions() {
				if a.ID == id && a.Status == http.StatusOK {
					carried = true
				}
			}
			if carried != c.carried {
				t.Errorf("simulator carried the action out: %v, want %v (actions %+v)", carried, c.carried, s.Actions())
			}
			if c.want == apiclient.NotSent {
				if n := reached.Load() - before; n != 0 {
					t.Errorf("%d requests reached the provider; want none", n)
				}
				if d := time.Since(start); d > time.Second {
					t.Errorf("not sending took %v; want at once", d)
				}
			} else if n := reached.Load() - before; n != 1 {
				t.Errorf("the action was sent %d times, want once (an action is not retried)", n)
			}
		})
	}
}

// CheckUnauthorized revokes the account's key and checks that every read
// of the client (List, Get, and for a providers.Detailer ListSummary and
// Detail) fails with an error matching providers.ErrUnauthorized, after
// one request each: the same key is refused again.
func CheckUnauthorized(t *testing.T, tgt ActionTarget) {
	s := sim.New(sim.Options{Servers: 12, Seed: 3, Credentials: map[sim.API]sim.Credentials{tgt.API: SimCredentials}})
	t.Cleanup(s.Close)
	id := actionable(t, s, tgt.API)
	var reached atomic.Int32
	inner := s.Handler(tgt.API)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	base, _ := url.Parse(srv.URL)
	p := tgt.NewClient(base, apiclient.Config{BackoffBase: time.Millisecond})
	ctx := context.Background()
	if _, err := p.List(ctx); err != nil {
		t.Fatalf("with the key: %v", err)
	}
	reads := map[string]func() error{
		"List": func() error { _, err := p.List(ctx); return err },
		"Get":  func() error { _, err := p.Get(ctx, id); return err },
	}
	if d, ok := p.(providers.Detailer); ok {
		reads["ListSummary"] = func() error { _, err := d.ListSummary(ctx); return err }
		reads["Detail"] = func() error { _, err := d.Detail(ctx, id); return err }
	}
	for _, creds := range []sim.Credentials{
		{Token: "another", APIKey: SimCredentials.APIKey, ProjectID: SimCredentials.ProjectID},
		{Token: SimCredentials.Token, APIKey: SimCredentials.APIKey, ProjectID: "another"}, // E2E answers 403
	} {
		if creds.ProjectID == "another" && tgt.API != sim.E2E {
			continue
		}
		s.SetCredentials(tgt.API, creds)
		for name, read := range reads {
			before := reached.Load()
			err := read()
			if !errors.Is(err, providers.ErrUnauthorized) {
				t.Errorf("%s with a refused key: %v, want ErrUnauthorized", name, err)
			}
			if errors.Is(err, providers.ErrNotFound) {
				t.Errorf("%s: a refused key is not a missing server: %v", name, err)
			}
			if n := reached.Load() - before; n != 1 {
				t.Errorf("%s: %d requests with a refused key, want 1 (no retry)", name, n)
			}
		}
	}
}
