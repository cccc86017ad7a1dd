package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/vps-exporter/vps_exporter/internal/syncbuf"
	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// Recognisable fake secrets: none may ever show up in a log, metric or page.
const (
	secretBingo  = "tok-SECRET-bingo-4f1e"
	secretVPS    = "tok-SECRET-vps-77a2"
	secretE2ETok = "tok-SECRET-e2e-19bc"
	secretE2EKey = "key-SECRET-e2e-5d03"
)

var secrets = []string{secretBingo, secretVPS, secretE2ETok, secretE2EKey}

var binPath string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// make test-short: no binary, no processes (startCmd skips).
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "vps_exporter_e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "vps_exporter")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	out, err := exec.CommandContext(ctx, "go", "build", "-o", binPath, ".").CombinedOutput()
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer collects a process's output safely.
type syncBuffer = syncbuf.Buffer

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// exporter is the built binary running for one test.
type exporter struct {
	t    testing.TB
	addr string
	logs *syncBuffer
	seen *syncBuffer // every body the test read, for the secrets check
	user string      // basic auth, when the web config asks for it
	pass string
	cmd  *exec.Cmd
}

func startExporter(t testing.TB, args ...string) *exporter {
	t.Helper()
	return startExporterAuth(t, "", "", args...)
}

func startExporterAuth(t testing.TB, user, pass string, args ...string) *exporter {
	t.Helper()
	e := &exporter{t: t, addr: freePort(t), logs: &syncBuffer{}, seen: &syncBuffer{}, user: user, pass: pass}
	e.cmd = startRaw(t, e.logs, append([]string{"--web.listen-address=" + e.addr, "--log.level=debug"}, args...)...)
	e.waitFor("ready", func() bool { code, _ := e.get("/-/ready"); return code == 200 })
	return e
}

// startRaw runs the built binary with args, its output into logs, stopped
// when the test ends.
func startRaw(t testing.TB, logs *syncBuffer, args ...string) *exec.Cmd {
	t.Helper()
	return startCmd(t, logs, "exporter", binPath, args...)
}

// startCmd runs a process for the test (at most 5 minutes), its output
// into logs; at cleanup it is interrupted, killed after 10 s, reaped, and
// the last 20,000 bytes of its output shown if the test failed.
func startCmd(t testing.TB, logs *syncBuffer, label, name string, args ...string) *exec.Cmd {
	t.Helper()
	return startCmdIn(t, logs, label, "", name, args...)
}

// startCmdIn is startCmd with the process's working directory (dir; ""
// for the test's).
func startCmdIn(t testing.TB, logs *syncBuffer, label, dir, name string, args ...string) *exec.Cmd {
	t.Helper()
	skipShort(t)
	return startCmdFor(t, 5*time.Minute, logs, label, dir, name, args...)
}

// startCmdFor runs a process in dir for at most limit, its output into
// logs; at cleanup it is interrupted, killed after 10 s, reaped, and the
// last 20,000 bytes of its output shown if the test failed.
func startCmdFor(t testing.TB, limit time.Duration, logs *syncBuffer, label, dir, name string, args ...string) *exec.Cmd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		cancel()
		if t.Failed() {
			out := logs.String()
			if len(out) > 20000 {
				out = "...\n" + out[len(out)-20000:]
			}
			t.Logf("%s log:\n%s", label, out)
		}
	})
	return cmd
}

func (e *exporter) do(method, path string) (int, string) {
	return e.send(method, path, "", true)
}

func (e *exporter) send(method, path, body string, auth bool) (int, string) {
	req, _ := http.NewRequest(method, "http://"+e.addr+path, strings.NewReader(body))
	if auth && e.user != "" {
		req.SetBasicAuth(e.user, e.pass)
	}
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

func (e *exporter) get(path string) (int, string) { return e.do("GET", path) }

func (e *exporter) metrics() string {
	code, body := e.get("/metrics")
	if code != 200 {
		e.t.Fatalf("/metrics: HTTP %d", code)
	}
	return body
}

// waitFor polls cond for up to 20 s.
func (e *exporter) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func hasLine(body, line string) bool {
	return strings.Contains("\n"+body, "\n"+line+"\n")
}

func writeConfig(t testing.TB, path string, urls map[sim.API]string, withE2E bool) {
	t.Helper()
	dir := filepath.Dir(path)
	if err := os.WriteFile(filepath.Join(dir, "bingo.token"), []byte(secretBingo+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`global:
  refresh_interval: 1s
  request_timeout: 1s
  max_concurrency: 4
providers:
  - type: vpnbingo
    name: bingo-prod
    base_url: %s
    token_file: bingo.token
  - type: vpsorg
    name: vps-main
    base_url: %s
    token: %s
`, urls[sim.VPNBingo], urls[sim.VPSOrg], secretVPS)
	if withE2E {
		cfg += fmt.Sprintf(`  - type: e2e
    name: e2e-delhi
    base_url: %s
    token: %s
    api_key: %s
    project_id: "77"
    location: Delhi
`, urls[sim.E2E], secretE2ETok, secretE2EKey)
	}
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeWebConfig writes an exporter-toolkit web config into dir with one
// basic-auth user (password bcrypt-hashed) after the extra lines, and
// returns its path.
func writeWebConfig(t testing.TB, dir, user, pass, extra string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(path, []byte(extra+"basic_auth_users:\n  "+user+": "+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// appendRemediation turns remediation on in the config at path, with its
// state file beside it and the extra YAML lines (indented under remediation).
func appendRemediation(t testing.TB, path, extra string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "remediation:\n  enabled: true\n  state_file: %s\n%s", filepath.Join(filepath.Dir(path), "state.db"), extra); err != nil {
		t.Fatal(err)
	}
}

func startSim(t testing.TB, n int) (*sim.Sim, map[sim.API]string) {
	t.Helper()
	s := sim.New(sim.Options{Servers: n, Seed: 7, PageSize: 10, Credentials: map[sim.API]sim.Credentials{
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

func up(provider, account string, v int) string {
	return fmt.Sprintf(`vps_provider_up{account="%s",provider="%s"} %d`, account, provider, v)
}

func TestEndToEnd(t *testing.T) {
	s, urls := startSim(t, 25)
	cfgPath := filepath.Join(t.TempDir(), "vps_exporter.yml")
	writeConfig(t, cfgPath, urls, true)
	e := startExporter(t, "--config.file="+cfgPath, "--web.enable-lifecycle")

	m := e.metrics()
	for _, want := range []string{
		up("vpnbingo", "bingo-prod", 1), up("vpsorg", "vps-main", 1), up("e2e", "e2e-delhi", 1),
		`vps_provider_servers{account="bingo-prod",provider="vpnbingo"} 25`,
		`vps_provider_servers{account="vps-main",provider="vpsorg"} 25`,
		`vps_provider_servers{account="e2e-delhi",provider="e2e"} 25`,
		`vps_server_state{provider="vpnbingo",account="bingo-prod",id="1003",state="degraded"} 1`,
		`vps_exporter_config_last_reload_successful 1`,
		`vps_remediation_dry_run 1`,
	} {
		if !hasLine(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	promtoolCheck(t, m)

	// Break one provider at a time: that account goes down, its servers
	// stay (stale, not down), the others stay up; then it recovers.
	for _, tc := range []struct {
		name     string
		api      sim.API
		provider string
		account  string
		fault    sim.Fault
	}{
		{"5xx storm", sim.VPSOrg, "vpsorg", "vps-main", sim.Fault{Kind: sim.FaultStatus, Status: 503}},
		{"junk JSON", sim.E2E, "e2e", "e2e-delhi", sim.Fault{Kind: sim.FaultJunk}},
		{"HTML error page", sim.VPNBingo, "vpnbingo", "bingo-prod", sim.Fault{Kind: sim.FaultHTML}},
		{"connection reset", sim.E2E, "e2e", "e2e-delhi", sim.Fault{Kind: sim.FaultReset}},
		{"unauthorized", sim.VPSOrg, "vpsorg", "vps-main", sim.Fault{Kind: sim.FaultStatus, Status: 401}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.SetFault(tc.api, tc.fault)
			e.waitFor(tc.account+" down", func() bool { return hasLine(e.metrics(), up(tc.provider, tc.account, 0)) })
			m := e.metrics()
			for _, other := range [][2]string{{"vpnbingo", "bingo-prod"}, {"vpsorg", "vps-main"}, {"e2e", "e2e-delhi"}} {
				if other[1] != tc.account && !hasLine(m, up(other[0], other[1], 1)) {
					t.Errorf("%s went down with %s", other[1], tc.account)
				}
			}
			if !strings.Contains(m, `vps_server_info{provider="`+tc.provider+`",account="`+tc.account+`"`) {
				t.Errorf("servers of %s vanished while it was down", tc.account)
			}
			s.SetFault(tc.api, sim.Fault{})
			e.waitFor(tc.account+" back up", func() bool { return hasLine(e.metrics(), up(tc.provider, tc.account, 1)) })
		})
	}

	// Reload: drop the e2e account; then a broken file keeps the old config.
	writeConfig(t, cfgPath, urls, false)
	if code, body := e.do("POST", "/-/reload"); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	m = e.metrics()
	if strings.Contains(m, `account="e2e-delhi"`) {
		t.Error("removed account still exported after reload")
	}
	if err := os.WriteFile(cfgPath, []byte("providers: [{type: vpsorg, name: x, token: "+secretVPS+", bogus: 1}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, body := e.do("POST", "/-/reload")
	if code != 500 || !strings.Contains(body, "providers[0] (x).bogus: unknown field") {
		t.Errorf("bad reload answered %d %q", code, body)
	}
	m = e.metrics()
	if !hasLine(m, "vps_exporter_config_last_reload_successful 0") || !hasLine(m, up("vpnbingo", "bingo-prod", 1)) {
		t.Error("a failed reload must keep the running configuration and say so")
	}
	if code, _ := e.get("/-/reload"); code == 200 {
		t.Error("GET must not reload")
	}
	// SIGHUP reloads too: the e2e account comes back.
	writeConfig(t, cfgPath, urls, true)
	if err := e.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	e.waitFor("SIGHUP reload", func() bool {
		m := e.metrics()
		return hasLine(m, up("e2e", "e2e-delhi", 1)) && hasLine(m, "vps_exporter_config_last_reload_successful 1")
	})

	if code, _ := e.get("/debug/pprof/"); code == 200 {
		t.Error("/debug/pprof/ served without --web.enable-pprof")
	}
	if _, landing := e.get("/"); strings.Contains(landing, "debug/pprof") || !strings.Contains(landing, `href="sd"`) && !strings.Contains(landing, `href="/sd"`) {
		t.Errorf("landing page without --web.enable-pprof: pprof links (which 404) or no /sd link:\n%s", landing)
	}
	// Every page the exporter serves, then the secrets check.
	for _, p := range []string{"/", "/api/v1/accounts", "/-/healthy", "/metrics"} {
		if code, _ := e.get(p); code != 200 {
			t.Errorf("%s: HTTP %d", p, code)
		}
	}
	assertNoSecrets(t, "logs", e.logs.String())
	assertNoSecrets(t, "pages and metrics", e.seen.String())
	if !strings.Contains(e.logs.String(), "refresh failed") {
		t.Error("the faults were not logged")
	}
}

func assertNoSecrets(t testing.TB, where, text string) {
	t.Helper()
	for _, s := range secrets {
		if i := strings.Index(text, s); i >= 0 {
			lo := max(0, i-200)
			t.Errorf("secret %q found in %s: ...%s...", s, where, text[lo:min(len(text), i+50)])
		}
	}
}

// promtoolCheck runs `promtool check metrics` when promtool is installed;
// under CI (CI=true) it must be.
func promtoolCheck(t testing.TB, metrics string) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool not installed; .ci/run installs Debian's prometheus package")
		}
		t.Log("promtool not installed: skipping promtool check metrics")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "check", "metrics")
	cmd.Stdin = strings.NewReader(metrics)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func TestDemo(t *testing.T) {
	e := startExporter(t, "--demo", "--demo.servers=12", "--web.enable-pprof")
	if code, body := e.get("/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/ with --web.enable-pprof: %d", code)
	}
	if _, landing := e.get("/"); !strings.Contains(landing, "debug/pprof/heap") {
		t.Error("landing page with --web.enable-pprof: no pprof links")
	}
	if code, body := e.get("/sd"); code != 200 || !strings.Contains(body, "__meta_vps_server_name") {
		t.Errorf("demo /sd: %d %.200s", code, body)
	}
	m := e.metrics()
	for _, want := range []string{up("vpnbingo", "demo-bingo", 1), up("vpsorg", "demo-vpsorg", 1), up("e2e", "demo-e2e", 1)} {
		if !hasLine(m, want) {
			t.Errorf("demo /metrics lacks %s", want)
		}
	}
	promtoolCheck(t, m)
}

func TestConfigCheck(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yml")
	bad := filepath.Join(dir, "bad.yml")
	_ = os.WriteFile(good, []byte("providers: [{type: vpsorg, name: a, token: "+secretVPS+"}]\n"), 0o600)
	_ = os.WriteFile(bad, []byte("providers: [{type: vpsorg, name: a, token: "+secretVPS+", rate_limit: -2}]\n"), 0o600)
	// Three mistakes, one run: each on its own line, non-secret values
	// shown, the secret not.
	three := filepath.Join(dir, "three.yml")
	_ = os.WriteFile(three, []byte("global:\n  refresh_interval: 60\nproviders:\n  - type: vpnbingo\n    name: bingo-prod\n    token: "+secretBingo+
		"\n    time_zone: UTC\n    rate_limit: fast\n"), 0o600)
	// Live remediation needs a credential, webhook on or off.
	const live = "remediation: {enabled: true, dry_run: false, state_file: /tmp/x.db, webhook: {enabled: true"
	open := filepath.Join(dir, "open.yml")
	_ = os.WriteFile(open, []byte("providers: [{type: vpsorg, name: a, token: "+secretVPS+"}]\n"+live+"}}\n"), 0o600)
	rules := filepath.Join(dir, "rules.yml")
	_ = os.WriteFile(rules, []byte("providers: [{type: vpsorg, name: a, token: "+secretVPS+"}]\nremediation: {enabled: true, dry_run: false, state_file: /tmp/x.db}\n"), 0o600)
	token := filepath.Join(dir, "token.yml")
	_ = os.WriteFile(token, []byte("providers: [{type: vpsorg, name: a, token: "+secretVPS+"}]\n"+live+", bearer_token: hook-SECRET-2}}\n"), 0o600)
	web := writeWebConfig(t, dir, "am", "pw", "")
	const needCredential = "remediation.webhook.bearer_token: required for live remediation (enabled: true, dry_run: false)"
	for _, tc := range []struct {
		file string
		web  string
		code int
		want []string // each on its own log line
	}{
		{good, "", 0, []string{"configuration is valid"}},
		{bad, "", 1, []string{"providers[0] (a).rate_limit: must not be negative, got -2"}},
		{three, "", 1, []string{`msg="configuration is invalid"`, "errors=3",
			"global.refresh_interval: 60: not a duration, e.g. 60s",
			"providers[0] (bingo-prod).time_zone: unknown field, did you mean `timezone`?",
			"providers[0] (bingo-prod).rate_limit: fast: not a number"}},
		{open, "", 1, []string{needCredential}},
		{rules, "", 1, []string{needCredential}},
		{open, web, 0, []string{"configuration is valid"}},
		{rules, web, 0, []string{"configuration is valid"}},
		{token, "", 0, []string{"configuration is valid"}},
		{token, web, 1, []string{"remediation.webhook.bearer_token: --web.config.file already asks for basic auth"}},
		// The quick start and the example pass as they are written.
		{"deploy/vps_exporter.minimal.yml", "", 0, []string{"configuration is valid"}},
		{"deploy/vps_exporter.example.yml", "", 0, []string{"configuration is valid"}},
	} {
		args := []string{"--config.check", "--config.file=" + tc.file}
		if tc.web != "" {
			args = append(args, "--web.config.file="+tc.web)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, binPath, args...).CombinedOutput()
		cancel()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != tc.code {
			t.Errorf("%s: exit %d, want %d; output %s", tc.file, code, tc.code, out)
		}
		lines := strings.Split(string(out), "\n")
		for _, want := range tc.want {
			n := 0
			for _, l := range lines {
				if strings.Contains(l, want) {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%s: %q on %d lines, want 1:\n%s", tc.file, want, n, out)
			}
		}
		assertNoSecrets(t, "--config.check output", string(out))
		if strings.Contains(string(out), "hook-SECRET-2") {
			t.Errorf("the webhook token in the output: %s", out)
		}
	}
	// JSON logs: one object per line, one per mistake.
	out, _ := exec.Command(binPath, "--config.check", "--config.file="+three, "--log.format=json").CombinedOutput()
	var errs []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !strings.HasPrefix(l, "{") || !strings.HasSuffix(l, "}") {
			t.Fatalf("not a JSON line: %s", l)
		}
		if strings.Contains(l, `"msg":"configuration error"`) {
			errs = append(errs, l)
		}
	}
	if len(errs) != 3 || !strings.Contains(errs[0], `"err":"global.refresh_interval: 60: not a duration, e.g. 60s"`) {
		t.Errorf("json: %q", errs)
	}
}

func TestWebhookRedeployBehindBasicAuth(t *testing.T) {
	s, urls := startSim(t, 10)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "vps_exporter.yml")
	writeConfig(t, cfgPath, urls, false)
	appendRemediation(t, cfgPath, "  dry_run: false\n  webhook: {enabled: true}\n")
	webCfg := writeWebConfig(t, dir, "prom", "s3cret-pw", "")
	e := startExporterAuth(t, "prom", "s3cret-pw", "--config.file="+cfgPath, "--web.config.file="+webCfg)

	alert := fmt.Sprintf(`{"version":"4","status":"firing","receiver":"vps","alerts":[{"status":"firing",
	  "labels":{"alertname":"VPNNodeHeartbeatAbnormal","provider":"vpnbingo","account":"bingo-prod","id":"1003","remediation":"redeploy"},
	  "annotations":{},"startsAt":%q,"endsAt":"0001-01-01T00:00:00Z","fingerprint":"abc"}]}`, time.Now().UTC().Format(time.RFC3339))
	for _, p := range []string{"/metrics", "/webhook/alertmanager", "/api/v1/remediation"} {
		if code, _ := e.send("POST", p, alert, false); code != http.StatusUnauthorized {
			t.Errorf("%s without credentials: HTTP %d, want 401", p, code)
		}
	}
	if len(s.Actions()) != 0 {
		t.Fatal("an unauthenticated webhook acted")
	}
	for i := 0; i < 2; i++ { // a resend of the same alert
		if code, body := e.send("POST", "/webhook/alertmanager", alert, true); code != 200 {
			t.Fatalf("webhook: %d %s", code, body)
		}
	}
	e.waitFor("the redeploy", func() bool { return len(s.Actions()) > 0 })
	acts := s.Actions()
	newID := acts[0].NewID
	e.waitFor("the new node in /metrics", func() bool {
		return strings.Contains(e.metrics(), `vps_server_info{provider="vpnbingo",account="bingo-prod",id="`+newID+`"`)
	})
	m := e.metrics()
	if !hasLine(m, `vps_remediation_actions_total{account="bingo-prod",action="redeploy",provider="vpnbingo",result="success",rule="alertmanager"} 1`) {
		t.Error("the action is not counted")
	}
	// The resend is a duplicate of the journaled occurrence (pending, or
	// acted on).
	if v := metricValue(m, "vps_remediation_webhook_alerts_total", `outcome="duplicate"`); v != 1 {
		t.Errorf("the resend counted %v times as a duplicate, want 1", v)
	}
	if n := len(s.Actions()); n != 1 {
		t.Errorf("%d redeploys, want exactly 1", n)
	}
	_, audit := e.get("/api/v1/remediation")
	if !strings.Contains(audit, `"result": "accepted"`) || !strings.Contains(audit, `"new_id": "`+newID+`"`) {
		t.Errorf("audit page: %s", audit)
	}
	assertNoSecrets(t, "logs", e.logs.String())
	assertNoSecrets(t, "pages", e.seen.String())
}

// BenchmarkDemoRSS runs the built binary as `--demo --demo.servers=N`
// (N servers shared among the three simulated providers, the simulator in
// the same process) and reports its resident size once every VPS.org
// server has its detail data, after scrapes: now (VmRSS) and at its peak
// (VmHWM).
func BenchmarkDemoRSS(b *testing.B) {
	for _, n := range []int{10000, 30000} {
		b.Run(fmt.Sprintf("servers=%d", n), func(b *testing.B) {
			e := startExporter(b, "--demo", fmt.Sprintf("--demo.servers=%d", n), "--demo.refresh-interval=60s")
			e.seen = nil // the bodies are large; nothing secret is checked here
			// Steady state: every simulated VPS.org server with its detail
			// data (measured before that, the figure depends on how far the
			// first detail reads got).
			deadline := time.Now().Add(2 * time.Minute)
			for {
				_, body := e.send("GET", "/metrics", "", false)
				var vpsorg, details int
				for _, line := range strings.Split(body, "\n") {
					if strings.HasPrefix(line, `vps_server_up{provider="vpsorg"`) {
						vpsorg++
					} else if strings.HasPrefix(line, `vps_server_detail_timestamp_seconds{`) {
						details++
					}
				}
				if vpsorg > 0 && details == vpsorg {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("after 2 minutes %d of %d VPS.org servers with detail data", details, vpsorg)
				}
				time.Sleep(time.Second)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if code, _ := e.send("GET", "/metrics", "", false); code != 200 {
					b.Fatalf("scrape: %d", code)
				}
			}
			b.StopTimer()
			status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", e.cmd.Process.Pid))
			if err != nil {
				b.Skip("no /proc:", err)
			}
			for _, line := range strings.Split(string(status), "\n") {
				var kb float64
				if n, _ := fmt.Sscanf(line, "VmRSS: %f kB", &kb); n == 1 {
					b.ReportMetric(kb/1024, "RSS_MiB") // target at 10,000: under 200 (issue #5; docs/benchmarks.md)
				}
				if n, _ := fmt.Sscanf(line, "VmHWM: %f kB", &kb); n == 1 {
					b.ReportMetric(kb/1024, "peakRSS_MiB")
				}
			}
		})
	}
}
