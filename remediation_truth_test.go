package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// Binary tests of issue 15's remediation lies, on the built exporter.

// families counts the series of each vps_remediation_* family.
func remediationFamilies(metrics string) map[string]int {
	out := map[string]int{}
	for _, line := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(line, "vps_remediation_") {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		out[name]++
	}
	return out
}

// Sixty alerts with made-up `remediation` values, ids and accounts leave
// the vps_remediation_* families as they were and the history empty; they
// are counted by outcome only (before: 60 new series, dry-run needing no
// credential).
func TestWebhookMadeUpAlertsCreateNoSeries(t *testing.T) {
	_, urls := startSim(t, 10)
	cfgPath := filepath.Join(t.TempDir(), "vps_exporter.yml")
	writeConfig(t, cfgPath, urls, false)
	appendRemediation(t, cfgPath, "  dry_run: true\n  webhook: {enabled: true}\n")
	e := startExporter(t, "--config.file="+cfgPath)
	e.waitFor("both accounts listed", func() bool {
		m := e.metrics()
		return hasLine(m, up("vpnbingo", "bingo-prod", 1)) && hasLine(m, up("vpsorg", "vps-main", 1))
	})
	before := remediationFamilies(e.metrics())
	at := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339)
	var alerts []string
	for i := 0; i < 60; i++ {
		labels := map[int]string{
			0: fmt.Sprintf(`"provider":"vpsorg","account":"vps-main","id":"12001","remediation":"x-%d"`, i),
			1: fmt.Sprintf(`"provider":"vpnbingo","account":"bingo-prod","id":"77%d","remediation":"redeploy"`, i),
			2: fmt.Sprintf(`"provider":"vpsorg","account":"made-up-%d","id":"1","remediation":"reboot"`, i),
		}[i%3]
		alerts = append(alerts, fmt.Sprintf(`{"status":"firing","labels":{"alertname":"Made%d",%s},"startsAt":%q,"fingerprint":"m%d"}`, i, labels, at, i))
	}
	code, body := e.send("POST", "/webhook/alertmanager", `{"version":"4","status":"firing","alerts":[`+strings.Join(alerts, ",")+`]}`, false)
	if code != 200 || !strings.HasPrefix(body, "queued 0 alert(s)") {
		t.Fatalf("webhook: %d %s", code, body)
	}
	// The history shows the suppressions not flushed yet: no wait.
	m := e.metrics()
	after := remediationFamilies(m)
	for name, n := range after {
		if before[name] != n {
			t.Errorf("%s: %d series after the made-up alerts, %d before", name, n, before[name])
		}
	}
	for outcome, want := range map[string]float64{"not_allowed": 20, "unknown_server": 20, "unknown_account": 20} {
		if v := metricValue(m, "vps_remediation_webhook_alerts_total", `outcome="`+outcome+`"`); v != want {
			t.Errorf("webhook_alerts_total{outcome=%q} = %v, want %v", outcome, v, want)
		}
	}
	if _, hist := e.get("/api/v1/remediation"); !strings.Contains(hist, `"suppressions": []`) || strings.Contains(hist, "Made") {
		t.Errorf("the made-up alerts are in the history:\n%.2000s", hist)
	}
}

// One rule over 40 servers held back by max_actions_per_hour logs one info
// line per refresh at most, with counts by reason; the servers one by one
// at debug (before: 41 info lines at the first refresh).
func TestSuppressionsLoggedOncePerRule(t *testing.T) {
	s, urls := startSim(t, 50)
	running := 0
	for _, m := range s.Machines(sim.VPSOrg) {
		if m.Status == "active" {
			running++
		}
	}
	if running < 40 {
		t.Fatalf("%d running servers, want at least 40", running)
	}
	cfgPath := filepath.Join(t.TempDir(), "vps_exporter.yml")
	writeConfig(t, cfgPath, urls, false)
	appendRemediation(t, cfgPath, `  dry_run: true
  max_actions_per_hour: 1
  rules:
    - {name: reboot-running, provider: vpsorg, state: [running], action: reboot}
`)
	start := time.Now()
	e := startExporter(t, "--config.file="+cfgPath)
	e.waitFor("the rule held back by the budget", func() bool {
		return metricValue(e.metrics(), "vps_remediation_suppressed_total", `reason="rate_limit"`) >= float64(running-1)
	})
	from := s.Requests(sim.VPSOrg)["list"]
	e.waitFor("four more refreshes", func() bool { return s.Requests(sim.VPSOrg)["list"] >= from+4*5 })
	lists := s.Requests(sim.VPSOrg)["list"]
	refreshes := lists/5 + 1 // 50 servers, 10 a page
	info, summary := 0, ""
	for _, line := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(line, "level=info") && strings.Contains(line, "suppressed") {
			info++
			summary = line
		}
	}
	t.Logf("%d info lines about suppressions in %d refreshes (%v)", info, refreshes, time.Since(start).Round(time.Second))
	if info == 0 || info > refreshes {
		t.Errorf("%d info lines about suppressions in %d refreshes, want 1 to %d", info, refreshes, refreshes)
	}
	if !strings.Contains(summary, "rule=reboot-running") || !strings.Contains(summary, "rate_limit=") {
		t.Errorf("the summary line lacks the rule or the counts by reason: %s", summary)
	}
	if n := strings.Count(e.logs.String(), `level=debug`); n < running-1 {
		t.Errorf("%d debug lines, want each held-back server at debug", n)
	}
}

// SIGTERM while rule actions wait for the account's rate limit: no action
// reaches the provider after it, even while a slow client keeps the web
// server's shutdown waiting, and the process exits within 15 s. (Before,
// the actions went on until the engine closed, after the web server.)
func TestSIGTERMStartsNoNewAction(t *testing.T) {
	s, urls := startSim(t, 60)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "vps_exporter.yml")
	cfg := fmt.Sprintf(`global: {refresh_interval: 5s, request_timeout: 2s}
providers:
  - {type: vpsorg, name: vps-main, base_url: %s, token: %s, rate_limit: 4}
remediation:
  enabled: true
  dry_run: false
  max_actions_per_hour: 1000
  max_fleet_fraction: 1
  state_file: %s
  rules:
    - {name: reboot-running, provider: vpsorg, state: [running], action: reboot}
  webhook: {enabled: true, bearer_token: hook-SECRET-9}
`, urls[sim.VPSOrg], secretVPS, filepath.Join(dir, "state.db"))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startExporter(t, "--config.file="+cfgPath)
	e.waitFor("the first reboots", func() bool { return len(s.Actions()) >= 2 })
	// A client that sends half a webhook body: the web server's shutdown
	// waits for it (up to 10 s).
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer hook-SECRET-9\r\nContent-Length: 1000\r\n\r\n{\"version\":")
	time.Sleep(200 * time.Millisecond)
	term := time.Now()
	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for !exited(e.cmd.Process.Pid) {
		if time.Since(term) > 15*time.Second {
			t.Fatal("SIGTERM: the daemon did not exit within 15 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("exited %v after SIGTERM", time.Since(term).Round(10*time.Millisecond))
	sent, late := 0, 0
	for _, a := range s.Actions() {
		sent++
		// A request already on the wire at SIGTERM lands within
		// milliseconds on loopback.
		if a.Time.After(term.Add(300 * time.Millisecond)) {
			late++
		}
	}
	if late > 0 {
		t.Errorf("%d of %d reboots reached the provider after SIGTERM", late, sent)
	}
}

// A removed account's remediation series leave /metrics at the reload,
// stay away across a restart, and come back with their durable totals
// when the account does.
func TestRemovedAccountSeriesLeaveAcrossRestart(t *testing.T) {
	_, urls := startSim(t, 10)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "vps_exporter.yml")
	rules := `  dry_run: true
  rules:
    - {name: start-stopped, provider: vpsorg, state: [stopped], action: start}
`
	write := func(withVPS bool) {
		writeConfig(t, cfgPath, urls, false)
		if !withVPS {
			b, _ := os.ReadFile(cfgPath)
			cfg := string(b)
			cfg = cfg[:strings.Index(cfg, "  - type: vpsorg")]
			if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		appendRemediation(t, cfgPath, rules)
	}
	write(true)
	e := startExporter(t, "--config.file="+cfgPath, "--web.enable-lifecycle")
	dryRuns := func(m string) float64 {
		return metricValue(m, "vps_remediation_actions_total", `account="vps-main"`, `result="dry_run"`)
	}
	e.waitFor("a dry-run start", func() bool { return dryRuns(e.metrics()) > 0 })
	want := dryRuns(e.metrics()) // durable with its audit record

	vpsSeries := func(m string) int {
		n := 0
		for _, line := range strings.Split(m, "\n") {
			if strings.HasPrefix(line, "vps_remediation_") && strings.Contains(line, `account="vps-main"`) {
				n++
			}
		}
		return n
	}
	write(false)
	if code, body := e.do("POST", "/-/reload"); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	if n := vpsSeries(e.metrics()); n != 0 {
		t.Errorf("%d remediation series of the removed account after the reload", n)
	}
	// A restart on the same state file, the account still gone.
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	_ = e.cmd.Wait()
	e = startExporter(t, "--config.file="+cfgPath, "--web.enable-lifecycle")
	if n := vpsSeries(e.metrics()); n != 0 {
		t.Errorf("%d remediation series of the removed account after a restart", n)
	}
	write(true)
	if code, body := e.do("POST", "/-/reload"); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	if got := dryRuns(e.metrics()); got < want {
		t.Errorf("the account came back with %v dry runs counted, want its durable %v", got, want)
	}
}

// Alerts with invented alertnames on real servers, in dry run (which needs
// no credential): each made a vps_remediation_actions_total series named
// after it, for ever (3 alerts: 40 -> 43 series). They count under
// rule="alertmanager", from zero; the alertname stays in the history,
// which is read without the credential.
func TestWebhookAlertnamesCreateNoSeries(t *testing.T) {
	s, urls := startSim(t, 10)
	cfgPath := filepath.Join(t.TempDir(), "vps_exporter.yml")
	writeConfig(t, cfgPath, urls, false)
	appendRemediation(t, cfgPath, "  dry_run: true\n  max_fleet_fraction: 1\n  webhook: {enabled: true}\n")
	e := startExporter(t, "--config.file="+cfgPath)
	e.waitFor("both accounts listed", func() bool {
		m := e.metrics()
		return hasLine(m, up("vpnbingo", "bingo-prod", 1)) && hasLine(m, up("vpsorg", "vps-main", 1))
	})
	before := remediationFamilies(e.metrics())
	var ids []int
	for _, m := range s.Machines(sim.VPSOrg) {
		if m.Status == "active" && len(ids) < 3 {
			ids = append(ids, m.ID)
		}
	}
	at := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339)
	for i, id := range ids {
		body := fmt.Sprintf(`{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"Invented%d","provider":"vpsorg","account":"vps-main","id":"%d","remediation":"reboot"},"startsAt":%q,"fingerprint":"inv%d"}]}`, i, id, at, i)
		if code, resp := e.send("POST", "/webhook/alertmanager", body, false); code != 200 {
			t.Fatalf("webhook: %d %s", code, resp)
		}
	}
	e.waitFor("three dry-run reboots", func() bool {
		return metricValue(e.metrics(), "vps_remediation_actions_total", `result="dry_run"`) == 3
	})
	m := e.metrics()
	after := remediationFamilies(m)
	for name, n := range after {
		if before[name] != n {
			t.Errorf("%s: %d series after 3 alerts with invented names, %d before", name, n, before[name])
		}
	}
	if strings.Contains(m, `rule="Invented`) {
		t.Error("a series is named after an alert")
	}
	if v := metricValue(m, "vps_remediation_actions_total", `rule="alertmanager"`, `result="dry_run"`); v != 3 {
		t.Errorf("actions_total{rule=\"alertmanager\",result=\"dry_run\"} = %v, want 3", v)
	}
	if code, hist := e.get("/api/v1/remediation"); code != 200 || strings.Count(hist, `"rule": "Invented`) != 3 {
		t.Errorf("history: %d, want the three alertnames in the audit records:\n%.2000s", code, hist)
	}
}
