package remediation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-kit/log/level"

	"github.com/vps-exporter/vps_exporter/providers"
)

// How long a power cycle waits for the server to read stopped, and how
// often it re-reads it meanwhile; actionTimeout bounds one provider call
// of an action.
const (
	powerCycleWait = 5 * time.Minute
	powerCyclePoll = 2 * time.Second
	actionTimeout  = 2 * time.Minute
)

// call carries out the gate's action: one provider call, or for
// power_cycle its stop, re-reads until the server reads stopped, and its
// start. sent says whether anything reached the provider (if not, the
// intent is taken back); result is the action's outcome.
func (e *Engine) call(ctx context.Context, g *gate, rec *Record) (res providers.ActionResult, sent bool, result string, err error) {
	req := g.req
	if req.Action != providers.ActionPowerCycle {
		if err := g.st.CheckSend(); err != nil {
			return res, false, "", fmt.Errorf("not sent: %w", err)
		}
		actx, cancel := context.WithTimeout(ctx, actionTimeout)
		res, err = g.prov.Do(actx, req.ID, req.Action, req.Params)
		cancel()
		if err != nil && !wasSent(err) {
			return res, false, "", err
		}
		return res, true, outcome(err), err
	}
	return e.powerCycle(ctx, g, rec)
}

// powerCycle stops the server, re-reads it until it reads stopped (at
// most powerCycleWait, else failed: the start is not sent), then starts
// it: one durable action. Each phase is journaled in the pending intent
// (Record.Phase) before the next begins: the stop answered, the server
// seen stopped, the start being sent; the start's answer is the audit
// record. Once the stop was accepted the cycle is finished even through
// a shutdown (within cycleFinishBudget); one a shutdown or a crash leaves
// between its stop and its start is finished by the next start
// (resumeCycles).
func (e *Engine) powerCycle(ctx context.Context, g *gate, rec *Record) (providers.ActionResult, bool, string, error) {
	res, sent, result, err := e.cycleCall(ctx, g, rec, providers.ActionStop)
	if !sent || result != ResultSuccess {
		return res, sent, result, err
	}
	e.journalPhase(g, rec, phaseStopAnswered, "the power cycle's stop was answered")
	// The account's other requests go on while this one waits; each
	// re-read takes a turn, and the start goes out in the turn of the
	// re-read that saw the server stopped.
	g.leaveTurn()
	res, result, err = e.finishCycle(ctx, g, rec)
	return res, true, result, err
}

// cycleCall sends one call of a power cycle and adds it to the record
// when it was sent.
func (e *Engine) cycleCall(ctx context.Context, g *gate, rec *Record, a providers.Action) (providers.ActionResult, bool, string, error) {
	at := e.now()
	if err := g.st.CheckSend(); err != nil {
		return providers.ActionResult{}, false, "", fmt.Errorf("not sent: %w", err)
	}
	actx, cancel := context.WithTimeout(ctx, actionTimeout)
	res, err := g.prov.Do(actx, g.req.ID, a, g.req.Params)
	cancel()
	if err != nil && !wasSent(err) {
		return res, false, "", err
	}
	c := Call{Action: string(a), Time: at, Result: outcome(err), Response: res.Response}
	if err != nil {
		c.Error = err.Error()
	}
	rec.Calls = append(rec.Calls, c)
	return res, true, c.Result, err
}

// journalPhase rewrites the pending intent with the cycle's phase; the
// error is logged and returned.
func (e *Engine) journalPhase(g *gate, rec *Record, phase, what string) error {
	rec.Phase = phase
	err := g.st.Progress(rec)
	if err != nil {
		level.Error(e.logger).Log("msg", "cannot journal the power cycle's phase; a crash now would not know it", "phase", phase, "detail", what, "id", g.req.ID, "err", err)
	}
	return err
}

// finishCycle is a power cycle after its stop was accepted (rec holds
// the stop): it waits for the server to read stopped, then sends one
// start. It runs on finishing(ctx): a shutdown gives it
// cycleFinishBudget more. When that runs out first, or the start could
// not go out because of it, it returns errCycleUnfinished and the intent
// stays pending at its phase, for the next start to finish. A start the
// provider refused, or one that could not be sent, fails the cycle: the
// server is left stopped (the machine's step_failed: not_recovered at once;
// stepKind in apply.go).
func (e *Engine) finishCycle(ctx context.Context, g *gate, rec *Record) (providers.ActionResult, string, error) {
	fctx, done := finishing(ctx, func() {
		level.Warn(e.logger).Log("msg", "stopping with a power cycle between its stop and its start: finishing it first", "provider", g.req.Provider, "account", g.req.Account, "id", g.req.ID, "budget", cycleFinishBudget)
	})
	defer done()
	var res providers.ActionResult
	// A cycle resumed after its server was seen stopped that reads
	// running again was started by someone else: no second start.
	if werr := e.waitStopped(fctx, g, rec.Phase == phaseStopped); werr != nil {
		switch {
		case fctx.Err() != nil:
			return res, ResultUnknown, fmt.Errorf("%w: %w", errCycleUnfinished, werr)
		case errors.Is(werr, errStartedElsewhere):
			return res, ResultUnknown, werr
		}
		return res, ResultFailed, werr
	}
	e.journalPhase(g, rec, phaseStopped, "the server read stopped")
	// The start is written as being sent before it goes: a crash during
	// it is recovered with both calls, its end unknown, and never sent
	// again.
	rec.Calls = append(rec.Calls, Call{Action: string(providers.ActionStart), Time: e.now(), Result: callSending})
	serr := e.journalPhase(g, rec, phaseStartSending, "the start is being sent")
	rec.Calls = rec.Calls[:len(rec.Calls)-1]
	if serr != nil {
		// Its "sending" record is not written: no start goes out (another
		// leader, or the next start, could send one from the phase
		// before). The server is left stopped; a person is told.
		rec.Phase = phaseStopped
		return res, ResultFailed, fmt.Errorf("the server was stopped but its start was not sent: its sending record could not be written: %w", serr)
	}
	res, sent, result, err := e.cycleCall(fctx, g, rec, providers.ActionStart)
	if !sent {
		// Provably not sent: the intent goes back to its phase, so that
		// the next start may send it.
		e.journalPhase(g, rec, phaseStopped, "the start was not sent")
		if fctx.Err() != nil {
			return res, ResultUnknown, fmt.Errorf("%w: the start was not sent: %w", errCycleUnfinished, err)
		}
		return res, ResultFailed, fmt.Errorf("the server was stopped but its start could not be sent: %w", err)
	}
	rec.Phase = phaseStartAnswered
	if result == ResultFailed {
		err = fmt.Errorf("the server was stopped but the provider refused its start; it is left stopped: %w", err)
	}
	return res, result, err
}

// Phases of a power cycle, journaled in its pending intent. The start's
// answer is the audit record (phaseStartAnswered).
const (
	phaseStopAnswered  = "stop_answered"
	phaseStopped       = "stopped"
	phaseStartSending  = "start_sending"
	phaseStartAnswered = "start_answered"
)

// cycleFinishBudget is how long a power cycle whose stop was answered
// goes on after a shutdown began, to see the server stopped and send its
// start: within the exporter's 15 s to exit (main.go), before the
// engine's Close stops waiting (10 s).
const cycleFinishBudget = 8 * time.Second

// errCycleUnfinished: a shutdown left the power cycle between its stop
// and its start; its intent stays pending for the next start.
var errCycleUnfinished = errors.New("the power cycle was left between its stop and its start by a shutdown")

// finishing is the context a power cycle's phases after its stop run
// on: not ended by ctx (a shutdown) at once but cycleFinishBudget after
// it; onStop runs when ctx ends first. done releases it.
func finishing(ctx context.Context, onStop func()) (context.Context, func()) {
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		onStop()
		t := time.AfterFunc(cycleFinishBudget, cancel)
		context.AfterFunc(fctx, func() { t.Stop() })
	})
	return fctx, func() { stop(); cancel() }
}

// callSending is a call's result in a pending intent while it is being
// sent: a crash leaves it unknown.
const callSending = "sending"

// errNotStopped is the power cycle's failure when the server never read
// stopped.
var errNotStopped = errors.New("the server did not read stopped")

// errStartedElsewhere: a resumed power cycle's server, seen stopped
// before, reads running or starting: someone else started it, and no
// start is sent.
var errStartedElsewhere = errors.New("the server, seen stopped before the exporter stopped, was started meanwhile by someone else; the start was not sent")

// waitStopped re-reads the server until it reads stopped, at most
// powerCycleWait; it gives up when ctx ends (shutdown), and, when the
// server was seen stopped before (a resumed cycle), when it reads running
// or starting (errStartedElsewhere). Each re-read
// takes the account's turn and none is sent while the account is down;
// it returns nil holding the turn of the re-read that saw the server
// stopped (g.turn), for the start.
func (e *Engine) waitStopped(ctx context.Context, g *gate, seenStopped bool) error {
	wait, poll := e.cycleWait, e.cyclePoll
	until := time.Now().Add(wait)
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	last := "not read"
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped while waiting for the server to read stopped (last read: %s): %w", last, ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("%w within %s (last read: %s); the start was not sent", errNotStopped, wait, last)
		case <-tick.C:
		}
		release, d := e.takeTurn(ctx, g.req.Provider, g.req.Account, max(time.Until(until), time.Millisecond))
		if d != nil {
			continue // stopping, or the wait is over: the select says which
		}
		if d := e.accountStale(g.req.Provider, g.req.Account); d != nil {
			release()
			last = "not read: " + d.Detail
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		s, err := g.prov.Get(rctx, g.req.ID)
		cancel()
		switch {
		case err != nil:
			last = "error: " + err.Error()
		case s.State == providers.StateStopped:
			g.turn = release
			return nil
		case seenStopped && (s.State == providers.StateRunning || s.State == providers.StateStarting):
			release()
			return fmt.Errorf("%w (reads %s)", errStartedElsewhere, s.State)
		default:
			last = fmt.Sprintf("%s (%s)", s.State, s.RawStatus)
		}
		release()
	}
}
