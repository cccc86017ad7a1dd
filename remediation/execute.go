package remediation

import (
	"context"
	"errors"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/vps-exporter/vps_exporter/providers/apiclient"
)

// Carrying out an action the gate let through: the intent, the call, the
// outcome and the audit record (split from engine.go).

// settle turns a reservation into a recorded action: the cooldown starts
// (for the lineage), the intent stays in the hourly window as done; a live
// action becomes a step of its server's episode (the returned change, to
// be written with the audit record).
func (e *Engine) settle(g *gate, rec *Record) *loopWrite {
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.ledgerLocked(g.dryRun)
	g.reserved.at = rec.Time
	l.cooldown[g.root] = rec.Time
	l.countOutcome(g.root, rec.Result)
	delete(e.inFlight, g.root)
	if rec.NewID != "" {
		newKey := serverKey(g.req.Provider, g.req.Account, rec.NewID)
		e.lineage[newKey] = g.root
		e.lineageV++
	}
	if g.dryRun {
		return nil
	}
	return e.recordStepLocked(g, rec)
}

// execute records the intent, calls the provider and records the outcome.
func (e *Engine) execute(ctx context.Context, g *gate) Decision {
	req := g.req
	// The time it is sent (the intent is written, then the call handed to
	// the provider's client), not the decision's: the cooldown and the
	// hourly window run from it.
	rec := &Record{Time: e.now(), Provider: req.Provider, Account: req.Account, ID: req.ID, Action: string(req.Action), Source: req.Source, Rule: req.Rule, Alert: req.alert, AlertStartsAt: req.alertStart}
	rec.Watch = e.newLineageWatch(g) // a redeploy's: resolves a lost answer
	if err := g.st.Begin(rec, g.root, req.intakeTaken(false, g.root, rec.Time)...); err != nil {
		e.release(g)
		d := Decision{Reason: ReasonStateError, Detail: "cannot record the intent, not acting: " + err.Error()}
		e.suppressed(req, d)
		return d
	}
	e.m.stateOK.Set(1)
	res, sent, result, err := e.call(ctx, g, rec)
	if errors.Is(err, errCycleUnfinished) {
		// A shutdown left a power cycle between its stop and its start:
		// its intent stays pending at its phase; the next start finishes
		// it (cycle_resume.go).
		level.Warn(e.logger).Log("msg", "exiting with a power cycle between its stop and its start; the next start finishes it", "provider", req.Provider, "account", req.Account, "id", req.ID, "err", err)
		e.release(g)
		return Decision{Acted: true, Result: ResultUnknown, Detail: err.Error()}
	}
	if !sent {
		// Nothing went out (a refused dial, a wait for the account's
		// rate limit cut by the deadline, the daemon stopping): take the
		// intent back; the next run decides again.
		if aerr := g.st.Abort(rec, g.root, g.prevCooldown, req.intakeBack()...); aerr != nil {
			level.Error(e.logger).Log("msg", "cannot take back an intent that was not sent; its cooldown stands", "id", req.ID, "err", aerr)
		}
		e.release(g)
		d := Decision{Reason: ReasonNotSent, Detail: "not sent: " + err.Error()}
		if ctx.Err() != nil || e.isClosing() {
			d.Reason = ReasonShutdown
		}
		e.suppressed(req, d)
		return d
	}
	rec.Response, rec.NewID = res.Response, res.NewID
	rec.Result = result
	if err != nil {
		rec.Error = err.Error()
	}
	if rec.NewID != "" {
		if lerr := g.st.SetLineage(serverKey(req.Provider, req.Account, rec.NewID), g.root); lerr != nil {
			level.Error(e.logger).Log("msg", "cannot record the replacement's lineage", "id", req.ID, "new_id", rec.NewID, "err", lerr)
		}
	}
	if werr := g.st.Finish(rec, actionKey(req.Provider, req.Account, string(req.Action), ruleLabel(req.Source, req.Rule), rec.Result), e.settle(g, rec)); werr != nil {
		level.Error(e.logger).Log("msg", "cannot write the audit record; the intent stays and the cooldown stands", "id", req.ID, "err", werr)
	}
	e.countAction(req, rec.Result)
	logger := log.With(e.logger, "provider", req.Provider, "account", req.Account, "id", req.ID, "action", req.Action, "source", req.Source, "rule", req.Rule)
	switch rec.Result {
	case ResultFailed:
		level.Warn(logger).Log("msg", "action failed: the provider refused it", "err", err)
	case ResultUnknown:
		level.Warn(logger).Log("msg", "action sent but not answered: the provider may have carried it out; its cooldown stands", "err", err)
	default:
		level.Info(logger).Log("msg", "action carried out", "new_id", rec.NewID, "response", rec.Response)
	}
	return Decision{Acted: true, Result: rec.Result, Detail: rec.Error}
}

// wasSent reports whether a failed call reached the provider, or may
// have: only one that provably never left (a refused dial, a wait for the
// account's rate limit or a 429 pause cut short, an unsupported action)
// is not. An answered call is sent, whatever its body.
func wasSent(err error) bool {
	return apiclient.DeliveryOf(err).Sent()
}

// outcome classifies a sent call: success (the provider accepted it),
// failed (the provider answered no: a non-2xx, or a documented refusal
// inside a 2xx) or unknown (no usable answer: a timeout, a reset, a 2xx
// whose body does not decode; the provider may have carried it out).
func outcome(err error) string {
	switch apiclient.DeliveryOf(err) {
	case apiclient.Accepted:
		return ResultSuccess
	case apiclient.Refused:
		return ResultFailed
	}
	return ResultUnknown
}
