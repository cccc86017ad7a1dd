package main

import (
	"context"
	"net/http"
	"time"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/remediation"
	webui "github.com/vps-exporter/vps_exporter/web"
)

// statusPage is the page at /: the store's snapshots and the engine's
// state, through web's interfaces.
func (d *daemon) statusPage() http.Handler {
	return webui.NewStatusPage(d.store, remediationView{
		engine: d.engine,
		config: func() config.Remediation {
			if c := d.remCfg.Load(); c != nil {
				return *c
			}
			return config.DefaultRemediation()
		},
		now: time.Now,
	}, webui.StatusOptions{
		Demo:        d.flags.demo,
		Pprof:       d.flags.enablePprof,
		MetricsPath: d.flags.metricsPath,
		Logger:      d.logger,
	})
}

// actionsThisHour counts the actions of one mode (dry run or live) since
// hourAgo among recs, the newest audit records (newest first) of a read
// that asked for at most n. The count is a lower bound (atLeast) when all
// n came back and none is older than the hour: more may be.
func actionsThisHour(recs []remediation.Record, dryRun bool, hourAgo time.Time, n int) (count int, atLeast bool) {
	for _, r := range recs {
		if r.Time.Before(hourAgo) {
			return count, false
		}
		if (r.Result == resultDryRun) == dryRun {
			count++
		}
	}
	return count, len(recs) >= n
}

// resultDryRun is the audit result of an action recorded in dry run.
const resultDryRun = "dry_run"

// maxHistoryRead bounds the audit records one page view reads (the
// limit /api/v1/remediation takes).
const maxHistoryRead = 10000

// remediationView is the engine as web.RemediationSource: what
// GET /api/v1/remediation shows (the engine's History), plus the
// configured max_actions_per_hour and how many actions of the current mode
// the last hour holds.
type remediationView struct {
	engine *remediation.Engine
	config func() config.Remediation // the configuration applied
	now    func() time.Time
}

// RemediationStatus implements web.RemediationSource. It reads the
// engine's memory and state file; it calls no provider.
func (v remediationView) RemediationStatus(ctx context.Context, limit int) (webui.RemediationStatus, error) {
	if err := ctx.Err(); err != nil {
		return webui.RemediationStatus{}, err
	}
	c := v.config()
	// In an hour at most max_actions_per_hour actions of each mode (live,
	// dry run) reach the audit log: reading that many newest records of
	// both finds all of the current mode's, unless restarts recovered
	// more; then the count is a lower bound, and says so.
	n := min(max(limit, 2*c.MaxActionsPerHour+1), maxHistoryRead)
	h, err := v.engine.History(remediation.Filter{Limit: n})
	out := webui.RemediationStatus{Enabled: h.Enabled, DryRun: h.DryRun, MaxActionsPerHour: c.MaxActionsPerHour}
	if p := h.Paused; p != nil {
		out.Paused = &webui.Pause{Since: p.Since, Until: p.Until, Reason: p.Reason}
	}
	out.ActionsThisHour, out.ActionsThisHourAtLeast = actionsThisHour(h.Actions, h.DryRun, v.now().Add(-time.Hour), n)
	limit = max(limit, 0)
	for _, r := range h.Actions[:min(len(h.Actions), limit)] {
		out.Actions = append(out.Actions, webui.Action{Time: r.Time, Provider: r.Provider, Account: r.Account, ID: r.ID,
			Action: r.Action, Source: r.Source, Rule: r.Rule, Result: r.Result, Error: r.Error, NewID: r.NewID})
	}
	for _, e := range h.Suppressions[:min(len(h.Suppressions), limit)] {
		out.Suppressions = append(out.Suppressions, webui.Suppression{Time: e.Time, Provider: e.Provider, Account: e.Account, ID: e.ID,
			Action: e.Action, Source: e.Source, Rule: e.Rule, Reason: e.Reason, Detail: e.Detail})
	}
	// Exhausted servers come with closed-loop remediation (the engine
	// does not report them yet): the page shows none.
	return out, err
}
