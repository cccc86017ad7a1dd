package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// throttleSeries returns the value of the series line of name with labels
// (as exposed), and whether it is there.
func throttleSeries(body, name, labels string) (float64, bool) {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name+labels) + ` (\S+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

// TestThrottleVisible: a provider that throttles the exporter shows on
// /metrics. VPS.org (rate_limit 10) answers 429 with a Retry-After of
// about 10 s: vps_provider_api_throttled turns 1 and
// vps_provider_api_rate_limit_per_second shows the cut rate while no
// request of the account reaches the provider (the pause); once the
// provider stops throttling, the rate recovers to 10 and throttled returns
// to 0. An account without rate_limit that was never throttled has no
// rate series and throttled 0.
func TestThrottleVisible(t *testing.T) {
	t.Parallel() // mostly waiting on the simulator: beside the other long binary tests
	if testing.Short() {
		t.Skip("runs for about a minute")
	}
	s, urls := startSim(t, 30)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  refresh_interval: 1s
  request_timeout: 2s
  max_concurrency: 4
providers:
  - type: vpnbingo
    name: bingo-prod
    base_url: %s
    token: %s
  - type: vpsorg
    name: vps-main
    base_url: %s
    token: %s
    rate_limit: 10
`, urls[sim.VPNBingo], secretBingo, urls[sim.VPSOrg], secretVPS)
	path := filepath.Join(dir, "c.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startExporter(t, "--config.file="+path)
	const (
		rateName  = "vps_provider_api_rate_limit_per_second"
		throtName = "vps_provider_api_throttled"
		vps       = `{account="vps-main",provider="vpsorg"}`
		bingo     = `{account="bingo-prod",provider="vpnbingo"}`
	)
	m := e.metrics()
	if v, ok := throttleSeries(m, rateName, vps); !ok || v != 10 {
		t.Fatalf("before any 429: %s%s = %v (present %v), want 10\n%s", rateName, vps, v, ok, grepLines(m, "vps_provider_api_"))
	}
	if v, ok := throttleSeries(m, throtName, vps); !ok || v != 0 {
		t.Fatalf("before any 429: %s%s = %v (present %v), want 0", throtName, vps, v, ok)
	}
	if _, ok := throttleSeries(m, rateName, bingo); ok {
		t.Errorf("an unlimited account that was never throttled exports %s%s", rateName, bingo)
	}
	if v, ok := throttleSeries(m, throtName, bingo); !ok || v != 0 {
		t.Errorf("%s%s = %v (present %v), want 0", throtName, bingo, v, ok)
	}
	promtoolCheck(t, m)

	// One request every 10 s: the first 429 asks for about 10 s.
	s.SetThrottle(sim.VPSOrg, 0.1, 1)
	total := func() int {
		n := 0
		for _, c := range s.Requests(sim.VPSOrg) {
			n += c
		}
		return n
	}
	e.waitFor("a 429", func() bool { return s.Requests(sim.VPSOrg)["throttled"] > 0 })
	throttledAt := time.Now()
	sent := total()
	m = e.metrics()
	if v, ok := throttleSeries(m, throtName, vps); !ok || v != 1 {
		t.Errorf("during the pause: %s%s = %v (present %v), want 1", throtName, vps, v, ok)
	}
	if v, ok := throttleSeries(m, rateName, vps); !ok || v > 5 || v <= 0 {
		t.Errorf("during the pause: %s%s = %v (present %v), want the cut rate (at most 5)", rateName, vps, v, ok)
	}
	time.Sleep(3 * time.Second) // three refresh intervals
	if n := total() - sent; n > 0 && time.Since(throttledAt) < 9*time.Second {
		t.Errorf("%d requests reached VPS.org during its Retry-After pause", n)
	}
	m = e.metrics()
	if v, _ := throttleSeries(m, throtName, vps); v != 1 {
		t.Errorf("3 s into the pause: %s%s = %v, want 1", throtName, vps, v)
	}
	if v, _ := throttleSeries(m, rateName, vps); v > 5 {
		t.Errorf("3 s into the pause: %s%s = %v; the cut recovers only after the pause", rateName, vps, v)
	}
	if v, ok := throttleSeries(m, throtName, bingo); !ok || v != 0 {
		t.Errorf("the other account: %s%s = %v, want 0", throtName, bingo, v)
	}

	// The provider stops throttling: after the pause the rate comes back
	// to rate_limit over 30 s, and the account is no longer throttled.
	s.SetThrottle(sim.VPSOrg, 0, 0)
	deadline := time.Now().Add(90 * time.Second)
	var partial bool
	for {
		m = e.metrics()
		r, _ := throttleSeries(m, rateName, vps)
		th, _ := throttleSeries(m, throtName, vps)
		if r > 5 && r < 10 && th == 1 {
			partial = true
		}
		if r == 10 && th == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery within 90 s: rate %v throttled %v\n%s", r, th, grepLines(m, "vps_provider_api_"))
		}
		time.Sleep(time.Second)
	}
	if !partial {
		t.Error("the rate came back at once; want a gradual recovery")
	}
	if !hasLine(m, up("vpsorg", "vps-main", 1)) {
		t.Errorf("after recovery the account is not up:\n%s", grepLines(m, "vps_provider_"))
	}
	promtoolCheck(t, m)
}
