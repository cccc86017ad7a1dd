package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path"
	"regexp"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vps-exporter/vps_exporter/remediation"
	webui "github.com/vps-exporter/vps_exporter/web"
)

// statusPage is the page at /: the store's snapshots and the engine's
// state, through web's interfaces.
func (d *daemon) statusPage() http.Handler {
	return webui.NewStatusPage(d.store, remediationView{engine: d.engine}, webui.StatusOptions{
		Demo:        d.flags.demo,
		DemoToken:   demoToken(d.flags.demo),
		Pprof:       d.flags.enablePprof,
		MetricsPath: d.flags.metricsPath,
		Logger:      d.logger,
	})
}

// forwarder sends the webhook and the controls a standby receives to the
// leader (remediation.ha); its counter is registered on reg. Without ha
// the engine's role is RoleSingle and the handlers answer as before.
func (d *daemon) forwarder(reg prometheus.Registerer) *remediation.Forwarder {
	f, err := remediation.NewForwarder(d.engine.Leadership, remediation.ForwardOptions{Registerer: reg, Logger: d.logger})
	if err != nil {
		panic(err) // registered once per registry, at start
	}
	return f
}

// demoToken is the remediation credential the page's demo banner states:
// DemoToken in --demo, none otherwise.
func demoToken(demo bool) string {
	if demo {
		return DemoToken
	}
	return ""
}

// remediationView is the engine as web.RemediationSource: what
// GET /api/v1/remediation shows (the engine's View), the hourly budget
// as the gate counts it (reserved actions included) and the servers no
// repair fixed.
type remediationView struct {
	engine *remediation.Engine
}

// RemediationStatus implements web.RemediationSource. It reads the
// engine's memory and state file, and its role with remediation.ha; it writes nothing and stops when ctx ends;
// it calls no provider.
func (v remediationView) RemediationStatus(ctx context.Context, limit int) (webui.RemediationStatus, error) {
	if err := ctx.Err(); err != nil {
		return webui.RemediationStatus{}, err
	}
	limit = max(limit, 0)
	h, err := v.engine.View(ctx, remediation.Filter{Limit: max(limit, 1)})
	used, max := v.engine.ActionsThisHour()
	out := webui.RemediationStatus{Enabled: h.Enabled, DryRun: h.DryRun, ActionsThisHour: used, MaxActionsPerHour: max}
	role, leader := v.engine.Leadership()
	out.Role, out.LeaderURL = string(role), leader
	if role == remediation.RoleStandby || role == remediation.RoleUnavailable {
		// Not an error: the state is the leader's (in etcd), and its
		// page shows it; this page says who leads.
		err = nil
	}
	if p := h.Paused; p != nil {
		out.Paused = &webui.Pause{Since: p.Since, Until: p.Until, Reason: p.Reason}
	}
	for _, r := range h.Actions[:min(len(h.Actions), limit)] {
		out.Actions = append(out.Actions, webui.Action{Time: r.Time, Provider: r.Provider, Account: r.Account, ID: r.ID, Name: r.Name,
			Action: r.Action, Source: r.Source, Rule: r.Rule, Result: r.Result, Error: r.Error, NewID: r.NewID, Verdict: r.Verdict})
	}
	for _, e := range h.Suppressions[:min(len(h.Suppressions), limit)] {
		out.Suppressions = append(out.Suppressions, webui.Suppression{Time: e.Time, Provider: e.Provider, Account: e.Account, ID: e.ID, Name: e.Name,
			Action: e.Action, Source: e.Source, Rule: e.Rule, Reason: e.Reason, Detail: e.Detail})
	}
	for _, ep := range v.engine.OpenEpisodes() {
		w := webui.Episode{Provider: ep.Provider, Account: ep.Account, ID: ep.ID, Name: ep.Name, Source: ep.Source, Rule: ep.Rule, Opened: ep.Opened,
			Step: ep.Step, Ladder: ep.Ladder, Next: ep.Next, NextSince: ep.NextSince, Attempts: ep.Attempts, MaxAttempts: ep.MaxAttempts}
		if n := len(ep.Steps); n > 0 {
			w.Current, w.Verdict = ep.Steps[n-1].Action, ep.Steps[n-1].Verdict
		}
		out.Episodes = append(out.Episodes, w)
	}
	for _, x := range v.engine.Exhausted() {
		s := webui.ExhaustedServer{Provider: x.Provider, Account: x.Account, ID: x.ID, Since: x.Since, Attempts: len(x.Actions), Detail: x.Reason}
		if len(x.Actions) > 0 {
			s.LastAction = x.Actions[len(x.Actions)-1]
		}
		out.Exhausted = append(out.Exhausted, s)
	}
	return out, err
}

// metricsOnly answers GET and HEAD with h, any other method with 405 and
// an Allow header: a scrape is a read.
func metricsOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "Method not allowed: the metrics endpoint answers GET and HEAD.", http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// reservedPaths are the endpoints --web.telemetry-path must not take: an
// exact path, or a prefix when it ends in "/".
var reservedPaths = []string{"/", "/sd", "/-/", "/api/", "/api", "/webhook/", "/webhook", "/debug/", "/debug"}

// telemetryPath is the character set of a metrics path: "/"-separated
// segments of letters, digits, "-", "_", "." and "~".
var telemetryPath = regexp.MustCompile(`^(/[A-Za-z0-9._~-]+)+$`)

// checkTelemetryPath says what is wrong with a --web.telemetry-path, or
// returns nil.
func checkTelemetryPath(p string) error {
	switch {
	case p == "":
		return errors.New("--web.telemetry-path must not be empty (default /metrics)")
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("--web.telemetry-path %q must start with /, e.g. /%s", p, strings.TrimLeft(p, "/"))
	}
	for _, r := range reservedPaths {
		if p == r || (strings.HasSuffix(r, "/") && r != "/" && strings.HasPrefix(p, r)) {
			return fmt.Errorf("--web.telemetry-path %q is taken by another endpoint (/, /sd, /-/..., /api/..., /webhook/... and /debug/... are the exporter's); pick another, e.g. /metrics", p)
		}
	}
	if !telemetryPath.MatchString(p) || path.Clean(p) != p {
		return fmt.Errorf("--web.telemetry-path %q is not a plain path: use segments of letters, digits, \"-\", \"_\", \".\" and \"~\" after each /, e.g. /metrics", p)
	}
	return nil
}

// listenError says why the web server could not start, naming the flag
// whose value it could not use: --web.listen-address for an address that
// is taken, not allowed or malformed.
func listenError(err error, addrs []string) string {
	addr := strings.Join(addrs, ",")
	var op *net.OpError
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Sprintf("--web.listen-address=%s: the address is already in use: another process (another vps_exporter?) listens there; stop it or pick another address with --web.listen-address", addr)
	case errors.Is(err, syscall.EACCES):
		return fmt.Sprintf("--web.listen-address=%s: permission denied: ports below 1024 need CAP_NET_BIND_SERVICE; pick a port above 1023 with --web.listen-address", addr)
	case errors.As(err, &op) && op.Op == "listen":
		return fmt.Sprintf("--web.listen-address=%s: cannot listen there (want host:port, e.g. :9877)", addr)
	}
	return "cannot serve"
}
