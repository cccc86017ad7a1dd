// Package remediation repairs broken servers: threshold rules evaluated
// after each refresh and Alertmanager webhooks, both through one safety gate
// (enabled, dry-run, allowed actions, fresh data, provider flags, in-flight,
// cooldown, hourly budget, blast radius, a confirming re-read), with durable
// state so that a restart cannot repeat an action.
package remediation

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers"
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
)

// Results of an action.
const (
	ResultSuccess = "success"
	ResultFailed  = "failed"
	ResultDryRun  = "dry_run"
	ResultUnknown = "unknown"
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
	// Acted is true when the action was carried out or dry-run recorded.
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

	mu        sync.Mutex
	cfg       config.Remediation
	staleness time.Duration
	state     *State
	statePath string
	stateErr  error
	inFlight  map[string]bool
	since     map[string]time.Time // rule|server -> condition first seen
}

// NewEngine returns an engine; call Configure before use.
func NewEngine(deps Deps, reg prometheus.Registerer, logger log.Logger, now func() time.Time) *Engine {
	if now == nil {
		now = time.Now
	}
	return &Engine{deps: deps, logger: logger, now: now, m: newMetrics(reg), inFlight: map[string]bool{}, since: map[string]time.Time{}}
}

// Configure applies a (re)loaded configuration. The state file is opened
// when remediation is enabled; if it cannot be, remediation stays off and
// the error is returned (the exporter goes on). The counters that the
// configuration can move are created at zero for its accounts, so that a
// first failure or suppression is an increase that alerts can see.
func (e *Engine) Configure(c config.Remediation, refresh time.Duration, accounts []config.Provider) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cfg = c
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
		_ = e.state.Close()
		e.state = nil
	}
	e.statePath = c.StateFile
	st, err := OpenState(c.StateFile)
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
		level.Error(e.logger).Log("msg", "remediation disabled: its state file is unusable; the exporter goes on", "state_file", c.StateFile, "err", err)
		return err
	}
	e.state, e.stateErr = st, nil
	e.m.stateOK.Set(1)
	return nil
}

// initSeries creates at zero the action and suppression counters that the
// rules and the webhook's allowed actions can move on these accounts.
func (e *Engine) initSeries(c config.Remediation, accounts []config.Provider) {
	results := []string{ResultSuccess, ResultFailed, ResultUnknown}
	if c.DryRun {
		results = append(results, ResultDryRun)
	}
	reasons := []string{ReasonCooldown, ReasonRateLimit, ReasonBlastRadius, ReasonStaleData, ReasonNotAllowed,
		ReasonInFlight, ReasonConditionCleared, ReasonDuplicate, ReasonStateError, ReasonShutdown}
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
				actions[act] = true
			}
		}
		for act := range actions {
			for _, reason := range reasons {
				e.m.suppressed.WithLabelValues(a.Type, a.Name, act, reason)
			}
		}
	}
}

// loadLocked recovers interrupted actions and restores the counters.
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
	e.m.restore(counts)
	return nil
}

// Close closes the state file.
func (e *Engine) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.state != nil {
		_ = e.state.Close()
		e.state = nil
	}
}

// Enabled reports whether remediation is on and has usable state.
func (e *Engine) Enabled() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cfg.Enabled && e.state != nil
}

// Recent returns the newest audit records.
func (e *Engine) Recent(n int) ([]Record, error) {
	e.mu.Lock()
	st, err := e.state, e.stateErr
	e.mu.Unlock()
	if st == nil {
		return nil, err
	}
	return st.Since(time.Time{}, n)
}

// DryRun reports whether the configuration says dry-run.
func (e *Engine) DryRun() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cfg.DryRun
}

// OnRefresh evaluates the rules against a fresh snapshot of one account.
// It is the collector's refresh hook.
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
			if !conditionHolds(rule, s) {
				e.mu.Lock()
				delete(e.since, key)
				e.mu.Unlock()
				continue
			}
			e.mu.Lock()
			first, ok := e.since[key]
			if !ok {
				first = now
				e.since[key] = now
			}
			e.mu.Unlock()
			if now.Sub(first) < time.Duration(rule.For) {
				continue
			}
			e.Submit(ctx, Request{
				Provider: snap.Provider, Account: snap.Account, ID: s.ID,
				Action: providers.Action(rule.Action),
				Params: providers.ActionParams{Force: rule.Params.Force, CountryCode: rule.Params.CountryCode},
				Source: "rule", Rule: rule.Name, rule: rule,
			})
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
}

func ruleMatchesAccount(r *config.Rule, provider, account string) bool {
	return (r.Provider == "" || r.Provider == provider) && (r.Account == "" || r.Account == account)
}

// conditionHolds evaluates a rule's state, status and threshold filters.
func conditionHolds(r *config.Rule, s providers.Server) bool {
	if len(r.State) > 0 && !contains(r.State, string(s.State)) {
		return false
	}
	if len(r.Status) > 0 && !contains(r.Status, s.RawStatus) && !contains(r.Status, s.RawCode) {
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

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Submit takes one request through the gate and, if it passes, acts (or
// records a dry run). It blocks until the decision is made and carried out.
func (e *Engine) Submit(ctx context.Context, req Request) Decision {
	d, rec, prov := e.gate(ctx, req)
	if !d.Acted {
		e.suppressed(req, d)
		return d
	}
	defer e.release(req)
	if d.Result == ResultDryRun {
		return d
	}
	return e.execute(ctx, req, rec, prov)
}

// gate runs the checks. On a pass it marks the server in flight and has
// already written the intent (or the dry-run record).
func (e *Engine) gate(ctx context.Context, req Request) (Decision, *Record, providers.Provider) {
	supp := func(reason, format string, args ...any) (Decision, *Record, providers.Provider) {
		return Decision{Reason: reason, Detail: fmt.Sprintf(format, args...)}, nil, nil
	}
	e.mu.Lock()
	cfg, st := e.cfg, e.state
	e.mu.Unlock()
	if !cfg.Enabled || st == nil {
		return supp(ReasonNotAllowed, "remediation is disabled")
	}
	if req.Source == "alert" && !contains(cfg.Webhook.AllowedActions, string(req.Action)) {
		return supp(ReasonNotAllowed, "action %q is not in remediation.webhook.allowed_actions", req.Action)
	}
	prov, ok := e.deps.Provider(req.Account)
	if !ok || prov.Type() != req.Provider {
		return supp(ReasonNotAllowed, "no %s account named %q", req.Provider, req.Account)
	}
	if !contains(actionNames(prov.Actions()), string(req.Action)) {
		return supp(ReasonNotAllowed, "%s cannot %s", req.Provider, req.Action)
	}
	snap, ok := e.deps.Snapshot(req.Account)
	now := e.now()
	switch {
	case !ok || !snap.Refreshed:
		return supp(ReasonStaleData, "account not refreshed yet")
	case !snap.Up:
		return supp(ReasonStaleData, "the account's last refresh failed: %s", snap.Err)
	case now.Sub(snap.LastSuccess) > e.staleness || snap.LastSuccess.After(now.Add(time.Minute)):
		return supp(ReasonStaleData, "the account's data is from %s", snap.LastSuccess.UTC().Format(time.RFC3339))
	}
	srv, found := findServer(snap.Servers, req.ID)
	if !found {
		return supp(ReasonStaleData, "server %s is not in the account's last refresh", req.ID)
	}
	if f := flagForbids(req, srv); f != "" {
		return supp(ReasonNotAllowed, "%s", f)
	}

	key := serverKey(req.Provider, req.Account, req.ID)
	e.mu.Lock()
	if e.inFlight[key] {
		e.mu.Unlock()
		return supp(ReasonInFlight, "an action on this server is under way")
	}
	e.inFlight[key] = true
	e.mu.Unlock()
	release := func(d Decision) (Decision, *Record, providers.Provider) {
		e.release(req)
		return d, nil, nil
	}

	last, had, err := st.LastAction(req.Provider, req.Account, req.ID)
	if err != nil {
		return release(Decision{Reason: ReasonStateError, Detail: err.Error()})
	}
	if had && now.Sub(last) < time.Duration(cfg.Cooldown) && !last.After(now.Add(time.Minute)) {
		return release(Decision{Reason: ReasonCooldown, Detail: fmt.Sprintf("last action %s ago; cooldown %s", now.Sub(last).Round(time.Second), time.Duration(cfg.Cooldown))})
	}
	if had && last.After(now.Add(time.Minute)) {
		// The clock went back past the last action: hold off until it
		// passes that time again rather than trust either clock.
		return release(Decision{Reason: ReasonCooldown, Detail: "the last action is in the future: the clock went back"})
	}
	recent, err := st.Since(now.Add(-time.Hour), math.MaxInt32)
	if err != nil {
		return release(Decision{Reason: ReasonStateError, Detail: err.Error()})
	}
	if len(recent) >= cfg.MaxActionsPerHour {
		return release(Decision{Reason: ReasonRateLimit, Detail: fmt.Sprintf("%d actions in the last hour; max_actions_per_hour %d", len(recent), cfg.MaxActionsPerHour)})
	}
	touched := map[string]bool{}
	for _, r := range recent {
		if r.Provider == req.Provider && r.Account == req.Account {
			touched[r.ID] = true
		}
	}
	allowed := int(math.Floor(cfg.MaxFleetFraction * float64(len(snap.Servers))))
	if allowed < 1 {
		allowed = 1
	}
	if !touched[req.ID] && len(touched)+1 > allowed {
		return release(Decision{Reason: ReasonBlastRadius, Detail: fmt.Sprintf("%d of %d servers of the account acted on in the last hour; max_fleet_fraction %v allows %d", len(touched), len(snap.Servers), cfg.MaxFleetFraction, allowed)})
	}

	// Confirm with the provider itself that the condition still holds.
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	fresh, err := prov.Get(rctx, req.ID)
	cancel()
	switch {
	case errors.Is(err, providers.ErrNotFound):
		return release(Decision{Reason: ReasonConditionCleared, Detail: "the provider no longer has this server"})
	case err != nil:
		return release(Decision{Reason: ReasonStaleData, Detail: "could not re-read the server: " + err.Error()})
	}
	if reason := stillCalledFor(req, fresh); reason != "" {
		return release(Decision{Reason: ReasonConditionCleared, Detail: reason})
	}
	if f := flagForbids(req, fresh); f != "" {
		return release(Decision{Reason: ReasonNotAllowed, Detail: f})
	}

	rec := &Record{Time: now, Provider: req.Provider, Account: req.Account, ID: req.ID, Action: string(req.Action), Source: req.Source, Rule: req.Rule}
	if cfg.DryRun {
		rec.Result = ResultDryRun
		if err := st.Begin(rec); err == nil {
			err = st.Finish(rec, actionKey(req.Provider, req.Account, string(req.Action), req.Rule, ResultDryRun))
		}
		if err != nil {
			return release(Decision{Reason: ReasonStateError, Detail: err.Error()})
		}
		e.m.stateOK.Set(1)
		e.m.actions.WithLabelValues(req.Provider, req.Account, string(req.Action), req.Rule, ResultDryRun).Inc()
		level.Info(e.logger).Log("msg", "dry run: would act", "provider", req.Provider, "account", req.Account, "id", req.ID, "action", req.Action, "source", req.Source, "rule", req.Rule)
		return Decision{Acted: true, Result: ResultDryRun}, rec, prov
	}
	if err := st.Begin(rec); err != nil {
		return release(Decision{Reason: ReasonStateError, Detail: "cannot record the intent, not acting: " + err.Error()})
	}
	e.m.stateOK.Set(1)
	return Decision{Acted: true}, rec, prov
}

func (e *Engine) release(req Request) {
	e.mu.Lock()
	delete(e.inFlight, serverKey(req.Provider, req.Account, req.ID))
	e.mu.Unlock()
}

// execute calls the provider and records the outcome.
func (e *Engine) execute(ctx context.Context, req Request, rec *Record, prov providers.Provider) Decision {
	actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	res, err := prov.Do(actx, req.ID, req.Action, req.Params)
	cancel()
	rec.Response, rec.NewID = res.Response, res.NewID
	rec.Result = ResultSuccess
	if err != nil {
		rec.Result, rec.Error = ResultFailed, err.Error()
	}
	e.mu.Lock()
	st := e.state
	e.mu.Unlock()
	if st != nil {
		if werr := st.Finish(rec, actionKey(req.Provider, req.Account, string(req.Action), req.Rule, rec.Result)); werr != nil {
			level.Error(e.logger).Log("msg", "cannot write the audit record; the intent stays and the cooldown stands", "id", req.ID, "err", werr)
		}
	}
	e.m.actions.WithLabelValues(req.Provider, req.Account, string(req.Action), req.Rule, rec.Result).Inc()
	logger := log.With(e.logger, "provider", req.Provider, "account", req.Account, "id", req.ID, "action", req.Action, "source", req.Source, "rule", req.Rule)
	if err != nil {
		level.Warn(logger).Log("msg", "action failed", "err", err)
		return Decision{Acted: true, Result: ResultFailed, Detail: err.Error()}
	}
	level.Info(logger).Log("msg", "action carried out", "new_id", rec.NewID, "response", rec.Response)
	return Decision{Acted: true, Result: ResultSuccess}
}

func (e *Engine) suppressed(req Request, d Decision) {
	e.m.suppressed.WithLabelValues(req.Provider, req.Account, string(req.Action), d.Reason).Inc()
	if d.Reason == ReasonStateError {
		e.m.stateOK.Set(0) // alerts: the state file stopped taking writes
	}
	e.mu.Lock()
	st := e.state
	e.mu.Unlock()
	if st != nil {
		if err := st.Count(suppressKey(req.Provider, req.Account, string(req.Action), d.Reason)); err != nil {
			level.Error(e.logger).Log("msg", "cannot persist a suppression count", "err", err)
		}
	}
	lvl := level.Info
	if req.Source == "rule" && (d.Reason == ReasonCooldown || d.Reason == ReasonInFlight) {
		lvl = level.Debug // repeats on every refresh while the cooldown runs
	}
	lvl(e.logger).Log("msg", "action suppressed", "provider", req.Provider, "account", req.Account, "id", req.ID, "action", req.Action, "source", req.Source, "rule", req.Rule, "reason", d.Reason, "detail", d.Detail)
}

func findServer(list []providers.Server, id string) (providers.Server, bool) {
	for _, s := range list {
		if s.ID == id {
			return s, true
		}
	}
	return providers.Server{}, false
}

// flagForbids applies the provider's own guard: VPN.bingo refuses a
// redeploy without force unless can_redeploy is true.
func flagForbids(req Request, s providers.Server) string {
	if req.Action == providers.ActionRedeploy && !req.Params.Force && s.CanRedeploy.OK && s.CanRedeploy.V == 0 {
		return "the provider says this node cannot be redeployed (can_redeploy false) and force is off"
	}
	return ""
}

// stillCalledFor re-checks a request against the provider's fresh answer:
// a rule's own condition, or, for an alert, that the server is not already
// on its way somewhere (rebooting, provisioning, terminating...).
func stillCalledFor(req Request, s providers.Server) string {
	if req.rule != nil {
		if !conditionHolds(req.rule, s) {
			return fmt.Sprintf("the rule's condition no longer holds (state %s, status %q)", s.State, s.RawStatus)
		}
		return ""
	}
	switch s.State {
	case providers.StateRebooting, providers.StateStarting, providers.StateStopping, providers.StateProvisioning,
		providers.StateTerminating, providers.StateTerminated:
		return fmt.Sprintf("the server is already %s", s.State)
	}
	if req.Action == providers.ActionStart && s.State == providers.StateRunning {
		return "the server is already running"
	}
	return ""
}

func actionNames(as []providers.Action) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = string(a)
	}
	return out
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
