package remediation

import (
	"context"
	"strings"
	"time"

	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vps-exporter/vps_exporter/config"
)

// Locking. e.mu guards the engine's memory and is held only for memory
// work: never across a provider call or state-file I/O. e.stateMu orders
// the state file's lifecycle (open, load; the close at shutdown: a file a
// reload replaced is closed without it, once nothing hands it out) and
// the control writes
// (pause, resume, reset, flushes) with what they publish in memory: such a
// writer takes e.stateMu, reads what it needs under e.mu, writes the file
// with no lock but e.stateMu, then publishes under e.mu. e.stateMu is
// never taken while e.mu is held.

// Configure applies a (re)loaded configuration. The state file is opened
// when remediation is enabled; if it cannot be, remediation stays off and
// the error is returned (the caller decides what follows: main fails its
// start, or counts a reload failed and goes on); if another process holds
// its lock, it is tried again every few seconds until it is free. The
// counters that the configuration can move are created at zero for its
// accounts, so that a first failure or suppression is an increase that
// alerts can see; the series of an account or a rule no longer configured
// leave, and come back with their durable totals if it does; an account
// added back finds its servers' closed loop (attempts, episodes,
// exhaustion) as the state file kept it. A new state_file is used at
// once, from its own history; the old one is closed once the actions
// under way have been recorded in it (at most stateSwitchWait, during
// which Configure does not return but the controls work).
func (e *Engine) Configure(c config.Remediation, refresh time.Duration, accounts []config.Provider) error {
	e.stateMu.Lock()
	next := map[string]string{}
	for _, a := range accounts {
		next[a.Name] = a.Type
	}
	e.mu.Lock()
	prev, cur, curPath := e.accounts, e.state, e.statePath
	e.mu.Unlock()
	// Accounts added back find their closed loop (attempts, episodes,
	// exhaustion) as the state file kept it, before they are published.
	var back *loopState
	if c.Enabled && cur != nil && curPath == c.StateFile {
		var prefixes []string
		for name, typ := range next {
			if prev[name] != typ {
				prefixes = append(prefixes, serverKey(typ, name, ""))
			}
		}
		if len(prefixes) > 0 {
			var err error
			if back, err = cur.loadTracks(prefixes); err != nil {
				level.Error(e.logger).Log("msg", "cannot read the closed loop of the accounts added back; they start without it", "err", err)
				back = nil
			}
		}
	}
	e.mu.Lock()
	prevRules := e.cfg.Rules
	e.cfg = c
	e.accounts = next
	e.forgetAccountsLocked(prev)
	if back != nil {
		e.adoptTracksLocked(back)
	}
	e.forgetRulesLocked(prevRules)
	if c.Enabled {
		e.initSeries(c, accounts)
	}
	// Data older than two refreshes and a margin is stale.
	e.staleness = 2*refresh + 30*time.Second
	// A verdict waits at most global.stale_after for a fresh view.
	e.staleAfter = time.Duration(c.StaleAfter)
	if e.staleAfter <= 0 {
		e.staleAfter = 5 * refresh
	}
	e.m.enabled.Set(b2f(c.Enabled))
	e.m.dryRun.Set(b2f(c.DryRun))
	if !c.Enabled {
		e.m.stateOK.Set(1) // nothing to store: no state problem to report
		e.mu.Unlock()
		e.stateMu.Unlock()
		return nil
	}
	if c.HA != nil {
		// Under remediation.ha the state is the elected term's (ha.go):
		// a standby has none, and that is no state error.
		cur := e.state
		if cur == nil {
			e.m.stateOK.Set(1)
		}
		e.mu.Unlock()
		if cur != nil {
			e.restoreCounters(cur)
		}
		e.stateMu.Unlock()
		return nil
	}
	old := e.state
	if old != nil && e.statePath == c.StateFile {
		e.mu.Unlock()
		// Accounts added back: their durable totals return.
		e.restoreCounters(old)
		e.stateMu.Unlock()
		return nil
	}
	e.state = nil
	e.statePath = c.StateFile
	e.mu.Unlock()
	st, err := OpenState(c.StateFile)
	err = e.install(c.StateFile, st, err)
	e.stateMu.Unlock()
	// The old file is closed once the actions under way have been
	// recorded in it, without e.stateMu: pause, resume and reset go on
	// meanwhile, on the new file. Its unflushed suppressions go to the
	// new one.
	if old != nil {
		e.closeState(old, stateSwitchWait, false)
	}
	return err
}

// stateSwitchWait bounds how long a reload that changes state_file waits
// for the actions under way to be recorded in the old file: one call's
// deadline and a margin (a power cycle waiting for its server to stop can
// take longer; its record is then lost, its intent stays in the old file).
const stateSwitchWait = actionTimeout + 30*time.Second

// closeState closes a state file the engine no longer hands out (e.state
// is not st any more): it waits, at most wait, for what holds it (actions
// between their intent and their record, reads), writes the unflushed
// suppressions (when flush; the caller then holds e.stateMu) and closes
// it. It waits without the engine's lock.
func (e *Engine) closeState(st *State, wait time.Duration, flush bool) {
	if n := st.inUse(); n > 0 {
		level.Info(e.logger).Log("msg", "waiting for the remediation actions under way to be recorded before closing the state file", "holders", n, "max_wait", wait)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	left := st.waitIdle(ctx)
	cancel()
	if left > 0 {
		level.Error(e.logger).Log("msg", "closing the remediation state file with actions still under way: their records cannot be written; their intents stay in the file and are recorded unknown when it is used again", "holders", left)
	}
	if flush {
		e.flushTo(st)
	}
	if err := st.Close(); err != nil {
		level.Error(e.logger).Log("msg", "cannot close the remediation state file", "err", err)
	}
}

// forgetAccountsLocked drops what belongs to accounts that were
// configured (prev) and no longer are, or changed provider type: their
// series leave /metrics (their durable totals stay in the state file), and
// the memory keyed by their servers goes.
func (e *Engine) forgetAccountsLocked(prev map[string]string) {
	for name, typ := range prev {
		if e.accounts[name] == typ {
			continue
		}
		labels := prometheus.Labels{"provider": typ, "account": name}
		e.m.forget(labels)
		delete(e.restored, name)
		delete(e.fleets, name)
		delete(e.health, name)
		delete(e.turns, typ+"\x00"+name)
		prefix := serverKey(typ, name, "")
		for k := range e.since {
			if _, srv, _ := strings.Cut(k, "\x00"); strings.HasPrefix(srv, prefix) {
				delete(e.since, k)
			}
		}
		for k := range e.lastReason {
			if strings.HasPrefix(k, prefix) {
				delete(e.lastReason, k)
			}
		}
		e.forgetTracksLocked(prefix)
	}
}

// forgetRulesLocked drops the action series of the rules that were
// configured (prev) or restored and no longer are: their durable totals
// stay in the state file and come back with the rule.
func (e *Engine) forgetRulesLocked(prev []config.Rule) {
	now := map[string]bool{}
	for i := range e.cfg.Rules {
		now[e.cfg.Rules[i].Name] = true
	}
	gone := map[string]bool{}
	for i := range prev {
		gone[prev[i].Name] = true
	}
	for name := range e.restoredRules {
		gone[name] = true
	}
	for name := range gone {
		if now[name] || name == RuleAlertmanager {
			continue
		}
		e.m.actions.DeletePartialMatch(prometheus.Labels{"rule": name})
		delete(e.restoredRules, name)
	}
}

// install loads a state file that was opened (or says why it could not
// be) and makes it the engine's. If another process holds it, it is tried
// again in the background until it is free. The caller holds e.stateMu.
func (e *Engine) install(path string, st *State, err error) error {
	var l *loaded
	if err == nil {
		l, err = e.readState(st)
		if err != nil {
			_ = st.Close()
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil {
		e.stateErr = err
		e.m.stateOK.Set(0)
		e.m.enabled.Set(0)
		// What follows is the caller's to say: at start the exporter
		// exits, on a reload it goes on without remediation.
		msg := "remediation state file unusable; remediation is off"
		if isLockTimeout(err) {
			msg = "remediation state file locked by another process; remediation is off until it is free (tried again every 5s)"
		}
		level.Error(e.logger).Log("msg", msg, "state_file", path, "err", err)
		if isLockTimeout(err) && !e.retrying {
			e.retrying = true
			go e.retryOpen(path)
		}
		return err
	}
	e.applyLoadedLocked(l)
	e.resumeCyclesLocked(st, l.cycles)
	e.state, e.stateErr = st, nil
	e.m.stateOK.Set(1)
	e.m.enabled.Set(b2f(e.cfg.Enabled))
	return nil
}

// retryOpen tries to open a state file another process holds until it is
// free (that process exited), the configuration names another file, or
// the engine closes. It waits for the file's lock without the engine's
// locks.
func (e *Engine) retryOpen(path string) {
	wanted := func() bool { return e.state == nil && e.cfg.Enabled && e.statePath == path && !e.closing }
	e.every(5*time.Second, func() bool {
		e.mu.Lock()
		still := wanted()
		e.retrying = still
		e.mu.Unlock()
		if !still {
			return false
		}
		st, err := OpenState(path)
		if err != nil {
			return true // still held (or still broken): try again
		}
		e.stateMu.Lock()
		defer e.stateMu.Unlock()
		e.mu.Lock()
		still = wanted()
		e.retrying = false // a failure from here starts its own retry
		e.mu.Unlock()
		if !still {
			_ = st.Close()
			return false
		}
		if e.install(path, st, nil) == nil {
			level.Info(e.logger).Log("msg", "remediation state file is free again; remediation is on", "state_file", path)
		}
		return false
	})
}

// every calls fn every d until it returns false or the engine closes.
func (e *Engine) every(d time.Duration, fn func() bool) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
		}
		if !fn() {
			return
		}
	}
}

// initSeries creates at zero the action and suppression counters that the
// rules and the webhook's allowed actions can move on these accounts, and
// notes which (account, action) pairs have series: only those are counted.
func (e *Engine) initSeries(c config.Remediation, accounts []config.Provider) {
	results := []string{ResultSuccess, ResultFailed, ResultUnknown}
	if c.DryRun {
		results = append(results, ResultDryRun)
	}
	e.known = map[string]bool{}
	for _, a := range accounts {
		actions := map[string]bool{}
		for i := range c.Rules {
			r := &c.Rules[i]
			if !ruleMatchesAccount(r, a.Type, a.Name) {
				continue
			}
			for _, act := range ruleLadder(r) {
				if !config.Supports(a.Type, act) {
					continue
				}
				actions[act] = true
				for _, res := range results {
					e.m.actions.WithLabelValues(a.Type, a.Name, act, r.Name, res)
				}
				if !c.DryRun {
					for _, v := range []string{VerdictRecovered, VerdictNotRecovered, VerdictUnknown} {
						e.m.verifications.WithLabelValues(a.Type, a.Name, act, "rule", v)
					}
					e.m.recovery.WithLabelValues(a.Type, a.Name, act)
				}
			}
		}
		if c.Webhook.Enabled {
			for _, first := range c.Webhook.AllowedActions {
				if !config.Supports(a.Type, first) {
					continue
				}
				for _, act := range alertLadder(c.Webhook, first) {
					if !config.Supports(a.Type, act) {
						continue
					}
					actions[act] = true
					for _, res := range results {
						e.m.actions.WithLabelValues(a.Type, a.Name, act, RuleAlertmanager, res)
					}
					if !c.DryRun {
						for _, v := range []string{VerdictRecovered, VerdictNotRecovered, VerdictUnknown} {
							e.m.verifications.WithLabelValues(a.Type, a.Name, act, "alert", v)
						}
						e.m.recovery.WithLabelValues(a.Type, a.Name, act)
					}
				}
			}
		}
		for act := range actions {
			e.known[knownKey(a.Type, a.Name, act)] = true
			for _, reason := range reasons {
				e.m.suppressed.WithLabelValues(a.Type, a.Name, act, reason)
			}
		}
	}
}

func knownKey(provider, account, action string) string {
	return provider + "\x00" + account + "\x00" + action
}

// loaded is what a state file holds, read without the engine's lock.
type loaded struct {
	recovered []Record
	counts    map[string]uint64
	live, dry map[string]time.Time
	lineage   map[string]string
	recent    []Record
	pause     *Pause
	loop      *loopState
	eventSeq  uint64
	// cycles are the power cycles left between their stop and their
	// start, for resumeCyclesLocked.
	cycles []Record
}

// readState recovers interrupted actions (a dry run as the dry run it
// was, a live one as `unknown`) and reads the counters, the cooldowns, the
// last week's actions, the lineage, the pause and the closed loop's
// records. It is file I/O only: the caller holds e.stateMu, not e.mu.
func (e *Engine) readState(st *State) (*loaded, error) {
	l := &loaded{}
	var err error
	lineage, err := st.Lineage()
	if err != nil {
		return nil, err
	}
	loop, err := st.loadLoop()
	if err != nil {
		return nil, err
	}
	l.recovered, err = st.Recover(recoverCountKey, e.recoverStep(lineage, loop))
	if err != nil {
		return nil, err
	}
	if l.cycles, err = st.pendingCycles(); err != nil {
		return nil, err
	}
	if l.counts, err = st.Counts(); err != nil {
		return nil, err
	}
	if l.live, l.dry, err = st.Cooldowns(); err != nil {
		return nil, err
	}
	l.lineage = lineage
	l.loop = loop
	// A week of records: the last hour for the budgets, and the runs of
	// refusals that lengthen a cooldown.
	if l.recent, err = st.Since(e.now().Add(-7*24*time.Hour), 1<<20); err != nil {
		return nil, err
	}
	if l.pause, err = st.GetPause(); err != nil {
		return nil, err
	}
	if l.eventSeq, err = st.eventSeq(); err != nil {
		return nil, err
	}
	return l, nil
}

// recoverCountKey is the durable counter a recovered record counts in.
func recoverCountKey(r Record) string {
	return actionKey(r.Provider, r.Account, r.Action, ruleLabel(r.Source, r.Rule), r.Result)
}

// applyLoadedLocked makes what readState read the engine's memory.
func (e *Engine) applyLoadedLocked(l *loaded) {
	for _, r := range l.recovered {
		if r.Result == ResultDryRun {
			continue
		}
		level.Warn(e.logger).Log("msg", "an action was interrupted by a stop; its outcome is unknown and its cooldown stands", "provider", r.Provider, "account", r.Account, "id", r.ID, "action", r.Action, "rule", r.Rule, "detail", r.Error)
	}
	e.counts = l.counts
	e.restoreCountersLocked()
	e.live, e.dry = newLedger(), newLedger()
	e.live.cooldown, e.dry.cooldown = l.live, l.dry
	e.lineage = l.lineage
	e.lineageV++
	hourAgo := e.now().Add(-time.Hour)
	for i := len(l.recent) - 1; i >= 0; i-- { // oldest first
		r := l.recent[i]
		in := &intent{at: r.Time, account: r.Provider + "\x00" + r.Account, root: e.rootLocked(serverKey(r.Provider, r.Account, r.ID))}
		lg := &e.live
		if r.Result == ResultDryRun {
			lg = &e.dry
		}
		lg.countOutcome(in.root, r.Result)
		if !r.Time.Before(hourAgo) {
			lg.recent = append(lg.recent, in)
		}
	}
	e.applyLoopLocked(l.loop)
	e.eventSeq = l.eventSeq
	e.pause = l.pause
	e.m.paused.Set(b2f(e.pausedLocked(e.now()) != ""))
}

// restoreCounters brings back the durable totals of configured accounts
// and rules that have no series yet (added back by a reload), reading the
// file with what is still unflushed written first. The caller holds
// e.stateMu.
func (e *Engine) restoreCounters(st *State) {
	e.mu.Lock()
	missing := false
	for name := range e.accounts {
		if _, ok := e.restored[name]; !ok {
			missing = true
		}
	}
	for i := range e.cfg.Rules {
		if !e.restoredRules[e.cfg.Rules[i].Name] {
			missing = true
		}
	}
	e.mu.Unlock()
	if !missing {
		return
	}
	e.flushTo(st)
	counts, err := st.Counts()
	if err != nil {
		level.Error(e.logger).Log("msg", "cannot read the durable counters", "err", err)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.counts = counts
	e.restoreCountersLocked()
}

// restoreCountersLocked adds the durable totals (e.counts, read from the
// file) to the series of each configured account and rule not restored
// yet, and marks them restored. Totals of other accounts, of rules no
// longer configured and under any other rule label (an alert's name, as
// 0.2.0 wrote them) stay in the file only.
func (e *Engine) restoreCountersLocked() {
	todo := map[string]string{}
	for name, typ := range e.accounts {
		if _, ok := e.restored[name]; !ok {
			todo[name] = typ
			e.restored[name] = typ
		}
	}
	rules, fresh := map[string]bool{RuleAlertmanager: true}, map[string]bool{}
	for i := range e.cfg.Rules {
		name := e.cfg.Rules[i].Name
		rules[name] = true
		if !e.restoredRules[name] {
			fresh[name] = true
			e.restoredRules[name] = true
		}
	}
	e.m.restore(e.counts, restoreScope{accounts: todo, configured: e.accounts, rules: rules, freshRules: fresh})
	e.showExhaustedLocked(todo)
	e.counts = nil
}

// Shutdown makes the engine refuse new work from now on (SIGTERM): no
// rule or alert starts an action, and the actions under way are cancelled
// (a call already sent is recorded unknown, one not yet sent is taken
// back). Close follows.
func (e *Engine) Shutdown() {
	e.mu.Lock()
	e.closing = true
	e.mu.Unlock()
	e.cancel()
}

// Close shuts the engine down, waits for the actions under way (at most
// 10 s in all), persists what is pending and closes the state file.
func (e *Engine) Close() {
	e.Shutdown()
	e.once.Do(func() { close(e.stop) })
	deadline := time.Now().Add(10 * time.Second)
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Until(deadline)):
		level.Warn(e.logger).Log("msg", "remediation actions still under way at shutdown; their intents stand")
	}
	// The rules' last lines: what the shutdown suppressed among them.
	e.logBackground()
	e.stateMu.Lock()
	defer e.stateMu.Unlock()
	e.mu.Lock()
	st := e.state
	e.state = nil
	e.mu.Unlock()
	if st != nil {
		e.closeState(st, max(time.Until(deadline), 0), true)
	}
}

// Wait returns when the rule actions started so far have finished.
func (e *Engine) Wait() { e.wg.Wait() }

// Enabled reports whether remediation is on and has usable state.
func (e *Engine) Enabled() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cfg.Enabled && e.state != nil
}
