package main

import (
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/internal/htmldom"
)

// Binary tests of what --demo says it does (issue 24): its fixed token,
// its banner, its mode in the log line and on the page, loopback only.

// demoLine is the start-up log line of --demo; demoField reads one of its
// logfmt values (quoted or not).
var demoLine = regexp.MustCompile(`(?m)^.*msg="demo mode: [^\n]*$`)

func demoField(line, key string) string {
	m := regexp.MustCompile(`\b` + key + `=("([^"]*)"|\S+)`).FindStringSubmatch(line)
	switch {
	case m == nil:
		return ""
	case strings.HasPrefix(m[1], `"`):
		return m[2]
	}
	return m[1]
}

// In --demo the webhook and the controls take the fixed token "demo", and
// only it, whatever the case of the scheme's name (RFC 7235); a refusal
// says which token to send (it is public), not a setting the demo has no
// file for.
func TestDemoToken(t *testing.T) {
	e := startExporter(t, "--demo", "--demo.servers=12")
	// An empty notification: accepted as a batch with nothing to do, so
	// the status is the credential's answer alone.
	const notification = `{"version":"4","status":"firing","alerts":[]}`
	for _, tc := range []struct {
		name, method, path, body, auth string
		want                           int
	}{
		{"webhook, the demo token", "POST", "/webhook/alertmanager", notification, "Bearer demo", 200},
		{"webhook, the demo token, scheme in lower case", "POST", "/webhook/alertmanager", notification, "bearer demo", 200},
		{"pause, the demo token, scheme in upper case", "POST", "/api/v1/remediation/pause", `{"duration":"1h","reason":"demo test upper"}`, "BEARER demo", 200},
		{"webhook, no credential", "POST", "/webhook/alertmanager", notification, "", 401},
		{"webhook, another token", "POST", "/webhook/alertmanager", notification, "Bearer demo2", 401},
		{"webhook, basic auth demo:demo", "POST", "/webhook/alertmanager", notification, "Basic ZGVtbzpkZW1v", 401},
		{"pause, another token", "POST", "/api/v1/remediation/pause", `{"reason":"test"}`, "Bearer not-demo", 401},
		{"pause, the demo token", "POST", "/api/v1/remediation/pause", `{"duration":"1h","reason":"demo test"}`, "Bearer demo", 200},
		{"resume, no credential", "POST", "/api/v1/remediation/resume", `{}`, "", 401},
		{"resume, the demo token", "POST", "/api/v1/remediation/resume", `{}`, "Bearer demo", 200},
		{"reset, another token", "POST", "/api/v1/remediation/reset", `{"provider":"vpsorg","account":"demo-vpsorg","id":"12000"}`, "Bearer DEMO", 401},
		// The token passes (want 0: any answer but 401 and 403; what a
		// reset of a server that is not exhausted answers is the
		// engine's business).
		{"reset, the demo token", "POST", "/api/v1/remediation/reset", `{"provider":"vpsorg","account":"demo-vpsorg","id":"12000"}`, "Bearer demo", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := e.sendHeader(tc.method, tc.path, tc.body, tc.auth)
			if tc.want == 0 && (code == 401 || code == 403 || code == 0) || tc.want != 0 && code != tc.want {
				t.Errorf("%s %s with %q: %d %.200s, want %d", tc.method, tc.path, tc.auth, code, body, tc.want)
			}
			if code == 401 && (!strings.Contains(body, "Authorization: Bearer demo") || strings.Contains(body, "remediation.webhook.bearer_token")) {
				t.Errorf("%s %s with %q: the 401 says %q; want the demo's token, not a setting", tc.method, tc.path, tc.auth, strings.TrimSpace(body))
			}
		})
	}
	// The pause and resume above took effect.
	if !strings.Contains(e.logs.String(), "demo test") {
		t.Error("the pause with the demo token is not in the log")
	}
}

// The demo says what it does, the same way everywhere: the start-up log
// line's remediation mode is the page's (its Mode and its banner), the
// banner states the token, and the configuration the demo wrote (and
// logged) reaches loopback addresses only and carries that token.
func TestDemoSaysWhatItDoes(t *testing.T) {
	e := startExporter(t, "--demo", "--demo.servers=12")
	line := demoLine.FindString(e.logs.String())
	if line == "" {
		t.Fatalf("no demo start-up line in the log:\n%s", e.logs.String())
	}
	logMode := demoField(line, "remediation")
	// The token, as README says: the log line and the banner say the same.
	if tok := demoField(line, "webhook_token"); tok != DemoToken {
		t.Errorf("the log line's webhook_token %q, want the demo's %q: %s", tok, DemoToken, line)
	}
	if logMode != "live" {
		t.Errorf("the log line says remediation %q, want live (the README's closed loop needs live actions on the simulated servers): %s", logMode, line)
	}

	_, body := e.get("/")
	doc, err := htmldom.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	banner, mode := doc.ByID("demo-banner"), doc.ByID("remediation-mode")
	if banner == nil || mode == nil {
		t.Fatalf("no demo banner or remediation mode on the page:\n%.3000s", body)
	}
	if m := doc.ByID("demo-mode"); m == nil || m.Text() != logMode {
		t.Errorf("the banner's mode %v, the log line's %q", m, logMode)
	}
	if badge := mode.ByClass("badge"); len(badge) != 1 || badge[0].Text() != logMode {
		t.Errorf("the page's Mode %q, the log line's %q", mode.Text(), logMode)
	}
	for _, want := range []string{"simulated fleet on loopback", "no real provider is called", "acting on the simulated servers only", "Authorization: Bearer demo"} {
		if !strings.Contains(banner.Text(), want) {
			t.Errorf("the banner %q does not say %q", banner.Text(), want)
		}
	}
	if tok := doc.ByID("demo-token"); tok == nil || tok.Text() != DemoToken {
		t.Errorf("the banner's token: %v", tok)
	}

	// The configuration the demo runs, as it logged it.
	path := demoField(line, "config_file")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the demo's config_file %q: %v", path, err)
	}
	c, err := config.Parse(b, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got := remediationMode(c.Remediation); got != logMode {
		t.Errorf("the demo's configuration is %q, its log line says %q", got, logMode)
	}
	if string(c.Remediation.Webhook.BearerToken) != DemoToken {
		t.Error("the demo's configuration does not take the token demo")
	}
	if len(c.Providers) != 3 {
		t.Errorf("%d simulated accounts, want 3", len(c.Providers))
	}
	for _, p := range c.Providers {
		if u, err := url.Parse(p.BaseURL); err != nil || u.Hostname() != "127.0.0.1" {
			t.Errorf("%s: base_url %q is not on loopback", p.Name, p.BaseURL)
		}
		// The made-up provider credentials stay in the file.
		for _, secret := range []string{string(p.Token), string(p.APIKey)} {
			if secret != "" && (strings.Contains(e.logs.String(), secret) || strings.Contains(body, secret)) {
				t.Errorf("%s: a provider credential of the demo is in its log or on its page", p.Name)
			}
		}
	}
}

// demoLoopbackOnly refuses any account whose API is not a loopback IP.
func TestDemoLoopbackOnly(t *testing.T) {
	for _, tc := range []struct {
		name, base string
		ok         bool
		extra      string
	}{
		{"through a proxy", "http://127.0.0.1:40001", false, ", proxy_url: 'http://127.0.0.1:3128'"},
		{"IPv4 loopback", "http://127.0.0.1:40001", true, ""},
		{"another IPv4 loopback", "http://127.8.9.10:40001", true, ""},
		{"IPv6 loopback", "http://[::1]:40001", true, ""},
		{"localhost by name", "http://localhost:40001", false, ""},
		{"a provider", "https://my.vpn.bingo", false, ""},
		{"a private address", "http://10.0.0.5:8080", false, ""},
		{"unspecified", "http://0.0.0.0:40001", false, ""},
		{"loopback-looking name", "http://127.0.0.1.example.com", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yml := "providers:\n  - {type: vpsorg, name: demo-vpsorg, base_url: '" + tc.base + "', token: t0k3n-long-enough" + tc.extra + "}\n"
			c, err := config.Parse([]byte(yml), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			err = demoLoopbackOnly(c)
			if (err == nil) != tc.ok {
				t.Errorf("%s: %v, want ok %v", tc.base, err, tc.ok)
			}
		})
	}
	if err := demoLoopbackOnly(&config.Config{}); err == nil {
		t.Error("a demo with no account passed")
	}
}

// --demo with basic auth in --web.config.file would ask for two
// credentials in one Authorization header, and the banner's token would
// not work: it refuses to start, saying why, as any failed start does.
func TestDemoRefusesBasicAuth(t *testing.T) {
	web := writeWebConfig(t, t.TempDir(), "admin", "demo-basic-pw-8d1f", "")
	code, logs, took := runToExit(t, 20*time.Second, "--demo", "--demo.servers=3", "--web.listen-address="+freePort(t), "--web.config.file="+web)
	if code != 1 || took > 5*time.Second {
		t.Fatalf("exit code %d after %v, want 1 within 5 s; log:\n%s", code, took.Round(time.Millisecond), logs)
	}
	if !strings.Contains(logs, "basic_auth_users") || !strings.Contains(logs, "cannot start demo") {
		t.Errorf("the log does not say why the demo did not start:\n%s", logs)
	}
}
