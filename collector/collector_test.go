package collector

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/e2e"
	"github.com/vps-exporter/vps_exporter/providers/sim"
	"github.com/vps-exporter/vps_exporter/providers/vpnbingo"
	"github.com/vps-exporter/vps_exporter/providers/vpsorg"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var fixedNow = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// simFleet starts a small simulated fleet with a fixed clock and returns a
// client per API.
func simFleet(t testing.TB, n int) (*sim.Sim, []providers.Provider) {
	t.Helper()
	s := sim.New(sim.Options{Servers: n, Seed: 42, Now: func() time.Time { return fixedNow }})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv, err := s.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	u := func(api sim.API) *url.URL {
		v, _ := url.Parse(srv.URL[api])
		return v
	}
	return s, []providers.Provider{
		vpnbingo.New(vpnbingo.Options{Account: "bingo-prod", BaseURL: u(sim.VPNBingo), Token: "t"}),
		vpsorg.New(vpsorg.Options{Account: "vps-main", BaseURL: u(sim.VPSOrg), Token: "t"}),
		e2e.New(e2e.Options{Account: "e2e-delhi", BaseURL: u(sim.E2E), Token: "t", APIKey: "k", ProjectID: "1", Location: "Delhi"}),
	}
}

func refreshAll(t testing.TB, st *Store, ps []providers.Provider) {
	t.Helper()
	for _, p := range ps {
		servers, err := p.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		st.Update(p.Type(), p.Account(), servers, nil, fixedNow, 1500*time.Millisecond)
	}
}

func scrape(t testing.TB, h http.Handler, gzipped bool) (string, http.Header) {
	t.Helper()
	req := httptest.NewRequest("GET", "/metrics", nil)
	if gzipped {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body := rec.Body.Bytes()
	if gzipped {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		zr.Multistream(false) // one gzip member, readable by any client
		if body, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
		if _, err := zr.Read(make([]byte, 1)); err != io.EOF {
			t.Fatal("trailing data after the gzip member")
		}
	}
	return string(body), rec.Header()
}

func accountRegistry(st *Store) *prometheus.Registry {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewAccountCollector(st))
	return reg
}

func TestGoldenMetrics(t *testing.T) {
	_, ps := simFleet(t, 4)
	st := NewStore()
	refreshAll(t, st, ps)
	got, hdr := scrape(t, NewHandler(st, accountRegistry(st), log.NewNopLogger()), false)
	if ct := hdr.Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	const golden = "testdata/metrics.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("/metrics differs from %s (run go test -update to accept):\n%s", golden, firstDiff(got, string(want)))
	}
	// The output parses, and every family appears once.
	p := expfmt.NewTextParser(model.LegacyValidation)
	if _, err := p.TextToMetricFamilies(strings.NewReader(got)); err != nil {
		t.Fatalf("output does not parse: %v", err)
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) && i < len(bl); i++ {
		if al[i] != bl[i] {
			return "line " + itoa(i+1) + ":\n got: " + al[i] + "\nwant: " + bl[i]
		}
	}
	return "lengths differ: got " + itoa(len(al)) + " lines, want " + itoa(len(bl))
}

func itoa(i int) string { return string(appendFloat(nil, float64(i))) }

func TestGzipEqualsPlain(t *testing.T) {
	_, ps := simFleet(t, 30)
	st := NewStore()
	refreshAll(t, st, ps)
	reg := accountRegistry(st)
	reg.MustRegister(prometheus.NewGoCollector())
	h := NewHandler(st, reg, log.NewNopLogger())
	plain, _ := scrape(t, h, false)
	zipped, hdr := scrape(t, h, true)
	if hdr.Get("Content-Encoding") != "gzip" {
		t.Fatal("not gzipped")
	}
	// The Go collector's values move between scrapes; the stored part
	// must be identical and both must parse.
	cut := func(s string) string { return s[:strings.Index(s, "# HELP go_")] }
	if cut(plain) != cut(zipped) {
		t.Error("gzip body differs from plain body")
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	if _, err := p.TextToMetricFamilies(strings.NewReader(zipped)); err != nil {
		t.Fatal(err)
	}
}

func TestAcceptsGzip(t *testing.T) {
	for header, want := range map[string]bool{
		"":                        false,
		"gzip":                    true,
		"GZIP":                    true,
		"identity, gzip":          true,
		"gzip;q=0.5":              true,
		"gzip; q=0":               false,
		"gzip;q=0.0":              false,
		"deflate, br":             false,
		"*":                       true,
		"*;q=0":                   false,
		"gzip;q=0, *":             false,
		"br;q=1.0, gzip;q=0.8, *": true,
	} {
		if got := acceptsGzip(header); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", header, got, want)
		}
	}
}

func TestRenderOncePerChange(t *testing.T) {
	s, ps := simFleet(t, 10)
	st := NewStore()
	var rendered []string
	st.rendered = func(account, id string) { rendered = append(rendered, account+"/"+id) }
	refreshAll(t, st, ps)
	if len(rendered) != 30 {
		t.Fatalf("first refresh rendered %d servers, want 30", len(rendered))
	}
	h := NewHandler(st, prometheus.NewRegistry(), log.NewNopLogger())
	scrape(t, h, true)
	body1 := st.current()

	// Unchanged data: nothing re-rendered, body not rebuilt.
	rendered = nil
	refreshAll(t, st, ps)
	if len(rendered) != 0 {
		t.Fatalf("re-rendered without a change: %v", rendered)
	}
	if st.current() != body1 {
		t.Fatal("body rebuilt without a change")
	}

	// One server changes: only it is re-rendered.
	s.SetBingoStatus(1000, 18)
	refreshAll(t, st, ps)
	if strings.Join(rendered, ",") != "bingo-prod/1000" {
		t.Errorf("rendered %v, want only bingo-prod/1000", rendered)
	}
	out, _ := scrape(t, h, false)
	if !strings.Contains(out, `vps_server_state{provider="vpnbingo",account="bingo-prod",id="1000",state="degraded"} 1`) {
		t.Error("change not visible in /metrics")
	}
}

func TestFailedRefreshKeepsServersStale(t *testing.T) {
	_, ps := simFleet(t, 5)
	st := NewStore()
	refreshAll(t, st, ps)
	st.Update("vpsorg", "vps-main", nil, errors.New(`vpsorg account "vps-main": GET /api/v1/servers/: HTTP 500`), fixedNow.Add(time.Minute), time.Second)
	snap, _ := st.Snapshot("vps-main")
	if snap.Up || len(snap.Servers) != 5 || !snap.LastSuccess.Equal(fixedNow.Add(1500*time.Millisecond)) {
		t.Errorf("snapshot after failure: up=%v servers=%d last=%v", snap.Up, len(snap.Servers), snap.LastSuccess)
	}
	reg := accountRegistry(st)
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP vps_provider_up 1 when the account's last refresh succeeded, else 0.
# TYPE vps_provider_up gauge
vps_provider_up{account="bingo-prod",provider="vpnbingo"} 1
vps_provider_up{account="e2e-delhi",provider="e2e"} 1
vps_provider_up{account="vps-main",provider="vpsorg"} 0
# HELP vps_provider_servers Servers the account had at its last successful refresh.
# TYPE vps_provider_servers gauge
vps_provider_servers{account="bingo-prod",provider="vpnbingo"} 5
vps_provider_servers{account="e2e-delhi",provider="e2e"} 5
vps_provider_servers{account="vps-main",provider="vpsorg"} 5
`), "vps_provider_up", "vps_provider_servers")
	if err != nil {
		t.Error(err)
	}
	out, _ := scrape(t, NewHandler(st, reg, log.NewNopLogger()), false)
	// Its servers are not reported down: their last known series stay.
	if !strings.Contains(out, `vps_server_up{provider="vpsorg",account="vps-main",id="12000"} 1`) {
		t.Error("servers of a failed account vanished or went down")
	}
}

func TestLabelEscaping(t *testing.T) {
	st := NewStore()
	st.Update("vpsorg", "a", []providers.Server{{ID: "1", Name: "quote\" back\\slash\nnewline", Hostname: "bad\xffutf8", State: providers.StateRunning}}, nil, fixedNow, 0)
	out, _ := scrape(t, NewHandler(st, prometheus.NewRegistry(), log.NewNopLogger()), false)
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(out))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, l := range mfs["vps_server_info"].Metric[0].Label {
		switch l.GetName() {
		case "name":
			if l.GetValue() != "quote\" back\\slash\nnewline" {
				t.Errorf("name round trip: %q", l.GetValue())
			}
		case "hostname":
			if !model.LabelValue(l.GetValue()).IsValid() {
				t.Errorf("invalid UTF-8 kept: %q", l.GetValue())
			}
		}
	}
}

func TestAbsentNotZero(t *testing.T) {
	st := NewStore()
	st.Update("e2e", "a", []providers.Server{{ID: "1", State: providers.StateStopped}}, nil, fixedNow, 0)
	out, _ := scrape(t, NewHandler(st, prometheus.NewRegistry(), log.NewNopLogger()), false)
	for _, name := range []string{"vps_server_cpu_usage_ratio", "vps_server_expiry_timestamp_seconds", "vps_server_memory_bytes", "vps_server_can_redeploy"} {
		if strings.Contains(out, name) {
			t.Errorf("%s exported for a server that has no such value", name)
		}
	}
	if !strings.Contains(out, `vps_server_up{provider="e2e",account="a",id="1"} 0`) {
		t.Error("vps_server_up missing")
	}
}

func TestManagerApply(t *testing.T) {
	s, ps := simFleet(t, 3)
	st := NewStore()
	var refreshed []string
	done := make(chan struct{}, 10)
	m := NewManager(st, log.NewNopLogger(), func(_ context.Context, snap Snapshot) {
		refreshed = append(refreshed, snap.Account)
		done <- struct{}{}
	})
	defer m.Stop()
	ctx := context.Background()
	m.Apply(ctx, []Account{{Provider: ps[0], Interval: time.Hour, Key: "1"}})
	<-done
	if !m.Ready() {
		t.Fatal("not ready after the first refresh")
	}
	m.Apply(ctx, []Account{{Provider: ps[0], Interval: time.Hour, Key: "1"}, {Provider: ps[1], Interval: time.Hour, Key: "1"}})
	<-done
	if strings.Join(refreshed, ",") != "bingo-prod,vps-main" {
		t.Errorf("refreshes %v: the unchanged account must not restart", refreshed)
	}
	m.Apply(ctx, []Account{{Provider: ps[1], Interval: time.Hour, Key: "1"}})
	if _, ok := st.Snapshot("bingo-prod"); ok {
		t.Error("removed account still in the store")
	}
	_ = s
}

// A long-lived store, whose unchanged servers' lines live only in the last
// assembled body, serves exactly what a fresh store renders from the same
// data, after any sequence of changes, removals and scrapes.
func TestStoreAfterChangesEqualsFreshRender(t *testing.T) {
	s, ps := simFleet(t, 30)
	st := NewStore()
	reg := prometheus.NewRegistry()
	h := NewHandler(st, reg, log.NewNopLogger())
	r := rand.New(rand.NewPCG(1, 2))
	codes := []int{9, 10, 18, 19, 20, -10}
	for round := 0; round < 25; round++ {
		for i := 0; i < r.IntN(4); i++ {
			s.SetBingoStatus(1000+r.IntN(30), codes[r.IntN(len(codes))])
		}
		refreshAll(t, st, ps)
		if round%7 == 3 {
			st.Remove(ps[1].Account()) // an account leaves, and comes back next round
		}
		if r.IntN(2) == 0 {
			continue // several changes may pile up between scrapes
		}
		got, _ := scrape(t, h, round%2 == 0)
		fresh := NewStore()
		for _, sn := range st.Snapshots() {
			fresh.Update(sn.Provider, sn.Account, sn.Servers, nil, fixedNow, 1500*time.Millisecond)
		}
		want, _ := scrape(t, NewHandler(fresh, reg, log.NewNopLogger()), false)
		if got != want {
			t.Fatalf("round %d: the long-lived store's /metrics differs from a fresh render", round)
		}
	}
}

// text is the body's stored part as one string.
func (b *body) text() string {
	var sb strings.Builder
	sb.Grow(b.size)
	for _, p := range b.plain {
		sb.Write(p)
	}
	return sb.String()
}
