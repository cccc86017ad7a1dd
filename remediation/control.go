package remediation

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/go-kit/log/level"
	"github.com/prometheus/common/model"

	"github.com/vps-exporter/vps_exporter/internal/httpq"
)

// ControlHandler serves the operator's endpoints under
// /api/v1/remediation: GET the actions, suppressions and episodes
// (filters provider, account, id, since, limit), POST .../pause
// {"duration","reason"}, POST .../resume and POST .../reset
// {"provider","account","id"}: 409 for a server that is not exhausted,
// 404 for one its account does not have. The controls, which act on
// servers, take the remediation credential by the rule the webhook
// follows too (Engine.credential, asked at each request); the history is
// read without it, as the status page shows it (both behind the web
// configuration's authentication, as /metrics).
type ControlHandler struct{ e *Engine }

// NewControlHandler returns the control endpoints of e.
func NewControlHandler(e *Engine) *ControlHandler { return &ControlHandler{e: e} }

// ServeHTTP implements http.Handler.
func (c *ControlHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/api/v1/remediation":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET")
			http.Error(w, "GET the remediation history", http.StatusMethodNotAllowed)
			return
		}
		c.history(w, r)
	case "/api/v1/remediation/pause", "/api/v1/remediation/resume", "/api/v1/remediation/reset":
		if f := c.e.credential(r, r.URL.Path == "/api/v1/remediation/reset"); f != nil {
			f.refuse(w)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			http.Error(w, "POST to pause, resume or reset remediation", http.StatusMethodNotAllowed)
			return
		}
		if unknownParam(w, r) {
			return
		}
		switch r.URL.Path {
		case "/api/v1/remediation/reset":
			c.reset(w, r)
		case "/api/v1/remediation/pause":
			c.pause(w, r)
		default:
			c.resume(w)
		}
	default:
		http.NotFound(w, r)
	}
}

// historyParams are the query parameters GET /api/v1/remediation takes.
var historyParams = []string{"provider", "account", "id", "since", "limit"}

// unknownParam answers 400 naming the first query parameter not in known
// (as /sd does) and reports whether it did.
func unknownParam(w http.ResponseWriter, r *http.Request, known ...string) bool {
	if err := httpq.Unknown(r.URL.Query(), known...); err != nil {
		http.Error(w, "bad query: "+err.Error(), http.StatusBadRequest)
		return true
	}
	return false
}

func (c *ControlHandler) history(w http.ResponseWriter, r *http.Request) {
	if unknownParam(w, r, historyParams...) {
		return
	}
	q := r.URL.Query()
	f := Filter{Provider: q.Get("provider"), Account: q.Get("account"), ID: q.Get("id"), Limit: 100}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			http.Error(w, fmt.Sprintf("limit: want a number from 1 to 10000, got %q", v), http.StatusBadRequest)
			return
		}
		f.Limit = n
	}
	if v := q.Get("since"); v != "" {
		t, err := parseSince(v, c.e.now())
		if err != nil {
			http.Error(w, "since: "+err.Error(), http.StatusBadRequest)
			return
		}
		f.Since = t
	}
	h, _ := c.e.View(r.Context(), f) // an error is in h.Error
	writeJSON(w, http.StatusOK, h)
}

// parseSince reads an RFC 3339 time or a duration before now ("2h").
func parseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	d, err := model.ParseDuration(v)
	if err != nil {
		return time.Time{}, fmt.Errorf("want an RFC 3339 time or a duration like 2h, got %q", v)
	}
	return now.Add(-time.Duration(d)), nil
}

func (c *ControlHandler) pause(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Duration string `json:"duration"`
		Reason   string `json:"reason"`
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err == nil && len(b) > 0 {
		err = json.Unmarshal(b, &body)
	}
	if err != nil {
		http.Error(w, "malformed body: want {\"duration\": \"2h\", \"reason\": \"...\"}", http.StatusBadRequest)
		return
	}
	var d time.Duration
	if body.Duration != "" {
		md, err := model.ParseDuration(body.Duration)
		if err != nil || md <= 0 {
			http.Error(w, fmt.Sprintf("duration: want a positive duration like 2h, got %q", body.Duration), http.StatusBadRequest)
			return
		}
		d = time.Duration(md)
	}
	if len(body.Reason) > 1000 {
		body.Reason = body.Reason[:1000]
	}
	p, err := c.e.Pause(d, body.Reason)
	if err != nil {
		http.Error(w, "cannot pause: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	level.Warn(c.e.logger).Log("msg", "remediation paused by an operator", "until", p.Until, "reason", p.Reason)
	writeJSON(w, http.StatusOK, PauseView{Since: p.Since, Until: p.Until, Reason: p.Reason})
}

func (c *ControlHandler) resume(w http.ResponseWriter) {
	if err := c.e.Resume(); err != nil {
		http.Error(w, "cannot resume: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	level.Warn(c.e.logger).Log("msg", "remediation resumed by an operator")
	writeJSON(w, http.StatusOK, map[string]bool{"paused": false})
}

func (c *ControlHandler) reset(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Provider string `json:"provider"`
		Account  string `json:"account"`
		ID       string `json:"id"`
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err == nil {
		err = json.Unmarshal(b, &body)
	}
	if err != nil || body.Provider == "" || body.Account == "" || body.ID == "" {
		http.Error(w, `malformed body: want {"provider": "vpsorg", "account": "...", "id": "..."}`, http.StatusBadRequest)
		return
	}
	res, err := c.e.Reset(body.Provider, body.Account, body.ID)
	switch {
	case errors.Is(err, ErrUnknownAccount), errors.Is(err, ErrUnknownServer):
		http.Error(w, "cannot reset: "+err.Error(), http.StatusNotFound)
	case errors.Is(err, ErrNotExhausted):
		http.Error(w, "cannot reset: "+err.Error(), http.StatusConflict)
	case err != nil:
		http.Error(w, "cannot reset: "+err.Error(), http.StatusServiceUnavailable)
	default:
		writeJSON(w, http.StatusOK, res)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
