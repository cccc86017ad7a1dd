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
// recording it unknown, so that the server is not left off for good, but
// only while that is still safe (resumeBlocked): remediation is live (not
// in dry run, not paused), the account is configured, the server is not
// excluded, and the stop was answered at most cycleResumeMaxAge ago. It
// waits for the server to read stopped on fresh account data (re-read
// via the provider, at most powerCycleWait), checks again, then sends
// exactly one start. When it is not safe, or no fresh read of the server
// came, nothing is sent: the cycle is recorded failed (the start was not
// sent) and abandoned (the machine's step_abandoned: verdict unknown, the
// server exhausted, a warn log line, vps_remediation_exhausted): a person
// decides. A cycle whose start was being sent when the daemon stopped is
// never sent again: Recover records it unknown.

// cycleResumeMaxAge bounds how long after its stop a resumed power cycle
// may still send its start. A crash and a restart by systemd take
// seconds, a host's reboot minutes; past an hour a person has likely seen
// the server off and acted on it (started it, stopped it on purpose,
// excluded it), and a start from the exporter would be a blind one.
const cycleResumeMaxAge = time.Hour

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
// until then. None is finished while shutting down: they stay pending.
// In dry run or paused, each is abandoned (resumeCycle): the operator
// said "call nothing", and a start much later would be a blind one.
func (e *Engine) resumeCyclesLocked(st *State, cycles []Record) {
	if e.closing {
		return
	}
	for _, r := range cycles {
		root := e.rootLocked(serverKey(r.Provider, r.Account, r.ID))
		e.inFlight[root] = true
		e.live.recent = append(e.live.recent, &intent{at: r.Time, account: r.Provider + "\x00" + r.Account, root: root})
		st.hold()
		e.wg.Add(1)
		go e.resumeCycle(st, r, root)
	}
}

// resumeCycle finishes one power cycle left between its stop and its
// start when that is still safe, else abandons it, and records it as the
// action it is (audit record, count, step of its server's episode).
func (e *Engine) resumeCycle(st *State, rec Record, root string) {
	defer e.wg.Done()
	defer st.unhold()
	req := Request{Provider: rec.Provider, Account: rec.Account, ID: rec.ID, Action: providers.ActionPowerCycle,
		Source: rec.Source, Rule: rec.Rule, alert: rec.Alert, alertStart: rec.AlertStartsAt}
	g := &gate{e: e, req: req, root: root, st: st, resumed: true}
	logger := log.With(e.logger, "provider", req.Provider, "account", req.Account, "id", req.ID, "action", req.Action, "source", req.Source, "rule", req.Rule)
	var (
		res    providers.ActionResult
		result string
		err    error
	)
	if why := e.resumeBlocked(req, &rec, false); why != "" {
		result, err = ResultFailed, e.abandonCycle(g, errors.New(why))
	} else {
		level.Warn(logger).Log("msg", "a power cycle was left between its stop and its start when the exporter stopped; finishing it: waiting for the server to read stopped, then one start", "phase", rec.Phase)
		g.prov, err = e.cycleProvider(req)
		switch {
		case err != nil && e.base.Err() != nil:
			err = fmt.Errorf("%w: %w", errCycleUnfinished, err)
		case err != nil:
			result, err = ResultFailed, e.abandonCycle(g, err)
		default:
			res, result, err = e.finishCycle(e.base, g, &rec)
			g.leaveTurn()
		}
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
	switch {
	case rec.Result == ResultSuccess:
		level.Info(logger).Log("msg", "power cycle finished after the restart: the start was sent once", "response", rec.Response)
	case g.abandoned:
		level.Warn(logger).Log("msg", "a power cycle left between its stop and its start was not finished after the restart: no start was sent, the server may be left stopped; it is handed to a person (exhausted)", "result", rec.Result, "err", err)
	default:
		level.Error(logger).Log("msg", "the power cycle could not be finished after the restart: the server may be left stopped", "result", rec.Result, "err", err)
	}
}

// resumeBlocked says why a power cycle left between its stop and its
// start must not be finished now ("" when it may): remediation in dry run
// or paused, its account not configured, its server excluded (or an
// exclusion by name while the server's name is not known), or its stop
// answered more than cycleResumeMaxAge ago. Before the start (final), a
// server whose name is not known yet counts as excluded by an exclusion
// by name; before the wait it is checked again then.
func (e *Engine) resumeBlocked(req Request, rec *Record, final bool) string {
	var name string
	var named bool
	if snap, ok := e.deps.Snapshot(req.Account); ok && snap.Provider == req.Provider {
		var s providers.Server
		if s, named = lookupServer(snap.Servers, req.ID); named {
			name = s.Name
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	if e.cfg.DryRun {
		return "remediation is in dry run (remediation.dry_run): the start is not sent"
	}
	if why := e.pausedLocked(now); why != "" {
		return "remediation is " + why + ": the start is not sent"
	}
	if !e.cfg.Enabled {
		return "remediation is not enabled: the start is not sent"
	}
	if e.accounts[req.Account] != req.Provider {
		return fmt.Sprintf("no %s account named %q is configured: the start is not sent", req.Provider, req.Account)
	}
	for i := range e.cfg.Exclude {
		x := &e.cfg.Exclude[i]
		if x.NameRE != nil && !named {
			others := (x.Provider == "" || x.Provider == req.Provider) && (x.Account == "" || x.Account == req.Account) && (x.ID == "" || x.ID == req.ID)
			if others && final {
				return fmt.Sprintf("remediation.exclude[%d] names servers by name and this server's name is not known: it may be excluded, the start is not sent", i)
			}
			continue
		}
		if x.Matches(req.Provider, req.Account, req.ID, name) {
			return fmt.Sprintf("remediation.exclude[%d] covers this server: the start is not sent", i)
		}
	}
	if len(rec.Calls) > 0 {
		if age := now.Sub(rec.Calls[0].Time); age > cycleResumeMaxAge {
			return fmt.Sprintf("its stop was answered %s ago, more than %s: a start now would be a blind one, it is not sent", age.Round(time.Second), cycleResumeMaxAge)
		}
	}
	return ""
}

// errCycleAbandoned: a power cycle's start was not sent and will not be:
// the step is abandoned and its server handed to a person.
var errCycleAbandoned = errors.New("the power cycle was abandoned between its stop and its start; the server may be left stopped and is handed to a person")

// abandonCycle marks the gate's power cycle abandoned (its step is the
// machine's step_abandoned: exhausted, verdict unknown) and returns why.
func (e *Engine) abandonCycle(g *gate, why error) error {
	g.abandoned = true
	return fmt.Errorf("%w: %w", errCycleAbandoned, why)
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
