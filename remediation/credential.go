package remediation

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/go-kit/log/level"
)

// refusal is what the credential rule answers a request it refuses.
type refusal struct {
	code int // 401: the bearer token is wanted; 403: nothing can be taken
	msg  string
}

// credential applies the one credential rule of the webhook and the
// controls (pause, resume, reset), at each request, as exporter-toolkit
// reads its web configuration at each request:
//   - a bearer token is configured: the request carries it (else 401);
//   - else the web configuration asks for basic auth now: the web server
//     authenticated the request before it came here;
//   - else the configuration in force was loaded with that basic auth as
//     its credential, and it has since left the web configuration (no
//     reload): nothing can tell a caller from anyone, so nothing is taken
//     (403) until the credential is back or a reload says otherwise;
//   - else no credential was configured (allowed in dry run only): the
//     webhook, pause and resume, which then only gate dry-run records, are
//     open; clears (a reset, which would clear the live closed loop's
//     exhaustion in the state file for anyone) is refused (403).
//
// It returns nil when the request is taken.
func (e *Engine) credential(r *http.Request, clears bool) *refusal {
	e.mu.Lock()
	want, basic, atLoad, demo := string(e.cfg.Webhook.BearerToken), e.webBasicAuth, e.webBasicAtLoad, e.demoToken
	e.mu.Unlock()
	if want != "" {
		got, ok := bearerToken(r.Header.Get("Authorization"))
		a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
		if ok && subtle.ConstantTimeCompare(a[:], b[:]) == 1 {
			return nil
		}
		if demo != "" {
			// The demo's token is public (documented, on the page):
			// saying it here tells nobody anything new.
			return &refusal{http.StatusUnauthorized, "Unauthorized: in --demo the webhook and the remediation controls take the demo's fixed token: send Authorization: Bearer " + demo}
		}
		return &refusal{http.StatusUnauthorized, "Unauthorized: the webhook and the remediation controls need remediation.webhook.bearer_token"}
	}
	// Asked outside the lock (it reads a file).
	if basic != nil && basic() {
		if atLoad {
			e.noteCredentialGone(false)
		}
		return nil
	}
	switch {
	case atLoad:
		e.noteCredentialGone(true)
		return &refusal{http.StatusForbidden, "Forbidden: the configuration was loaded with basic_auth_users in --web.config.file as the remediation credential, " +
			"and the web configuration no longer asks for it: put it back, or set remediation.webhook.bearer_token and reload"}
	case clears:
		return &refusal{http.StatusForbidden, "Forbidden: reset needs a credential: set remediation.webhook.bearer_token (or basic_auth_users in --web.config.file)"}
	}
	return nil
}

// bearerToken is the token of an Authorization header of the Bearer
// scheme, whose name is case-insensitive (RFC 7235: "bearer", "BEARER"),
// followed by one or more spaces; ok is false for any other scheme.
func bearerToken(header string) (token string, ok bool) {
	scheme, rest, found := strings.Cut(header, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimLeft(rest, " "), true
}

// SetDemoToken tells the engine it runs --demo with token, the demo's
// fixed and documented credential: a refused request is told to send it.
// Outside the demo it is never called.
func (e *Engine) SetDemoToken(token string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.demoToken = token
}

// refuse answers a refused request; a 401 names the scheme wanted.
func (f *refusal) refuse(rw http.ResponseWriter) {
	if f.code == http.StatusUnauthorized {
		rw.Header().Set("WWW-Authenticate", `Bearer realm="vps_exporter remediation"`)
	}
	http.Error(rw, f.msg, f.code)
}

// SetWebBasicAuth gives the engine what tells whether the web
// configuration (--web.config.file) asks for basic auth now (nil: never).
// It is asked once here, for the configuration being loaded (whether
// basic auth is its remediation credential), then at each webhook or
// control request (see credential).
func (e *Engine) SetWebBasicAuth(basic func() bool) {
	atLoad := basic != nil && basic()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.webBasicAuth, e.webBasicAtLoad = basic, atLoad
}

// noteCredentialGone logs once when the basic auth the configuration was
// loaded with leaves the web configuration (every webhook and control
// request is refused from then on: a person must know), and once when it
// is back.
func (e *Engine) noteCredentialGone(gone bool) {
	e.mu.Lock()
	changed := e.webBasicGone != gone
	e.webBasicGone = gone
	e.mu.Unlock()
	switch {
	case !changed:
	case gone:
		level.Warn(e.logger).Log("msg", "the web configuration no longer asks for basic auth, the remediation credential this configuration was loaded with: "+
			"the webhook, pause, resume and reset refuse every request (403) until it is back or a reload sets another credential", "web_config_basic_auth", false)
	default:
		level.Info(e.logger).Log("msg", "the web configuration asks for basic auth again: the webhook and the remediation controls take authenticated requests", "web_config_basic_auth", true)
	}
}
