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
		basicAtLoad bool
		basicNow    bool
		wantAllSame string // every endpoint: taken, 401 or 403
		wantOpenBut string // every endpoint taken but this one, which is 403
	}{
		{name: "token sent", token: "ctl-SECRET", send: "ctl-SECRET", wantAllSame: taken},
		{name: "token missing", token: "ctl-SECRET", wantAllSame: unauth},
		{name: "token wrong", token: "ctl-SECRET", send: "ctl-SECRE", wantAllSame: unauth},
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
				if tc.send != "" {
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
