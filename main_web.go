package main

import (
	"context"
	"net/http"

	"github.com/vps-exporter/vps_exporter/remediation"
	webui "github.com/vps-exporter/vps_exporter/web"
)

// statusPage is the page at /: the store's snapshots and the engine's
// state, through web's interfaces.
func (d *daemon) statusPage() http.Handler {
	return webui.NewStatusPage(d.store, remediationView{engine: d.engine}, webui.StatusOptions{
		Demo:        d.flags.demo,
		Pprof:       d.flags.enablePprof,
		MetricsPath: d.flags.metricsPath,
		Logger:      d.logger,
	})
}

// remediationView is the engine as web.RemediationSource: what
// GET /api/v1/remediation shows (the engine's View), the hourly budget
// as the gate counts it (reserved actions included) and the servers no
// repair fixed.
type remediationView struct {
	engine *remediation.Engine
}

// RemediationStatus implements web.RemediationSource. It reads the
// engine's memory and state file, writes nothing and stops when ctx ends;
// it calls no provider.
func (v remediationView) RemediationStatus(ctx context.Context, limit int) (webui.RemediationStatus, error) {
	if err := ctx.Err(); err != nil {
		return webui.RemediationStatus{}, err
	}
	limit = max(limit, 0)
	h, err := v.engine.View(ctx, remediation.Filter{Limit: max(limit, 1)})
	used, max := v.engine.ActionsThisHour()
	out := webui.RemediationStatus{Enabled: h.Enabled, DryRun: h.DryRun, ActionsThisHour: used, MaxActionsPerHour: max}
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
