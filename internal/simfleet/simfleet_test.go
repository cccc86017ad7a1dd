package simfleet

import (
	"bytes"
	"context"
	"flag"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers/sim"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yml")

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want [3]int // vpnbingo, vpsorg, e2e
	}{
		{1, [3]int{1, 0, 0}},
		{2, [3]int{1, 1, 0}},
		{3, [3]int{1, 1, 1}},
		{10, [3]int{4, 3, 3}},
		{100000, [3]int{33334, 33333, 33333}},
	} {
		got := Split(tc.n)
		if g := [3]int{got[sim.VPNBingo], got[sim.VPSOrg], got[sim.E2E]}; g != tc.want {
			t.Errorf("Split(%d) = %v, want %v", tc.n, g, tc.want)
		}
	}
}

// TestRenderGolden pins the configuration's YAML (go test -update rewrites
// it); the golden file passes config.Parse.
func TestRenderGolden(t *testing.T) {
	urls := map[sim.API]string{sim.VPNBingo: "http://127.0.0.1:40001", sim.VPSOrg: "http://127.0.0.1:40002", sim.E2E: "http://127.0.0.1:40003"}
	creds := map[sim.API]sim.Credentials{
		sim.VPNBingo: {Token: "bingo-token"},
		sim.VPSOrg:   {Token: "vpsorg-token"},
		sim.E2E:      {Token: "e2e-token", APIKey: "e2e-key", ProjectID: "sim"},
	}
	got, err := render(Options{Servers: 150, Refresh: time.Minute, RateLimit: 3, Prefix: "sim"}, urls, creds, "", "/var/lib/vps_sim/sim.state.db")
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "config.golden.yml")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("render differs from %s (go test -update to accept):\n%s", golden, got)
	}
	c, err := config.Parse(got, t.TempDir())
	if err != nil {
		t.Fatalf("golden configuration does not parse: %v", err)
	}
	for _, p := range c.Providers {
		if p.RateLimit != 2.4 {
			t.Errorf("%s: rate_limit %v, want 2.4 (80%% of 3)", p.Name, p.RateLimit)
		}
	}
}

func startFleet(t *testing.T, o Options) *Fleet {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f, err := Start(ctx, o)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = f.Shutdown(sctx)
		cancel()
	})
	return f
}

// list requests an account's server list with its credentials as the
// configuration gives them (or none) and returns the status.
func list(t *testing.T, p config.Provider, withCreds bool) int {
	t.Helper()
	u := *p.URL
	switch p.Type {
	case config.TypeVPNBingo:
		u.Path = "/api/v2/nodes/"
	case config.TypeVPSOrg:
		u.Path = "/api/v1/servers/"
	case config.TypeE2E:
		u.Path = "/myaccount/api/v1/nodes/"
		if withCreds {
			u.RawQuery = url.Values{"apikey": {string(p.APIKey)}, "project_id": {p.ProjectID}}.Encode()
		}
	}
	req, _ := http.NewRequest(http.MethodGet, u.String(), nil)
	if withCreds {
		req.Header.Set("Authorization", "Bearer "+string(p.Token))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", p.Name, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestConfig checks the configuration against the running fleet: every
// account reaches its API with the credentials written for it (and not
// without), and config.Parse set the defaults a user's file gets.
func TestConfig(t *testing.T) {
	const refresh = 20 * time.Second
	f := startFleet(t, Options{Servers: 10, Refresh: refresh, RateLimit: 50, Seed: 3, Prefix: "demo"})
	state := filepath.Join(t.TempDir(), "remediation.db")
	c, err := f.Config(state)
	if err != nil {
		t.Fatal(err)
	}
	eps := f.Endpoints()
	if len(c.Providers) != 3 || len(eps) != 3 {
		t.Fatalf("%d accounts, %d endpoints; want 3", len(c.Providers), len(eps))
	}
	wantNames := []string{"demo-bingo", "demo-vpsorg", "demo-e2e"}
	wantServers := []int{4, 3, 3}
	for i, p := range c.Providers {
		if p.Name != wantNames[i] || eps[i].Account != p.Name {
			t.Errorf("account %d: %q (endpoint %q), want %q", i, p.Name, eps[i].Account, wantNames[i])
		}
		if p.URL.String() != eps[i].URL || eps[i].Servers != wantServers[i] {
			t.Errorf("%s: url %s servers %d, endpoint %+v", p.Name, p.URL, wantServers[i], eps[i])
		}
		if p.RateLimit != 40 {
			t.Errorf("%s: rate_limit %v, want 40", p.Name, p.RateLimit)
		}
		if code := list(t, p, true); code != http.StatusOK {
			t.Errorf("%s: list with the configured credentials: HTTP %d", p.Name, code)
		}
		if code := list(t, p, false); code != http.StatusUnauthorized {
			t.Errorf("%s: list without credentials: HTTP %d, want 401", p.Name, code)
		}
	}
	if c.Global.RefreshInterval != model.Duration(refresh) || c.Global.StaleAfter != model.Duration(5*refresh) {
		t.Errorf("global: refresh %s stale_after %s, want %s and 5x", c.Global.RefreshInterval, c.Global.StaleAfter, refresh)
	}
	r := c.Remediation
	if !r.Enabled || !r.DryRun || !r.Webhook.Enabled || r.StateFile != state || r.Live() {
		t.Errorf("remediation: enabled %v dry_run %v webhook %v state_file %q; want on, dry run, webhook on, %q", r.Enabled, r.DryRun, r.Webhook.Enabled, r.StateFile, state)
	}
	want := Rules(refresh)
	if !reflect.DeepEqual(r.Rules, want) {
		t.Errorf("rules:\n got %+v\nwant %+v", r.Rules, want)
	}
	if err := r.CheckCredential(false); err != nil {
		t.Errorf("credential rule: %v", err)
	}
}

// TestThrottle: --rate-limit throttles the simulated APIs.
func TestThrottle(t *testing.T) {
	f := startFleet(t, Options{Servers: 3, Refresh: time.Minute, RateLimit: 0.5})
	c, err := f.Config(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Providers[1]
	first, second := list(t, p, true), list(t, p, true)
	if first != http.StatusOK || second != http.StatusTooManyRequests {
		t.Errorf("two requests at once against 0.5/s: HTTP %d, %d; want 200, 429", first, second)
	}
}

func TestWriteConfig(t *testing.T) {
	f := startFleet(t, Options{Servers: 4, Refresh: time.Minute, Seed: 9})
	dir := t.TempDir()
	path := filepath.Join(dir, "sim.yml")
	c, err := f.WriteConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "sim.state.db"); c.Remediation.StateFile != want {
		t.Errorf("state_file %q, want %q", c.Remediation.StateFile, want)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600 (the file holds credentials)", st.Mode().Perm())
	}
	loaded, err := config.Load(path)
	if err != nil {
		t.Fatalf("written file does not load: %v", err)
	}
	if !reflect.DeepEqual(loaded.Providers[0].Token, c.Providers[0].Token) || len(loaded.Providers) != 3 {
		t.Error("the file loads differently from what WriteConfig returned")
	}
	body, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(body), Marker) || !strings.Contains(string(body), "(4 servers, seed 9)") {
		t.Errorf("header: %.200s", body)
	}
	// Its own file is rewritten (a second run).
	if _, err := f.WriteConfig(path); err != nil {
		t.Errorf("rewriting its own file: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("directory holds %d entries after two writes, want 1 (no temporary file left)", len(entries))
	}

	for _, tc := range []struct {
		name    string
		prepare func(path string)
		want    string
	}{
		{"a user's configuration", func(p string) { _ = os.WriteFile(p, []byte("global:\n  refresh_interval: 1m\n"), 0o600) }, "was not written by vps_sim"},
		{"an empty file", func(p string) { _ = os.WriteFile(p, nil, 0o600) }, "was not written by vps_sim"},
		{"a directory", func(p string) { _ = os.Mkdir(p, 0o755) }, "not a regular file"},
		{"a missing directory", func(string) {}, "no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "vps_exporter.yml")
			if tc.name == "a missing directory" {
				p = filepath.Join(t.TempDir(), "nope", "vps_exporter.yml")
			}
			tc.prepare(p)
			before, _ := os.ReadFile(p)
			_, err := f.WriteConfig(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
				t.Error("the file was changed")
			}
		})
	}
}

func TestStartErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no servers", Options{Servers: 0, Refresh: time.Minute}, "servers must be at least 1"},
		{"no refresh", Options{Servers: 1}, "refresh interval must be positive"},
		{"negative rate", Options{Servers: 1, Refresh: time.Minute, RateLimit: -1}, "rate limit must not be negative"},
		{"host not here", Options{Servers: 1, Refresh: time.Minute, ListenHost: "192.0.2.1"}, "start simulated APIs on 192.0.2.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Start(context.Background(), tc.o)
			if err == nil {
				_ = f.Shutdown(context.Background())
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestShutdown: after Shutdown the APIs no longer answer.
func TestShutdown(t *testing.T) {
	f, err := Start(context.Background(), Options{Servers: 3, Refresh: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, ep := range f.Endpoints() {
		if resp, err := http.Get(ep.URL + "/"); err == nil {
			resp.Body.Close()
			t.Errorf("%s still answers after Shutdown", ep.API)
		}
	}
}

// TestLiveHasTheCredential: a live fleet's configuration acts for real and
// carries the credential live remediation requires (the one given; a
// live fleet without one is refused); the default one is a dry run.
func TestLiveHasTheCredential(t *testing.T) {
	if _, err := Start(context.Background(), Options{Servers: 3, Refresh: time.Second, Live: true}); err == nil || !strings.Contains(err.Error(), "webhook token") {
		t.Errorf("a live fleet without a webhook token: %v, want refused", err)
	}
	for _, live := range []bool{false, true} {
		o := Options{Servers: 30, Refresh: time.Second, Live: live}
		if live {
			o.WebhookToken = "demo"
		}
		f, err := Start(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		c, err := f.Config(filepath.Join(t.TempDir(), "state.db"))
		_ = f.Shutdown(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		r := c.Remediation
		if r.DryRun == live || (r.Webhook.BearerToken != "") != live || (live && r.Webhook.BearerToken != "demo") {
			t.Errorf("live %v: dry_run %v, bearer token set %v", live, r.DryRun, r.Webhook.BearerToken != "")
		}
		if err := r.CheckCredential(false); err != nil {
			t.Errorf("live %v: %v", live, err)
		}
		if len(r.Webhook.Escalate["reboot"]) != 1 || r.Rules[2].Escalate[0] != "power_cycle" {
			t.Errorf("live %v: ladders missing: %v %v", live, r.Webhook.Escalate, r.Rules[2].Escalate)
		}
	}
}
