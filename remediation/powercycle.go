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
// it. Both calls go into the record; after the stop was answered the
// intent is rewritten with it, so that a crash before the start is
// recovered as an unknown power cycle (its cooldown stands: it is not
// repeated).
func (e *Engine) powerCycle(ctx context.Context, g *gate, rec *Record) (providers.ActionResult, bool, string, error) {
	req := g.req
	do := func(a providers.Action) (providers.ActionResult, bool, string, error) {
		at := e.now()
		actx, cancel := context.WithTimeout(ctx, actionTimeout)
		res, err := g.prov.Do(actx, req.ID, a, req.Params)
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
	res, sent, result, err := do(providers.ActionStop)
	if !sent || result != ResultSuccess {
		return res, sent, result, err
	}
	if perr := g.st.Progress(rec); perr != nil {
		level.Error(e.logger).Log("msg", "cannot record the power cycle's stop; a crash now would not know it was sent", "id", req.ID, "err", perr)
	}
	// The account's other requests go on while this one waits; each
	// re-read takes a turn, and the start goes out in the turn of the
	// re-read that saw the server stopped.
	g.leaveTurn()
	if werr := e.waitStopped(ctx, g); werr != nil {
		result := ResultFailed
		if ctx.Err() != nil {
			result = ResultUnknown // stopping: the server may be left stopped
		}
		return res, true, result, werr
	}
	// The start is written as being sent before it goes: a crash during
	// it is recovered with both calls, its end unknown.
	rec.Calls = append(rec.Calls, Call{Action: string(providers.ActionStart), Time: e.now(), Result: callSending})
	if perr := g.st.Progress(rec); perr != nil {
		level.Error(e.logger).Log("msg", "cannot record the power cycle's start before sending it; a crash now would not know it was sent", "id", req.ID, "err", perr)
	}
	rec.Calls = rec.Calls[:len(rec.Calls)-1]
	res, sent, result, err = do(providers.ActionStart)
	if !sent {
		// The stop went out: the action was sent, its end unknown.
		return res, true, ResultUnknown, fmt.Errorf("the server was stopped but its start was not sent: %w", err)
	}
	return res, true, result, err
}

// callSending is a call's result in a pending intent while it is being
// sent: a crash leaves it unknown.
const callSending = "sending"

// errNotStopped is the power cycle's failure when the server never read
// stopped.
var errNotStopped = errors.New("the server did not read stopped")

// waitStopped re-reads the server until it reads stopped, at most
// powerCycleWait; it gives up when ctx ends (shutdown). Each re-read
// takes the account's turn and none is sent while the account is down;
// it returns nil holding the turn of the re-read that saw the server
// stopped (g.turn), for the start.
func (e *Engine) waitStopped(ctx context.Context, g *gate) error {
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
		default:
			last = fmt.Sprintf("%s (%s)", s.State, s.RawStatus)
		}
		release()
	}
}
