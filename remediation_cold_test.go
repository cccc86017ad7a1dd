package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// Binary tests of what a new user found running the built exporter cold
// against the simulator.

// startE2EListSwitch serves the simulator's E2E API (n servers) with a
// switch that makes its list, and only its list, answer 503: the detail
// reads and the actions go on. (sim.Fault's Only matches a part of the
// path, and every E2E path starts with the list's.)
func startE2EListSwitch(t *testing.T, n int) (*sim.Sim, string, *atomic.Bool) {
	t.Helper()
	skipShort(t)
	s := sim.New(sim.Options{Servers: 1, PerAPI: map[sim.API]int{sim.E2E: n}, Seed: 7, Credentials: map[sim.API]sim.Credentials{
		sim.E2E: {Token: secretE2ETok, APIKey: secretE2EKey, ProjectID: "77"},
	}})
	var listDown atomic.Bool
	h := s.Handler(sim.E2E)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if listDown.Load() && r.Method == http.MethodGet && r.URL.Path == "/myaccount/api/v1/nodes/" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"code":503,"data":{},"errors":"Service Unavailable","message":"Service Unavailable"}`))
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { srv.Close(); s.Close() })
	return s, srv.URL, &listDown
}

// coldHistory is GET /api/v1/remediation, the parts these tests read.
type coldHistory struct {
	Actions []struct {
		ID, Action, Result string
		Time               time.Time
	} `json:"actions"`
	Suppressions []struct {
		ID, Reason, Detail string
	} `json:"suppressions"`
	Episodes []struct {
		ID, Outcome string
		Steps       []struct{ Action, Outcome, Verdict string }
	} `json:"episodes"`
}

func (e *exporter) coldHistory(t *testing.T, query string) coldHistory {
	t.Helper()
	code, body := e.get("/api/v1/remediation" + query)
	var h coldHistory
	if code != 200 || json.Unmarshal([]byte(body), &h) != nil {
		t.Fatalf("history: %d %.500s", code, body)
	}
	return h
}

// coldInfoLines lists the log lines at info with every one of the parts.
func coldInfoLines(logs string, parts ...string) []string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		ok := strings.Contains(l, "level=info")
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// The user's run: the E2E account at rate_limit 2 and one rule rebooting
// every running node. Before, the rule put ~180 re-reads and reboots in
// the account's token queue at once, its list missed its deadline, the
// account went down (and its servers left /metrics) while reboots went on
// being sent, each logged at info, with audit times of the decision. Now
// the account stays up throughout; when its list fails (an outage in the
// middle), no reboot reaches the provider until it is back; the rule's
// suppressions are one line per refresh, at SIGTERM too; each audit
// record has the time its reboot was sent, and a step being verified says
// so.
func TestRemediationKeepsItsAccountUp(t *testing.T) {
	t.Parallel() // about a minute of waiting: runs beside the other long binary tests
	s, base, listDown := startE2EListSwitch(t, 180)
	running := 0
	for _, m := range s.Machines(sim.E2E) {
		if sim.StateIsRunningE2E(m.Status) {
			running++
		}
	}
	if running < 100 {
		t.Fatalf("%d running E2E nodes, want 100 or more", running)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "vps_exporter.yml")
	cfg := fmt.Sprintf(`global: {refresh_interval: 5s}
providers:
  - {type: e2e, name: e2e-delhi, base_url: %s, token: %s, api_key: %s, project_id: "77", location: Delhi, rate_limit: 2}
remediation:
  enabled: true
  dry_run: false
  max_actions_per_hour: 500
  max_fleet_fraction: 1
  state_file: %s
  rules:
    - {name: reboot-all, provider: e2e, state: [running], for: 10s, action: reboot}
  webhook: {enabled: false, bearer_token: %s}
`, base, secretE2ETok, secretE2EKey, filepath.Join(dir, "state.db"), loopToken)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	e := startExporter(t, "--config.file="+cfgPath)
	isUp := func() bool { return hasLine(e.metrics(), up("e2e", "e2e-delhi", 1)) }
	reboots := func() []sim.ActionRecord {
		var out []sim.ActionRecord
		for _, a := range s.Actions() {
			if a.API == sim.E2E && a.Action == "reboot" {
				out = append(out, a)
			}
		}
		return out
	}

	// Up throughout, for 20 s after the first reboots.
	var first time.Time
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if !isUp() {
			t.Fatalf("the account went down %v after the start, %d reboots sent: remediation starved its list", time.Since(started).Round(time.Second), len(reboots()))
		}
		if first.IsZero() && len(reboots()) > 0 {
			first = time.Now()
		}
		if !first.IsZero() && time.Since(first) > 20*time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no reboot within 60 s")
		}
	}
	before := len(reboots())
	t.Logf("%d reboots in the first 20 s, the account up throughout", before)
	if before >= running {
		t.Fatal("every node was rebooted before the outage: the test proves nothing")
	}

	// The list fails: once the account is seen down, no reboot reaches
	// the provider (a call handed to the client just before may still
	// land within its token wait: grace) until it is seen up again.
	staleBefore := metricValue(e.metrics(), "vps_remediation_suppressed_total", `reason="stale_data"`)
	listDown.Store(true)
	var down time.Time
	within(t, 30*time.Second, "the account down", func() bool { return !isUp() })
	down = time.Now()
	lastDown := down
	for time.Since(down) < 12*time.Second {
		if isUp() {
			t.Fatal("the account is up while its list fails")
		}
		lastDown = time.Now()
		time.Sleep(200 * time.Millisecond)
	}
	listDown.Store(false)
	within(t, 30*time.Second, "the account back up", isUp)
	back := time.Now()
	const grace = 3 * time.Second
	var during []string
	for _, a := range reboots() {
		if a.Time.After(down.Add(grace)) && a.Time.Before(lastDown) {
			during = append(during, fmt.Sprintf("%s at +%v", a.ID, a.Time.Sub(down).Round(100*time.Millisecond)))
		}
	}
	if len(during) > 0 {
		t.Errorf("%d reboots reached the provider while the account was down (seen down at +0): %s", len(during), strings.Join(during, ", "))
	}
	if got := metricValue(e.metrics(), "vps_remediation_suppressed_total", `reason="stale_data"`); got <= staleBefore {
		t.Error("no request was held back during the outage: the test proves nothing")
	}

	// Back up: the rule acts again (once its `for:` has held again), and
	// the account stays up.
	for time.Since(back) < 25*time.Second {
		if !isUp() {
			t.Fatalf("the account went down %v after it came back", time.Since(back).Round(time.Second))
		}
		time.Sleep(200 * time.Millisecond)
	}
	after := 0
	for _, a := range reboots() {
		if a.Time.After(back) {
			after++
		}
	}
	if after == 0 {
		t.Error("no reboot after the account came back")
	}

	// Each audit record has the time its reboot was sent.
	h := e.coldHistory(t, "?limit=1000")
	sent := map[string]time.Time{}
	for _, a := range reboots() {
		sent[a.ID] = a.Time
	}
	checked := 0
	for _, r := range h.Actions {
		at, ok := sent[r.ID]
		if !ok || r.Action != "reboot" {
			continue
		}
		checked++
		if d := at.Sub(r.Time); d < -500*time.Millisecond || d > grace {
			t.Errorf("node %s: audit time %s, reboot received %s (%v later): the record's time is not when it was sent",
				r.ID, r.Time.Format("15:04:05.000"), at.Format("15:04:05.000"), d.Round(10*time.Millisecond))
		}
	}
	if checked == 0 {
		t.Error("no audit record of the reboots")
	}
	verifying := 0
	for _, ep := range h.Episodes {
		if ep.Outcome != "open" || len(ep.Steps) == 0 {
			continue
		}
		if v := ep.Steps[len(ep.Steps)-1].Verdict; v != "verifying" {
			t.Errorf("node %s: open episode's last step verdict %q, want verifying", ep.ID, v)
		} else {
			verifying++
		}
	}
	if verifying == 0 {
		t.Error("no open episode in the history")
	}

	// SIGTERM while requests wait for the account: counted in one line.
	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	within(t, 20*time.Second, "the exporter to exit", func() bool { return exited(e.cmd.Process.Pid) })
	logs := e.logs.String()
	if per := coldInfoLines(logs, `msg="action suppressed"`, "source=rule"); len(per) > 0 {
		t.Errorf("%d info lines for the rule's servers one by one, want none (each at debug):\n%s", len(per), strings.Join(per[:min(len(per), 5)], "\n"))
	}
	summaries := coldInfoLines(logs, `msg="rule's actions suppressed"`, "rule=reboot-all")
	refreshes := int(time.Since(started)/(5*time.Second)) + 2
	if len(summaries) > refreshes {
		t.Errorf("%d summary lines for the rule in %d refreshes, want one per refresh at most", len(summaries), refreshes)
	}
	if len(coldInfoLines(logs, `msg="rule's actions suppressed"`, "shutdown=")) != 1 {
		t.Errorf("want one line counting the requests the shutdown suppressed:\n%s", strings.Join(summaries, "\n"))
	}
	t.Logf("%d reboots before the outage, %d after it; %d summary lines in %d refreshes", before, after, len(summaries), refreshes)
	assertNoSecrets(t, "logs", logs)
}

// The account is seen once, then refused for 10 s (a wrong token), then
// back: a rule with `for: 8s` does not fire at the first good refresh on
// two observations an outage apart (before: at once), but 8 s of good
// refreshes later.
func TestForClockRestartsAfterAnOutage(t *testing.T) {
	t.Parallel() // mostly waiting on the simulator: beside the other long binary tests
	s, urls := startSim(t, 10)
	cfgPath := filepath.Join(t.TempDir(), "vps_exporter.yml")
	writeConfig(t, cfgPath, urls, false)
	appendRemediation(t, cfgPath, `  dry_run: true
  rules:
    - {name: start-stopped, provider: vpsorg, state: [stopped], for: 8s, action: start}
`)
	e := startExporter(t, "--config.file="+cfgPath)
	seen := time.Now() // the first refresh saw the stopped servers
	s.SetCredentials(sim.VPSOrg, sim.Credentials{Token: "rotated-elsewhere"})
	e.waitFor("the account down", func() bool { return hasLine(e.metrics(), up("vpsorg", "vps-main", 0)) })
	time.Sleep(time.Until(seen.Add(10 * time.Second)))
	s.SetCredentials(sim.VPSOrg, sim.Credentials{Token: secretVPS})
	e.waitFor("the account back", func() bool { return hasLine(e.metrics(), up("vpsorg", "vps-main", 1)) })
	back := time.Now()
	var h coldHistory
	within(t, 30*time.Second, "the dry-run start", func() bool {
		h = e.coldHistory(t, "?account=vps-main")
		return len(h.Actions) > 0
	})
	first := h.Actions[len(h.Actions)-1].Time
	if first.Before(back.Add(6 * time.Second)) {
		t.Errorf("the rule fired %v after the account came back, want its for: 8s of good refreshes first", first.Sub(back).Round(100*time.Millisecond))
	}
}

// At start a state file that cannot be used (no bbolt database, or in a
// directory that does not exist) fails the start: exit 1, and no line says
// "remediation is off" as if the exporter went on (issue 24); the
// engine's line says it cannot start, as main's does.
func TestUnusableStateFileAtStartSaysItCannotStart(t *testing.T) {
	for _, tc := range []struct {
		name    string
		missing bool
	}{
		{"not a database", false},
		{"in a missing directory", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, urls := startSim(t, 3)
			dir := t.TempDir()
			cfgPath := filepath.Join(dir, "vps_exporter.yml")
			writeConfig(t, cfgPath, urls, false)
			appendRemediation(t, cfgPath, "  dry_run: true\n")
			if tc.missing {
				b, err := os.ReadFile(cfgPath)
				if err != nil {
					t.Fatal(err)
				}
				moved := strings.Replace(string(b), filepath.Join(dir, "state.db"), filepath.Join(dir, "missing", "state.db"), 1)
				if moved == string(b) {
					t.Fatal("the config names no state.db to move")
				}
				if err := os.WriteFile(cfgPath, []byte(moved), 0o600); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(filepath.Join(dir, "state.db"), []byte(strings.Repeat("not a database\n", 512)), 0o600); err != nil {
				t.Fatal(err)
			}
			code, logs, _ := runToExit(t, 20*time.Second, "--config.file="+cfgPath, "--web.listen-address="+freePort(t))
			if code != 1 {
				t.Fatalf("exit %d, want 1:\n%s", code, logs)
			}
			if strings.Contains(logs, "remediation is off") || strings.Contains(logs, "goes on") {
				t.Errorf("a line says the exporter goes on without remediation, and it exits:\n%s", logs)
			}
			if !strings.Contains(logs, `msg="remediation state file unusable; the exporter cannot start with remediation on"`) {
				t.Errorf("the engine's line does not say it cannot start:\n%s", logs)
			}
			if !strings.Contains(logs, "cannot start") || !strings.Contains(logs, "remediation.state_file") {
				t.Errorf("the start's failure is not said:\n%s", logs)
			}
		})
	}
}

// In dry run a cooldown names the last action for what it was: a dry run.
func TestDryRunCooldownSaysDryRun(t *testing.T) {
	_, urls := startSim(t, 10)
	cfgPath := filepath.Join(t.TempDir(), "vps_exporter.yml")
	writeConfig(t, cfgPath, urls, false)
	appendRemediation(t, cfgPath, `  dry_run: true
  rules:
    - {name: start-stopped, provider: vpsorg, state: [stopped], action: start}
`)
	e := startExporter(t, "--config.file="+cfgPath)
	var h coldHistory
	within(t, 30*time.Second, "a cooldown suppression", func() bool {
		h = e.coldHistory(t, "?account=vps-main")
		for _, s := range h.Suppressions {
			if s.Reason == "cooldown" {
				return true
			}
		}
		return false
	})
	for _, s := range h.Suppressions {
		if s.Reason == "cooldown" && !strings.HasPrefix(s.Detail, "last dry-run action ") {
			t.Errorf("cooldown of %s: %q, want it to name the last dry-run action", s.ID, s.Detail)
		}
	}
}
