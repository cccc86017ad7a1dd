package main

import (
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// canaryH6 is the secret the tests misplace: it must appear in no output.
const canaryH6 = "sk-CANARY-h6-0b7d41"

// --config.check reports every mistake in one run: a parse mistake, a rule
// naming an unknown account and the credential of live remediation
// together, one per line. Before, the credential rule came a run later.
func TestConfigCheckAllInOne(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yml")
	writeFile(t, cfg, "global:\n  intreval: 60s\nproviders: [{type: vpsorg, name: a, token: "+secretVPS+"}]\n"+
		"remediation:\n  enabled: true\n  dry_run: false\n  state_file: "+filepath.Join(dir, "s.db")+"\n"+
		"  rules: [{name: r, account: nope, state: [stopped], action: reboot}]\n")
	code, out, _ := runToExit(t, 20*time.Second, "--config.check", "--config.file="+cfg)
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	for _, want := range []string{
		"errors=3",
		`err="global.intreval: unknown field"`,
		`err="remediation.webhook.bearer_token: required for live remediation`,
		`err="remediation.rules[0] (r).account: no account named \"nope\""`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %s:\n%s", want, out)
		}
	}
	assertNoSecrets(t, "--config.check output", out)
}

// A listen address that is taken names --web.listen-address, and the start
// fails with exit 1 within 5 s.
func TestListenAddressTaken(t *testing.T) {
	_, urls := startSim(t, 3)
	cfg := filepath.Join(t.TempDir(), "c.yml")
	writeConfig(t, cfg, urls, false)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	code, out, took := runToExit(t, 20*time.Second, "--config.file="+cfg, "--web.listen-address="+taken.Addr().String())
	if code != 1 || took > 5*time.Second {
		t.Fatalf("exit %d after %v, want 1 within 5 s:\n%s", code, took, out)
	}
	want := `msg="--web.listen-address=` + taken.Addr().String() + `: the address is already in use`
	if !strings.Contains(out, want) || !strings.Contains(out, "pick another address with --web.listen-address") {
		t.Errorf("the error does not name the flag (want %s):\n%s", want, out)
	}
}

// A secret misplaced three ways (a token in token_file, a token glued to
// its key, a mis-indented token line joining the account name) is never
// repeated: not by --config.check, not in the body of POST /-/reload, not
// in the log. The error names the key instead.
func TestMisplacedSecretsNeverEcho(t *testing.T) {
	_, urls := startSim(t, 3)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "vps_exporter.yml")
	writeConfig(t, cfg, urls, false)
	good, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const tokenLine = "    token: " + secretVPS + "\n"
	if !strings.Contains(string(good), tokenLine) || !strings.Contains(string(good), "    name: vps-main\n") {
		t.Fatalf("writeConfig changed; the test edits its vps-main account:\n%s", good)
	}
	e := startExporter(t, "--config.file="+cfg, "--web.enable-lifecycle")
	for _, tc := range []struct {
		name, config, want string
	}{
		{"token in token_file", strings.Replace(string(good), tokenLine, "    token_file: "+canaryH6+"\n", 1),
			"providers[1] (vps-main).token_file: cannot read the file it names: no such file or directory (the value is not shown: if it is the secret itself, write it as token instead)"},
		{"token glued to its key", string(good) + "  - {type: vpsorg, name: extra, base_url: " + urls[sim.VPSOrg] + ", token " + canaryH6 + "}\n",
			fmt.Sprintf("providers[2] (extra): an unknown key at line %d (not shown: it is no field name and may hold a value); it starts with `token`", strings.Count(string(good), "\n")+1)},
		{"mis-indented token joins the name", strings.Replace(string(good), "    name: vps-main\n", "    name: vps-main\n     "+canaryH6+"\n", 1),
			"providers[1].name: not a valid account name (the value is not shown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := filepath.Join(dir, "bad.yml")
			writeFile(t, bad, tc.config)
			code, out, _ := runToExit(t, 20*time.Second, "--config.check", "--config.file="+bad)
			if code != 1 || !strings.Contains(out, tc.want) {
				t.Errorf("--config.check: exit %d, want 1 with %q:\n%s", code, tc.want, out)
			}
			if strings.Contains(out, "CANARY") {
				t.Errorf("--config.check repeats the misplaced secret:\n%s", out)
			}
			assertNoSecrets(t, "--config.check output", out)

			writeFile(t, cfg, tc.config)
			code, body := e.send("POST", "/-/reload", "", true)
			if code != http.StatusInternalServerError || !strings.Contains(body, tc.want) {
				t.Errorf("POST /-/reload: %d, want 500 with %q:\n%s", code, tc.want, body)
			}
			if strings.Contains(body, "CANARY") {
				t.Errorf("the reload body repeats the misplaced secret:\n%s", body)
			}
			writeFile(t, cfg, string(good))
		})
	}
	logs := e.logs.String()
	if strings.Contains(logs, "CANARY") {
		t.Errorf("the log repeats a misplaced secret:\n%s", grepLines(logs, "CANARY"))
	}
	assertNoSecrets(t, "logs", logs)
	if m := e.metrics(); strings.Contains(m, "CANARY") {
		t.Error("/metrics repeats a misplaced secret")
	}
}

// A --web.telemetry-path that collides with another endpoint or is not a
// path is a flag error: exit 1 with a message naming the flag, no panic.
// Before, /sd (or an empty path) panicked with a stack trace.
func TestTelemetryPathFlag(t *testing.T) {
	for _, tc := range []struct{ path, want string }{
		{"/sd", `--web.telemetry-path "/sd" is taken by another endpoint`},
		{"/", `--web.telemetry-path "/" is taken by another endpoint`},
		{"/-/healthy", `--web.telemetry-path "/-/healthy" is taken by another endpoint`},
		{"/api/v1/accounts", `--web.telemetry-path "/api/v1/accounts" is taken by another endpoint`},
		{"/webhook/alertmanager", `--web.telemetry-path "/webhook/alertmanager" is taken by another endpoint`},
		{"", "--web.telemetry-path must not be empty"},
		{"metrics", `--web.telemetry-path "metrics" must start with /, e.g. /metrics`},
		{"/metrics/{x}", `--web.telemetry-path "/metrics/{x}" is not a plain path`},
	} {
		code, out, _ := runToExit(t, 20*time.Second, "--demo", "--web.listen-address="+freePort(t), "--web.telemetry-path="+tc.path)
		if code != 1 || !strings.Contains(out, tc.want) {
			t.Errorf("--web.telemetry-path=%q: exit %d, want 1 with %q:\n%s", tc.path, code, tc.want, out)
		}
		if strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
			t.Errorf("--web.telemetry-path=%q: a panic:\n%s", tc.path, out)
		}
	}
}

// /metrics answers GET and HEAD, refuses other methods with 405 and Allow,
// and always sends Vary: Accept-Encoding, on plain and gzip answers alike;
// a telemetry path of one's own works the same.
func TestMetricsMethodsAndVary(t *testing.T) {
	e := startExporter(t, "--demo", "--demo.servers=6", "--web.telemetry-path=/custom/metrics")
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	for _, tc := range []struct {
		method, encoding string
		code             int
		gzip             bool
	}{
		{"GET", "", 200, false},
		{"GET", "gzip", 200, true},
		{"HEAD", "", 200, false},
		{"POST", "", 405, false},
		{"PUT", "gzip", 405, false},
		{"DELETE", "", 405, false},
	} {
		req, err := http.NewRequest(tc.method, "http://"+e.addr+"/custom/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.encoding != "" {
			req.Header.Set("Accept-Encoding", tc.encoding)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		what := tc.method + " " + tc.encoding
		if resp.StatusCode != tc.code {
			t.Errorf("%s: %d, want %d", what, resp.StatusCode, tc.code)
			continue
		}
		if tc.code == 405 {
			if got := resp.Header.Get("Allow"); got != "GET, HEAD" {
				t.Errorf("%s: Allow %q, want GET, HEAD", what, got)
			}
			continue
		}
		if got := resp.Header.Values("Vary"); len(got) != 1 || got[0] != "Accept-Encoding" {
			t.Errorf("%s: Vary %q, want one Accept-Encoding", what, got)
		}
		if gz := resp.Header.Get("Content-Encoding") == "gzip"; gz != tc.gzip {
			t.Errorf("%s: gzip %v, want %v", what, gz, tc.gzip)
		}
		if tc.method == "HEAD" {
			continue
		}
		text := string(body)
		if tc.gzip {
			zr, err := gzip.NewReader(strings.NewReader(text))
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(zr)
			if err != nil {
				t.Fatal(err)
			}
			text = string(b)
		}
		if !strings.Contains(text, "vps_provider_up{") {
			t.Errorf("%s: no metrics in the answer", what)
		}
	}
}

// errValue finds the err="..." values of a logfmt log.
var errValue = regexp.MustCompile(`err="((?:[^"\\]|\\.)*)"`)

// A file error names its file once (the state file's said "open X: open X:
// ..."), and a *_file that cannot be read not at all (it may be a secret).
func TestFileErrorsNamePathOnce(t *testing.T) {
	_, urls := startSim(t, 3)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yml")
	writeConfig(t, good, urls, false)
	noDir := filepath.Join(dir, "no-such-dir", "state.db")
	state := filepath.Join(dir, "state.yml")
	writeConfig(t, state, urls, false)
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, state, string(b)+"remediation:\n  enabled: true\n  state_file: "+noDir+"\n")
	missingToken := filepath.Join(dir, "no-such.token")
	token := filepath.Join(dir, "token.yml")
	writeFile(t, token, strings.Replace(string(b), "token_file: bingo.token", "token_file: "+missingToken, 1))
	missing := filepath.Join(dir, "missing.yml")
	missingWeb := filepath.Join(dir, "missing-web.yml")
	for _, tc := range []struct {
		name  string
		args  []string
		path  string
		times int // in the err value that names it
	}{
		{"state file", []string{"--config.file=" + state}, noDir, 1},
		{"config file", []string{"--config.file=" + missing}, missing, 1},
		{"web config", []string{"--config.file=" + good, "--web.config.file=" + missingWeb}, missingWeb, 1},
		{"token file", []string{"--config.file=" + token}, missingToken, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, _ := runToExit(t, 20*time.Second, append(tc.args, "--web.listen-address="+freePort(t))...)
			if code != 1 {
				t.Fatalf("exit %d, want 1:\n%s", code, out)
			}
			most := 0
			for _, m := range errValue.FindAllStringSubmatch(out, -1) {
				most = max(most, strings.Count(m[1], tc.path))
			}
			if most != tc.times {
				t.Errorf("an error names %s %d times, want %d:\n%s", tc.path, most, tc.times, out)
			}
		})
	}
}
