package remediation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	bolt "go.etcd.io/bbolt"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers"
)

// The closed loop (DESIGN.md "Closed loop"). An episode begins with the
// first live action on a server (its lineage root) and ends recovered or
// exhausted. Each action gets a verdict when its verify window ends:
// rules, on the server re-read after the window (the rule's condition
// does not hold and the server is running: recovered); alerts, on
// Alertmanager's resolved notifications for every alert of the episode
// within webhook.verify. not_recovered asks for the next step of the
// ladder (the action and its escalate list, as configured now, at the
// episode's position) through the whole gate but the episode's own
// cooldown; no next step, or max_attempts reached in attempts_window,
// exhausts the server until its condition has been clear for verify or an
// operator resets it. Dry runs have no episodes: nothing was done to
// verify.

// ReasonExhausted suppresses every request for a server no repair fixed.
const ReasonExhausted = "exhausted"

// Ways an exhausted server is handed back.
const (
	releasedClear = "condition_clear"
	releasedReset = "reset"
)

// ruleLadder is a rule's action and its escalation steps.
func ruleLadder(r *config.Rule) []string { return append([]string{r.Action}, r.Escalate...) }

// alertLadder is an alert-driven action and the steps webhook.escalate
// gives it.
func alertLadder(w config.Webhook, first string) []string {
	return append([]string{first}, w.Escalate[first]...)
}

// ruleVerify is a rule's verify window.
func ruleVerify(r *config.Rule) time.Duration {
	if r.Verify > 0 {
		return time.Duration(r.Verify)
	}
	return config.DefaultVerify
}

// alertVerify is the webhook's verify window.
func alertVerify(w config.Webhook) time.Duration {
	if w.Verify > 0 {
		return time.Duration(w.Verify)
	}
	return 15 * time.Minute
}

// attemptsLimit is max_attempts in attempts_window (defaults for a
// configuration built without validation, as the demo's).
func attemptsLimit(c config.Remediation) (int, time.Duration) {
	n, w := c.MaxAttempts, time.Duration(c.AttemptsWindow)
	if n <= 0 {
		n = 3
	}
	if w <= 0 {
		w = 24 * time.Hour
	}
	return n, w
}

func (e *Engine) ruleByNameLocked(name string) *config.Rule {
	for i := range e.cfg.Rules {
		if e.cfg.Rules[i].Name == name {
			return &e.cfg.Rules[i]
		}
	}
	return nil
}

// trackLocked is root's track, made when absent.
func (e *Engine) trackLocked(root string) *track {
	t := e.tracks[root]
	if t == nil {
		t = &track{Root: root}
		e.tracks[root] = t
	}
	return t
}

// captureLocked records a change of t (and of an episode that ended with
// it) for the state file: the returned write is done without the lock
// (store), or in the audit record's transaction (Finish). Attempts older
// than the window go; a track left with nothing leaves memory.
func (e *Engine) captureLocked(t *track, ended *Episode, counts ...string) *loopWrite {
	_, window := attemptsLimit(e.cfg)
	from := e.now().Add(-window)
	keep := t.Attempts[:0]
	for _, a := range t.Attempts {
		if !a.Before(from) {
			keep = append(keep, a)
		}
	}
	t.Attempts = keep
	e.loopVer++
	t.Version = e.loopVer
	w := &loopWrite{root: t.Root, ver: t.Version, counts: counts}
	for _, ep := range []*Episode{t.Episode, ended} {
		if ep != nil {
			ep.Version = e.loopVer
			w.eps = append(w.eps, ep.clone())
		}
	}
	if t.Episode == nil && len(t.Attempts) == 0 {
		delete(e.tracks, t.Root)
		// A deletion still carries the version, over the stored one.
		w.track = nil
		return w
	}
	c := *t
	if t.Episode != nil {
		c.Episode = t.Episode.clone()
	}
	w.track = mustJSON(&c)
	return w
}

// store writes closed-loop changes to the state file, without the
// engine's lock.
func (e *Engine) store(ws ...*loopWrite) {
	if len(ws) == 0 {
		return
	}
	e.mu.Lock()
	st := e.state
	if st != nil {
		st.hold()
		defer st.unhold()
	}
	e.mu.Unlock()
	if st == nil {
		return
	}
	for _, w := range ws {
		if w == nil {
			continue
		}
		if err := st.PutLoop(w); err != nil {
			level.Error(e.logger).Log("msg", "cannot store the closed loop's record; memory and state file differ until the next change", "err", err)
			e.m.stateOK.Set(0)
		}
	}
}

// recordStepLocked adds an answered live action to its server's episode,
// opening one for the first, and counts it as an attempt.
func (e *Engine) recordStepLocked(g *gate, rec *Record) *loopWrite {
	req := g.req
	t := e.trackLocked(g.root)
	t.Attempts = append(t.Attempts, rec.Time)
	ep := t.Episode
	if ep == nil || ep.Outcome != EpisodeOpen {
		e.epSeq++
		ep = &Episode{Seq: e.epSeq, Provider: req.Provider, Account: req.Account, ID: req.ID, Root: g.root,
			Source: req.Source, Rule: req.Rule, Opened: rec.Time, Outcome: EpisodeOpen}
		t.Episode = ep
	}
	ep.Escalate = ""
	ep.Steps = append(ep.Steps, Step{Seq: rec.Seq, Action: rec.Action, ID: req.ID, Source: req.Source, Rule: req.Rule,
		Time: rec.Time, Finished: e.now(), Outcome: rec.Result, Alert: req.alert})
	if rec.NewID != "" {
		ep.ID = rec.NewID
	}
	ep.mark(req.alert, req.Rule)
	return e.captureLocked(t, nil)
}

// nextStepLocked is the episode's next action: its ladder as configured
// now, at the episode's position, skipping actions its provider lacks;
// "" when the ladder is used up.
func (e *Engine) nextStepLocked(ep *Episode) string {
	var ladder []string
	switch {
	case ep.Source == "rule":
		r := e.ruleByNameLocked(ep.Rule)
		if r == nil {
			return ""
		}
		ladder = ruleLadder(r)
	case len(ep.Steps) > 0:
		ladder = alertLadder(e.cfg.Webhook, ep.Steps[0].Action)
	}
	for i := len(ep.Steps); i < len(ladder); i++ {
		if config.Supports(ep.Provider, ladder[i]) {
			return ladder[i]
		}
	}
	return ""
}

// verdictLocked takes the verdict of the episode's last step. recovered:
// the episode ends; clear is when the condition was first seen clear.
// not_recovered: the next step is due, or the server is exhausted.
func (e *Engine) verdictLocked(t *track, verdict, detail string, clear time.Time) *loopWrite {
	ep, now := t.Episode, e.now()
	last := ep.last()
	last.Verdict, last.VerdictTime, last.Detail = verdict, now, detail
	counts := []string{verifyKey(ep.Provider, ep.Account, last.Action, last.Source, verdict)}
	configured := e.accounts[ep.Account] == ep.Provider
	if configured {
		e.m.verifications.WithLabelValues(ep.Provider, ep.Account, last.Action, last.Source, verdict).Inc()
	}
	logger := e.episodeLogger(ep)
	if verdict == VerdictRecovered {
		if clear.IsZero() || clear.After(now) {
			clear = now
		}
		if clear.Before(last.Finished) {
			clear = last.Finished
		}
		if configured {
			e.m.recovery.WithLabelValues(ep.Provider, ep.Account, last.Action).Observe(clear.Sub(last.Finished).Seconds())
		}
		ep.Outcome, ep.Ended = EpisodeRecovered, now
		t.Episode = nil
		level.Info(logger).Log("msg", "server recovered", "action", last.Action, "steps", len(ep.Steps), "detail", detail)
		return e.captureLocked(t, ep, counts...)
	}
	max, window := attemptsLimit(e.cfg)
	next := e.nextStepLocked(ep)
	switch n := t.attemptsSince(now.Add(-window)); {
	case next == "":
		e.exhaustLocked(t, fmt.Sprintf("the ladder is used up after %d step(s); the last, %s, did not recover it", len(ep.Steps), last.Action))
	case n >= max:
		e.exhaustLocked(t, fmt.Sprintf("max_attempts %d reached: %d actions in %s", max, n, window))
	default:
		ep.Escalate = next
		level.Info(logger).Log("msg", "action did not recover the server; escalating", "action", last.Action, "next", next, "detail", detail)
	}
	return e.captureLocked(t, nil, counts...)
}

// exhaustLocked hands the track's server to a person: every request for
// it is suppressed (exhausted) until its condition has been clear for its
// verify window or an operator resets it.
func (e *Engine) exhaustLocked(t *track, reason string) {
	ep := t.Episode
	ep.Outcome, ep.Ended, ep.Reason, ep.Escalate, ep.ClearSince = EpisodeExhausted, e.now(), reason, "", time.Time{}
	if e.accounts[ep.Account] == ep.Provider {
		e.m.exhausted.WithLabelValues(ep.Provider, ep.Account, ep.ID).Set(1)
	}
	level.Warn(e.episodeLogger(ep)).Log("msg", "remediation exhausted: no repair recovered this server; it needs a person (POST /api/v1/remediation/reset hands it back)", "reason", reason)
}

// exhaustRequestLocked exhausts a server a request asked for after
// max_attempts: its active episode, or a new one without steps.
func (e *Engine) exhaustRequestLocked(t *track, req Request, reason string) *loopWrite {
	if t.Episode == nil {
		e.epSeq++
		t.Episode = &Episode{Seq: e.epSeq, Provider: req.Provider, Account: req.Account, ID: req.ID, Root: t.Root,
			Source: req.Source, Rule: req.Rule, Opened: e.now(), Outcome: EpisodeOpen}
	}
	e.exhaustLocked(t, reason)
	return e.captureLocked(t, nil)
}

// releaseLocked hands an exhausted server back to the loop.
func (e *Engine) releaseLocked(t *track, by string) *loopWrite {
	ep := t.Episode
	ep.Released, ep.ReleasedBy = e.now(), by
	e.m.exhausted.DeleteLabelValues(ep.Provider, ep.Account, ep.ID)
	t.Episode = nil
	level.Info(e.episodeLogger(ep)).Log("msg", "exhausted server handed back to remediation", "by", by)
	return e.captureLocked(t, ep)
}

// endLocked ends an active episode that can neither recover nor exhaust
// (its server left, its rule was removed, an operator reset it).
func (e *Engine) endLocked(t *track, reason string) *loopWrite {
	ep := t.Episode
	if ep.exhausted() {
		ep.Released, ep.ReleasedBy = e.now(), reason
		e.m.exhausted.DeleteLabelValues(ep.Provider, ep.Account, ep.ID)
	} else {
		ep.Outcome, ep.Ended, ep.Reason, ep.Escalate = EpisodeEnded, e.now(), reason, ""
	}
	t.Episode = nil
	level.Info(e.episodeLogger(ep)).Log("msg", "remediation episode ended", "reason", reason)
	return e.captureLocked(t, ep)
}

func (e *Engine) episodeLogger(ep *Episode) log.Logger {
	return log.With(e.logger, "provider", ep.Provider, "account", ep.Account, "id", ep.ID, "episode", ep.Seq, "source", ep.Source, "rule", ep.Rule)
}

// loopRefresh runs the closed loop on a fresh snapshot of one account:
// it ends the episodes of servers that left (roots: the lineage roots of
// the servers present), notes when a verified server's condition clears,
// starts the verdict re-reads whose window ended, releases exhausted
// servers whose condition has been clear for their verify window, and
// returns the escalations due.
func (e *Engine) loopRefresh(snap *collector.Snapshot, roots map[string]bool) []Request {
	prefix := serverKey(snap.Provider, snap.Account, "")
	var ws []*loopWrite
	var due []Request
	e.mu.Lock()
	now := e.now()
	for root, t := range e.tracks {
		ep := t.Episode
		if ep == nil || !strings.HasPrefix(root, prefix) {
			continue
		}
		if !roots[root] {
			ws = append(ws, e.endLocked(t, "the server left its account"))
			continue
		}
		s, found := lookupServer(snap.Servers, ep.ID)
		if ep.Source == "rule" {
			r := e.ruleByNameLocked(ep.Rule)
			if r == nil {
				ws = append(ws, e.endLocked(t, fmt.Sprintf("rule %q is no longer configured", ep.Rule)))
				continue
			}
			clear := found && !conditionHolds(r, s) && s.State == providers.StateRunning
			if ep.exhausted() {
				switch {
				case !clear:
					ep.ClearSince = time.Time{}
				case ep.ClearSince.IsZero():
					ep.ClearSince = now
				case now.Sub(ep.ClearSince) >= ruleVerify(r):
					ws = append(ws, e.releaseLocked(t, releasedClear))
				}
				continue
			}
			if last := ep.last(); last != nil && last.Verdict == "" {
				if snap.LastSuccess.After(last.Finished) {
					switch {
					case !clear:
						last.ClearAt = time.Time{}
					case last.ClearAt.IsZero():
						last.ClearAt = snap.LastSuccess
					}
				}
				if now.Sub(last.Finished) >= ruleVerify(r) && !t.verifying && !e.closing {
					t.verifying = true
					e.wg.Add(1)
					go func(rule config.Rule, seq uint64, id string) {
						defer e.wg.Done()
						e.ruleVerdict(root, seq, snap.Provider, snap.Account, id, &rule)
					}(*r, last.Seq, ep.ID)
				}
			}
		}
		// An escalation already past the reservation is under way: its
		// step is recorded when it finishes.
		if ep.Escalate != "" && found && !e.inFlight[root] {
			req := Request{Provider: snap.Provider, Account: snap.Account, ID: ep.ID, Action: providers.Action(ep.Escalate),
				Source: ep.Source, Rule: ep.Rule, escalation: true}
			if last := ep.last(); last != nil {
				req.Rule, req.alert = last.Rule, last.Alert
			}
			if r := e.ruleByNameLocked(ep.Rule); ep.Source == "rule" && r != nil {
				req.Params = providers.ActionParams{Force: r.Params.Force, CountryCode: r.Params.CountryCode}
				rc := *r
				req.rule = &rc
			}
			due = append(due, req)
		}
	}
	e.mu.Unlock()
	e.store(ws...)
	return due
}

// ruleVerdict re-reads a server whose rule action's verify window ended
// and takes the verdict on the provider's answer: recovered when the
// rule's condition does not hold and the server is running. A read that
// fails leaves the verdict to the next refresh.
func (e *Engine) ruleVerdict(root string, seq uint64, provider, account, id string, r *config.Rule) {
	var srv providers.Server
	var err error
	// The re-read takes the account's turn, and is not sent while the
	// account is down (turn.go).
	release, d := e.takeTurn(e.base, provider, account, e.turnWait())
	if d == nil {
		d = e.accountStale(provider, account)
		if d != nil {
			release()
		}
	}
	switch prov, ok := e.deps.Provider(account); {
	case d != nil:
		err = errors.New(d.Detail)
	case ok && prov.Type() == provider:
		ctx, cancel := context.WithTimeout(e.base, 30*time.Second)
		srv, err = prov.Get(ctx, id)
		cancel()
		release()
	default:
		release()
		err = fmt.Errorf("no %s account named %q", provider, account)
	}
	e.mu.Lock()
	t := e.tracks[root]
	if t == nil {
		e.mu.Unlock()
		return
	}
	t.verifying = false
	ep := t.Episode
	if ep == nil || ep.last() == nil || ep.last().Seq != seq || ep.last().Verdict != "" || ep.exhausted() {
		e.mu.Unlock()
		return // the episode moved on meanwhile (reset, reload, a late read)
	}
	var w *loopWrite
	switch {
	case errors.Is(err, providers.ErrNotFound):
		w = e.endLocked(t, "the provider no longer has the server")
	case err != nil:
		level.Debug(e.episodeLogger(ep)).Log("msg", "cannot re-read the server for its verdict; trying at the next refresh", "err", err)
	case !conditionHolds(r, srv) && srv.State == providers.StateRunning:
		w = e.verdictLocked(t, VerdictRecovered, fmt.Sprintf("re-read after %s: running, rule condition clear", ruleVerify(r)), ep.last().ClearAt)
	default:
		w = e.verdictLocked(t, VerdictNotRecovered, fmt.Sprintf("re-read after %s: state %s (%s), rule condition %s", ruleVerify(r), srv.State, srv.RawStatus, holdsText(conditionHolds(r, srv))), time.Time{})
	}
	e.mu.Unlock()
	e.store(w)
}

func holdsText(holds bool) string {
	if holds {
		return "holds"
	}
	return "clear"
}

// tick takes the alert verdicts whose window ended (no resolved
// notification for every alert of the episode: not_recovered) and
// releases exhausted alert-driven servers whose alerts have all been
// resolved for webhook.verify. The flusher calls it every few seconds.
func (e *Engine) tick() {
	var ws []*loopWrite
	e.mu.Lock()
	now, verify := e.now(), alertVerify(e.cfg.Webhook)
	for _, t := range e.tracks {
		ep := t.Episode
		if ep == nil || ep.Source != "alert" {
			continue
		}
		all, at := ep.allResolved()
		if ep.exhausted() {
			if all && !ep.ClearSince.IsZero() && now.Sub(ep.ClearSince) >= verify {
				ws = append(ws, e.releaseLocked(t, releasedClear))
			}
			continue
		}
		last := ep.last()
		if last == nil || last.Verdict != "" || last.Finished.IsZero() {
			continue
		}
		switch {
		case all:
			ws = append(ws, e.verdictLocked(t, VerdictRecovered, "Alertmanager resolved the alert(s)", at))
		case now.Sub(last.Finished) >= verify:
			ws = append(ws, e.verdictLocked(t, VerdictNotRecovered, fmt.Sprintf("no resolved notification within webhook.verify %s", verify), time.Time{}))
		}
	}
	e.mu.Unlock()
	e.store(ws...)
}

// alertResolved records Alertmanager's resolved notification for an
// alert of a server's episode (any other is only counted): when every
// alert of the episode resolved, the last action is recovered, or an
// exhausted server's condition is clear from now.
func (e *Engine) alertResolved(provider, account, id, fingerprint string, at time.Time) {
	var w *loopWrite
	e.mu.Lock()
	now := e.now()
	if at.IsZero() || at.After(now) {
		at = now
	}
	if e.accounts[account] == provider {
		t := e.tracks[e.rootLocked(serverKey(provider, account, id))]
		if t != nil && t.Episode != nil && t.Episode.resolve(fingerprint, at) {
			ep := t.Episode
			all, last := ep.allResolved()
			step := ep.last()
			switch {
			case all && ep.exhausted():
				if ep.ClearSince.IsZero() {
					ep.ClearSince = now
				}
				w = e.captureLocked(t, nil)
			case all && step != nil && step.Source == "alert" && step.Verdict == "" && !step.Finished.IsZero():
				w = e.verdictLocked(t, VerdictRecovered, "Alertmanager resolved the alert(s)", last)
			default:
				w = e.captureLocked(t, nil)
			}
		}
	}
	e.mu.Unlock()
	e.store(w)
}

// alertFiring notes that an alert fires for a server with an active
// episode: it is one the episode waits for, and an exhausted server's
// condition is not clear.
func (e *Engine) alertFiring(req Request) {
	var w *loopWrite
	e.mu.Lock()
	t := e.tracks[e.rootLocked(serverKey(req.Provider, req.Account, req.ID))]
	if t != nil && t.Episode != nil && req.alert != "" {
		ep := t.Episode
		before := len(ep.Alerts)
		resolved := false
		for _, a := range ep.Alerts {
			if a.Fingerprint == req.alert && !a.Resolved.IsZero() {
				resolved = true
			}
		}
		ep.mark(req.alert, req.Rule)
		if resolved || len(ep.Alerts) != before || !ep.ClearSince.IsZero() {
			ep.ClearSince = time.Time{}
			w = e.captureLocked(t, nil)
		}
	}
	e.mu.Unlock()
	e.store(w)
}

// escalationRefused handles an escalation the gate refused for good: an
// action the provider or the server cannot take (not_allowed, excluded,
// precondition) exhausts the server; a condition that cleared before the
// next step ends the episode recovered (late: no verdict is counted).
// Other reasons (budget, window, pause, stale data...) leave it due.
func (e *Engine) escalationRefused(req Request, d Decision) {
	var w *loopWrite
	e.mu.Lock()
	root := e.rootLocked(serverKey(req.Provider, req.Account, req.ID))
	t := e.tracks[root]
	// Not while another request carries the step out (it was refused
	// for what that one is doing to the server).
	if t != nil && t.Episode != nil && t.Episode.Escalate == string(req.Action) && !e.inFlight[root] {
		switch d.Reason {
		case ReasonNotAllowed, ReasonExcluded, ReasonPrecondition:
			e.exhaustLocked(t, fmt.Sprintf("the next step, %s, cannot be taken: %s", req.Action, d.Detail))
			w = e.captureLocked(t, nil)
		case ReasonConditionCleared:
			ep := t.Episode
			ep.Outcome, ep.Ended, ep.Escalate, ep.Reason = EpisodeRecovered, e.now(), "", "recovered before its next step ("+d.Detail+")"
			t.Episode = nil
			w = e.captureLocked(t, ep)
		}
	}
	e.mu.Unlock()
	e.store(w)
}

// lookupServer finds id in servers ordered as the store orders them.
func lookupServer(list []providers.Server, id string) (providers.Server, bool) {
	if i, ok := serverIndex(list, id); ok {
		return list[i], true
	}
	return providers.Server{}, false
}

// recoverStep returns what loading does for each interrupted action it
// recovers (in the recovery's transaction): a live one becomes a step of
// its server's episode, outcome unknown, verified from now on; it counts
// as an attempt.
func (e *Engine) recoverStep(lineage map[string]string, loop *loopState) func(*bolt.Tx, Record) error {
	return func(tx *bolt.Tx, r Record) error {
		if r.Result == ResultDryRun {
			return nil
		}
		root := serverKey(r.Provider, r.Account, r.ID)
		for i := 0; i < 64; i++ {
			p, ok := lineage[root]
			if !ok || p == root {
				break
			}
			root = p
		}
		t := loop.tracks[root]
		if t == nil {
			t = &track{Root: root}
			loop.tracks[root] = t
		}
		ep := t.Episode
		for _, s := range stepsOf(ep) {
			if s.Seq == r.Seq {
				return nil
			}
		}
		now := e.now()
		t.Attempts = append(t.Attempts, r.Time)
		if ep == nil || ep.Outcome != EpisodeOpen {
			loop.maxSeq++
			ep = &Episode{Seq: loop.maxSeq, Provider: r.Provider, Account: r.Account, ID: r.ID, Root: root,
				Source: r.Source, Rule: r.Rule, Opened: r.Time, Outcome: EpisodeOpen}
			t.Episode = ep
		}
		ep.Escalate = ""
		ep.Steps = append(ep.Steps, Step{Seq: r.Seq, Action: r.Action, ID: r.ID, Source: r.Source, Rule: r.Rule,
			Time: r.Time, Finished: now, Outcome: r.Result, Alert: r.Alert})
		ep.mark(r.Alert, r.Rule)
		loop.maxVer++
		t.Version, ep.Version = loop.maxVer, loop.maxVer
		c := *t
		c.Episode = ep.clone()
		return putLoop(tx, &loopWrite{root: root, ver: t.Version, track: mustJSON(&c), eps: []*Episode{ep.clone()}})
	}
}

func stepsOf(ep *Episode) []Step {
	if ep == nil {
		return nil
	}
	return ep.Steps
}

// applyLoopLocked makes the loaded closed loop the engine's, with the
// exhausted gauge of its configured accounts' servers.
func (e *Engine) applyLoopLocked(l *loopState) {
	e.tracks = l.tracks
	e.epSeq = max(e.epSeq, l.maxSeq)
	e.loopVer = max(e.loopVer, l.maxVer)
	e.m.exhausted.Reset()
	for _, t := range e.tracks {
		if ep := t.Episode; ep != nil && ep.exhausted() && e.accounts[ep.Account] == ep.Provider {
			e.m.exhausted.WithLabelValues(ep.Provider, ep.Account, ep.ID).Set(1)
		}
	}
}

// showExhaustedLocked puts the exhausted servers of accounts added back
// (account -> type) on /metrics again.
func (e *Engine) showExhaustedLocked(only map[string]string) {
	for _, t := range e.tracks {
		if ep := t.Episode; ep != nil && ep.exhausted() && only[ep.Account] == ep.Provider {
			e.m.exhausted.WithLabelValues(ep.Provider, ep.Account, ep.ID).Set(1)
		}
	}
}

// forgetTracksLocked drops from memory the tracks under a key prefix (an
// account that left the configuration); the state file keeps them.
func (e *Engine) forgetTracksLocked(prefix string) {
	for root := range e.tracks {
		if strings.HasPrefix(root, prefix) {
			delete(e.tracks, root)
		}
	}
}

// ExhaustedServer is one server no repair recovered, for the status page.
type ExhaustedServer struct {
	Provider, Account, ID string
	// Since is when it was exhausted; Reason says why.
	Since  time.Time
	Reason string
	// Source and Rule: what asked for its repairs; Actions: the steps
	// tried, oldest first.
	Source, Rule string
	Actions      []string
}

// Exhausted lists the servers remediation has handed to a person, oldest
// first.
func (e *Engine) Exhausted() []ExhaustedServer {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []ExhaustedServer
	for _, t := range e.tracks {
		ep := t.Episode
		if ep == nil || !ep.exhausted() {
			continue
		}
		x := ExhaustedServer{Provider: ep.Provider, Account: ep.Account, ID: ep.ID, Since: ep.Ended, Reason: ep.Reason, Source: ep.Source, Rule: ep.Rule}
		for _, s := range ep.Steps {
			x.Actions = append(x.Actions, s.Action)
		}
		out = append(out, x)
	}
	sortExhausted(out)
	return out
}

// ActionsThisHour is the hourly budget: live actions (and reserved ones)
// in the last hour, and max_actions_per_hour. In dry-run, the dry-run
// namespace's.
func (e *Engine) ActionsThisHour() (used, limit int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.ledgerLocked(e.cfg.DryRun)
	l.prune(e.now())
	return len(l.recent), e.cfg.MaxActionsPerHour
}

func sortExhausted(xs []ExhaustedServer) {
	sort.Slice(xs, func(i, j int) bool {
		if !xs[i].Since.Equal(xs[j].Since) {
			return xs[i].Since.Before(xs[j].Since)
		}
		return serverKey(xs[i].Provider, xs[i].Account, xs[i].ID) < serverKey(xs[j].Provider, xs[j].Account, xs[j].ID)
	})
}

// mustJSON encodes what the package itself built (it cannot fail).
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("remediation: encode %T: %v", v, err))
	}
	return b
}

// ResetResult says what a reset cleared.
type ResetResult struct {
	Provider  string `json:"provider"`
	Account   string `json:"account"`
	ID        string `json:"id"`
	Exhausted bool   `json:"exhausted"` // it was exhausted
	Episode   bool   `json:"episode"`   // an open episode was ended
	Attempts  int    `json:"attempts"`  // attempts forgotten
	Cooldown  bool   `json:"cooldown"`  // a live cooldown was cleared
}

// ErrUnknownAccount is Reset's error for an account that is not
// configured.
var ErrUnknownAccount = errors.New("no such account")

// Reset hands one server back to remediation: its exhaustion (or open
// episode) ends, its attempts and its live cooldown are forgotten, so that
// the next request starts its ladder again. The change is written to the
// state file first (in one transaction) and published after; if the
// server changed meanwhile, it is computed again.
func (e *Engine) Reset(provider, account, id string) (ResetResult, error) {
	e.stateMu.Lock()
	defer e.stateMu.Unlock()
	res := ResetResult{Provider: provider, Account: account, ID: id}
	for try := 0; try < 5; try++ {
		e.mu.Lock()
		st := e.state
		if st == nil {
			e.mu.Unlock()
			return res, fmt.Errorf("remediation has no usable state file: %w", errNoState)
		}
		if e.accounts[account] != provider || id == "" {
			e.mu.Unlock()
			return res, fmt.Errorf("%s account %q, server %q: %w", provider, account, id, ErrUnknownAccount)
		}
		root := e.rootLocked(serverKey(provider, account, id))
		_, res.Cooldown = e.live.cooldown[root]
		t := e.tracks[root]
		var version uint64
		var ended *Episode
		e.loopVer++
		ver := e.loopVer
		if t != nil {
			version = t.Version
			res.Attempts = len(t.Attempts)
			if ep := t.Episode; ep != nil {
				ended = ep.clone()
				ended.Version = ver
				if ep.exhausted() {
					res.Exhausted = true
					ended.Released, ended.ReleasedBy = e.now(), releasedReset
				} else {
					res.Episode = true
					ended.Outcome, ended.Ended, ended.Reason, ended.Escalate = EpisodeEnded, e.now(), "reset by an operator", ""
				}
			}
		}
		e.mu.Unlock()
		w := &loopWrite{root: root, ver: ver}
		if ended != nil {
			w.eps = []*Episode{ended}
		}
		if err := st.ResetServer(root, w); err != nil {
			return res, fmt.Errorf("store the reset: %w", err)
		}
		e.mu.Lock()
		cur := e.tracks[root]
		if (t == nil && cur == nil) || (t != nil && cur == t && t.Version == version) {
			if t != nil {
				if t.Episode != nil && t.Episode.exhausted() {
					e.m.exhausted.DeleteLabelValues(t.Episode.Provider, t.Episode.Account, t.Episode.ID)
				}
				delete(e.tracks, root)
			}
			delete(e.live.cooldown, root)
			delete(e.live.failures, root)
			e.mu.Unlock()
			level.Warn(e.logger).Log("msg", "remediation reset by an operator: the server's exhaustion, attempts and cooldown are cleared",
				"provider", provider, "account", account, "id", id, "was_exhausted", res.Exhausted, "attempts", res.Attempts)
			return res, nil
		}
		e.mu.Unlock() // the server changed meanwhile: again
	}
	return res, errors.New("the server's remediation kept changing; try again")
}
