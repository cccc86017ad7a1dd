// Package remediation repairs broken servers: threshold rules evaluated
// after each refresh and Alertmanager webhooks, both through one safety
// gate, with durable state so that a restart cannot repeat an action.
//
// The gate is an ordered chain of small named checks (gate.go). A request
// passes the checks on the inventory first; then, under one lock, the
// checks that count (in flight, cooldown, hourly budget, blast radius) and
// the reservation of its place in them, so that concurrent requests see
// each other's pending intents; then the provider re-reads the server and
// the checks run again on its answer; last, immediately before the call,
// enabled, dry-run and pause are read again.
package remediation

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/apiclient"
)

// Suppression reasons.
const (
	ReasonCooldown         = "cooldown"
	ReasonRateLimit        = "rate_limit"
	ReasonBlastRadius      = "blast_radius"
	ReasonStaleData        = "stale_data"
	ReasonNotAllowed       = "not_allowed"
	ReasonInFlight         = "in_flight"
	ReasonConditionCleared = "condition_cleared"
	ReasonDuplicate        = "duplicate"
	ReasonStateError       = "state_error"
	ReasonShutdown         = "shutdown"
	ReasonExcluded         = "excluded"
	ReasonPaused           = "paused"
	ReasonOutsideWindow    = "outside_window"
	ReasonPrecondition     = "precondition"
)

// reasons lists every suppression reason (the counters start at zero).
var reasons = []string{ReasonCooldown, ReasonRateLimit, ReasonBlastRadius, ReasonStaleData, ReasonNotAllowed,
	ReasonInFlight, ReasonConditionCleared, ReasonDuplicate, ReasonStateError, ReasonShutdown,
	ReasonExcluded, ReasonPaused, ReasonOutsideWindow, ReasonPrecondition}

// Results of an action.
const (
	ResultSuccess = "success" // the provider accepted it
	ResultFailed  = "failed"  // the provider said no
	ResultDryRun  = "dry_run"
	ResultUnknown = "unknown" // sent, no answer: the provider may have done it
)

// Request asks for one action on one server.
type Request struct {
	Provider, Account, ID string
	Action                providers.Action
	Params                providers.ActionParams
	// Source is "rule" or "alert"; Rule is the rule's or alert's name.
	Source, Rule string
	// rule is set for rule requests, to re-check the condition.
	rule *config.Rule
}

// Decision is what the gate decided.
type Decision struct {
	// Acted is true when the action was sent or dry-run recorded.
	Acted  bool
	Result string // for Acted
	Reason string // for a suppression
	Detail string
}

// Deps are what the engine reads: snapshots and provider clients.
type Deps struct {
	Snapshot func(account string) (collector.Snapshot, bool)
	Provider func(account string) (providers.Provider, bool)
}

// Engine is the remediation loop.
type Engine struct {
	deps   Deps
	logger log.Logger
	now    func() time.Time
	m      *metrics
	wg     sync.WaitGroup // rule actions under way
	stop   chan struct{}  // closes the flusher
	once   sync.Once
	// base bounds the rule actions: not a poller's context, which a
	// reload cancels, but the engine's own, cancelled by Close.
	base   context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	cfg       config.Remediation
	accounts  map[string]string // configured account -> provider type
	staleness time.Duration
	state     *State
	statePath string
	stateErr  error
	retrying  bool // waiting for another process's lock on the state file
	since     map[string]time.Time
	live, dry ledger
	lineage   map[string]string // replacement server key -> root server key
	lineageV  int               // bumped when lineage changes
	// fleets caches each account's fleet size for the blast radius, per
	// list refresh: computing it is O(servers), under the lock.
	fleets   map[string]fleetSize
	inFlight map[string]bool // root keys with a request past the reservation
	pause    *Pause
	// Suppressions are counted at once in memory and persisted in
	// batches; one is logged (and kept in the history) when the reason
	// for that server and action changed.
	lastReason map[string]string
	unflushed  map[string]uint64
	events     []Event
}

// fleetSize is an account's fleet for the blast radius at one list
// refresh and lineage version.
type fleetSize struct {
	at      time.Time
	servers int
	lineage int
	size    int
}

// ledger is one namespace's (live or dry-run) memory of actions: the
// cooldown start of each server's lineage root, and the last hour's
// actions and pending intents for the budget and the blast radius.
type ledger struct {
	cooldown map[string]time.Time
	recent   []*intent
	// failures counts each root's consecutive refused actions: its
	// cooldown doubles with each (at most 16 times), so a call the
	// provider keeps refusing is not repeated every cooldown forever.
	failures map[string]int
}

// intent is one action in the hourly window: sent, recorded, or reserved
// and not yet sent (pending).
type intent struct {
	at      time.Time
	account string // provider \x00 account
	root    string
}

func newLedger() ledger { return ledger{cooldown: map[string]time.Time{}, failures: map[string]int{}} }

// countOutcome keeps the run of refusals of a root.
func (l *ledger) countOutcome(root, result string) {
	if result == ResultFailed {
		l.failures[root]++
	} else {
		delete(l.failures, root)
	}
}

// NewEngine returns an engine; call Configure before use, Close at the end.
func NewEngine(deps Deps, reg prometheus.Registerer, logger log.Logger, now func() time.Time) *Engine {
	if now == nil {
		now = time.Now
	}
	e := &Engine{deps: deps, logger: logger, now: now, m: newMetrics(reg), stop: make(chan struct{}),
		since: map[string]time.Time{}, live: newLedger(), dry: newLedger(), lineage: map[string]string{},
		inFlight: map[string]bool{}, lastReason: map[string]string{}, unflushed: map[string]uint64{}, accounts: map[string]string{},
		fleets: map[string]fleetSize{}}
	e.base, e.cancel = context.WithCancel(context.Background())
	go e.flusher()
	return e
}

// Configure applies a (re)loaded configuration. The state file is opened
// when remediation is enabled; if it cannot be, remediation stays off and
// the error is returned (the exporter goes on); if another process holds
// its lock, it is tried again every few seconds until it is free. The
// counters that the configuration can move are created at zero for its
// accounts, so that a first failure or suppression is an increase that
// alerts can see.
func (e *Engine) Configure(c config.Remediation, refresh time.Duration, accounts []config.Provider) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cfg = c
	e.accounts = map[string]string{}
	for _, a := range accounts {
		e.accounts[a.Name] = a.Type
	}
	if c.Enabled {
		e.initSeries(c, accounts)
	}
	// Data older than two refreshes and a margin is stale.
	e.staleness = 2*refresh + 30*time.Second
	e.m.enabled.Set(b2f(c.Enabled))
	e.m.dryRun.Set(b2f(c.DryRun))
	if !c.Enabled {
		e.m.stateOK.Set(1) // nothing to store: no state problem to report
		return nil
	}
	if e.state != nil && e.statePath == c.StateFile {
		return nil
	}
	if e.state != nil {
		e.flushLocked()
		_ = e.state.Close()
		e.state = nil
	}
	e.statePath = c.StateFile
	return e.openLocked()
}

// openLocked opens the state file and loads it. (Opening waits at most
// lockWait for another process's lock; retries happen outside the lock.)
func (e *Engine) openLocked() error {
	st, err := OpenState(e.statePath)
	return e.installLocked(st, err)
}

// installLocked loads a state file that was opened (or says why it
// could not be) and makes it the engine's. If another process holds it,
// it is tried again in the background until it is free.
func (e *Engine) installLocked(st *State, err error) error {
	if err == nil {
		err = e.loadLocked(st)
		if err != nil {
			_ = st.Close()
		}
	}
	if err != nil {
		e.stateErr = err
		e.m.stateOK.Set(0)
		e.m.enabled.Set(0)
		level.Error(e.logger).Log("msg", "remediation disabled: its state file is unusable; the exporter goes on", "state_file", e.statePath, "err", err)
		if isLockTimeout(err) && !e.retrying {
			e.retrying = true
			go e.retryOpen(e.statePath)
		}
		return err
	}
	e.state, e.stateErr = st, nil
	e.m.stateOK.Set(1)
	e.m.enabled.Set(b2f(e.cfg.Enabled))
	return nil
}

// retryOpen tries to open a state file another process holds until it is
// free (that process exited), the configuration names another file, or
// the engine closes. It waits for the file's lock without the engine's.
func (e *Engine) retryOpen(path string) {
	wanted := func() bool { return e.state == nil && e.cfg.Enabled && e.statePath == path }
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
		e.mu.Lock()
		defer e.mu.Unlock()
		if !wanted() {
			_ = st.Close()
			e.retrying = false
			return false
		}
		e.retrying = false // a failure from here starts its own retry
		if e.installLocked(st, nil) == nil {
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
// rules and the webhook's allowed actions can move on these accounts.
func (e *Engine) initSeries(c config.Remediation, accounts []config.Provider) {
	results := []string{ResultSuccess, ResultFailed, ResultUnknown}
	if c.DryRun {
		results = append(results, ResultDryRun)
	}
	for _, a := range accounts {
		actions := map[string]bool{}
		for i := range c.Rules {
			r := &c.Rules[i]
			if !ruleMatchesAccount(r, a.Type, a.Name) {
				continue
			}
			actions[r.Action] = true
			for _, res := range results {
				e.m.actions.WithLabelValues(a.Type, a.Name, r.Action, r.Name, res)
			}
		}
		if c.Webhook.Enabled {
			for _, act := range c.Webhook.AllowedActions {
				if config.Supports(a.Type, act) {
					actions[act] = true
				}
			}
		}
		for act := range actions {
			for _, reason := range reasons {
				e.m.suppressed.WithLabelValues(a.Type, a.Name, act, reason)
			}
		}
	}
}

// loadLocked recovers interrupted actions and restores the counters, the
// cooldowns, the last hour's actions, the lineage and the pause.
func (e *Engine) loadLocked(st *State) error {
	recovered, err := st.Recover(func(r Record) string {
		return actionKey(r.Provider, r.Account, r.Action, r.Rule, ResultUnknown)
	})
	if err != nil {
		return err
	}
	for _, r := range recovered {
		level.Warn(e.logger).Log("msg", "an action was interrupted by a stop; its outcome is unknown and its cooldown stands", "provider", r.Provider, "account", r.Account, "id", r.ID, "action", r.Action, "rule", r.Rule)
	}
	counts, err := st.Counts()
	if err != nil {
		return err
	}
	live, dry, err := st.Cooldowns()
	if err != nil {
		return err
	}
	lineage, err := st.Lineage()
	if err != nil {
		return err
	}
	// A week of records: the last hour for the budgets, and the runs of
	// refusals that lengthen a cooldown.
	recent, err := st.Since(e.now().Add(-7*24*time.Hour), 1<<20)
	if err != nil {
		return err
	}
	pause, err := st.GetPause()
	if err != nil {
		return err
	}
	e.m.restore(counts)
	e.live, e.dry = newLedger(), newLedger()
	e.live.cooldown, e.dry.cooldown = live, dry
	e.lineage = lineage
	e.lineageV++
	hourAgo := e.now().Add(-time.Hour)
	for i := len(recent) - 1; i >= 0; i-- { // oldest first
		r := recent[i]
		in := &intent{at: r.Time, account: r.Provider + "\x00" + r.Account, root: e.rootLocked(serverKey(r.Provider, r.Account, r.ID))}
		l := &e.live
		if r.Result == ResultDryRun {
			l = &e.dry
		}
		l.countOutcome(in.root, r.Result)
		if !r.Time.Before(hourAgo) {
			l.recent = append(l.recent, in)
		}
	}
	e.pause = pause
	e.m.paused.Set(b2f(e.pausedLocked(e.now()) != ""))
	return nil
}

// Close cancels the rule actions under way (a call already sent is
// recorded unknown, one not yet sent is taken back), waits for them (at
// most 15 s), persists what is pending and closes the state file.
func (e *Engine) Close() {
	e.once.Do(func() { close(e.stop) })
	e.cancel()
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		level.Warn(e.logger).Log("msg", "remediation actions still under way at shutdown; their intents stand")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.state != nil {
		e.flushLocked()
		_ = e.state.Close()
		e.state = nil
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

// OnRefresh evaluates the rules against a fresh snapshot of one account
// (ctx is the poller's; the actions run under the engine's own context).
// It is the collector's refresh hook. It never waits on a provider: a
// request that passes the checks on the inventory and gets its place in
// the budget is carried out in the background.
func (e *Engine) OnRefresh(ctx context.Context, snap collector.Snapshot) {
	e.mu.Lock()
	cfg := e.cfg
	e.mu.Unlock()
	if !cfg.Enabled || len(cfg.Rules) == 0 || !snap.Up {
		// A failed refresh says nothing about the servers: no rule
		// fires on stale data, and no `for:` clock advances or resets.
		return
	}
	now := e.now()
	for i := range cfg.Rules {
		rule := &cfg.Rules[i]
		if !ruleMatchesAccount(rule, snap.Provider, snap.Account) {
			continue
		}
		for _, s := range snap.Servers {
			key := rule.Name + "\x00" + serverKey(snap.Provider, snap.Account, s.ID)
			e.mu.Lock()
			if !conditionHolds(rule, s) {
				delete(e.since, key)
				e.mu.Unlock()
				continue
			}
			first, ok := e.since[key]
			if !ok {
				first = now
				e.since[key] = now
			}
			e.mu.Unlock()
			if now.Sub(first) < time.Duration(rule.For) {
				continue
			}
			req := Request{
				Provider: snap.Provider, Account: snap.Account, ID: s.ID,
				Action: providers.Action(rule.Action),
				Params: providers.ActionParams{Force: rule.Params.Force, CountryCode: rule.Params.CountryCode},
				Source: "rule", Rule: rule.Name, rule: rule,
			}
			g, d := e.admit(req, &snap, &s)
			if d != nil {
				e.suppressed(req, *d)
				continue
			}
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				e.carryOut(e.base, g)
			}()
		}
	}
	e.forgetGone(snap)
}

// forgetGone drops `for:` clocks of servers no longer in the account.
func (e *Engine) forgetGone(snap collector.Snapshot) {
	present := make(map[string]bool, len(snap.Servers))
	for _, s := range snap.Servers {
		present[serverKey(snap.Provider, snap.Account, s.ID)] = true
	}
	prefix := serverKey(snap.Provider, snap.Account, "")
	e.mu.Lock()
	defer e.mu.Unlock()
	for k := range e.since {
		_, srv, _ := strings.Cut(k, "\x00")
		if strings.HasPrefix(srv, prefix) && !present[srv] {
			delete(e.since, k)
		}
	}
	for k := range e.lastReason {
		srv, _, _ := strings.Cut(k, "\x01")
		if strings.HasPrefix(srv, prefix) && !present[srv] {
			delete(e.lastReason, k)
		}
	}
}

func ruleMatchesAccount(r *config.Rule, provider, account string) bool {
	return (r.Provider == "" || r.Provider == provider) && (r.Account == "" || r.Account == account)
}

// conditionHolds evaluates a rule's state, status and threshold filters.
func conditionHolds(r *config.Rule, s providers.Server) bool {
	if len(r.State) > 0 && !slices.Contains(r.State, string(s.State)) {
		return false
	}
	if len(r.Status) > 0 && !slices.Contains(r.Status, s.RawStatus) && !slices.Contains(r.Status, s.RawCode) {
		return false
	}
	if r.Metric != "" {
		v := s.Reading(r.Metric)
		if !v.OK {
			return false // never act on a value the provider did not give
		}
		if r.Above != nil && !(v.V > *r.Above) {
			return false
		}
		if r.Below != nil && !(v.V < *r.Below) {
			return false
		}
	}
	return true
}

// Submit takes one request through the gate and, if it passes, acts (or
// records a dry run). It blocks until the decision is made and carried out.
func (e *Engine) Submit(ctx context.Context, req Request) Decision {
	g, d := e.admit(req, nil, nil)
	if d != nil {
		e.suppressed(req, *d)
		return *d
	}
	return e.carryOut(ctx, g)
}

// admit runs the checks on the inventory and, under one lock, the counting
// checks and the reservation. snap and srv, when given, are the snapshot a
// rule was evaluated on and the server in it.
func (e *Engine) admit(req Request, snap *collector.Snapshot, srv *providers.Server) (*gate, *Decision) {
	e.mu.Lock()
	st := e.state
	g := &gate{e: e, req: req, cfg: e.cfg, now: e.now(), stateOK: st != nil, staleness: e.staleness, pause: e.pausedLocked(e.now())}
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
	defer e.mu.Unlock()
	if d := g.run(countingChecks); d != nil {
		return nil, d
	}
	g.reserveLocked()
	return g, nil
}

// carryOut re-reads the server, checks again, and acts on a reserved
// request.
func (e *Engine) carryOut(ctx context.Context, g *gate) Decision {
	req := g.req
	d := g.confirm(ctx)
	if d == nil {
		d = e.final(g)
	}
	if d != nil {
		e.release(g)
		e.suppressed(req, *d)
		return *d
	}
	if g.dryRun {
		return e.recordDryRun(g)
	}
	return e.execute(ctx, g)
}

// final reads enabled, dry-run and the pause again immediately before the
// call: a reload or a pause that came during the re-read wins.
func (e *Engine) final(g *gate) *Decision {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	switch {
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
	g.st = e.state
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
	rec := &Record{Time: g.now, Provider: req.Provider, Account: req.Account, ID: req.ID, Action: string(req.Action), Source: req.Source, Rule: req.Rule, Result: ResultDryRun}
	err := g.st.Begin(rec, g.root)
	if err == nil {
		err = g.st.Finish(rec, actionKey(req.Provider, req.Account, string(req.Action), req.Rule, ResultDryRun))
	}
	if err != nil {
		e.release(g)
		d := Decision{Reason: ReasonStateError, Detail: err.Error()}
		e.suppressed(req, d)
		return d
	}
	e.settle(g, rec)
	e.m.stateOK.Set(1)
	e.m.actions.WithLabelValues(req.Provider, req.Account, string(req.Action), req.Rule, ResultDryRun).Inc()
	level.Info(e.logger).Log("msg", "dry run: would act", "provider", req.Provider, "account", req.Account, "id", req.ID, "action", req.Action, "source", req.Source, "rule", req.Rule)
	return Decision{Acted: true, Result: ResultDryRun}
}

// settle turns a reservation into a recorded action: the cooldown starts
// (for the lineage), the intent stays in the hourly window as done.
func (e *Engine) settle(g *gate, rec *Record) {
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
}

// execute records the intent, calls the provider and records the outcome.
func (e *Engine) execute(ctx context.Context, g *gate) Decision {
	req := g.req
	rec := &Record{Time: g.now, Provider: req.Provider, Account: req.Account, ID: req.ID, Action: string(req.Action), Source: req.Source, Rule: req.Rule}
	if err := g.st.Begin(rec, g.root); err != nil {
		e.release(g)
		d := Decision{Reason: ReasonStateError, Detail: "cannot record the intent, not acting: " + err.Error()}
		e.suppressed(req, d)
		return d
	}
	e.m.stateOK.Set(1)
	actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	res, err := g.prov.Do(actx, req.ID, req.Action, req.Params)
	cancel()
	if err != nil && !wasSent(err) {
		// Nothing went out (the daemon is stopping): take the intent
		// back; the next run decides again.
		if aerr := g.st.Abort(rec, g.root, g.prevCooldown); aerr != nil {
			level.Error(e.logger).Log("msg", "cannot take back an intent that was not sent; its cooldown stands", "id", req.ID, "err", aerr)
		}
		e.release(g)
		d := Decision{Reason: ReasonShutdown, Detail: "not sent: " + err.Error()}
		e.suppressed(req, d)
		return d
	}
	rec.Response, rec.NewID = res.Response, res.NewID
	rec.Result = outcome(err)
	if err != nil {
		rec.Error = err.Error()
	}
	if rec.NewID != "" {
		if lerr := g.st.SetLineage(serverKey(req.Provider, req.Account, rec.NewID), g.root); lerr != nil {
			level.Error(e.logger).Log("msg", "cannot record the replacement's lineage", "id", req.ID, "new_id", rec.NewID, "err", lerr)
		}
	}
	if werr := g.st.Finish(rec, actionKey(req.Provider, req.Account, string(req.Action), req.Rule, rec.Result)); werr != nil {
		level.Error(e.logger).Log("msg", "cannot write the audit record; the intent stays and the cooldown stands", "id", req.ID, "err", werr)
	}
	e.settle(g, rec)
	e.m.actions.WithLabelValues(req.Provider, req.Account, string(req.Action), req.Rule, rec.Result).Inc()
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

// suppressed counts a suppression at once and persists it in the next
// batch; it is logged (and kept in the history) when the reason for that
// server, action and source changed.
func (e *Engine) suppressed(req Request, d Decision) {
	e.mu.Lock()
	if _, ok := e.accounts[req.Account]; ok {
		e.m.suppressed.WithLabelValues(req.Provider, req.Account, string(req.Action), d.Reason).Inc()
		e.unflushed[suppressKey(req.Provider, req.Account, string(req.Action), d.Reason)]++
	}
	if d.Reason == ReasonStateError {
		e.m.stateOK.Set(0) // alerts: the state file stopped taking writes
	}
	key := serverKey(req.Provider, req.Account, req.ID) + "\x01" + string(req.Action) + "\x01" + req.Source
	changed := e.lastReason[key] != d.Reason
	e.lastReason[key] = d.Reason
	if changed {
		e.events = append(e.events, Event{Time: e.now(), Provider: req.Provider, Account: req.Account, ID: req.ID,
			Action: string(req.Action), Source: req.Source, Rule: req.Rule, Reason: d.Reason, Detail: d.Detail})
	}
	e.mu.Unlock()
	lvl := level.Debug
	if changed {
		lvl = level.Info
	}
	lvl(e.logger).Log("msg", "action suppressed", "provider", req.Provider, "account", req.Account, "id", req.ID, "action", req.Action, "source", req.Source, "rule", req.Rule, "reason", d.Reason, "detail", d.Detail)
}

// flusher persists suppression counts and history every few seconds,
// ends the paused gauge of a pause that ran out, and prunes old
// handled-alert marks.
func (e *Engine) flusher() {
	prune := time.Time{}
	e.every(2*time.Second, func() bool {
		e.flush()
		e.mu.Lock()
		e.m.paused.Set(b2f(e.pausedLocked(e.now()) != ""))
		st, cooldown := e.state, time.Duration(e.cfg.Cooldown)
		e.mu.Unlock()
		if st != nil && time.Since(prune) > 10*time.Minute {
			prune = time.Now()
			// A handled alert occurrence older than a day and two
			// cooldowns is not resent by Alertmanager any more.
			if err := st.PruneSeen(e.now().Add(-max(24*time.Hour, 2*cooldown))); err != nil {
				level.Warn(e.logger).Log("msg", "cannot prune handled alerts", "err", err)
			}
		}
		return true
	})
}

// flush writes the unflushed suppressions in one transaction, outside
// the engine's lock (an fsync must not hold up decisions); on failure they
// are kept for the next try.
func (e *Engine) flush() {
	e.mu.Lock()
	st, counts, events := e.state, e.unflushed, e.events
	if st == nil || (len(counts) == 0 && len(events) == 0) {
		e.mu.Unlock()
		return
	}
	e.unflushed, e.events = map[string]uint64{}, nil
	e.mu.Unlock()
	err := st.Flush(counts, events)
	if err == nil {
		return
	}
	level.Error(e.logger).Log("msg", "cannot persist suppression counts; kept for the next try", "err", err)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.m.stateOK.Set(0)
	for k, n := range counts {
		e.unflushed[k] += n
	}
	e.events = append(events, e.events...)
}

// flushLocked is flush for Close and a change of state file, which hold
// the lock and close the file right after.
func (e *Engine) flushLocked() {
	if e.state == nil || (len(e.unflushed) == 0 && len(e.events) == 0) {
		return
	}
	if err := e.state.Flush(e.unflushed, e.events); err != nil {
		level.Error(e.logger).Log("msg", "cannot persist suppression counts", "err", err)
		return
	}
	e.unflushed, e.events = map[string]uint64{}, nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// errNoState is the suppression detail when remediation has no state.
var errNoState = fmt.Errorf("remediation is disabled")
