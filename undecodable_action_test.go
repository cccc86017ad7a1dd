package main

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// TestUndecodableActionAnswerNotResent is the lie "an action whose answer
// did not parse is sent again": a live rule starts a stopped E2E node and a
// stopped VPS.org server, and each provider answers the action 2xx with a
// body that does not decode (E2E: an empty 200; VPS.org: a proxy's HTML
// page with status 200). The provider may have acted, so the action is
// recorded `unknown`, its cooldown stands and it is not sent again. Before,
// the transport called such an answer "not sent": the cooldown and budget
// were taken back and the rule sent the action at every refresh (one
// stopped E2E node powered on 10 times in 10 refreshes).
func TestUndecodableActionAnswerNotResent(t *testing.T) {
	s, urls := startSim(t, 10)
	// Not served: the nodes stay stopped, so the rule's condition keeps
	// holding at every refresh; only the cooldown holds the action back.
	s.SetFault(sim.E2E, sim.Fault{Kind: sim.FaultEmpty, Only: "/actions/"})
	s.SetFault(sim.VPSOrg, sim.Fault{Kind: sim.FaultHTML, Status: 200, Only: "/start/"})
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "vps_exporter.yml")
	writeConfig(t, cfgPath, urls, true)
	appendRemediation(t, cfgPath, `  dry_run: false
  cooldown: 1h
  max_actions_per_hour: 100
  max_fleet_fraction: 1
  rules:
    - {name: start-stopped-e2e, provider: e2e, state: [stopped], action: start}
    - {name: start-stopped-vps, provider: vpsorg, state: [stopped], action: start}
  webhook: {bearer_token: hook-SECRET-undecodable}
`)
	e := startExporter(t, "--config.file="+cfgPath)

	unknown := func(m, account string) float64 {
		return metricValue(m, "vps_remediation_actions_total", `account="`+account+`"`, `result="unknown"`)
	}
	e.waitFor("both actions recorded unknown", func() bool {
		m := e.metrics()
		return unknown(m, "e2e-delhi") >= 1 && unknown(m, "vps-main") >= 1
	})
	// Ten more refreshes (refresh_interval 1s) with the nodes still stopped.
	time.Sleep(10 * time.Second)
	m := e.metrics()
	faults := func(api sim.API) int { return s.Requests(api)["fault"] }
	if n := faults(sim.E2E); n != 1 {
		t.Errorf("E2E received %d power_on requests in 10 refreshes, want 1", n)
	}
	if n := faults(sim.VPSOrg); n != 1 {
		t.Errorf("VPS.org received %d start requests in 10 refreshes, want 1", n)
	}
	for _, acct := range []string{"e2e-delhi", "vps-main"} {
		if got := unknown(m, acct); got != 1 {
			t.Errorf("%s: vps_remediation_actions_total{result=\"unknown\"} = %v, want 1", acct, got)
		}
		if got := metricValue(m, "vps_remediation_actions_total", `account="`+acct+`"`, `result="success"`); got != 0 {
			t.Errorf("%s: an undecodable answer was counted a success (%v)", acct, got)
		}
		if got := metricValue(m, "vps_remediation_suppressed_total", `account="`+acct+`"`, `reason="cooldown"`); got < 5 {
			t.Errorf("%s: %v cooldown suppressions after the unknown action, want one per refresh", acct, got)
		}
	}
	code, body := getBearer(e, "/api/v1/remediation?limit=10", "hook-SECRET-undecodable")
	if code != 200 || strings.Count(body, `"result": "unknown"`) != 2 {
		t.Errorf("history: HTTP %d, want two actions with result unknown:\n%s", code, body)
	}
	assertNoSecrets(t, "logs", e.logs.String())
}

// getBearer GETs path with the remediation credential.
func getBearer(e *exporter, path, token string) (int, string) {
	req, err := http.NewRequest("GET", "http://"+e.addr+path, nil)
	if err != nil {
		return 0, ""
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	_, _ = e.seen.Write(b)
	return resp.StatusCode, string(b)
}
