// Package remediation repairs broken servers: threshold rules evaluated
// after each refresh and Alertmanager webhooks, both through one safety
// gate, with durable state so that a restart cannot repeat an action.
//
// The gate is an ordered chain of small named checks (gate.go). A request
// passes the checks on the inventory first; then, under one lock, the
// checks that count (in flight, the server's episode, cooldown, hourly
// budget, blast radius) and the reservation of its place in them, so that
// concurrent requests see each other's pending intents; then the provider
// re-reads the server and the checks run again on its answer; last,
// immediately before the call, enabled, dry-run and pause are read again.
// Every live action is then verified and escalated or exhausted: the
// closed loop (loop.go).
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
	// ReasonNotSent: the call provably never left (a refused dial, a
	// wait for the account's rate limit or a 429 pause longer than the
	// action's deadline) while the exporter runs; nothing was done.
	ReasonNotSent = "not_sent"
	// ReasonExhausted is in loop.go.
)

// reasons lists every suppression reason (the counters start at zero).
var reasons = []string{ReasonCooldown, ReasonRateLimit, ReasonBlastRadius, ReasonStaleData, ReasonNotAllowed,
	ReasonInFlight, ReasonConditionCleared, ReasonDuplicate, ReasonStateError, ReasonShutdown,
	ReasonExcluded, ReasonPaused, ReasonOutsideWindow, ReasonPrecondition, ReasonExhausted, ReasonNotSent, ReasonHoldExpired}

// RuleAlertmanager is the rule label of the actions alerts ask for: an
// alert's name is a caller's string, so it is kept in the audit record
// and the episode only, never in a label or a durable counter's key.
const RuleAlertmanager = config.ReservedRuleName

// ruleLabel is the rule label an action of source and rule counts under.
func ruleLabel(source, rule string) string {
	if source == "alert" {
		return RuleAlertmanager
	}
	return rule
}

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
	// Source is "rule" or "alert"; Rule is the rule's or alert's name
	// (an alert's counts under RuleAlertmanager).
	Source, Rule string
	// rule is set for rule requests, to re-check the condition.
	rule *config.Rule
	// escalation marks the next step of an episode's ladder (of episode
	// epSeq), which its own cooldown does not hold back; alert is the
	// fingerprint of the alert that asked, alertStart its occurrence's
	// startsAt, occ the webhook's note of its resolution while it is
	// handled.
	escalation bool
	epSeq      uint64
	alert      string
	alertStart time.Time
	occ        *occurrence
	// intake is the webhook journal's entry of the alert (intake.go):
	// it ends in the transaction that records the action.
	intake *intakeEntry
}

// Decision is what the gate decided.
type Decision struct {
	// Acted is true when the action was sent or dry-run recorded.
	Acted  bool
	Result string // for Acted
	Reason string // for a suppression
	Detail string
	// unlisted: the server is not in the account's last list (or the
	// account has none): an alert's suppression is counted only, never
	// kept in memory or the history under its id.
	unlisted bool
	// dry: decided in the dry-run namespace (it never changes a live
	// episode); permanent: a not_allowed that no reload of remediation's
	// settings lifts (the provider lacks the action).
	dry, permanent bool
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
	// reload cancels, but the engine's own, cancelled by Shutdown.
	base   context.Context
	cancel context.CancelFunc
	// A power cycle waits at most cycleWait for the server to read
	// stopped, re-reading it every cyclePoll (set once, before use).
	cycleWait, cyclePoll time.Duration
	// reserved, set by tests before use, runs after a request got its
	// reservation, the engine's lock released.
	reserved func()
	// maxTurnWait, set by tests before use, bounds a request's wait for
	// its account's turn (0: the freshness bound, 2 refresh intervals +
	// 30 s).
	maxTurnWait time.Duration

	// stateMu: see lifecycle.go. Never taken while mu is held.
	stateMu sync.Mutex

	mu        sync.Mutex
	cfg       config.Remediation
	accounts  map[string]string // configured account -> provider type
	staleness time.Duration
	// staleAfter is global.stale_after: how long a verdict waits for a
	// fresh view of its server.
	staleAfter time.Duration
	state      *State
	statePath  string
	stateErr   error
	retrying   bool // waiting for another process's lock on the state file
	closing    bool // Shutdown was called: nothing new starts
	// known holds provider\x00account\x00action for the pairs the
	// configuration gives series; nothing else is counted.
	known map[string]bool
	// restored holds the accounts whose durable counter totals are on
	// /metrics (account -> type); counts is the file's totals while they
	// are being restored.
	restored map[string]string
	// restoredRules holds the rule names whose durable action totals
	// are on /metrics (RuleAlertmanager's always are, per account).
	restoredRules map[string]bool
	counts        map[string]uint64
	since         map[string]time.Time
	live, dry     ledger
	lineage       map[string]string // replacement server key -> root server key
	lineageV      int               // bumped when lineage changes
	// fleets caches each account's fleet size for the blast radius, per
	// list refresh: computing it is O(servers), under the lock.
	fleets   map[string]fleetSize
	inFlight map[string]bool // root keys with a request past the reservation
	pause    *Pause
	// Suppressions are counted at once in memory and persisted in
	// batches; one is logged at info (and kept in the history) when the
	// reason for that server and action changed.
	lastReason map[string]string
	unflushed  map[string]uint64
	events     []Event
	// flushing holds the events a flush is writing; eventSeq is the
	// state file's suppression history sequence after the last flush
	// (History tells from it which of them the file has).
	flushing []Event
	eventSeq uint64
	// The closed loop (loop.go): each lineage root's attempts and active
	// episode, and the last episode number given. pendingMarks holds,
	// for each root with a live request past its reservation and no
	// active episode, the alerts noted (and resolved) meanwhile: the
	// episode the request opens takes them. Bounded by the roots in
	// flight.
	pendingMarks map[string]alertMarks
	tracks       map[string]*track
	epSeq        uint64
	loopVer      uint64 // versions of the closed loop's writes, increasing
	// turns holds each account's turn (provider \x00 account): one
	// remediation request talks to an account at a time (turn.go).
	turns map[string]chan struct{}
	// health is each account's latest list refresh, as OnRefresh saw it:
	// the final check reads it without copying the account's servers.
	health map[string]accountHealth
	// webBasicAuth tells whether the web configuration asks for basic
	// auth now, so that every request reaching the controls was
	// authenticated (nil: it never does).
	webBasicAuth func() bool
	// webBasicAtLoad: the configuration in force was loaded with that
	// basic auth as its remediation credential.
	webBasicAtLoad bool
	// webBasicGone: that basic auth has left the web configuration (as
	// the last request found it; logged when it changes).
	webBasicGone bool
	// configured: Configure has run. A state file unusable at the first
	// run is the start's: the exporter does not start (it exits), so the
	// engine's line says it cannot start, not that remediation is off.
	configured bool
	// demoToken is --demo's fixed, public token (SetDemoToken): a 401
	// states it. Empty outside the demo.
	demoToken string
	// role and leaderURL are this replica's part in remediation.ha and
	// the leader's advertise URL (role.go).
	role      Role
	leaderURL string
	// background holds the suppressions of rule requests decided away
	// from a refresh (the re-read, the final check, the call, shutdown)
	// until their rule's next summary line: provider \x00 account \x00
	// rule -> counts.
	background map[string]*tally
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
		fleets: map[string]fleetSize{}, known: map[string]bool{}, restored: map[string]string{}, restoredRules: map[string]bool{}, tracks: map[string]*track{}, pendingMarks: map[string]alertMarks{},
		turns: map[string]chan struct{}{}, health: map[string]accountHealth{}, background: map[string]*tally{},
		cycleWait: powerCycleWait, cyclePoll: powerCyclePoll}
	e.base, e.cancel = context.WithCancel(context.Background())
	go e.flusher()
	return e
}

// OnRefresh evaluates the rules against a fresh snapshot of one account
// (ctx is the poller's; the actions run under the engine's own context).
// It is the collector's refresh hook. It never waits on a provider: a
// request that passes the checks on the inventory and gets its place in
// the budget is carried out in the background. A refresh whose context
// ended (SIGTERM, a reload replacing the poller) or an engine shutting
// down starts nothing. Suppressions are logged as one line per rule with
// counts by reason, those decided in the background since the rule's last
// line included (info when a server's reason changed, else debug; each
// server's at debug).
func (e *Engine) OnRefresh(ctx context.Context, snap collector.Snapshot) {
	if ctx.Err() != nil {
		return
	}
	e.mu.Lock()
	cfg, closing := e.cfg, e.closing
	// A standby (remediation.ha, not the leader) evaluates no rule: the
	// leader does, and a standby's suppressions would be noise in the
	// fleet's history once it leads.
	standby := e.role == RoleStandby || e.role == RoleUnavailable
	e.health[snap.Account] = healthOf(snap)
	if !snap.Up {
		// A failed refresh says nothing about the servers: no rule
		// fires on stale data, and the `for:` clocks of the account
		// start again with its next good refresh, as a Prometheus
		// alert's pending state restarts when its data is absent (two
		// observations an outage apart are not a condition that held).
		e.resetClocksLocked(snap.Provider, snap.Account)
	}
	e.mu.Unlock()
	if closing {
		return // Close writes the rules' last lines
	}
	tallies := e.takeBackground(snap.Provider, snap.Account)
	if !cfg.Enabled || !snap.Up || standby {
		e.logTallies(snap.Provider, snap.Account, tallies)
		return
	}
	ruleTally := func(name string) *tally {
		t := tallies[name]
		if t == nil {
			t = &tally{}
			tallies[name] = t
		}
		return t
	}
	now := e.now()
	present, roots := e.presence(snap)
	// The closed loop first: verdicts, releases, and the next steps due,
	// which the rules below do not ask for again.
	escalated := map[string]bool{}
	stopped := false
	for _, req := range e.loopRefresh(&snap, roots) {
		s, _ := lookupServer(snap.Servers, req.ID)
		escalated[req.ID] = true
		var t *tally
		if req.Source == "rule" {
			t = ruleTally(req.Rule)
		}
		if !e.startRule(ctx, req, &snap, &s, t) {
			stopped = true
			break
		}
	}
	for i := 0; i < len(cfg.Rules) && !stopped; i++ {
		rule := &cfg.Rules[i]
		if !ruleMatchesAccount(rule, snap.Provider, snap.Account) {
			continue
		}
		t := ruleTally(rule.Name)
		for _, s := range snap.Servers {
			if escalated[s.ID] {
				continue
			}
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
			if !e.startRule(ctx, req, &snap, &s, t) {
				stopped = true
				break
			}
		}
	}
	e.logTallies(snap.Provider, snap.Account, tallies)
	if !stopped {
		e.forgetGone(snap, present, roots, now)
	}
}

// resetClocksLocked forgets the `for:` clocks of an account's servers.
func (e *Engine) resetClocksLocked(provider, account string) {
	prefix := serverKey(provider, account, "")
	for k := range e.since {
		if _, srv, _ := strings.Cut(k, "\x00"); strings.HasPrefix(srv, prefix) {
			delete(e.since, k)
		}
	}
}

// startRule takes a rule's request (or an episode's next step) through
// the checks on the inventory and the reservation and, if it passes,
// carries it out in the background. A suppression counts in t (nil: it is
// logged on its own). It returns false when nothing more may start
// (shutting down).
func (e *Engine) startRule(ctx context.Context, req Request, snap *collector.Snapshot, s *providers.Server, t *tally) bool {
	if ctx.Err() != nil {
		return false
	}
	g, d := e.admit(req, snap, s, true)
	if d != nil && t == nil {
		e.suppressed(req, *d)
		return d.Reason != ReasonShutdown
	}
	if d != nil {
		t.add(d.Reason, e.count(req, *d))
		e.logSuppressed(level.Debug, req, *d)
		return d.Reason != ReasonShutdown
	}
	// admit added it to e.wg under the lock that Shutdown sets closing
	// under, with the reservation: Close's Wait sees it.
	go func() {
		defer e.wg.Done()
		e.carryOut(e.base, g)
	}()
	return true
}

func (t *tally) add(reason string, changed bool) {
	if t.byReason == nil {
		t.byReason = map[string]int{}
	}
	t.byReason[reason]++
	if changed {
		t.changed++
	}
}

// log writes the rule's one line: info when a server's reason changed
// since its last suppression, else debug.
func (t *tally) log(logger log.Logger, provider, account, rule string) {
	if len(t.byReason) == 0 {
		return
	}
	names := make([]string, 0, len(t.byReason))
	total := 0
	for r, n := range t.byReason {
		names = append(names, fmt.Sprintf("%s=%d", r, n))
		total += n
	}
	slices.Sort(names)
	lvl := level.Debug
	if t.changed > 0 {
		lvl = level.Info
	}
	lvl(logger).Log("msg", "rule's actions suppressed", "provider", provider, "account", account, "rule", rule,
		"servers", total, "changed", t.changed, "reasons", strings.Join(names, " "))
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

// isClosing reports whether Shutdown was called.
func (e *Engine) isClosing() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closing
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// errNoState is the suppression detail when remediation has no state.
var errNoState = fmt.Errorf("remediation is disabled")
