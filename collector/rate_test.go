package collector

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/apiclient"
	"github.com/vps-exporter/vps_exporter/providers/e2e"
	"github.com/vps-exporter/vps_exporter/providers/sim"
	"github.com/vps-exporter/vps_exporter/providers/vpnbingo"
	"github.com/vps-exporter/vps_exporter/providers/vpsorg"
)

// notReporter hides a client's RateReporter methods.
type notReporter struct{ providers.Provider }

// Each account's pacing as its client reports it: a configured rate that
// was never cut, an unlimited account that was never throttled (no rate
// series), an account cut by a 429 (half its rate, throttled), and a
// client that reports nothing. A scrape sends no request.
func TestRateCollector(t *testing.T) {
	s := sim.New(sim.Options{Servers: 6, Seed: 1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := s.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	u := func(api sim.API) *url.URL { v, _ := url.Parse(srv.URL[api]); return v }
	vps := vpsorg.New(vpsorg.Options{Account: "vps-main", BaseURL: u(sim.VPSOrg), Token: "t", HTTP: apiclient.Config{RateLimit: 10}})
	bingo := vpnbingo.New(vpnbingo.Options{Account: "bingo", BaseURL: u(sim.VPNBingo), Token: "t"})
	cut := e2e.New(e2e.Options{Account: "e2e-delhi", BaseURL: u(sim.E2E), Token: "t", APIKey: "k", ProjectID: "1", HTTP: apiclient.Config{RateLimit: 8}})
	hidden := notReporter{vpsorg.New(vpsorg.Options{Account: "other", BaseURL: u(sim.VPSOrg), Token: "t", HTTP: apiclient.Config{RateLimit: 5}})}

	s.SetFault(sim.E2E, sim.Fault{Kind: sim.FaultStatus, Status: 429, RetryAfter: "60", Count: 1})
	lctx, lcancel := context.WithTimeout(ctx, 2*time.Second)
	if _, err := cut.List(lctx); err == nil {
		t.Fatal("want the 429")
	}
	lcancel()
	requests := func() int {
		n := 0
		for _, api := range sim.APIs() {
			for _, c := range s.Requests(api) {
				n += c
			}
		}
		return n
	}
	before := requests()
	c := NewRateCollector(func() []providers.Provider { return []providers.Provider{vps, bingo, cut, hidden} })
	want := `
# HELP vps_provider_api_rate_limit_per_second Requests per second the exporter allows itself to the account now: rate_limit, or less after a 429. Absent while no limit is in force (no rate_limit and not throttled).
# TYPE vps_provider_api_rate_limit_per_second gauge
vps_provider_api_rate_limit_per_second{account="e2e-delhi",provider="e2e"} 4
vps_provider_api_rate_limit_per_second{account="vps-main",provider="vpsorg"} 10
# HELP vps_provider_api_throttled 1 while a 429 pause or rate cut of the account is in force, else 0.
# TYPE vps_provider_api_throttled gauge
vps_provider_api_throttled{account="bingo",provider="vpnbingo"} 0
vps_provider_api_throttled{account="e2e-delhi",provider="e2e"} 1
vps_provider_api_throttled{account="vps-main",provider="vpsorg"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if n := requests() - before; n != 0 {
		t.Errorf("a scrape sent %d requests to the providers", n)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) != 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// Providers lists the running accounts' clients, as Apply left them, by
// account name; a nil Manager has none.
func TestManagerProviders(t *testing.T) {
	_, ps := simFleet(t, 2)
	m := NewManager(NewStore(), log.NewNopLogger(), nil)
	defer m.Stop()
	names := func() string {
		var out []string
		for _, p := range m.Providers() {
			out = append(out, p.Account())
		}
		return strings.Join(out, ",")
	}
	if got := names(); got != "" {
		t.Errorf("before Apply: %q", got)
	}
	ctx := context.Background()
	m.Apply(ctx, []Account{{Provider: ps[1], Interval: time.Hour, Key: "1"}, {Provider: ps[0], Interval: time.Hour, Key: "1"}, {Provider: ps[2], Interval: time.Hour, Key: "1"}})
	if got := names(); got != "bingo-prod,e2e-delhi,vps-main" {
		t.Errorf("after Apply: %q", got)
	}
	m.Apply(ctx, []Account{{Provider: ps[1], Interval: time.Hour, Key: "1"}})
	if got := names(); got != "vps-main" {
		t.Errorf("after removing two: %q", got)
	}
	var none *Manager
	if got := none.Providers(); got != nil {
		t.Errorf("nil manager: %v", got)
	}
}
