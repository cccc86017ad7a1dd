package remediation

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/remediation/journal"
)

// A power cycle is one durable action (powercycle.go). One that a crash
// (kill -9) or a shutdown whose budget ran out left between its stop and
// its start is still pending in the state file, its stop answered and no
// start sent: the next start finishes it (resumeCycles) instead of
// recording it unknown, so that the server is not left off for good. It
// waits for the server to read stopped (re-read via the provider, at
// most powerCycleWait), then sends exactly one start. A cycle whose start
// was being sent when the daemon stopped is never sent again: Recover
// records it unknown.

// resumable reports whether a pending intent is a live power cycle left
// between its phases with its stop accepted and no start sent.
func resumable(r Record) bool {
	return r.Action == string(providers.ActionPowerCycle) && r.Result != ResultDryRun &&
		len(r.Calls) == 1 && r.Calls[0].Action == string(providers.ActionStop) && r.Calls[0].Result == ResultSuccess
}

// pendingCycles returns the power cycles the state file holds between
// their stop and their start.
func (s *State) pendingCycles() ([]Record, error) {
	var out []Record
	err := s.db.View(func(tx journal.Tx) error {
		return tx.Bucket(bucketPending).ForEach(func(k, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("pending record %x: %w", k, err)
			}
			if resumable(r) {
				out = append(out, r)
			}
			return nil
		})
	})
	return out, err
}

// resumeCyclesLocked starts finishing the power cycles a state file just
// installed holds between their stop and their start. Each server is
// marked in flight until its cycle is recorded, so that nothing else acts
// on it meanwhile, and the cycle is in the hourly budget; the file is held
// until then. None is finished while shutting down, in dry-run or while
// paused (the operator said: call nothing): they stay pending, a person
// is told, and the next start finishes them.
func (e *Engine) resumeCyclesLocked(st *State, cycles []Record) {
	if e.closing {
		return
	}
	why := e.pausedLocked(e.now())
	if e.cfg.DryRun {
		why = "remediation is in dry-run"
	}
	for _, r := range cycles {
		if why != "" {
			level.Error(e.logger).Log("msg", "a power cycle was left between its stop and its start: the server may be off; its start is not sent now ("+why+"): start it by hand, or the next start of the exporter in live mode finishes it",
				"provider", r.Provider, "account", r.Account, "id", r.ID, "phase", r.Phase)
			continue
		}
		root := e.rootLocked(serverKey(r.Provider, r.Account, r.ID))
		e.inFlight[root] = true
		e.live.recent = append(e.live.recent, &intent{at: r.Time, account: r.Provider + "\x00" + r.Account, root: root})
		st.hold()
		e.wg.Add(1)
		go e.resumeCycle(st, r, root)
	}
}

// resumeCycle finishes one power cycle left between its stop and its
// start, and records it as the action it is (audit record, count, step of
// its server's episode).
func (e *Engine) resumeCycle(st *State, rec Record, root string) {
	defer e.wg.Done()
	defer st.unhold()
	req := Request{Provider: rec.Provider, Account: rec.Account, ID: rec.ID, Action: providers.ActionPowerCycle,
		Source: rec.Source, Rule: rec.Rule, alert: rec.Alert, alertStart: rec.AlertStartsAt}
	g := &gate{e: e, req: req, root: root, st: st}
	logger := log.With(e.logger, "provider", req.Provider, "account", req.Account, "id", req.ID, "action", req.Action, "source", req.Source, "rule", req.Rule)
	level.Warn(logger).Log("msg", "a power cycle was left between its stop and its start when the exporter stopped; finishing it: waiting for the server to read stopped, then one start", "phase", rec.Phase)
	var (
		res    providers.ActionResult
		result string
		err    error
	)
	g.prov, err = e.cycleProvider(req)
	switch {
	case err != nil && e.base.Err() != nil:
		err = fmt.Errorf("%w: %w", errCycleUnfinished, err)
	case err != nil:
		result = ResultFailed
	default:
		res, result, err = e.finishCycle(e.base, g, &rec)
		g.leaveTurn()
	}
	if errors.Is(err, errCycleUnfinished) {
		e.mu.Lock()
		delete(e.inFlight, root)
		e.mu.Unlock()
		level.Warn(logger).Log("msg", "the power cycle is still between its stop and its start; the next start finishes it", "err", err)
		return
	}
	rec.Result, rec.Response = result, res.Response
	if err != nil {
		rec.Error = err.Error()
	}
	key := actionKey(req.Provider, req.Account, string(req.Action), ruleLabel(req.Source, req.Rule), rec.Result)
	if werr := st.Finish(&rec, key, e.settleResumed(g, &rec)); werr != nil {
		level.Error(logger).Log("msg", "cannot write the resumed power cycle's audit record", "err", werr)
	}
	e.countAction(req, rec.Result)
	if rec.Result == ResultSuccess {
		level.Info(logger).Log("msg", "power cycle finished after the restart: the start was sent once", "response", rec.Response)
		return
	}
	level.Error(logger).Log("msg", "the power cycle could not be finished after the restart: the server may be left stopped", "result", rec.Result, "err", err)
}

// settleResumed makes a resumed power cycle's outcome the closed loop's:
// its run of refusals, the end of its in-flight mark, and its step (the
// returned change, written with its audit record).
func (e *Engine) settleResumed(g *gate, rec *Record) *loopWrite {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.live.countOutcome(g.root, rec.Result)
	delete(e.inFlight, g.root)
	return e.recordStepLocked(g, rec)
}

// cycleProvider is the provider client of a resumed cycle's account,
// waited for (the configuration is being loaded) at most powerCycleWait.
func (e *Engine) cycleProvider(req Request) (providers.Provider, error) {
	deadline := time.NewTimer(e.cycleWait)
	defer deadline.Stop()
	for {
		if p, ok := e.deps.Provider(req.Account); ok && p.Type() == req.Provider {
			return p, nil
		}
		select {
		case <-e.base.Done():
			return nil, fmt.Errorf("stopped while waiting for account %q: %w", req.Account, e.base.Err())
		case <-deadline.C:
			return nil, fmt.Errorf("no %s account named %q is configured; the start was not sent", req.Provider, req.Account)
		case <-time.After(e.cyclePoll):
		}
	}
}
