package main

import (
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/e2e"
	"github.com/vps-exporter/vps_exporter/providers/vpnbingo"
	"github.com/vps-exporter/vps_exporter/providers/vpsorg"
)

// seriesByFamily counts the per-server series (vps_server_*) of a /metrics
// body by family, and the servers (vps_server_info series).
func seriesByFamily(m string) (map[string]int, int) {
	fams := map[string]int{}
	for _, line := range strings.Split(m, "\n") {
		if !strings.HasPrefix(line, "vps_server_") {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		fams[name]++
	}
	return fams, fams["vps_server_info"]
}

// TestDemoSeriesPerServer: the demo's default fleet costs at most 15
// series per server once every VPS.org server has its detail data, each
// server's state-set holds exactly the states its provider reports, and
// the families the shipped dashboards and alerts read are there; and
// docs/simulator.md's "about N KB and M series a server" is what it
// measures (issue 24: it said 2 KB and 21 after the cut to 15).
func TestDemoSeriesPerServer(t *testing.T) {
	e := startExporter(t, "--demo")
	var m string
	within(t, 90*time.Second, "every VPS.org server's detail data", func() bool {
		m = e.metrics()
		fams, _ := seriesByFamily(m)
		return fams["vps_server_detail_timestamp_seconds"] > 0 &&
			float64(fams["vps_server_detail_timestamp_seconds"]) == metricValue(m, "vps_provider_servers", `provider="vpsorg"`)
	})
	fams, servers := seriesByFamily(m)
	total := 0
	for _, n := range fams {
		total += n
	}
	if servers == 0 || float64(total)/float64(servers) > 15 {
		t.Errorf("%d series for %d servers (%.2f a server), want at most 15 a server: %v", total, servers, float64(total)/float64(max(servers, 1)), fams)
	}
	t.Logf("%d per-server series for %d servers: %.2f a server", total, servers, float64(total)/float64(servers))
	checkSimulatorDocCost(t, m, total, servers)
	for _, tc := range []struct {
		provider string
		states   []providers.State
	}{
		{"vpnbingo", vpnbingo.New(vpnbingo.Options{Account: "x"}).ReportedStates()},
		{"vpsorg", vpsorg.New(vpsorg.Options{Account: "x"}).ReportedStates()},
		{"e2e", e2e.New(e2e.Options{Account: "x"}).ReportedStates()},
	} {
		n := metricValue(m, "vps_provider_servers", `provider="`+tc.provider+`"`)
		got := 0
		for _, line := range strings.Split(m, "\n") {
			if strings.HasPrefix(line, `vps_server_state{provider="`+tc.provider+`"`) {
				got++
			}
		}
		if n == 0 || float64(got) != n*float64(len(tc.states)) {
			t.Errorf("%s: %d state series for %v servers, want %d each (%v)", tc.provider, got, n, len(tc.states), tc.states)
		}
		for _, st := range tc.states {
			if !strings.Contains(m, `provider="`+tc.provider+`"`) || !strings.Contains(m, `state="`+string(st)+`"`) {
				t.Errorf("%s: no state %q", tc.provider, st)
			}
		}
	}
	// What the shipped dashboards and alert rules read (the rest are
	// checked against Prometheus by dashboards_test and promtool).
	for _, f := range []string{"vps_server_info", "vps_server_up", "vps_server_state", "vps_server_provider_status",
		"vps_server_expiry_timestamp_seconds", "vps_server_bandwidth_limit_bytes_per_second", "vps_server_bandwidth_used_bytes_per_second",
		"vps_server_transfer_limit_bytes", "vps_server_transfer_used_bytes", "vps_server_cpu_usage_ratio", "vps_server_memory_bytes",
		"vps_server_memory_used_bytes", "vps_server_disk_bytes", "vps_server_disk_used_bytes", "vps_server_detail_timestamp_seconds"} {
		if fams[f] == 0 {
			t.Errorf("the demo has no %s", f)
		}
	}
	promtoolCheck(t, m)
}

// TestExcludeMetrics: global.exclude_metrics drops a family from /metrics,
// a reload brings it back (and takes away another), the defaults leave
// out the five unread families, and a name that is no per-server family
// is refused naming the field and the value.
func TestExcludeMetrics(t *testing.T) {
	_, urls := startSim(t, 12)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "vps_exporter.yml")
	write := func(exclude string) {
		writeConfig(t, cfgPath, urls, true)
		b, err := os.ReadFile(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		cfg := strings.Replace(string(b), "global:\n", "global:\n"+exclude, 1)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("  exclude_metrics: [vps_server_provider_status]\n")
	e := startExporter(t, "--config.file="+cfgPath, "--web.enable-lifecycle")
	has := func(m, family string) bool { return strings.Contains("\n"+m, "\n"+family+"{") }
	reload := func() {
		t.Helper()
		if code, body := e.do("POST", "/-/reload"); code != 200 {
			t.Fatalf("reload: HTTP %d %s", code, body)
		}
	}
	for _, step := range []struct {
		exclude        string
		absent, inside []string
	}{
		{"  exclude_metrics: [vps_server_provider_status]\n", []string{"vps_server_provider_status"},
			[]string{"vps_server_info", "vps_server_vcpus", "vps_server_created_timestamp_seconds", "vps_server_backups_enabled"}},
		{"  exclude_metrics: [vps_server_info, vps_server_state]\n", []string{"vps_server_info", "vps_server_state"},
			[]string{"vps_server_provider_status", "vps_server_vcpus"}},
		{"", []string{"vps_server_created_timestamp_seconds", "vps_server_status_change_timestamp_seconds", "vps_server_vcpus",
			"vps_server_can_redeploy", "vps_server_backups_enabled"}, []string{"vps_server_info", "vps_server_state", "vps_server_provider_status"}},
		{"  exclude_metrics: []\n", nil, []string{"vps_server_created_timestamp_seconds", "vps_server_status_change_timestamp_seconds",
			"vps_server_vcpus", "vps_server_can_redeploy", "vps_server_backups_enabled"}},
	} {
		write(step.exclude)
		reload()
		e.waitFor("exclude_metrics "+strings.TrimSpace(step.exclude)+" in force", func() bool {
			m := e.metrics()
			for _, f := range step.absent {
				if has(m, f) {
					return false
				}
			}
			for _, f := range step.inside {
				if !has(m, f) {
					return false
				}
			}
			return has(m, "vps_server_up")
		})
	}
	// An unknown name: refused by --config.check, and by a reload, which
	// keeps the running configuration.
	write("  exclude_metrics: [vps_server_up, vps_server_cpu]\n")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binPath, "--config.check", "--config.file="+cfgPath).CombinedOutput()
	const want = "global.exclude_metrics[1]: vps_server_cpu: not a per-server metric family, did you mean `vps_server_cpu_usage_ratio`?"
	if err == nil || !strings.Contains(string(out), want) {
		t.Errorf("--config.check: %v\n%s\nwant a line with %s", err, out, want)
	}
	assertNoSecrets(t, "--config.check output", string(out))
	if code, body := e.do("POST", "/-/reload"); code == 200 || !strings.Contains(body, want) {
		t.Errorf("reload with an unknown family: HTTP %d %s", code, body)
	}
	if m := e.metrics(); !has(m, "vps_server_up") || !has(m, "vps_server_vcpus") {
		t.Error("a refused reload changed the families on /metrics")
	}
}

// simulatorCost is docs/simulator.md's statement of what a server costs on
// /metrics.
var simulatorCost = regexp.MustCompile(`about ([0-9.]+) KB and ([0-9.]+) series a server`)

// checkSimulatorDocCost holds docs/simulator.md's per-server cost to the
// measured one: series within 0.5, bytes (of the per-server lines) within
// 15%.
func checkSimulatorDocCost(t *testing.T, m string, series, servers int) {
	t.Helper()
	doc, err := os.ReadFile("docs/simulator.md")
	if err != nil {
		t.Fatal(err)
	}
	got := simulatorCost.FindStringSubmatch(strings.Join(strings.Fields(string(doc)), " "))
	if got == nil {
		t.Fatal(`docs/simulator.md does not say "about N KB and M series a server"`)
	}
	kb, _ := strconv.ParseFloat(got[1], 64)
	perServer, _ := strconv.ParseFloat(got[2], 64)
	bytes := 0
	for _, line := range strings.Split(m, "\n") {
		if strings.HasPrefix(line, "vps_server_") {
			bytes += len(line) + 1
		}
	}
	measuredSeries, measuredKB := float64(series)/float64(servers), float64(bytes)/float64(servers)/1000
	t.Logf("per server: %.2f series, %.3f KB of per-server lines; docs/simulator.md says %s", measuredSeries, measuredKB, got[0])
	if math.Abs(perServer-measuredSeries) > 0.5 || math.Abs(kb-measuredKB) > 0.15*measuredKB {
		t.Errorf("docs/simulator.md says %q; measured %.1f series and %.2f KB a server", got[0], measuredSeries, measuredKB)
	}
}
