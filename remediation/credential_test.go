package remediation

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// One credential rule for the webhook, pause, resume and reset, asked at
// each request: the bearer token when one is set; else the web
// configuration's basic auth when it asks for it now; else, when the
// configuration was loaded with that basic auth and it has left the web
// configuration since (no reload), nothing is taken; with no credential
// configured at all (dry run), all but reset are open.
func TestOneCredentialRule(t *testing.T) {
	const taken, unauth, forbidden = "taken", "401", "403"
	endpoints := []string{"webhook", "pause", "resume", "reset"}
	for _, tc := range []struct {
		name        string
		token, send string
		header      string // the Authorization header as sent (default "Bearer "+send)
		basicAtLoad bool
		basicNow    bool
		wantAllSame string // every endpoint: taken, 401 or 403
		wantOpenBut string // every endpoint taken but this one, which is 403
	}{
		{name: "token sent", token: "ctl-SECRET", send: "ctl-SECRET", wantAllSame: taken},
		{name: "token missing", token: "ctl-SECRET", wantAllSame: unauth},
		{name: "token wrong", token: "ctl-SECRET", send: "ctl-SECRE", wantAllSame: unauth},
		// The scheme's name is case-insensitive (RFC 7235), the token not.
		{name: "scheme in lower case", token: "ctl-SECRET", header: "bearer ctl-SECRET", wantAllSame: taken},
		{name: "scheme in upper case", token: "ctl-SECRET", header: "BEARER ctl-SECRET", wantAllSame: taken},
		{name: "scheme and token apart by two spaces", token: "ctl-SECRET", header: "Bearer  ctl-SECRET", wantAllSame: taken},
		{name: "token in another case", token: "ctl-SECRET", header: "Bearer CTL-SECRET", wantAllSame: unauth},
		{name: "another scheme", token: "ctl-SECRET", header: "Basic ctl-SECRET", wantAllSame: unauth},
		{name: "no space after the scheme", token: "ctl-SECRET", header: "Bearerctl-SECRET", wantAllSame: unauth},
		{name: "the scheme alone", token: "ctl-SECRET", header: "bearer", wantAllSame: unauth},
		{name: "basic auth in force", basicAtLoad: true, basicNow: true, wantAllSame: taken},
		{name: "basic auth removed without a reload", basicAtLoad: true, basicNow: false, wantAllSame: forbidden},
		{name: "basic auth added without a reload", basicAtLoad: false, basicNow: true, wantAllSame: taken},
		{name: "no credential configured", wantOpenBut: "reset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(t)
			cfg.Webhook.BearerToken = ""
			if tc.token != "" {
				cfg.Webhook.BearerToken = "ctl-SECRET"
			}
			h := newHarness(t, 10, cfg)
			h.refresh("vps")
			var basic atomic.Bool
			basic.Store(tc.basicAtLoad)
			h.engine.SetWebBasicAuth(basic.Load)
			basic.Store(tc.basicNow)
			wh := h.webhook(t, 1)
			ctl := NewControlHandler(h.engine)
			for _, ep := range endpoints {
				var hd http.Handler = ctl
				path, body := "/api/v1/remediation/"+ep, ""
				switch ep {
				case "webhook":
					hd, path, body = wh, "/webhook/alertmanager", `{"version":"4","status":"firing","alerts":[]}`
				case "pause":
					body = `{"reason":"x"}`
				case "reset":
					body = `{"provider":"vpsorg","account":"vps","id":"12003"}`
				}
				r := httptest.NewRequest("POST", path, strings.NewReader(body))
				switch {
				case tc.header != "":
					r.Header.Set("Authorization", tc.header)
				case tc.send != "":
					r.Header.Set("Authorization", "Bearer "+tc.send)
				}
				rec := httptest.NewRecorder()
				hd.ServeHTTP(rec, r)
				got := taken
				switch rec.Code {
				case 401:
					got = unauth
				case 403:
					got = forbidden
				}
				want := tc.wantAllSame
				if tc.wantOpenBut != "" {
					want = taken
					if ep == tc.wantOpenBut {
						want = forbidden
					}
				}
				if got != want {
					t.Errorf("%s: %d %q, want %s", ep, rec.Code, strings.TrimSpace(rec.Body.String()), want)
				}
				if got == unauth && rec.Header().Get("WWW-Authenticate") == "" {
					t.Errorf("%s: 401 without WWW-Authenticate", ep)
				}
				if strings.Contains(rec.Body.String(), "ctl-SECRET") {
					t.Errorf("%s: the answer shows the token", ep)
				}
			}
		})
	}
}

// In --demo a 401 says which token to send: the demo's is fixed and
// public. Outside the demo it names the setting, never the token.
func TestUnauthorizedSaysTheDemoToken(t *testing.T) {
	for _, tc := range []struct {
		name      string
		demo      bool
		want, not string
	}{
		{"demo", true, "in --demo the webhook and the remediation controls take the demo's fixed token: send Authorization: Bearer demo", "need remediation.webhook.bearer_token"},
		{"not the demo", false, "the webhook and the remediation controls need remediation.webhook.bearer_token", "demo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(t)
			cfg.Webhook.BearerToken = "demo"
			h := newHarness(t, 10, cfg)
			if tc.demo {
				h.engine.SetDemoToken("demo")
			}
			for _, auth := range []string{"", "Bearer not-demo", "Basic ZGVtbzpkZW1v"} {
				r := httptest.NewRequest("POST", "/api/v1/remediation/pause", strings.NewReader(`{"reason":"x"}`))
				if auth != "" {
					r.Header.Set("Authorization", auth)
				}
				rec := httptest.NewRecorder()
				NewControlHandler(h.engine).ServeHTTP(rec, r)
				body := rec.Body.String()
				if rec.Code != 401 || !strings.Contains(body, tc.want) || strings.Contains(body, tc.not) {
					t.Errorf("%q: %d %q; want 401 saying %q, not %q", auth, rec.Code, strings.TrimSpace(body), tc.want, tc.not)
				}
			}
		})
	}
}
