package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// infoLines counts the exporter's log lines at the default level (info)
// and above.
func infoLines(logs string) []string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "level=info") || strings.Contains(l, "level=warn") || strings.Contains(l, "level=error") {
			out = append(out, l)
		}
	}
	return out
}

// refused sums the exporter's own count of 401 answers per endpoint.
func refused(m string) (list, detail float64) {
	return metricValue(m, "vps_provider_api_requests_total", `account="vps-big"`, `endpoint="servers_list"`, `code="401"`),
		metricValue(m, "vps_provider_api_requests_total", `account="vps-big"`, `endpoint="servers_detail"`, `code="401"`)
}

// TestRevokedKeyQuietAndStale revokes the key of a 1,000-server VPS.org
// account (refresh_interval 10s, stale_after 30s) and watches the exporter
// for a minute, as its operator would: the account is down at once; no
// detail read goes out with the refused key once a list was refused (a
// list every interval does, to see the account come back; before it, a
// refused detail read is its server's, issue 24, so each server is tried
// at most once); the log says so in a few lines, not a
// line per server or per refresh; past stale_after the account's servers
// leave /metrics (its vps_provider_* series stay) while /sd keeps the
// targets; a working key brings everything back, logged once. It reports
// refused requests and log lines per minute (docs/benchmarks.md).
func TestRevokedKeyQuietAndStale(t *testing.T) {
	t.Parallel() // about a minute of waiting: runs beside the other long binary tests
	if testing.Short() {
		t.Skip("watches a revoked key for a minute")
	}
	const servers = 1000
	const newKey = "tok-rotated-3c51"
	s := sim.New(sim.Options{PerAPI: map[sim.API]int{sim.VPSOrg: servers, sim.VPNBingo: 0, sim.E2E: 0}, Seed: 11,
		Credentials: map[sim.API]sim.Credentials{sim.VPSOrg: {Token: secretVPS}}})
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := s.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); s.Close(); srv.Close() })

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "c.yml")
	writeCfg := func(token string) {
		cfg := fmt.Sprintf(`global:
  refresh_interval: 10s
  request_timeout: 5s
  stale_after: 30s
providers:
  - type: vpsorg
    name: vps-big
    base_url: %s
    token: %s
`, srv.URL[sim.VPSOrg], token)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg(secretVPS)
	e := startExporter(t, "--config.file="+cfgPath)
	withCPU := func(m string) int { return strings.Count(m, "\nvps_server_cpu_usage_ratio{") }
	serversShown := func(m string) int { return strings.Count(m, "\nvps_server_info{") }
	e.waitFor("every server's detail", func() bool { return withCPU(e.metrics()) == servers })
	_, sd0 := e.get("/sd")
	targets := strings.Count(sd0, `"targets"`) // servers with a public IPv4

	// The key is revoked at the provider.
	s.SetCredentials(sim.VPSOrg, sim.Credentials{Token: "tok-someone-else"})
	revoked := time.Now()
	m0 := e.metrics()
	list0, detail0 := refused(m0)
	logs0 := len(infoLines(e.logs.String()))
	var downAfter, goneAfter time.Duration
	var lastSuccess float64
	for time.Since(revoked) < time.Minute {
		m := e.metrics()
		if downAfter == 0 && hasLine(m, up("vpsorg", "vps-big", 0)) {
			downAfter = time.Since(revoked)
			lastSuccess = metricValue(m, "vps_provider_last_refresh_success_timestamp_seconds", `account="vps-big"`)
		}
		if goneAfter == 0 && serversShown(m) == 0 {
			goneAfter = time.Since(revoked)
		}
		time.Sleep(500 * time.Millisecond)
	}
	m := e.metrics()
	list1, detail1 := refused(m)
	lines := infoLines(e.logs.String())[logs0:]
	t.Logf("1,000-server VPS.org account, key revoked, refresh_interval 10s: in the minute after: %.0f refused list requests, %.0f refused detail reads, %d log lines at info and above",
		list1-list0, detail1-detail0, len(lines))

	if downAfter == 0 || downAfter > 15*time.Second {
		t.Errorf("the account went down after %v; want within an interval and its jitter", downAfter)
	}
	// Until the first refused list a refused detail read is its server's
	// (backed off, not read again in the minute); after it none goes out
	// but those in flight (max_concurrency 8, and one handed out).
	if n := detail1 - detail0; n > servers+9 {
		t.Errorf("%.0f detail reads refused in the minute after the key was revoked; want at most one per server before the refused list", n)
	}
	if n := list1 - list0; n < 4 || n > 8 {
		t.Errorf("%.0f refused list requests in a minute at a 10 s interval; want one per refresh", n)
	}
	if len(lines) > 3 {
		t.Errorf("%d log lines in the minute after the key was revoked; want the account going down (and its series leaving); the first ones:\n%s",
			len(lines), strings.Join(lines[:min(len(lines), 5)], "\n"))
	}
	if len(lines) == 0 || !strings.Contains(lines[0], "refused") {
		t.Errorf("the first line does not say the credentials were refused: %q", lines[:min(len(lines), 1)])
	}
	// stale_after: the series left 30 s after the last successful list
	// (at the first refresh past it), the account's own series stayed.
	if goneAfter == 0 {
		t.Fatal("the servers' series are still on /metrics a minute after the key was revoked (stale_after 30s)")
	}
	gone := float64(revoked.Add(goneAfter).UnixNano()) / 1e9
	t.Logf("down %v after the key was revoked; per-server series gone %v after it, %.1f s after the last successful list",
		downAfter.Round(100*time.Millisecond), goneAfter.Round(100*time.Millisecond), gone-lastSuccess)
	if d := gone - lastSuccess; d < 30 || d > 30+10+1+3 {
		t.Errorf("the series left %.1f s after the last successful list; want at the first refresh past stale_after (30 s)", d)
	}
	for _, want := range []string{up("vpsorg", "vps-big", 0), `vps_provider_servers{account="vps-big",provider="vpsorg"} 1000`} {
		if !hasLine(m, want) {
			t.Errorf("past stale_after, /metrics lacks %s", want)
		}
	}
	if strings.Contains(m, `account="vps-big",id=`) {
		t.Errorf("past stale_after, per-server series remain:\n%s", grepLines(m, "vps_server_"))
	}
	if code, body := e.get("/sd"); code != 200 || targets < servers*9/10 || strings.Count(body, `"targets"`) != targets {
		t.Errorf("/sd past stale_after: HTTP %d, %d targets; want the last %d kept", code, strings.Count(body, `"targets"`), targets)
	}

	// A working key (the operator rotates it; the account's key changes,
	// its poller restarts): the account and its series are back.
	s.SetCredentials(sim.VPSOrg, sim.Credentials{Token: newKey})
	writeCfg(newKey)
	if err := e.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	e.waitFor("the account up with its servers", func() bool {
		m := e.metrics()
		return hasLine(m, up("vpsorg", "vps-big", 1)) && serversShown(m) == servers
	})
	e.waitFor("detail data again", func() bool { return withCPU(e.metrics()) == servers })
	assertNoSecrets(t, "logs", e.logs.String())
	if strings.Contains(e.logs.String(), newKey) {
		t.Error("the new key is in the log")
	}
}

// TestRevokedKeyRecoversWithoutReload: the same key becomes valid again
// (the provider had revoked it by mistake): the next list succeeds, the
// account is up, detail reads resume, and the recovery is one line.
func TestRevokedKeyRecoversWithoutReload(t *testing.T) {
	s, urls := startSim(t, 40)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "c.yml")
	writeConfig(t, cfgPath, urls, false)
	e := startExporter(t, "--config.file="+cfgPath)
	withCPU := func() int {
		return strings.Count(grepLines(e.metrics(), "vps_server_cpu_usage_ratio{"), `account="vps-main"`)
	}
	e.waitFor("every server's detail", func() bool { return withCPU() == 40 })

	s.SetCredentials(sim.VPSOrg, sim.Credentials{Token: "tok-someone-else"})
	revoked := time.Now()
	logs0 := len(infoLines(e.logs.String()))
	list0, detail0 := refusedMain(e.metrics())
	time.Sleep(8 * time.Second) // the 8 seconds, at a 1 s interval
	list1, detail1 := refusedMain(e.metrics())
	lines := infoLines(e.logs.String())[logs0:]
	t.Logf("40-server VPS.org account, key revoked, refresh_interval 1s: in %v: %.0f refused list requests, %.0f refused detail reads, %d log lines",
		time.Since(revoked).Round(100*time.Millisecond), list1-list0, detail1-detail0, len(lines))
	// At most one per server before the first refused list (a refused
	// detail read is its server's, backed off), then only those in
	// flight (max_concurrency 4).
	if n := detail1 - detail0; n > 40+5 {
		t.Errorf("%.0f refused detail reads in 8 s; want at most one per server, then none but those in flight (max_concurrency 4)", n)
	}
	// Down, detail reads stopped, series gone past stale_after (5 s).
	if len(lines) > 3 {
		t.Errorf("%d log lines in 8 s for one revoked key; the first ones:\n%s", len(lines), strings.Join(lines[:min(len(lines), 5)], "\n"))
	}
	s.SetCredentials(sim.VPSOrg, sim.Credentials{Token: secretVPS})
	e.waitFor("the account up", func() bool { return hasLine(e.metrics(), up("vpsorg", "vps-main", 1)) })
	e.waitFor("detail data again", func() bool { return withCPU() == 40 })
	time.Sleep(2 * time.Second)
	var recovered []string
	for _, l := range infoLines(e.logs.String())[logs0:] {
		if strings.Contains(l, "recovered") || strings.Contains(l, "accepted again") {
			recovered = append(recovered, l)
		}
	}
	if len(recovered) != 1 {
		t.Errorf("the recovery logged as %d lines; want one:\n%s", len(recovered), strings.Join(recovered, "\n"))
	}
}

func refusedMain(m string) (list, detail float64) {
	return metricValue(m, "vps_provider_api_requests_total", `account="vps-main"`, `endpoint="servers_list"`, `code="401"`),
		metricValue(m, "vps_provider_api_requests_total", `account="vps-main"`, `endpoint="servers_detail"`, `code="401"`)
}

// scaledRule copies one shipped alerting rule with its threshold and its
// `for:` scaled by factor (the test's refresh interval over the default
// 60 s), the way shortRules shortens `for:`: the expression is otherwise
// the shipped one.
func scaledRule(t *testing.T, name, threshold string, factor float64, dst string) string {
	t.Helper()
	doc := shippedRules(t)
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			if r["alert"] != name {
				continue
			}
			expr := r["expr"].(string)
			re := regexp.MustCompile(`>\s*` + regexp.QuoteMeta(threshold) + `\b`)
			if !re.MatchString(expr) {
				t.Fatalf("%s: expression %q has no threshold > %s to scale", name, expr, threshold)
			}
			var th float64
			fmt.Sscan(threshold, &th)
			r["expr"] = re.ReplaceAllString(expr, fmt.Sprintf("> %g", th*factor))
			if f, ok := r["for"].(string); ok {
				d, err := time.ParseDuration(strings.Replace(f, "m", "m0s", 1))
				if err != nil {
					t.Fatalf("%s: for %q: %v", name, f, err)
				}
				r["for"] = time.Duration(float64(d) * factor).String()
			}
			out, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": g.Name, "rules": []any{r}}}})
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, dst, string(out))
			return r["expr"].(string)
		}
	}
	t.Fatalf("no alert %s in alerts/vps_exporter.rules.yml", name)
	return ""
}

// TestDetailsStaleAlertFires runs the built exporter at a 1 s interval on a
// VPS.org account whose every detail read fails after a first good pass,
// and Debian's Prometheus with the shipped VPSProviderDetailsStale rule,
// its threshold and `for:` scaled from the default 60 s interval to 1 s:
// the resource values leave /metrics (dropped for age), the time of the
// last successful read stays, and the alert fires on it.
func TestDetailsStaleAlertFires(t *testing.T) {
	t.Parallel() // mostly waiting on the simulator: beside the other long binary tests
	promBin := lookTool(t, "prometheus")
	s, urls := startSim(t, 20)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "c.yml")
	writeConfig(t, cfgPath, urls, false)
	e := startExporter(t, "--config.file="+cfgPath)
	cpuLines := func() string { return grepLines(e.metrics(), `vps_server_cpu_usage_ratio{provider="vpsorg"`) }
	e.waitFor("every server's detail", func() bool { return strings.Count(cpuLines(), "\n") == 20 })

	rules := filepath.Join(dir, "rules.yml")
	expr := scaledRule(t, "VPSProviderDetailsStale", "1800", 1.0/60, rules)
	promAddr := freePort(t)
	promCfg := filepath.Join(dir, "prometheus.yml")
	writeFile(t, promCfg, fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%s]
scrape_configs:
  - job_name: vps_exporter
    static_configs: [{targets: [%q]}]
`, rules, e.addr))
	startCmd(t, &syncBuffer{}, "prometheus", promBin, "--config.file="+promCfg, "--storage.tsdb.path="+filepath.Join(dir, "prom"),
		"--web.listen-address="+promAddr)
	prom := promAPI{base: "http://" + promAddr}
	has := func(q string) bool {
		r, err := prom.query(q)
		return err == nil && r.Status == "success" && len(r.Data.Result) > 0
	}
	wait := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out after %v waiting for %s", d, what)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	wait("Prometheus scraping the exporter", time.Minute, func() bool { return has(`up{job="vps_exporter"} == 1`) })
	const firing = `ALERTS{alertname="VPSProviderDetailsStale",alertstate="firing",provider="vpsorg",account="vps-main"}`
	if has(`ALERTS{alertname="VPSProviderDetailsStale"}`) {
		t.Fatal("the alert is pending or firing while every detail read succeeds")
	}

	// Every detail read fails from now on; the lists still work.
	for _, mc := range s.Machines(sim.VPSOrg) {
		s.SetDetailFault(sim.VPSOrg, mc.ID, sim.Fault{Kind: sim.FaultStatus, Status: 500})
	}
	failing := time.Now()
	wait("VPSProviderDetailsStale firing", 2*time.Minute, func() bool { return has(firing) })
	firedAfter := time.Since(failing)
	m := e.metrics()
	t.Logf("scaled rule: %s; fired %v after the detail reads started failing", strings.TrimSpace(expr), firedAfter.Round(100*time.Millisecond))
	if firedAfter < 30*time.Second {
		t.Errorf("fired %v after the reads started failing; the scaled threshold is 30 s", firedAfter)
	}
	// What the alert saw is what the exporter exports: no values, the read time.
	if n := strings.Count(cpuLines(), "\n"); n != 0 {
		t.Errorf("%d servers keep CPU values %v after their last successful read", n, firedAfter)
	}
	stamps := grepLines(m, `vps_server_detail_timestamp_seconds{provider="vpsorg",account="vps-main"`)
	if n := strings.Count(stamps, "\n"); n != 20 {
		t.Fatalf("%d detail timestamps on /metrics; want all 20 kept:\n%s", n, stamps)
	}
	for _, l := range strings.Split(strings.TrimSpace(stamps), "\n") {
		var v float64
		fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &v)
		if age := time.Since(time.Unix(int64(v), 0)); age < firedAfter-2*time.Second {
			t.Errorf("a detail timestamp %v old although every read has failed for %v: %s", age.Round(time.Second), firedAfter, l)
		}
	}
	if !hasLine(m, up("vpsorg", "vps-main", 1)) {
		t.Error("failing detail reads took the account down")
	}
}
