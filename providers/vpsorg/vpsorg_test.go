package vpsorg_test

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/apiclient"
	"github.com/vps-exporter/vps_exporter/providers/providertest"
	"github.com/vps-exporter/vps_exporter/providers/sim"
	"github.com/vps-exporter/vps_exporter/providers/vpsorg"
)

const token = "tok-SECRET-vps"

func TestSeedListWithDetails(t *testing.T) {
	srv := providertest.NewServer(t, map[string]providertest.Route{
		"GET /api/v1/servers/":       {File: "testdata/list.json"},
		"GET /api/v1/servers/12345/": {File: "testdata/detail.json"},
		// 12346 has no detail route: 404, so it keeps its list data.
	})
	c := vpsorg.New(vpsorg.Options{Account: "a", BaseURL: srv.BaseURL(t), Token: token, HTTP: providertest.FastHTTP()})
	got, err := c.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d", len(got))
	}
	want := providers.Server{
		ID: "12345", Name: "web-server-01", Hostname: "web01.example.com", IP: "203.0.113.10", IPv6: "2001:0db8::1",
		Location: "us-west", Plan: "Standard VPS", Image: "Ubuntu 22.04 LTS",
		State: providers.StateRunning, RawStatus: "active",
		CreatedTime:        providers.Some(float64(time.Date(2025, 1, 10, 14, 30, 0, 0, time.UTC).Unix())),
		TransferLimitBytes: providers.Some(2048 * providers.GB), TransferUsedBytes: providers.Some(450 * providers.GB),
		CPUUsageRatio: providers.Some(0.235), VCPUs: providers.Some(2),
		MemoryBytes: providers.Some(4096 * providers.MB), MemoryUsedBytes: providers.Some(2048 * providers.MB),
		DiskBytes: providers.Some(80 * providers.GB), DiskUsedBytes: providers.Some(35 * providers.GB),
		BackupsEnabled: providers.Some(1),
	}
	if got[0] != want {
		t.Errorf("\n got %+v\nwant %+v", got[0], want)
	}
	// From the list only: usage and quota absent, not 0.
	if got[1].ID != "12346" || got[1].CPUUsageRatio.OK || got[1].TransferLimitBytes.OK || !got[1].MemoryBytes.OK {
		t.Errorf("list-only server: %+v", got[1])
	}
	for _, r := range srv.Requests() {
		if r.Header.Get("Authorization") != "Bearer "+token || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: Authorization %q, Content-Type %q", r.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type"))
		}
		if len(r.Query) != 0 {
			t.Errorf("%s: undocumented query %v", r.Path, r.Query)
		}
	}
}

func TestSeedActions(t *testing.T) {
	for _, a := range []providers.Action{providers.ActionReboot, providers.ActionStart, providers.ActionStop} {
		srv := providertest.NewServer(t, map[string]providertest.Route{
			"POST /api/v1/servers/12345/" + string(a) + "/": {File: "testdata/" + string(a) + "_response.json"},
		})
		c := vpsorg.New(vpsorg.Options{Account: "a", BaseURL: srv.BaseURL(t), Token: token})
		res, err := c.Do(context.Background(), "12345", a, providers.ActionParams{})
		if err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		if !strings.Contains(res.Response, `"status": "success"`) {
			t.Errorf("%s: response %q", a, res.Response)
		}
		if r := srv.Requests(); len(r) != 1 || r[0].Method != "POST" {
			t.Errorf("%s: requests %+v", a, r)
		}
	}
}

func TestActionErrorsNotRetried(t *testing.T) {
	srv := providertest.NewServer(t, map[string]providertest.Route{
		"POST /api/v1/servers/1/reboot/": {Status: 500, Body: `{"detail":"boom"}`},
		"POST /api/v1/servers/2/reboot/": {Status: 402, Body: `{"detail":"Payment required - insufficient credits"}`},
	})
	c := vpsorg.New(vpsorg.Options{Account: "a", BaseURL: srv.BaseURL(t), Token: token, HTTP: providertest.FastHTTP()})
	if _, err := c.Do(context.Background(), "1", providers.ActionReboot, providers.ActionParams{}); err == nil || !strings.Contains(err.Error(), "HTTP 500: boom") {
		t.Errorf("500: %v", err)
	}
	if _, err := c.Do(context.Background(), "2", providers.ActionReboot, providers.ActionParams{}); err == nil || !strings.Contains(err.Error(), "HTTP 402") {
		t.Errorf("402: %v", err)
	}
	if n := len(srv.Requests()); n != 2 {
		t.Errorf("a failed reboot must not be retried (it may have happened): %d requests", n)
	}
}

func TestStateMapping(t *testing.T) {
	for raw, want := range map[string]providers.State{
		"active": providers.StateRunning, "stopped": providers.StateStopped, "suspended": providers.StateSuspended,
		"provisioning": providers.StateProvisioning, "starting": providers.StateStarting, "stopping": providers.StateStopping,
		"rebooting": providers.StateRebooting, "ACTIVE": providers.StateRunning, "migrating": providers.StateUnknown, "": providers.StateUnknown,
	} {
		if got := vpsorg.StateOf(raw); got != want {
			t.Errorf("StateOf(%q) = %s, want %s", raw, got, want)
		}
	}
}

func TestSimulatorFleetAndMinimumCalls(t *testing.T) {
	s := sim.New(sim.Options{Servers: 130, Seed: 2, PageSize: 50, Credentials: map[sim.API]sim.Credentials{sim.VPSOrg: {Token: token}}})
	srv := providertest.Wrap(t, s.Handler(sim.VPSOrg))
	c := vpsorg.New(vpsorg.Options{Account: "a", BaseURL: srv.BaseURL(t), Token: token, MaxConcurrency: 4})
	got, err := c.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 130 {
		t.Fatalf("got %d", len(got))
	}
	req := s.Requests(sim.VPSOrg)
	if req["list"] != 3 || req["detail"] != 130 {
		t.Errorf("calls %v, want 3 list pages and 130 details", req)
	}
	for _, sv := range got {
		if !sv.CPUUsageRatio.OK || !sv.TransferLimitBytes.OK {
			t.Fatalf("server %s lacks detail data", sv.ID)
		}
	}
	// Reboot a running server through the simulator.
	var id string
	for _, sv := range got {
		if sv.State == providers.StateRunning {
			id = sv.ID
			break
		}
	}
	if _, err := c.Do(context.Background(), id, providers.ActionReboot, providers.ActionParams{}); err != nil {
		t.Fatal(err)
	}
	after, err := c.Get(context.Background(), id)
	if err != nil || after.State != providers.StateRebooting {
		t.Errorf("after reboot: %s %v", after.State, err)
	}
	if _, err := c.Do(context.Background(), id, providers.ActionReboot, providers.ActionParams{}); err == nil || !strings.Contains(err.Error(), "HTTP 400") {
		t.Errorf("reboot while rebooting: %v", err)
	}
}

func TestDetailFailureFailsRefresh(t *testing.T) {
	s := sim.New(sim.Options{Servers: 10, Seed: 2})
	s.SetFault(sim.VPSOrg, sim.Fault{Kind: sim.FaultStatus, Status: 500, Only: "/12003/"})
	srv := providertest.Wrap(t, s.Handler(sim.VPSOrg))
	c := vpsorg.New(vpsorg.Options{Account: "a", BaseURL: srv.BaseURL(t), Token: token, HTTP: providertest.FastHTTP()})
	_, err := c.List(context.Background())
	if err == nil || !strings.Contains(err.Error(), "/api/v1/servers/12003/: HTTP 500") {
		t.Fatalf("want the failing detail named, got %v", err)
	}
}

// ListSummary reads the list pages only, the pages after the first several
// at a time (the simulator pages by number), and returns the same servers
// in the same order as the page-by-page list; the list lacks the detail
// fields, which MergeDetail adds from a detail read.
func TestListSummaryParallelPages(t *testing.T) {
	s := sim.New(sim.Options{Servers: 230, Seed: 2, PageSize: 20, Credentials: map[sim.API]sim.Credentials{sim.VPSOrg: {Token: token}}})
	s.SetLatency(sim.VPSOrg, 50*time.Millisecond)
	inner := s.Handler(sim.VPSOrg)
	var mu sync.Mutex
	inFlight, peak := 0, 0
	srv := providertest.Wrap(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inFlight++
		peak = max(peak, inFlight)
		mu.Unlock()
		inner.ServeHTTP(w, r)
		mu.Lock()
		inFlight--
		mu.Unlock()
	}))
	c := vpsorg.New(vpsorg.Options{Account: "a", BaseURL: srv.BaseURL(t), Token: token, MaxConcurrency: 4})
	got, err := c.ListSummary(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if req := s.Requests(sim.VPSOrg); req["list"] != 12 || req["detail"] != 0 {
		t.Errorf("calls %v, want the 12 list pages and no detail", req)
	}
	if peak < 2 || peak > 4 {
		t.Errorf("at most %d pages were read at once; want 2 to max_concurrency (4)", peak)
	}
	if len(got) != 230 {
		t.Fatalf("got %d servers", len(got))
	}
	for i, sv := range got {
		if want := strconv.Itoa(12000 + i); sv.ID != want {
			t.Fatalf("server %d is %s, want %s (list order)", i, sv.ID, want)
		}
		if sv.CPUUsageRatio.OK || sv.TransferLimitBytes.OK || sv.IPv6 != "" {
			t.Fatalf("list-only server %s has detail fields", sv.ID)
		}
	}
	d, err := c.Detail(context.Background(), got[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	m := c.MergeDetail(got[0], d)
	if !m.CPUUsageRatio.OK || !m.TransferLimitBytes.OK || m.IPv6 == "" || m.State != got[0].State || m.Name != got[0].Name {
		t.Errorf("merged %+v", m)
	}
}

func deliveryTarget() providertest.ActionTarget {
	return providertest.ActionTarget{API: sim.VPSOrg, Action: providers.ActionReboot,
		NewClient: func(base *url.URL, cfg apiclient.Config) providers.Provider {
			return vpsorg.New(vpsorg.Options{Account: "a", BaseURL: base, Token: providertest.SimCredentials.Token, HTTP: cfg})
		}}
}

// An action answered 2xx with a body that is not the documented
// {"status": "success", ...} was sent and is Unanswered, not "never sent";
// the provider's no is Refused; what never left is NotSent.
func TestActionDelivery(t *testing.T) { providertest.CheckDeliveries(t, deliveryTarget()) }

// A revoked key: every read fails with providers.ErrUnauthorized, once.
func TestUnauthorized(t *testing.T) { providertest.CheckUnauthorized(t, deliveryTarget()) }

// The answer to reboot, start and stop, decoded per the API page: it
// documents "status": "success" as the answer and only HTTP 400 and 404
// as refusals, so a 2xx with any other status is no usable answer (the
// server may be rebooting), not a refusal.
func TestDecodeAction(t *testing.T) {
	for _, tc := range []struct {
		body string
		want apiclient.Delivery
	}{
		{`{"status": "success", "message": "Server is rebooting", "server": {"id": 12345, "name": "web-server-01", "status": "rebooting"}}`, apiclient.Accepted},
		{`{"status": "SUCCESS"}`, apiclient.Accepted},
		{`{"status": "error", "message": "Server is locked"}`, apiclient.Unanswered},
		{`{"status": "queued", "message": "Server will reboot"}`, apiclient.Unanswered},
		{`{"status": "failed"}`, apiclient.Unanswered},
		{`{"status": ""}`, apiclient.Unanswered},
		{`{"status": null}`, apiclient.Unanswered},
		{`{"message": "Server is rebooting"}`, apiclient.Unanswered},
		{`{}`, apiclient.Unanswered},
		{`[]`, apiclient.Unanswered},
		{``, apiclient.Unanswered},
		{`<html><body>Login</body></html>`, apiclient.Unanswered},
		{`{"status": "succ`, apiclient.Unanswered},
	} {
		srv := providertest.NewServer(t, map[string]providertest.Route{"POST /api/v1/servers/7/reboot/": {Body: tc.body}})
		c := vpsorg.New(vpsorg.Options{Account: "a", BaseURL: srv.BaseURL(t), Token: token})
		_, err := c.Do(context.Background(), "7", providers.ActionReboot, providers.ActionParams{})
		if got := apiclient.DeliveryOf(err); got != tc.want {
			t.Errorf("%s: %v (%v), want %v", tc.body, got, err, tc.want)
		}
	}
}

// RateLimit and Throttled report the client's own pacing.
func TestRateReporter(t *testing.T) {
	var rr providers.RateReporter = vpsorg.New(vpsorg.Options{Account: "a", BaseURL: &url.URL{Scheme: "http", Host: "127.0.0.1:1"}, HTTP: apiclient.Config{RateLimit: 7}})
	if r, ok := rr.RateLimit(); !ok || r != 7 || rr.Throttled() {
		t.Errorf("rate %v ok %v throttled %v, want 7, true, false", r, ok, rr.Throttled())
	}
}
