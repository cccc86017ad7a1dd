package e2e_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/apiclient"
	"github.com/vps-exporter/vps_exporter/providers/e2e"
	"github.com/vps-exporter/vps_exporter/providers/providertest"
	"github.com/vps-exporter/vps_exporter/providers/sim"
)

const (
	apiKey = "key-SECRET-e2e"
	token  = "tok-SECRET-e2e"
)

func client(t *testing.T, srv *providertest.Server, perPage int) *e2e.Client {
	return e2e.New(e2e.Options{Account: "delhi", BaseURL: srv.BaseURL(t), APIKey: apiKey, Token: token,
		ProjectID: "1234", Location: "Delhi", PerPage: perPage, HTTP: providertest.FastHTTP()})
}

func TestSeedList(t *testing.T) {
	srv := providertest.NewServer(t, map[string]providertest.Route{
		"GET /myaccount/api/v1/nodes/": {File: "testdata/list.json"},
	})
	got, err := client(t, srv, 0).List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d", len(got))
	}
	want := providers.Server{
		ID: "169", Name: "node-awa", IP: "101.53.147.102", PrivateIP: "172.16.215.166", Location: "national capitail",
		Plan: "B-2VCPU-8RAM-115DISK", State: providers.StateProvisioning, RawStatus: "Create",
		CreatedTime: providers.Some(float64(time.Date(2019, 4, 23, 9, 19, 28, 0, time.UTC).Unix())),
		VCPUs:       providers.Some(2), MemoryBytes: providers.Some(15 * providers.GB), DiskBytes: providers.Some(60 * providers.GB),
		BackupsEnabled: providers.Some(0),
	}
	if got[0] != want {
		t.Errorf("\n got %+v\nwant %+v", got[0], want)
	}
	r := srv.Requests()[0]
	for k, v := range map[string]string{"apikey": apiKey, "project_id": "1234", "location": "Delhi", "page_no": "1", "per_page": "100"} {
		if r.Query.Get(k) != v {
			t.Errorf("query %s=%q, want %q", k, r.Query.Get(k), v)
		}
	}
	if r.Header.Get("Authorization") != "Bearer "+token {
		t.Errorf("Authorization %q", r.Header.Get("Authorization"))
	}
}

func TestStateMapping(t *testing.T) {
	for raw, want := range map[string]providers.State{
		"Running": providers.StateRunning, "RUNNING": providers.StateRunning, "Powered off": providers.StateStopped,
		"powered-off": providers.StateStopped, "power_off": providers.StateStopped, "Power Off": providers.StateStopped,
		"Create": providers.StateProvisioning, "Creating": providers.StateProvisioning, "Reinstalling": providers.StateProvisioning,
		"terminate": providers.StateTerminating, "Terminating": providers.StateTerminating, "Locked": providers.StateSuspended,
		"Exploded": providers.StateUnknown,
	} {
		if got := e2e.StateOf(raw); got != want {
			t.Errorf("StateOf(%q) = %s, want %s", raw, got, want)
		}
	}
}

func TestSizes(t *testing.T) {
	for _, tc := range []struct {
		body         string
		mem, disk    float64
		memOK, dskOK bool
	}{
		{`"memory":"15.00 GB","disk":"60 GB"`, 15 * providers.GB, 60 * providers.GB, true, true},
		{`"memory":512,"disk":60`, 512 * providers.MB, 60 * providers.GB, true, true},
		{`"memory":"512 MB","disk":"1 TB"`, 512 * providers.MB, providers.TB, true, true},
		{`"memory":null,"disk":""`, 0, 0, false, false},
		{`"memory":"8GiB","disk":"40.5 GB"`, 8 * providers.GB, 40.5 * providers.GB, true, true},
	} {
		n, err := e2e.DecodeNode([]byte(`{"code":200,"data":{"id":1,` + tc.body + `},"errors":{}}`))
		if err != nil {
			t.Errorf("%s: %v", tc.body, err)
			continue
		}
		srv := providertest.NewServer(t, map[string]providertest.Route{
			"GET /myaccount/api/v1/nodes/1/": {Body: `{"code":200,"data":{"id":1,` + tc.body + `},"errors":{}}`},
		})
		s, err := client(t, srv, 0).Get(context.Background(), string(n.ID))
		if err != nil {
			t.Fatal(err)
		}
		if s.MemoryBytes != (providers.Value{V: tc.mem, OK: tc.memOK}) || s.DiskBytes != (providers.Value{V: tc.disk, OK: tc.dskOK}) {
			t.Errorf("%s: memory %+v disk %+v", tc.body, s.MemoryBytes, s.DiskBytes)
		}
	}
}

func TestPagingAgainstSimulator(t *testing.T) {
	s := sim.New(sim.Options{Servers: 205, Seed: 3, Credentials: map[sim.API]sim.Credentials{sim.E2E: {Token: token, APIKey: apiKey, ProjectID: "1234"}}})
	srv := providertest.Wrap(t, s.Handler(sim.E2E))
	got, err := client(t, srv, 50).List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 205 {
		t.Fatalf("got %d", len(got))
	}
	if n := s.Requests(sim.E2E)["list"]; n != 5 {
		t.Errorf("%d pages fetched, want 5", n)
	}
}

func TestPagingWithoutPageCount(t *testing.T) {
	// The seed example has no total_page_number: a short page ends the list.
	srv := providertest.NewServer(t, map[string]providertest.Route{
		"GET /myaccount/api/v1/nodes/": {File: "testdata/list.json"},
	})
	got, err := client(t, srv, 2).List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// A full page (2 of 2) asks for the next; the replay repeats page 1,
	// which brings nothing new, so the list ends there.
	if len(got) != 2 || len(srv.Requests()) != 2 {
		t.Errorf("got %d servers in %d requests", len(got), len(srv.Requests()))
	}
}

func TestActionsAgainstSimulator(t *testing.T) {
	s := sim.New(sim.Options{Servers: 12, Seed: 3})
	srv := providertest.Wrap(t, s.Handler(sim.E2E))
	c := client(t, srv, 0)
	if _, err := c.Do(context.Background(), "169", providers.ActionReboot, providers.ActionParams{}); err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(context.Background(), "169")
	if err != nil || got.State != providers.StateRebooting {
		t.Errorf("after reboot: %s %v", got.State, err)
	}
	// node 171 (i=2) is not running: power_on works, reboot is refused.
	if _, err := c.Do(context.Background(), "171", providers.ActionReboot, providers.ActionParams{}); err == nil || !strings.Contains(err.Error(), "HTTP 400") {
		t.Errorf("reboot of a stopped node: %v", err)
	}
	if _, err := c.Do(context.Background(), "171", providers.ActionStart, providers.ActionParams{}); err != nil {
		t.Errorf("power_on: %v", err)
	}
	acts := s.Actions()
	if len(acts) != 3 || acts[0].Action != "reboot" || acts[2].Action != "power_on" {
		t.Errorf("simulator saw %+v", acts)
	}
	if _, err := c.Get(context.Background(), "99999"); !errors.Is(err, providers.ErrNotFound) {
		t.Errorf("missing: %v", err)
	}
}

func TestEmptyFleet(t *testing.T) {
	for _, body := range []string{
		`{"code":200,"data":[],"errors":{},"message":"Success","total_count":0,"total_page_number":0}`,
		`{"code":200,"data":{},"errors":{},"message":"Success"}`,
	} {
		srv := providertest.NewServer(t, map[string]providertest.Route{"GET /myaccount/api/v1/nodes/": {Body: body}})
		got, err := client(t, srv, 0).List(context.Background())
		if err != nil || len(got) != 0 {
			t.Errorf("%s: %d nodes, %v", body, len(got), err)
		}
	}
}

func TestEnvelopeErrorCode(t *testing.T) {
	srv := providertest.NewServer(t, map[string]providertest.Route{
		"GET /myaccount/api/v1/nodes/": {Body: `{"code":403,"data":{},"errors":"project_id does not belong to this account","message":"Forbidden"}`},
	})
	_, err := client(t, srv, 0).List(context.Background())
	if err == nil || !strings.Contains(err.Error(), "code 403") || strings.Contains(err.Error(), apiKey) {
		t.Fatalf("error %v", err)
	}
}

func TestKeyNeverInErrors(t *testing.T) {
	// A connection refused: Go's *url.Error prints the whole URL, which
	// carries the API key in its query.
	srv := providertest.NewServer(t, nil)
	c := client(t, srv, 0)
	srv.Close()
	_, err := c.List(context.Background())
	if err == nil {
		t.Fatal("no error")
	}
	if strings.Contains(err.Error(), apiKey) || strings.Contains(err.Error(), "apikey") || strings.Contains(err.Error(), token) {
		t.Fatalf("secret in error: %v", err)
	}
	if !strings.Contains(err.Error(), `e2e account "delhi": GET /myaccount/api/v1/nodes/`) {
		t.Errorf("error does not name account and endpoint: %v", err)
	}
}

func deliveryTarget() providertest.ActionTarget {
	return providertest.ActionTarget{API: sim.E2E, Action: providers.ActionReboot,
		NewClient: func(base *url.URL, cfg apiclient.Config) providers.Provider {
			c := providertest.SimCredentials
			return e2e.New(e2e.Options{Account: "delhi", BaseURL: base, APIKey: c.APIKey, Token: c.Token, ProjectID: c.ProjectID, HTTP: cfg})
		}}
}

// An action answered 2xx with a body that is not the envelope was sent
// and is Unanswered (seen: a stopped node powered on at every refresh
// because such an answer counted as never sent); the provider's no is
// Refused; what never left is NotSent.
func TestActionDelivery(t *testing.T) { providertest.CheckDeliveries(t, deliveryTarget()) }

// A revoked key (401) or a project that is not the account's (403): every
// read fails with providers.ErrUnauthorized, once.
func TestUnauthorized(t *testing.T) { providertest.CheckUnauthorized(t, deliveryTarget()) }

// The answer to PUT .../actions/, decoded per the envelope (the API page
// shows only code 200): a 4xx code inside a 200 is the API's no
// (DESIGN.md's error envelope; 401/403 a refused key); a 5xx code is no
// usable answer (the provider failed, perhaps after carrying the action
// out), and so is a body that is not the envelope.
func TestDecodeAction(t *testing.T) {
	for _, tc := range []struct {
		body   string
		want   apiclient.Delivery
		unauth bool
	}{
		{`{"code":200,"data":{"id":169,"status":"Rebooting"},"errors":{},"message":"Success"}`, apiclient.Accepted, false},
		{`{"message":"Success","code":200,"data":{},"errors":{}}`, apiclient.Accepted, false},
		{`{"code":"200","data":null,"errors":{},"message":"Success"}`, apiclient.Accepted, false},
		{`{"code":400,"data":{},"errors":"Node is not running","message":"Bad Request"}`, apiclient.Refused, false},
		{`{"code":401,"data":{},"errors":"Invalid apikey or token","message":"Unauthorized"}`, apiclient.Refused, true},
		{`{"code":403,"data":{},"errors":"project_id does not belong to this account","message":"Forbidden"}`, apiclient.Refused, true},
		{`{"code":404,"data":{},"errors":"Node not found","message":"Not Found"}`, apiclient.Refused, false},
		{`{"code":500,"data":{},"errors":"Internal Server Error","message":"Internal Server Error"}`, apiclient.Unanswered, false},
		{`{"code":"503","data":{},"errors":"Service Unavailable","message":"Service Unavailable"}`, apiclient.Unanswered, false},
		{`{"data":{"id":169},"message":"Success"}`, apiclient.Unanswered, false},
		{`{"code":302,"data":{},"message":"Found"}`, apiclient.Unanswered, false},
		{`{}`, apiclient.Unanswered, false},
		{``, apiclient.Unanswered, false},
		{`<html><body>Login</body></html>`, apiclient.Unanswered, false},
		{`{"code":200,"data":{"id":`, apiclient.Unanswered, false},
	} {
		srv := providertest.NewServer(t, map[string]providertest.Route{"PUT /myaccount/api/v1/nodes/169/actions/": {Body: tc.body}})
		_, err := client(t, srv, 0).Do(context.Background(), "169", providers.ActionReboot, providers.ActionParams{})
		if got := apiclient.DeliveryOf(err); got != tc.want {
			t.Errorf("%s: %v (%v), want %v", tc.body, got, err, tc.want)
		}
		if got := errors.Is(err, providers.ErrUnauthorized); got != tc.unauth {
			t.Errorf("%s: ErrUnauthorized %v, want %v", tc.body, got, tc.unauth)
		}
		if err != nil && (strings.Contains(err.Error(), apiKey) || strings.Contains(err.Error(), token)) {
			t.Errorf("secret in error: %v", err)
		}
	}
}

// The envelope's auth refusal inside a 200 on a list or a read is
// providers.ErrUnauthorized too.
func TestEnvelopeUnauthorizedOnReads(t *testing.T) {
	body := `{"code":401,"data":{},"errors":"Invalid apikey or token","message":"Unauthorized"}`
	srv := providertest.NewServer(t, map[string]providertest.Route{
		"GET /myaccount/api/v1/nodes/":     {Body: body},
		"GET /myaccount/api/v1/nodes/169/": {Body: body},
	})
	c := client(t, srv, 0)
	if _, err := c.List(context.Background()); !errors.Is(err, providers.ErrUnauthorized) {
		t.Errorf("list: %v", err)
	}
	if _, err := c.Get(context.Background(), "169"); !errors.Is(err, providers.ErrUnauthorized) {
		t.Errorf("get: %v", err)
	}
}

// RateLimit and Throttled report the client's own pacing.
func TestRateReporter(t *testing.T) {
	var rr providers.RateReporter = e2e.New(e2e.Options{Account: "delhi", BaseURL: &url.URL{Scheme: "http", Host: "127.0.0.1:1"}, HTTP: apiclient.Config{RateLimit: 3}})
	if r, ok := rr.RateLimit(); !ok || r != 3 || rr.Throttled() {
		t.Errorf("rate %v ok %v throttled %v, want 3, true, false", r, ok, rr.Throttled())
	}
}
