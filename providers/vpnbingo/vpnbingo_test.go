package vpnbingo_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/apiclient"
	"github.com/vps-exporter/vps_exporter/providers/providertest"
	"github.com/vps-exporter/vps_exporter/providers/sim"
	"github.com/vps-exporter/vps_exporter/providers/vpnbingo"
)

const token = "tok-SECRET-bingo"

func newClient(t *testing.T, base *url.URL, loc *time.Location) *vpnbingo.Client {
	t.Helper()
	return vpnbingo.New(vpnbingo.Options{Account: "acct", BaseURL: base, Token: token, Location: loc, HTTP: providertest.FastHTTP()})
}

func TestSeedListAndDetail(t *testing.T) {
	srv := providertest.NewServer(t, map[string]providertest.Route{
		"GET /api/v2/nodes/":    {File: "testdata/list.json"},
		"GET /api/v2/nodes/28/": {File: "testdata/detail.json"},
	})
	c := newClient(t, srv.BaseURL(t), nil)
	list, err := c.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("got %d servers", len(list))
	}
	want := providers.Server{
		ID: "28", Name: "Basic-", Hostname: "test.vpn.bingo", IP: "1.1.1.1", Port: "443", Location: "us",
		State: providers.StateRunning, RawStatus: "Deployment Successful", RawCode: "9",
		ExpiryTime:                   providers.Some(float64(time.Date(2025, 2, 13, 10, 36, 59, 0, time.UTC).Unix())),
		CreatedTime:                  providers.Some(float64(time.Date(2025, 2, 13, 10, 27, 0, 0, time.UTC).Unix())),
		StatusChangeTime:             providers.Some(float64(time.Date(2025, 2, 13, 10, 27, 0, 0, time.UTC).Unix())),
		BandwidthLimitBytesPerSecond: providers.Some(0), BandwidthUsedBytesPerSecond: providers.Some(0),
		CanRedeploy: providers.Some(1),
	}
	if list[0] != want {
		t.Errorf("list:\n got %+v\nwant %+v", list[0], want)
	}
	got, err := c.Get(context.Background(), "28")
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("detail:\n got %+v\nwant %+v", got, want)
	}
	for _, r := range srv.Requests() {
		if r.Header.Get("Authorization") != "Bearer "+token {
			t.Errorf("%s %s: Authorization %q", r.Method, r.Path, r.Header.Get("Authorization"))
		}
	}
}

func TestSeedCountLargerThanResults(t *testing.T) {
	// The seed example says count 2 with one result and no next link: the
	// client asks for ?page=2 (DRF page numbers); the replay server answers
	// the same page again, which brings nothing new, so the list ends.
	srv := providertest.NewServer(t, map[string]providertest.Route{
		"GET /api/v2/nodes/": {File: "testdata/list.json"},
	})
	got, err := newClient(t, srv.BaseURL(t), nil).List(context.Background())
	if err != nil || len(got) != 1 {
		t.Fatalf("got %d servers, err %v", len(got), err)
	}
	reqs := srv.Requests()
	if len(reqs) != 2 || reqs[1].Query.Get("page") != "2" {
		t.Fatalf("want a second request for page 2, got %+v", reqs)
	}
}

func TestTimezone(t *testing.T) {
	srv := providertest.NewServer(t, map[string]providertest.Route{
		"GET /api/v2/nodes/28/": {File: "testdata/detail.json"},
	})
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Skip("no tzdata:", err)
	}
	got, err := newClient(t, srv.BaseURL(t), tokyo).Get(context.Background(), "28")
	if err != nil {
		t.Fatal(err)
	}
	want := float64(time.Date(2025, 2, 13, 10, 36, 59, 0, tokyo).Unix())
	if got.ExpiryTime.V != want {
		t.Errorf("expiry %v, want %v (10:36:59 in Tokyo)", got.ExpiryTime.V, want)
	}
}

func TestStateMapping(t *testing.T) {
	for code, want := range map[int]providers.State{
		-10: providers.StateProvisioning, 9: providers.StateRunning, 10: providers.StateStarting,
		18: providers.StateDegraded, 19: providers.StateRunning, 20: providers.StateTerminating,
		7: providers.StateUnknown, 0: providers.StateUnknown,
	} {
		if got := vpnbingo.StateOf(code); got != want {
			t.Errorf("StateOf(%d) = %s, want %s", code, got, want)
		}
	}
}

func TestSeedRedeploy(t *testing.T) {
	srv := providertest.NewServer(t, map[string]providertest.Route{
		"POST /api/v2/nodes/28/redeploy/": {File: "testdata/redeploy_response.json"},
	})
	res, err := newClient(t, srv.BaseURL(t), nil).Do(context.Background(), "28", providers.ActionRedeploy, providers.ActionParams{CountryCode: "JP"})
	if err != nil {
		t.Fatal(err)
	}
	if res.NewID != "29" {
		t.Errorf("NewID %q, want 29", res.NewID)
	}
	req := srv.Requests()[0]
	if req.Body != `{"force":false,"country_code":"JP"}` {
		t.Errorf("body %s", req.Body)
	}
	if req.Header.Get("Content-Type") != "application/json" {
		t.Errorf("Content-Type %q", req.Header.Get("Content-Type"))
	}
}

func TestSeedRedeployErrors(t *testing.T) {
	for _, tc := range []struct {
		file, want string
		status     int
	}{
		{"testdata/error_not_found.json", "HTTP 404: Can not find the server", 404},
		{"testdata/error_max_redeploy.json", "HTTP 400: Server cann't redeploy now (max redeploy count reached)", 400},
		{"testdata/error_status.json", "HTTP 400: Server cann't redeploy on this status(18)", 400},
		{"testdata/error_country.json", "HTTP 400: country_code: Invalid country code: XX.", 400},
	} {
		srv := providertest.NewServer(t, map[string]providertest.Route{
			"POST /api/v2/nodes/28/redeploy/": {File: tc.file, Status: tc.status},
		})
		_, err := newClient(t, srv.BaseURL(t), nil).Do(context.Background(), "28", providers.ActionRedeploy, providers.ActionParams{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to contain %q", tc.file, err, tc.want)
		}
		if n := len(srv.Requests()); n != 1 {
			t.Errorf("%s: a refused redeploy was sent %d times", tc.file, n)
		}
	}
}

func TestListAgainstSimulatorAllPages(t *testing.T) {
	s := sim.New(sim.Options{Servers: 237, Seed: 1, PageSize: 20, Credentials: map[sim.API]sim.Credentials{sim.VPNBingo: {Token: token}}})
	srv := providertest.Wrap(t, s.Handler(sim.VPNBingo))
	got, err := newClient(t, srv.BaseURL(t), nil).List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 237 {
		t.Fatalf("got %d servers, want 237", len(got))
	}
	if n := s.Requests(sim.VPNBingo)["list"]; n != 12 {
		t.Errorf("%d list requests, want 12 pages", n)
	}
	states := map[providers.State]int{}
	for _, sv := range got {
		states[sv.State]++
	}
	for _, st := range []providers.State{providers.StateRunning, providers.StateDegraded, providers.StateProvisioning, providers.StateTerminating, providers.StateUnknown} {
		if states[st] == 0 {
			t.Errorf("no %s server in the simulated fleet: %v", st, states)
		}
	}
}

func TestRedeployAgainstSimulator(t *testing.T) {
	s := sim.New(sim.Options{Servers: 20, Seed: 1})
	srv := providertest.Wrap(t, s.Handler(sim.VPNBingo))
	c := newClient(t, srv.BaseURL(t), nil)
	res, err := c.Do(context.Background(), "1003", providers.ActionRedeploy, providers.ActionParams{}) // degraded (18)
	if err != nil {
		t.Fatal(err)
	}
	if res.NewID != "1020" {
		t.Errorf("new id %q", res.NewID)
	}
	old, err := c.Get(context.Background(), "1003")
	if err != nil || old.State != providers.StateTerminating {
		t.Errorf("old node: %v %v", old.State, err)
	}
	// The old node is now Pending Release: a second redeploy is refused.
	_, err = c.Do(context.Background(), "1003", providers.ActionRedeploy, providers.ActionParams{})
	if err == nil || !strings.Contains(err.Error(), "status(20)") {
		t.Errorf("second redeploy: %v", err)
	}
	if _, err := c.Get(context.Background(), "99999"); !errors.Is(err, providers.ErrNotFound) {
		t.Errorf("missing node: %v", err)
	}
	if _, err := c.Do(context.Background(), "1003", providers.ActionReboot, providers.ActionParams{}); !errors.Is(err, providers.ErrUnsupportedAction) {
		t.Errorf("reboot: %v", err)
	}
	if got := len(s.Actions()); got != 2 {
		t.Errorf("simulator saw %d actions, want 2", got)
	}
}

func TestEnvelopeFailure(t *testing.T) {
	srv := providertest.NewServer(t, map[string]providertest.Route{
		"GET /api/v2/nodes/": {Body: `{"success":false,"data":null,"error":{"code":"E401","message":"token expired"}}`},
	})
	_, err := newClient(t, srv.BaseURL(t), nil).List(context.Background())
	if err == nil || !strings.Contains(err.Error(), "E401: token expired") || !strings.Contains(err.Error(), `vpnbingo account "acct"`) {
		t.Fatalf("error %v", err)
	}
	if strings.Contains(err.Error(), token) {
		t.Fatal("token in error")
	}
}

func TestPagingLinkGuards(t *testing.T) {
	other := providertest.NewServer(t, map[string]providertest.Route{})
	for name, next := range map[string]string{
		"loop":       "/api/v2/nodes/?page=2",
		"other host": other.URL + "/api/v2/nodes/?page=2",
	} {
		t.Run(name, func(t *testing.T) {
			body := `{"success":true,"data":{"count":3,"next":"NEXT","results":[{"id":1,"status":19}]},"error":null}`
			srv := providertest.NewServer(t, map[string]providertest.Route{
				"GET /api/v2/nodes/": {Body: strings.ReplaceAll(body, "NEXT", next)},
			})
			_, err := newClient(t, srv.BaseURL(t), nil).List(context.Background())
			if err == nil {
				t.Fatal("no error")
			}
			t.Log(err)
			if len(other.Requests()) != 0 {
				t.Fatal("credentials were sent to another host")
			}
		})
	}
}

func deliveryTarget() providertest.ActionTarget {
	return providertest.ActionTarget{API: sim.VPNBingo, Action: providers.ActionRedeploy,
		NewClient: func(base *url.URL, cfg apiclient.Config) providers.Provider {
			return vpnbingo.New(vpnbingo.Options{Account: "acct", BaseURL: base, Token: providertest.SimCredentials.Token, HTTP: cfg})
		}}
}

// A redeploy answered 2xx without the documented new_node was sent and is
// Unanswered (a node may have been replaced), not "never sent"; the
// provider's no is Refused; what never left is NotSent.
func TestActionDelivery(t *testing.T) { providertest.CheckDeliveries(t, deliveryTarget()) }

// A revoked key: every read fails with providers.ErrUnauthorized, once.
func TestUnauthorized(t *testing.T) { providertest.CheckUnauthorized(t, deliveryTarget()) }

// The answer to a redeploy, decoded per the API page: the new node's id,
// bare or in the envelope. The page documents no refusal inside a 2xx:
// success:false (DESIGN.md's error envelope) is the API's no only with a
// 4xx error.code (401 and 403 a refused key); with a 5xx code or none it
// is no usable answer (a node may have been replaced).
func TestDecodeRedeploy(t *testing.T) {
	for _, tc := range []struct {
		body   string
		want   apiclient.Delivery
		newID  string
		unauth bool
	}{
		{`{"original_node":{"id":28,"status":20},"new_node":{"id":29,"status":-10}}`, apiclient.Accepted, "29", false},
		{`{"success":true,"data":{"original_node":{"id":28},"new_node":{"id":"30"}},"error":null}`, apiclient.Accepted, "30", false},
		{`{"success":false,"data":null,"error":{"code":"E1","message":"nope"}}`, apiclient.Unanswered, "", false},
		{`{"success":false,"data":null,"error":null}`, apiclient.Unanswered, "", false},
		{`{"success":false,"data":null,"error":{"code":500,"message":"Internal error"}}`, apiclient.Unanswered, "", false},
		{`{"success":false,"data":null,"error":{"code":503,"message":"Try later"}}`, apiclient.Unanswered, "", false},
		{`{"success":false,"data":null,"error":{"code":400,"message":"Server cann't redeploy now (max redeploy count reached)"}}`, apiclient.Refused, "", false},
		{`{"success":false,"data":null,"error":{"code":"404","message":"Can not find the server"}}`, apiclient.Refused, "", false},
		{`{"success":false,"data":null,"error":{"code":403,"message":"Token revoked"}}`, apiclient.Refused, "", true},
		{`{"original_node":{"id":28,"status":20}}`, apiclient.Unanswered, "", false},
		{`{"success":true,"data":{},"error":null}`, apiclient.Unanswered, "", false},
		{`{}`, apiclient.Unanswered, "", false},
		{``, apiclient.Unanswered, "", false},
		{`<html><body>Login</body></html>`, apiclient.Unanswered, "", false},
		{`{"original_node":{"id":28},"new_node":{"id":`, apiclient.Unanswered, "", false},
	} {
		srv := providertest.NewServer(t, map[string]providertest.Route{"POST /api/v2/nodes/28/redeploy/": {Body: tc.body}})
		res, err := newClient(t, srv.BaseURL(t), nil).Do(context.Background(), "28", providers.ActionRedeploy, providers.ActionParams{})
		if got := apiclient.DeliveryOf(err); got != tc.want || res.NewID != tc.newID {
			t.Errorf("%s: %v new id %q (%v), want %v %q", tc.body, got, res.NewID, err, tc.want, tc.newID)
		}
		if got := errors.Is(err, providers.ErrUnauthorized); got != tc.unauth {
			t.Errorf("%s: ErrUnauthorized %v, want %v", tc.body, got, tc.unauth)
		}
	}
}

// RateLimit and Throttled report the client's own pacing.
func TestRateReporter(t *testing.T) {
	var rr providers.RateReporter = newClient(t, &url.URL{Scheme: "http", Host: "127.0.0.1:1"}, nil)
	if r, ok := rr.RateLimit(); ok || rr.Throttled() {
		t.Errorf("rate %v ok %v throttled %v: an account without rate_limit, never throttled, reports none", r, ok, rr.Throttled())
	}
}
