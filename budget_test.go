package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// TestThrottledVPSOrgAccount is the account that never came up: 200
// VPS.org servers, a provider that throttles at 20 requests/s (429 with
// Retry-After and DRF's message), rate_limit 6, a 10 s interval. The list
// is read every interval and the details within the budget it leaves: the
// account is up within one interval and never down after, a status change
// shows within two intervals, 95% of the servers have resource metrics
// within 80 s, 429s stay under 5% of the requests, and one server whose
// detail answers 500 keeps its list data, is logged once and leaves every
// other server intact.
func TestThrottledVPSOrgAccount(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for about 80 s")
	}
	t.Parallel()
	s := sim.New(sim.Options{PerAPI: map[sim.API]int{sim.VPSOrg: 200, sim.VPNBingo: 0, sim.E2E: 0}, Seed: 3,
		Credentials: map[sim.API]sim.Credentials{sim.VPSOrg: {Token: secretVPS}}})
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := s.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); s.Close(); srv.Close() })
	s.SetThrottle(sim.VPSOrg, 20, 20)
	const broken = 12005
	s.SetDetailFault(sim.VPSOrg, broken, sim.Fault{Kind: sim.FaultStatus, Status: 500})

	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  refresh_interval: 10s
  request_timeout: 5s
  max_concurrency: 8
providers:
  - type: vpsorg
    name: vps-big
    base_url: %s
    token: %s
    rate_limit: 6
`, srv.URL[sim.VPSOrg], secretVPS)
	if err := os.WriteFile(filepath.Join(dir, "c.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e := startExporter(t, "--config.file="+filepath.Join(dir, "c.yml"))
	if took := time.Since(start); took > 12*time.Second {
		t.Errorf("ready after %v; the list alone should bring the account up within one interval", took)
	}

	upLine := up("vpsorg", "vps-big", 1)
	withCPU := func(m string) int { return strings.Count(m, "\nvps_server_cpu_usage_ratio{") }
	var changed time.Time
	changedID := 0
	var shownAfter time.Duration
	coverage := map[int]int{} // seconds since start -> servers with resource metrics
	for time.Since(start) < 80*time.Second {
		m := e.metrics()
		if !hasLine(m, upLine) {
			t.Fatalf("at %v the account is down:\n%s", time.Since(start).Round(time.Second), grepLines(m, "vps_provider_"))
		}
		if n := strings.Count(m, "\nvps_server_info{"); n != 200 {
			t.Fatalf("at %v: %d servers listed, want 200", time.Since(start).Round(time.Second), n)
		}
		coverage[int(time.Since(start).Seconds())] = withCPU(m)
		if changed.IsZero() && time.Since(start) > 15*time.Second {
			// Pick a running server and stop it behind the exporter's back.
			for _, mc := range s.Machines(sim.VPSOrg) {
				if mc.Status == "active" && mc.ID != broken {
					changedID = mc.ID
					break
				}
			}
			s.Update(sim.VPSOrg, changedID, func(m *sim.Machine) { m.Status = "stopped" })
			changed = time.Now()
		}
		stateLine := fmt.Sprintf(`vps_server_state{provider="vpsorg",account="vps-big",id="%d",state="stopped"} 1`, changedID)
		if !changed.IsZero() && shownAfter == 0 && hasLine(m, stateLine) {
			shownAfter = time.Since(changed)
		}
		time.Sleep(time.Second)
	}
	m := e.metrics()
	if shownAfter == 0 || shownAfter > 20*time.Second {
		t.Errorf("a status change showed after %v; want within two intervals (20 s)", shownAfter)
	}
	if n := withCPU(m); n < 190 {
		t.Errorf("after 80 s %d of 200 servers have resource metrics; want at least 95%%", n)
	}
	// The broken server: listed, no resource metrics, no detail timestamp.
	id := fmt.Sprintf(`id="%d"`, broken)
	if !strings.Contains(grepLines(m, "vps_server_info{"), id) {
		t.Errorf("the server whose detail fails lost its list data")
	}
	if strings.Contains(grepLines(m, "vps_server_cpu_usage_ratio{"), id) || strings.Contains(grepLines(m, "vps_server_detail_timestamp_seconds{"), id) {
		t.Errorf("the server whose detail never succeeded has detail metrics")
	}
	if v := metricValue(m, "vps_provider_api_requests_total", `endpoint="servers_detail"`, `code="500"`); v < 2 {
		t.Errorf("failing detail reads counted %v times; want one per attempt", v)
	}
	failedLog := 0
	for _, l := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(l, fmt.Sprintf(" id=%d ", broken)) && strings.Contains(l, `msg="detail read failed`) {
			failedLog++
		}
	}
	if n := failedLog; n != 1 {
		t.Errorf("the failing server was logged %d times; want once", n)
	}
	if v := metricValue(m, "vps_server_detail_timestamp_seconds", `account="vps-big"`); v <= 0 {
		t.Error("no vps_server_detail_timestamp_seconds")
	}
	if !strings.Contains(m, "\nvps_provider_detail_backlog{") {
		t.Error("no vps_provider_detail_backlog")
	}
	req := s.Requests(sim.VPSOrg)
	total := 0
	for _, n := range req {
		total += n
	}
	if req["throttled"]*20 > total {
		t.Errorf("%d of %d requests were throttled (429); want at most 5%%", req["throttled"], total)
	}
	t.Logf("status change shown after %v; requests %v; servers with resource metrics by second: 10s %d, 20s %d, 40s %d, 60s %d, 79s %d",
		shownAfter.Round(100*time.Millisecond), req, coverage[10], coverage[20], coverage[40], coverage[60], coverage[79])
	assertNoSecrets(t, "logs", e.logs.String())
}

// grepLines returns the lines of text that start with prefix.
func grepLines(text, prefix string) string {
	var b strings.Builder
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}
