package remediation

import (
	"context"
	"time"

	"github.com/go-kit/log/level"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/providers"
)

// A request's way through the gate to its call: Submit, the checks on
// the inventory and the counting checks under one lock (admit), the
// account's turn and the re-read (carryOut), the checks right before the
// call (final, stillCalledForLocked), and dry runs.

// Submit takes one request through the gate and, if it passes, acts (or
// records a dry run). It blocks until the decision is made and carried out.
func (e *Engine) Submit(ctx context.Context, req Request) Decision {
	g, d := e.admit(req, nil, nil, false)
	if d != nil {
		e.suppressed(req, *d)
		return *d
	}
	return e.carryOut(ctx, g)
}

// admit runs the checks on the inventory and, under one lock, the counting
// checks and the reservation. snap and srv, when given, are the snapshot a
// rule was evaluated on and the server in it. A request that passes and
// will be carried out in the background is added to e.wg under that lock,
// after the closing check: the caller's goroutine must call e.wg.Done.
func (e *Engine) admit(req Request, snap *collector.Snapshot, srv *providers.Server, background bool) (*gate, *Decision) {
	e.mu.Lock()
	st := e.state
	g := &gate{e: e, req: req, cfg: e.cfg, now: e.now(), stateOK: st != nil, staleness: e.staleness, pause: e.pausedLocked(e.now()), dryRun: e.cfg.DryRun}
	e.mu.Unlock()
	if snap == nil {
		s, ok := e.deps.Snapshot(req.Account)
		if ok {
			snap = &s
		}
	}
	g.snap = snap
	if srv != nil {
		g.srv, g.found, g.located = *srv, true, true
	}
	if d := g.run(inventoryChecks); d != nil {
		return nil, d
	}
	e.mu.Lock()
	d := g.run(countingChecks)
	if d == nil {
		g.reserveLocked()
		if background {
			e.wg.Add(1)
		}
	}
	e.mu.Unlock()
	if d == nil && e.reserved != nil {
		e.reserved()
	}
	e.store(g.writes...)
	if d != nil {
		return nil, d
	}
	return g, nil
}

// stage is one named step of a reserved request's way to the provider:
// nil lets it go on, a decision stops it (suppressed with its reason).
type stage struct {
	name string
	run  func(ctx context.Context, g *gate) *Decision
}

// stages are the steps a reserved request takes before it acts, in
// order (the admission's steps are the check lists inventoryChecks and
// countingChecks, gate.go): its account's turn (one request at a time
// talks to an account, none while it is down: turn.go), the re-read of
// the server (confirm), and the final look at the configuration, the
// pause and the closed loop right before the call. Then it acts: a dry
// run is recorded, a live action executed (execute.go).
func (e *Engine) stages() []stage {
	return []stage{
		{"turn", func(ctx context.Context, g *gate) *Decision {
			release, d := e.enterTurn(ctx, g.req.Provider, g.req.Account, e.turnWait())
			if d == nil {
				g.turn = release // left by carryOut, whatever comes next
			}
			return d
		}},
		{"confirm", func(ctx context.Context, g *gate) *Decision { return g.confirm(ctx) }},
		{"final", func(_ context.Context, g *gate) *Decision { return e.final(g) }},
	}
}

// carryOut takes a reserved request through the stages and acts on it.
func (e *Engine) carryOut(ctx context.Context, g *gate) Decision {
	defer g.leaveTurn()
	for _, s := range e.stages() {
		if d := s.run(ctx, g); d != nil {
			d.dry = g.dryRun
			e.release(g)
			e.suppressed(g.req, *d)
			return *d
		}
	}
	defer g.st.unhold()
	if g.dryRun {
		return e.recordDryRun(g)
	}
	return e.execute(ctx, g)
}

// final reads enabled, dry-run and the pause again immediately before the
// call: a reload or a pause that came during the re-read wins. The
// account's latest refresh must be good and fresh, and the re-read the
// action is decided on recent.
func (e *Engine) final(g *gate) *Decision {
	stale := e.accountStale(g.req.Provider, g.req.Account)
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	switch {
	case e.closing:
		return &Decision{Reason: ReasonShutdown, Detail: "the exporter is stopping"}
	case !e.cfg.Enabled || e.state == nil:
		return &Decision{Reason: ReasonNotAllowed, Detail: "remediation was turned off"}
	case e.pausedLocked(now) != "":
		return &Decision{Reason: ReasonPaused, Detail: e.pausedLocked(now)}
	case e.cfg.DryRun && !g.dryRun:
		return &Decision{Reason: ReasonNotAllowed, Detail: "remediation was switched to dry-run"}
	case !e.cfg.DryRun && g.dryRun:
		// Dry-run ended meanwhile: record nothing and let the next
		// request go through the live namespace.
		return &Decision{Reason: ReasonNotAllowed, Detail: "dry-run was switched off during the decision"}
	}
	if !insideWindow(e.cfg.Windows, now) {
		return &Decision{Reason: ReasonOutsideWindow, Detail: "the action window closed"}
	}
	if d := e.stillCalledForLocked(g); d != nil {
		return d
	}
	if stale != nil {
		return stale
	}
	if age := now.Sub(g.readAt); age > maxReadAge || age < -time.Minute {
		return supp(ReasonStaleData, "the re-read of the server is %s old (at most %s)", age.Round(time.Second), maxReadAge)
	}
	// Held until the action is recorded: a reload switching state files
	// waits for it before closing this one (lifecycle.go).
	g.st = e.state
	g.st.hold()
	return nil
}

// stillCalledForLocked checks that the request is still what the
// configuration and the closed loop ask for, a reload, a reset or
// Alertmanager having had their say during the wait for the account's
// turn and the re-read: a rule's request is still its rule's; an
// alert's, the webhook is still on and its occurrence has not resolved;
// an escalation is still its episode's next step, on the ladder as
// configured now, and (alerts) its alerts have not all resolved.
func (e *Engine) stillCalledForLocked(g *gate) *Decision {
	req := g.req
	if req.Source == "rule" && !req.escalation {
		if r := e.ruleByNameLocked(req.Rule); r == nil || r.Action != string(req.Action) {
			return supp(ReasonNotAllowed, "rule %q was removed or changed by a reload", req.Rule)
		}
	}
	if req.Source == "alert" && !e.cfg.Webhook.Enabled {
		return supp(ReasonNotAllowed, "remediation.webhook.enabled was turned off")
	}
	if g.dryRun {
		return nil // dry runs read the live episodes, never wait on them
	}
	if !req.escalation {
		if req.Source == "alert" {
			resolved := !req.occ.resolvedAt().IsZero()
			if pm, ok := e.pendingMarks[g.root]; ok && !resolved {
				for _, m := range pm {
					resolved = resolved || (m.Fingerprint == req.alert && !m.Resolved.IsZero())
				}
			}
			if resolved {
				return supp(ReasonConditionCleared, "Alertmanager resolved the alert before the call")
			}
		}
		return nil
	}
	var ep *Episode
	if t := e.tracks[g.root]; t != nil {
		ep = t.Episode
	}
	if !ep.isDueStep(req) || e.nextStepLocked(ep) != string(req.Action) {
		return supp(ReasonNotAllowed, "no longer the next step of the server's episode (a reload changed its ladder, or an operator reset it)")
	}
	if ep.Source == "alert" && e.alertsClearLocked(ep) {
		return supp(ReasonConditionCleared, "Alertmanager resolved the alert(s) before the next step, and the server reads running")
	}
	return nil
}

// release takes back a reservation that did not become an action.
func (e *Engine) release(g *gate) {
	e.mu.Lock()
	defer e.mu.Unlock()
	g.releaseLocked()
}

func (e *Engine) recordDryRun(g *gate) Decision {
	req := g.req
	// The time it was recorded: its dry-run cooldown runs from it.
	rec := &Record{Time: e.now(), Provider: req.Provider, Account: req.Account, ID: req.ID, Action: string(req.Action), Source: req.Source, Rule: req.Rule, Result: ResultDryRun}
	// One transaction: no intent is left behind for a crash to turn
	// into a live record.
	if err := g.st.RecordDryRun(rec, g.root, actionKey(req.Provider, req.Account, string(req.Action), ruleLabel(req.Source, req.Rule), ResultDryRun), req.intakeTaken(true, g.root, rec.Time)...); err != nil {
		e.release(g)
		d := Decision{Reason: ReasonStateError, Detail: err.Error(), dry: true}
		e.suppressed(req, d)
		return d
	}
	e.settle(g, rec)
	e.m.stateOK.Set(1)
	e.countAction(req, ResultDryRun)
	level.Info(e.logger).Log("msg", "dry run: would act", "provider", req.Provider, "account", req.Account, "id", req.ID, "action", req.Action, "source", req.Source, "rule", req.Rule)
	return Decision{Acted: true, Result: ResultDryRun}
}
