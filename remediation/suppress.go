package remediation

import (
	"slices"
	"strings"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// Suppressions: counted at once, logged once per rule per refresh with
// counts by reason (tally), and flushed to the state file in batches.

// tally is one rule's suppressions on one account since its last line.
type tally struct {
	byReason map[string]int
	changed  int
}

// logTallies writes one line per rule of an account, in rule order.
func (e *Engine) logTallies(provider, account string, tallies map[string]*tally) {
	rules := make([]string, 0, len(tallies))
	for r := range tallies {
		rules = append(rules, r)
	}
	slices.Sort(rules)
	for _, r := range rules {
		tallies[r].log(e.logger, provider, account, r)
	}
}

// backgroundKey is the key of a rule's background suppressions.
func backgroundKey(provider, account, rule string) string {
	return provider + "\x00" + account + "\x00" + rule
}

// takeBackground takes an account's background suppressions, by rule.
func (e *Engine) takeBackground(provider, account string) map[string]*tally {
	out := map[string]*tally{}
	prefix := backgroundKey(provider, account, "")
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, t := range e.background {
		if rule, ok := strings.CutPrefix(k, prefix); ok {
			out[rule] = t
			delete(e.background, k)
		}
	}
	return out
}

// logBackground writes the background suppressions no refresh has
// written yet (at Close: those of the shutdown among them).
func (e *Engine) logBackground() {
	e.mu.Lock()
	pending := e.background
	e.background = map[string]*tally{}
	e.mu.Unlock()
	keys := make([]string, 0, len(pending))
	for k := range pending {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		parts := strings.SplitN(k, "\x00", 3)
		pending[k].log(e.logger, parts[0], parts[1], parts[2])
	}
}

// logSuppressed is the one log line of a suppressed request, at lvl.
func (e *Engine) logSuppressed(lvl func(log.Logger) log.Logger, req Request, d Decision) {
	lvl(e.logger).Log("msg", "action suppressed", "provider", req.Provider, "account", req.Account, "id", req.ID, "action", req.Action,
		"source", req.Source, "rule", req.Rule, "reason", d.Reason, "detail", d.Detail)
}

// suppressed counts a suppression at once and persists it in the next
// batch; it is kept in the history when the reason for that server,
// action and source changed. A rule's (decided in the background: the
// re-read, the final check, the call, shutdown) is logged at debug and
// counted in its rule's next summary line; an alert's is logged at info
// when its reason changed.
func (e *Engine) suppressed(req Request, d Decision) {
	if req.intake != nil && d.Reason != ReasonStateError && isHoldReason(d.Reason) && !d.unlisted {
		return // the webhook holds the alert: counted as a hold (intake_worker.go)
	}
	changed := e.count(req, d)
	if req.Source == "rule" {
		e.logSuppressed(level.Debug, req, d)
		e.mu.Lock()
		k := backgroundKey(req.Provider, req.Account, req.Rule)
		t := e.background[k]
		if t == nil {
			t = &tally{}
			e.background[k] = t
		}
		t.add(d.Reason, changed)
		e.mu.Unlock()
		return
	}
	lvl := level.Debug
	if changed {
		lvl = level.Info
	}
	e.logSuppressed(lvl, req, d)
}

// count counts a suppression and reports whether its reason for that
// server, action and source changed (then it is kept in the history).
// Only the series the configuration made are counted: a request for an
// account or action it does not have creates no series and no memory.
func (e *Engine) count(req Request, d Decision) bool {
	changed := e.countOnly(req, d)
	if req.escalation && !d.dry {
		e.escalationRefused(req, d)
	}
	return changed
}

func (e *Engine) countOnly(req Request, d Decision) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if d.Reason == ReasonStateError {
		e.m.stateOK.Set(0) // alerts: the state file stopped taking writes
	}
	if !e.known[knownKey(req.Provider, req.Account, string(req.Action))] || e.accounts[req.Account] != req.Provider {
		return false
	}
	e.m.suppressed.WithLabelValues(req.Provider, req.Account, string(req.Action), d.Reason).Inc()
	e.unflushed[suppressKey(req.Provider, req.Account, string(req.Action), d.Reason)]++
	if d.unlisted && req.Source != "rule" {
		// An id the account's last list does not have: no memory, no
		// history (rules and escalations only ask for listed servers).
		return false
	}
	key := serverKey(req.Provider, req.Account, req.ID) + "\x01" + string(req.Action) + "\x01" + req.Source
	changed := e.lastReason[key] != d.Reason
	e.lastReason[key] = d.Reason
	if changed && len(e.events) < maxEvents {
		e.events = append(e.events, Event{Time: e.now(), Provider: req.Provider, Account: req.Account, ID: req.ID,
			Action: string(req.Action), Source: req.Source, Rule: req.Rule, Reason: d.Reason, Detail: d.Detail})
	}
	return changed
}

// countAction counts an action's result on /metrics, for a configured
// account and a rule whose series are there (its durable count is written
// with the audit record: a rule removed meanwhile shows it when it comes
// back).
func (e *Engine) countAction(req Request, result string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	rule := ruleLabel(req.Source, req.Rule)
	if e.accounts[req.Account] == req.Provider && (rule == RuleAlertmanager || e.restoredRules[rule]) {
		e.m.actions.WithLabelValues(req.Provider, req.Account, string(req.Action), rule, result).Inc()
	}
}

// flusher persists suppression counts and history every few seconds,
// ends the paused gauge of a pause that ran out, and every ten minutes
// prunes what is older than its retention.
func (e *Engine) flusher() {
	prune := time.Time{}
	e.every(2*time.Second, func() bool {
		e.flush()
		e.tick()
		e.mu.Lock()
		e.m.paused.Set(b2f(e.pausedLocked(e.now()) != ""))
		e.mu.Unlock()
		if time.Since(prune) > 10*time.Minute {
			prune = time.Now()
			if err := e.pruneRetention(); err != nil {
				level.Warn(e.logger).Log("msg", "cannot prune old remediation records", "err", err)
			}
		}
		return true
	})
}

// flush writes the unflushed suppressions to the state file. Only the
// flusher, a reload and Close flush: reads (History, the status page)
// never write.
func (e *Engine) flush() {
	e.stateMu.Lock()
	defer e.stateMu.Unlock()
	e.mu.Lock()
	st := e.state
	e.mu.Unlock()
	if st != nil {
		e.flushTo(st)
	}
}

// flushTo writes the unflushed suppressions to st in one transaction
// (on a store that takes a limited number of writes in one, etcd: in as
// many as it needs, in order), outside the engine's lock (an fsync must
// not hold up decisions); on failure what was not written is kept for the
// next try. The caller holds e.stateMu.
func (e *Engine) flushTo(st *State) {
	e.mu.Lock()
	counts, events := e.unflushed, e.events
	if len(counts) == 0 && len(events) == 0 {
		e.mu.Unlock()
		return
	}
	e.unflushed, e.events = map[string]uint64{}, nil
	e.flushing = events
	e.mu.Unlock()
	var (
		seq     uint64
		err     error
		written bool
	)
	parts := splitFlush(counts, events, st.maxWrites())
	for len(parts) > 0 {
		var s uint64
		if s, err = st.flush(parts[0].counts, parts[0].events); err != nil {
			break
		}
		seq, written, parts = s, true, parts[1:]
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.flushing = nil
	if written && st == e.state {
		e.eventSeq = seq
	}
	if err == nil {
		return
	}
	level.Error(e.logger).Log("msg", "cannot persist suppression counts; kept for the next try", "err", err)
	e.m.stateOK.Set(0)
	var left []Event
	for _, p := range parts {
		for k, n := range p.counts {
			e.unflushed[k] += n
		}
		left = append(left, p.events...)
	}
	e.events = append(left, e.events...)
	if len(e.events) > maxEvents {
		e.events = e.events[len(e.events)-maxEvents:]
	}
}

// flushPart is one transaction of a flush.
type flushPart struct {
	counts map[string]uint64
	events []Event
}

// splitFlush splits a flush into transactions of at most limit writes
// (0: one transaction): a counter is one write, an event two (its put and
// the trim of the oldest once the history is full), and the history's
// sequence one per transaction.
func splitFlush(counts map[string]uint64, events []Event, limit int) []flushPart {
	if limit <= 0 || len(counts)+2*len(events)+1 <= limit {
		return []flushPart{{counts: counts, events: events}}
	}
	var out []flushPart
	cur := flushPart{counts: map[string]uint64{}}
	used := 1
	next := func(cost int) {
		if used+cost > limit {
			out = append(out, cur)
			cur, used = flushPart{counts: map[string]uint64{}}, 1
		}
		used += cost
	}
	for k, n := range counts {
		next(1)
		cur.counts[k] = n
	}
	for _, ev := range events {
		next(2)
		cur.events = append(cur.events, ev)
	}
	return append(out, cur)
}
