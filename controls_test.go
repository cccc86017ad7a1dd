package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// Binary tests of the operator's controls and the /api answers (issue
// 22, "Reset and credentials"; issue 24, "JSON hygiene").

// A reset of a server that is not exhausted is refused (409) and its
// cooldown stays: it is not acted on again. A reset of an id its account
// does not have is refused (404) and leaves no record.
func TestResetRefusesWhatItCannotReset(t *testing.T) {
	s, urls := startSimSettle(t, 24, time.Second)
	onlyHot(s)
	s.SetSick(sim.VPSOrg, 12001, sim.Sickness{Cure: sim.CureNone})
	// A long verify window: the episode stays open while the test runs.
	cfg := writeLoopConfig(t, t.TempDir(), urls, fmt.Sprintf(`  rules:
    - {name: hot-cpu, provider: vpsorg, state: [running], metric: cpu_usage_ratio, above: 0.95, action: reboot, verify: 10m}
  webhook: {enabled: false, bearer_token: %s}
`, loopToken))
	e := startExporter(t, "--config.file="+cfg)
	within(t, 60*time.Second, "the reboot of the hot server", func() bool { return len(callsTo(s, "12001")) == 1 })

	const reset = "/api/v1/remediation/reset"
	code, out := e.sendAuth("POST", reset, `{"provider":"vpsorg","account":"vps-main","id":"12001"}`)
	if code != 409 || !strings.Contains(out, "not exhausted") {
		t.Errorf("reset of a server in an open episode: %d %s, want 409 saying it is not exhausted", code, out)
	}
	// Its CPU is still hot: with its cooldown dropped the rule would act
	// again at the next refresh (every second).
	time.Sleep(5 * time.Second)
	if got := names(callsTo(s, "12001")); got != "reboot" {
		t.Errorf("after the refused reset: provider calls %q, want the one reboot (its cooldown holds)", got)
	}
	h := e.history(t, "?id=12001")
	if len(h.Episodes) != 1 || h.Episodes[0].Outcome != "open" || ladder(h.Episodes[0].Steps) != "reboot:verifying" {
		t.Errorf("episodes after the refused reset %+v, want the open one, verifying", h.Episodes)
	}

	for _, tc := range []struct{ name, body string }{
		{"an id the account does not have", `{"provider":"vpsorg","account":"vps-main","id":"99999"}`},
		{"an id of another provider's fleet", `{"provider":"vpsorg","account":"vps-main","id":"1001"}`},
		{"an account that is not configured", `{"provider":"vpsorg","account":"nobody","id":"12001"}`},
	} {
		code, out := e.sendAuth("POST", reset, tc.body)
		if code != 404 {
			t.Errorf("reset of %s: %d %s, want 404", tc.name, code, out)
		}
	}
	for _, id := range []string{"99999", "1001"} {
		h := e.history(t, "?id="+id)
		if len(h.Actions) != 0 || len(h.Episodes) != 0 {
			t.Errorf("history of %s after its refused reset: %+v", id, h)
		}
	}
	if strings.Contains(e.logs.String(), "remediation reset by an operator") {
		t.Error("a refused reset was logged as done")
	}
	// The answers of this live run, an open episode among them, are clean.
	for _, path := range []string{"/api/v1/remediation", "/api/v1/remediation?id=12001", "/api/v1/accounts"} {
		code, body := e.sendAuth("GET", path, "")
		if code != 200 {
			t.Fatalf("GET %s: %d", path, code)
		}
		assertCleanJSON(t, path, body)
	}
}

// One credential rule for the webhook, pause, resume and reset, read at
// each request as exporter-toolkit reads its web configuration: live
// remediation guarded by the web configuration's basic auth; basic auth
// removed from the file without a reload -> all four refuse a request,
// with or without the old credential; put back -> all four take it.
func TestControlsFollowTheWebConfig(t *testing.T) {
	_, urls := startSimSettle(t, 10, time.Second)
	dir := t.TempDir()
	cfg := writeLoopConfig(t, dir, urls, `  webhook: {enabled: true, allowed_actions: [reboot]}
`)
	const user, pass = "ops", "basic-SECRET-7f2"
	web := writeWebConfig(t, dir, user, pass, "")
	basicWeb, err := os.ReadFile(web)
	if err != nil {
		t.Fatal(err)
	}
	e := startExporterAuth(t, user, pass, "--config.file="+cfg, "--web.config.file="+web)

	endpoints := []struct{ path, body string }{
		{"/webhook/alertmanager", `{"version":"4","status":"firing","alerts":[]}`},
		{"/api/v1/remediation/pause", `{"reason":"maintenance"}`},
		{"/api/v1/remediation/resume", ``},
		{"/api/v1/remediation/reset", `{"provider":"vpsorg","account":"vps-main","id":"12001"}`},
	}
	// What each answers a request with basic auth while the file asks
	// for it: taken (reset: 409, the server is not exhausted).
	taken := map[string]int{"/webhook/alertmanager": 200, "/api/v1/remediation/pause": 200, "/api/v1/remediation/resume": 200, "/api/v1/remediation/reset": 409}
	check := func(stage string, auth bool, want func(path string) int) {
		t.Helper()
		for _, ep := range endpoints {
			if code, out := e.send("POST", ep.path, ep.body, auth); code != want(ep.path) {
				t.Errorf("%s: POST %s (basic auth sent: %v): %d %s, want %d", stage, ep.path, auth, code, strings.TrimSpace(out), want(ep.path))
			}
		}
	}
	check("basic auth in the web config", true, func(p string) int { return taken[p] })
	check("basic auth in the web config", false, func(string) int { return 401 }) // the web server's own refusal

	// The file edited, no reload: exporter-toolkit asks for nothing now.
	if err := os.WriteFile(web, []byte("# basic auth removed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.send("GET", "/metrics", "", false); code != 200 {
		t.Fatalf("/metrics without a credential after basic auth left the web config: %d (the web server should read its file at each request)", code)
	}
	check("basic auth removed without a reload", false, func(string) int { return 403 })
	check("basic auth removed without a reload", true, func(string) int { return 403 })
	if code, body := e.get("/api/v1/remediation"); code != 200 || strings.Contains(body, `"paused"`) {
		t.Errorf("history: %d; a refused pause took effect: %.300s", code, body)
	}

	// A person is told, once (eight refused requests above).
	if n := strings.Count(e.logs.String(), "no longer asks for basic auth"); n != 1 {
		t.Errorf("%d log lines say the credential left the web configuration, want 1", n)
	}

	// Put back: taken again, and said.
	if err := os.WriteFile(web, basicWeb, 0o600); err != nil {
		t.Fatal(err)
	}
	check("basic auth back", true, func(p string) int { return taken[p] })
	if n := strings.Count(e.logs.String(), "asks for basic auth again"); n != 1 {
		t.Errorf("%d log lines say the credential is back, want 1", n)
	}
	assertNoSecrets(t, "logs", e.logs.String())
	if strings.Contains(e.logs.String(), pass) {
		t.Error("the basic auth password is in the logs")
	}
}

// The /api answers of a demo run hold no zero time and no internal field,
// and an unknown query parameter is answered 400 naming it, as /sd does.
func TestAPIJSONHygiene(t *testing.T) {
	e := startExporter(t, "--demo", "--demo.refresh-interval=1s")
	// The demo's rules act on its sick servers within a few refreshes:
	// wait for actions and open episodes (their unset times: ended,
	// verdicts, releases).
	within(t, 90*time.Second, "the demo's first actions and episodes", func() bool {
		_, body := e.get("/api/v1/remediation")
		return strings.Contains(body, `"result": "accepted"`) && strings.Contains(body, `"outcome": "open"`)
	})
	for _, path := range []string{
		"/api/v1/remediation",
		"/api/v1/remediation?limit=5",
		"/api/v1/remediation?provider=vpsorg&since=1h",
		"/api/v1/accounts",
	} {
		code, body := e.get(path)
		if code != 200 {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		assertCleanJSON(t, path, body)
	}
	for _, tc := range []struct{ path, param string }{
		{"/api/v1/remediation?foo=1", "foo"},
		{"/api/v1/remediation?provider=vpsorg&acount=vps", "acount"},
		{"/api/v1/accounts?foo=1", "foo"},
		{"/sd?foo=1", "foo"},
	} {
		code, body := e.get(tc.path)
		if code != 400 || !strings.Contains(body, tc.param+": unknown query parameter") {
			t.Errorf("GET %s: %d %q, want 400 naming %q", tc.path, code, strings.TrimSpace(body), tc.param)
		}
	}
}

// snakeKey is the form of every key of the /api answers.
var snakeKey = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// internalKeys are the state file's bookkeeping, never shown.
var internalKeys = map[string]bool{"version": true, "clear_at": true, "root": true, "deleted": true, "attempts_times": true}

// assertCleanJSON checks a JSON answer: no zero time anywhere, no
// internal field, every key snake_case (a Go field name would be an
// untagged, internal one).
func assertCleanJSON(t *testing.T, what, body string) {
	t.Helper()
	if strings.Contains(body, "0001-01-01") {
		t.Errorf("%s: a zero time in %.2000s", what, body)
	}
	var v any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("%s: not JSON: %v", what, err)
	}
	var walk func(at string, v any)
	walk = func(at string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				if internalKeys[k] || !snakeKey.MatchString(k) {
					t.Errorf("%s: internal field %s.%s", what, at, k)
				}
				walk(at+"."+k, c)
			}
		case []any:
			for i, c := range x {
				walk(fmt.Sprintf("%s[%d]", at, i), c)
			}
		}
	}
	walk("", v)
}

// The pause's answer holds no zero time either: a pause until resumed
// has no until.
func TestPauseAnswerHasNoZeroTime(t *testing.T) {
	_, urls := startSimSettle(t, 10, time.Second)
	cfg := writeLoopConfig(t, t.TempDir(), urls, fmt.Sprintf("  webhook: {enabled: false, bearer_token: %s}\n", loopToken))
	e := startExporter(t, "--config.file="+cfg)
	for _, tc := range []struct {
		body      string
		wantUntil bool
	}{
		{`{"reason":"until resumed"}`, false},
		{`{"duration":"2h","reason":"two hours"}`, true},
	} {
		code, out := e.sendAuth("POST", "/api/v1/remediation/pause", tc.body)
		if code != 200 {
			t.Fatalf("pause %s: %d %s", tc.body, code, out)
		}
		assertCleanJSON(t, "the pause's answer", out)
		if got := strings.Contains(out, `"until"`); got != tc.wantUntil {
			t.Errorf("pause %s: answer %s, want until: %v", tc.body, out, tc.wantUntil)
		}
		_, hist := e.get("/api/v1/remediation")
		assertCleanJSON(t, "the history while paused", hist)
	}
	if code, out := e.sendAuth("POST", "/api/v1/remediation/pause?duration=2h", `{}`); code != 400 || !strings.Contains(out, "duration: unknown query parameter") {
		t.Errorf("pause with a query parameter: %d %s, want 400 naming it", code, out)
	}
}
