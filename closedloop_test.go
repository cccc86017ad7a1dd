package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// Binary tests of the closed loop (issue 16) against the simulator's
// health model.

const loopToken = "loop-SECRET-3c1d"

// startSimSettle is startSim with actions settling after settle.
func startSimSettle(t testing.TB, n int, settle time.Duration) (*sim.Sim, map[sim.API]string) {
	t.Helper()
	s := sim.New(sim.Options{Servers: n, Seed: 7, PageSize: 10, Settle: settle, Credentials: map[sim.API]sim.Credentials{
		sim.VPNBingo: {Token: secretBingo},
		sim.VPSOrg:   {Token: secretVPS},
		sim.E2E:      {Token: secretE2ETok, APIKey: secretE2EKey, ProjectID: "77"},
	}})
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := s.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); s.Close(); srv.Close() })
	return s, srv.URL
}

// onlyHot leaves 12001 the one VPS.org server with a hot CPU.
func onlyHot(s *sim.Sim) {
	for _, m := range s.Machines(sim.VPSOrg) {
		if m.ID != 12001 && m.CPUPercent > 95 {
			s.Update(sim.VPSOrg, m.ID, func(m *sim.Machine) { m.CPUPercent = 20 })
		}
	}
}

// writeLoopConfig writes a VPS.org-only config with live remediation,
// the remediation credential, and the extra lines under remediation.
func writeLoopConfig(t *testing.T, dir string, urls map[sim.API]string, extra string) string {
	t.Helper()
	path := filepath.Join(dir, "vps_exporter.yml")
	cfg := fmt.Sprintf(`global: {refresh_interval: 1s, request_timeout: 1s}
providers:
  - {type: vpsorg, name: vps-main, base_url: %s, token: %s}
remediation:
  enabled: true
  dry_run: false
  max_actions_per_hour: 100
  max_fleet_fraction: 1
  state_file: %s
%s`, urls[sim.VPSOrg], secretVPS, filepath.Join(dir, "state.db"), extra)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// hotCPURule reboots a VPS.org server whose CPU runs over 95%, then the
// ladder; verify 4 s.
func hotCPURule(action string, escalate ...string) string {
	esc := ""
	if len(escalate) > 0 {
		esc = ", escalate: [" + strings.Join(escalate, ", ") + "]"
	}
	return fmt.Sprintf(`  rules:
    - {name: hot-cpu, provider: vpsorg, state: [running], metric: cpu_usage_ratio, above: 0.95, action: %s%s, verify: 4s}
  webhook: {enabled: false, bearer_token: %s}
`, action, esc, loopToken)
}

// history is GET /api/v1/remediation with the credential.
type history struct {
	Actions []struct {
		ID, Action, Result, Error string
		Calls                     []struct{ Action, Result string }
	} `json:"actions"`
	Episodes []struct {
		ID, Outcome, Reason string
		Steps               []struct{ Action, Outcome, Verdict string }
	} `json:"episodes"`
}

func (e *exporter) history(t *testing.T, query string) history {
	t.Helper()
	code, body := e.sendAuth("GET", "/api/v1/remediation"+query, "")
	var h history
	if code != 200 || json.Unmarshal([]byte(body), &h) != nil {
		t.Fatalf("history: %d %.500s", code, body)
	}
	return h
}

// sendAuth sends with the remediation credential.
func (e *exporter) sendAuth(method, path, body string) (int, string) {
	return e.sendHeader(method, path, body, "Bearer "+loopToken)
}

// ladder summarises an episode: "reboot:not_recovered power_cycle:recovered".
func ladder(steps []struct{ Action, Outcome, Verdict string }) string {
	var parts []string
	for _, s := range steps {
		parts = append(parts, s.Action+":"+s.Verdict)
	}
	return strings.Join(parts, " ")
}

// within polls cond for up to d.
func within(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// callsTo lists the simulator's action calls for one server.
func callsTo(s *sim.Sim, id string) []sim.ActionRecord {
	var out []sim.ActionRecord
	for _, a := range s.Actions() {
		if a.ID == id {
			out = append(out, a)
		}
	}
	return out
}

func names(as []sim.ActionRecord) string {
	var out []string
	for _, a := range as {
		out = append(out, a.Action)
	}
	return strings.Join(out, " ")
}

// A server a reboot does not fix is power-cycled: the start is sent only
// once the server reads stopped, and it recovers.
func TestClosedLoopPowerCycleAfterReboot(t *testing.T) {
	t.Parallel() // mostly waiting on the simulator: beside the other long binary tests
	s, urls := startSimSettle(t, 24, 2*time.Second)
	onlyHot(s)
	s.SetSick(sim.VPSOrg, 12001, sim.Sickness{Cure: sim.CurePowerCycle})
	cfg := writeLoopConfig(t, t.TempDir(), urls, hotCPURule("reboot", "power_cycle"))
	e := startExporter(t, "--config.file="+cfg)
	var h history
	within(t, 90*time.Second, "the episode to recover", func() bool {
		h = e.history(t, "?id=12001")
		return len(h.Episodes) > 0 && h.Episodes[0].Outcome == "recovered"
	})
	if got := ladder(h.Episodes[0].Steps); got != "reboot:not_recovered power_cycle:recovered" {
		t.Errorf("episode %q, want reboot:not_recovered power_cycle:recovered", got)
	}
	calls := callsTo(s, "12001")
	if names(calls) != "reboot stop start" {
		t.Fatalf("provider calls %q, want reboot stop start", names(calls))
	}
	if gap := calls[2].Time.Sub(calls[1].Time); gap < 2*time.Second {
		t.Errorf("start sent %v after the stop: before the server could read stopped (it takes 2 s)", gap)
	}
	if s.Sick(sim.VPSOrg, 12001) {
		t.Error("the server is still sick")
	}
	var cycle bool
	for _, a := range h.Actions {
		if a.Action == "power_cycle" && a.Result == "accepted" && len(a.Calls) == 2 && a.Calls[0].Action == "stop" && a.Calls[1].Action == "start" {
			cycle = true
		}
	}
	if !cycle {
		t.Errorf("no power_cycle with its stop and start in the history: %+v", h.Actions)
	}
	m := e.metrics()
	for _, want := range []string{
		`vps_remediation_verifications_total{account="vps-main",action="reboot",provider="vpsorg",result="not_recovered",source="rule"} 1`,
		`vps_remediation_verifications_total{account="vps-main",action="power_cycle",provider="vpsorg",result="recovered",source="rule"} 1`,
		`vps_remediation_recovery_seconds_count{account="vps-main",action="power_cycle",provider="vpsorg"} 1`,
		`vps_remediation_actions_total{account="vps-main",action="power_cycle",provider="vpsorg",result="success",rule="hot-cpu"} 1`,
	} {
		if !hasLine(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(m, "vps_remediation_exhausted{") {
		t.Error("an exhausted series with no exhausted server")
	}
	promtoolCheck(t, m)
}

// A server nothing fixes is exhausted after its ladder, stays untouched
// across a restart, and a reset (with the credential) starts its ladder
// again.
func TestClosedLoopExhaustedAcrossRestartAndReset(t *testing.T) {
	t.Parallel() // mostly waiting on the simulator: beside the other long binary tests
	s, urls := startSimSettle(t, 24, time.Second)
	onlyHot(s)
	s.SetSick(sim.VPSOrg, 12001, sim.Sickness{Cure: sim.CureNone})
	cfg := writeLoopConfig(t, t.TempDir(), urls, hotCPURule("reboot", "power_cycle"))
	e := startExporter(t, "--config.file="+cfg)
	const gauge = `vps_remediation_exhausted{account="vps-main",id="12001",provider="vpsorg"} 1`
	within(t, 90*time.Second, "the server exhausted", func() bool { return hasLine(e.metrics(), gauge) })
	if got := names(callsTo(s, "12001")); got != "reboot stop start" {
		t.Fatalf("provider calls %q, want reboot stop start", got)
	}
	h := e.history(t, "?id=12001")
	if len(h.Episodes) != 1 || h.Episodes[0].Outcome != "exhausted" || ladder(h.Episodes[0].Steps) != "reboot:not_recovered power_cycle:not_recovered" {
		t.Fatalf("episodes %+v", h.Episodes)
	}
	// A restart keeps it exhausted: held back with reason exhausted.
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	_ = e.cmd.Wait()
	e = startExporter(t, "--config.file="+cfg)
	if !hasLine(e.metrics(), gauge) {
		t.Fatal("a restart forgot the exhausted server")
	}
	within(t, 20*time.Second, "its requests held back as exhausted", func() bool {
		return metricValue(e.metrics(), "vps_remediation_suppressed_total", `reason="exhausted"`) >= 3
	})
	if got := names(callsTo(s, "12001")); got != "reboot stop start" {
		t.Fatalf("after the restart: provider calls %q", got)
	}
	body := `{"provider":"vpsorg","account":"vps-main","id":"12001"}`
	if code, _ := e.send("POST", "/api/v1/remediation/reset", body, false); code != 401 {
		t.Errorf("reset without the credential: %d, want 401", code)
	}
	code, out := e.sendAuth("POST", "/api/v1/remediation/reset", body)
	if code != 200 || !strings.Contains(out, `"exhausted": true`) {
		t.Fatalf("reset: %d %s", code, out)
	}
	if strings.Contains(e.metrics(), "vps_remediation_exhausted{") {
		t.Error("still exhausted on /metrics after the reset")
	}
	within(t, 30*time.Second, "the ladder to start again", func() bool { return names(callsTo(s, "12001")) == "reboot stop start reboot" })
}

// Alert-driven actions: one whose alert Alertmanager resolves within
// webhook.verify is recovered; one still firing when it ends is
// not_recovered and escalated to the next step of webhook.escalate.
func TestClosedLoopAlertVerdicts(t *testing.T) {
	t.Parallel() // mostly waiting on the simulator: beside the other long binary tests
	s, urls := startSimSettle(t, 10, time.Second)
	cfg := writeLoopConfig(t, t.TempDir(), urls, fmt.Sprintf(`  webhook:
    enabled: true
    allowed_actions: [reboot]
    bearer_token: %s
    verify: 5s
    resolve_grace: 1s
    escalate: {reboot: [power_cycle]}
`, loopToken))
	e := startExporter(t, "--config.file="+cfg)
	started := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339)
	alert := func(status, name, id string) string {
		ends := "0001-01-01T00:00:00Z"
		if status == "resolved" {
			ends = time.Now().UTC().Format(time.RFC3339Nano) // after the answer: a resolution before it is no recovery
		}
		return fmt.Sprintf(`{"status":%q,"labels":{"alertname":%q,"provider":"vpsorg","account":"vps-main","id":%q,"remediation":"reboot"},"startsAt":%q,"endsAt":%q,"fingerprint":"fp-%s"}`,
			status, name, id, started, ends, id)
	}
	post := func(alerts ...string) {
		t.Helper()
		code, body := e.sendAuth("POST", "/webhook/alertmanager", `{"version":"4","status":"firing","alerts":[`+strings.Join(alerts, ",")+`]}`)
		if code != 200 {
			t.Fatalf("webhook: %d %s", code, body)
		}
	}
	post(alert("firing", "Fixed", "12002"), alert("firing", "Broken", "12003"))
	within(t, 20*time.Second, "both reboots", func() bool { return len(callsTo(s, "12002")) == 1 && len(callsTo(s, "12003")) == 1 })
	post(alert("resolved", "Fixed", "12002"))
	within(t, 30*time.Second, "the escalation of the alert still firing", func() bool { return names(callsTo(s, "12003")) == "reboot stop start" })
	if got := names(callsTo(s, "12002")); got != "reboot" {
		t.Errorf("the recovered server got %q", got)
	}
	for id, want := range map[string]string{"12002": "reboot:recovered", "12003": "reboot:not_recovered power_cycle:verifying"} {
		h := e.history(t, "?id="+id)
		if len(h.Episodes) != 1 || ladder(h.Episodes[0].Steps) != want {
			t.Errorf("%s: episodes %+v, want %q", id, h.Episodes, want)
		}
	}
	m := e.metrics()
	for _, want := range []string{
		`vps_remediation_verifications_total{account="vps-main",action="reboot",provider="vpsorg",result="recovered",source="alert"} 1`,
		`vps_remediation_verifications_total{account="vps-main",action="reboot",provider="vpsorg",result="not_recovered",source="alert"} 1`,
	} {
		if !hasLine(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// A crash (kill -9) between a power cycle's stop and its start: the
// restart finishes it (issue 22 fault 2; before: recorded unknown, never
// started, the server left off): it waits for the server to read stopped,
// sends exactly one start, the server ends running and recovered, and
// the history and the metrics say so.
func TestClosedLoopCrashBetweenStopAndStart(t *testing.T) {
	t.Parallel()                   // mostly waiting on the simulator: beside the other long binary tests
	const settle = 6 * time.Second // the stop (and the start) take 6 s
	s, urls := startSimSettle(t, 24, settle)
	onlyHot(s)
	// verify (15 s, not 4 s) outlasts the start's 6 s here: the verdict comes on a
	// server that had the time to boot.
	cfg := writeLoopConfig(t, t.TempDir(), urls, strings.Replace(hotCPURule("power_cycle"), "verify: 4s", "verify: 15s", 1))
	e := startExporter(t, "--config.file="+cfg)
	within(t, 30*time.Second, "the power cycle's stop", func() bool { return names(callsTo(s, "12001")) == "stop" })
	time.Sleep(500 * time.Millisecond) // its answer journaled
	if err := e.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = e.cmd.Wait()
	if got := names(callsTo(s, "12001")); got != "stop" {
		t.Fatalf("provider calls %q before the restart, want the stop only", got)
	}
	e = startExporter(t, "--config.file="+cfg)
	within(t, 60*time.Second, "the start after the restart", func() bool { return names(callsTo(s, "12001")) != "stop" })
	calls := callsTo(s, "12001")
	if names(calls) != "stop start" {
		t.Fatalf("provider calls %q after the restart, want stop start", names(calls))
	}
	if gap := calls[1].Time.Sub(calls[0].Time); gap < settle {
		t.Errorf("start sent %v after the stop: before the server could read stopped (%v)", gap, settle)
	}
	var h history
	within(t, 60*time.Second, "the episode to recover", func() bool {
		h = e.history(t, "?id=12001")
		return len(h.Episodes) > 0 && h.Episodes[0].Outcome == "recovered"
	})
	if len(h.Actions) != 1 || h.Actions[0].Action != "power_cycle" || h.Actions[0].Result != "accepted" ||
		len(h.Actions[0].Calls) != 2 || h.Actions[0].Calls[0].Action != "stop" || h.Actions[0].Calls[1].Action != "start" || h.Actions[0].Calls[1].Result != "accepted" {
		t.Errorf("history %+v, want one power_cycle, accepted, with its stop and its start", h.Actions)
	}
	if len(h.Episodes) != 1 || ladder(h.Episodes[0].Steps) != "power_cycle:recovered" {
		t.Errorf("episodes %+v, want power_cycle:recovered", h.Episodes)
	}
	for _, m := range s.Machines(sim.VPSOrg) {
		if m.ID == 12001 && m.Status != "active" {
			t.Errorf("the server reads %q, want active", m.Status)
		}
	}
	m := e.metrics()
	for _, want := range []string{
		`vps_remediation_actions_total{account="vps-main",action="power_cycle",provider="vpsorg",result="success",rule="hot-cpu"} 1`,
		`vps_remediation_actions_total{account="vps-main",action="power_cycle",provider="vpsorg",result="unknown",rule="hot-cpu"} 0`,
		`vps_remediation_verifications_total{account="vps-main",action="power_cycle",provider="vpsorg",result="recovered",source="rule"} 1`,
	} {
		if !hasLine(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if !strings.Contains(e.logs.String(), "power cycle finished after the restart") {
		t.Error("no log line says the restart finished the power cycle")
	}
	time.Sleep(3 * time.Second)
	if got := names(callsTo(s, "12001")); got != "stop start" {
		t.Errorf("provider calls %q, want stop start: a second start or a repeated cycle", got)
	}
}

// sendHeader sends with an Authorization header of the test's choosing.
func (e *exporter) sendHeader(method, path, body, auth string) (int, string) {
	req, _ := http.NewRequest(method, "http://"+e.addr+path, strings.NewReader(body))
	req.Header.Set("Authorization", auth)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if e.seen != nil {
		_, _ = e.seen.Write(b)
	}
	return resp.StatusCode, string(b)
}

// The history is read without the remediation credential (DESIGN.md: only
// pause, resume and reset need it; the status page shows the same);
// the controls still need it.
func TestRemediationHistoryNeedsNoCredential(t *testing.T) {
	_, urls := startSimSettle(t, 10, time.Second)
	dir := t.TempDir()
	e := startExporter(t, "--config.file="+writeLoopConfig(t, dir, urls, hotCPURule("reboot")))
	if code, body := e.get("/api/v1/remediation"); code != 200 || !strings.Contains(body, `"episodes"`) {
		t.Errorf("GET the history without the credential: %d %.300s", code, body)
	}
	for _, path := range []string{"/api/v1/remediation/pause", "/api/v1/remediation/resume", "/api/v1/remediation/reset"} {
		if code, _ := e.send("POST", path, `{}`, false); code != 401 {
			t.Errorf("POST %s without the credential: %d, want 401", path, code)
		}
	}
	if code, _ := e.sendAuth("POST", "/api/v1/remediation/pause", `{"reason":"test"}`); code != 200 {
		t.Errorf("POST pause with the credential: %d", code)
	}
}
