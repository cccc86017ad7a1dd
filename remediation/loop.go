package remediation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	bolt "go.etcd.io/bbolt"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/remediation/episode"
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
func ruleLadder(r *config.Rule) []string { return episode.RuleLadder(r.Action, r.Escalate) }

// alertLadder is an alert-driven action and the steps webhook.escalate
// gives it.
func alertLadder(w config.Webhook, first string) []string {
	return episode.AlertLadder(first, w.Escalate)
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
	now := e.now()
	_, window := attemptsLimit(e.cfg)
	from := now.Add(-window)
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
		// A deletion leaves a tombstone with its version, over the
		// stored one and any older change still on its way.
		w.track = tombstoneJSON(t.Root, t.Version, now)
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
	ws = slices.DeleteFunc(ws, func(w *loopWrite) bool { return w == nil })
	if len(ws) == 0 {
		return
	}
	if err := st.PutLoop(ws...); err != nil {
		level.Error(e.logger).Log("msg", "cannot store the closed loop's record; memory and state file differ until the next change", "err", err)
		e.m.stateOK.Set(0)
	}
}

// recordStepLocked adds an answered live action to its server's episode,
// opening one for the first (with the alerts noted while it was under
// way), and counts it as an attempt: the machine's step_accepted,
// step_refused (no verdict: the same step is due again, after its
// cooldown doubled by each refusal) or step_failed (not_recovered at
// once). The next step of an episode that ended while it was under way
// (an operator's reset) is no step: it is in the audit log and counts as
// an attempt, and the server's next request starts its ladder from the
// beginning.
func (e *Engine) recordStepLocked(g *gate, rec *Record) *loopWrite {
	req := g.req
	t := e.trackLocked(g.root)
	pending := e.pendingMarks[g.root]
	delete(e.pendingMarks, g.root)
	ep := t.Episode
	from := stateOf(ep)
	stray := req.escalation && (ep == nil || ep.Seq != req.epSeq || ep.Outcome != EpisodeOpen)
	if !stray && from != episode.None && from != episode.EscalationDue {
		stray = true // the gate lets no step through in another state
	}
	if stray {
		t.Attempts = append(t.Attempts, rec.Time)
		level.Info(e.logger).Log("msg", "the next step of an episode that ended while it was under way was carried out; it is in the audit log, in no episode",
			"provider", req.Provider, "account", req.Account, "id", req.ID, "action", req.Action, "episode", req.epSeq)
		return e.captureLocked(t, nil)
	}
	kind := stepKind(rec)
	c := change{
		ev:      episode.Event{Kind: kind, Action: rec.Action, Detail: rec.Error},
		step:    Step{Seq: rec.Seq, Action: rec.Action, ID: req.ID, Source: req.Source, Rule: req.Rule, Time: rec.Time, Finished: e.now(), Outcome: rec.Result, Refused: kind == episode.StepRefused, Alert: req.alert},
		open:    &req,
		pending: pending,
		mark: func(ep *Episode) {
			if rec.NewID != "" {
				ep.ID = rec.NewID
			}
			ep.marks().mark(req.alert, req.Rule, req.alertStart)
			if at := req.occ.resolvedAt(); !at.IsZero() {
				ep.marks().resolve(req.alert, req.alertStart, at)
			}
		},
	}
	if kind == episode.StepFailed {
		// Not recovered at once: the ladder after this step.
		c.ev.Detail = "the step failed after the provider accepted part of it: " + rec.Error
		max, window := attemptsLimit(e.cfg)
		probe := &Episode{Source: req.Source, Rule: req.Rule, Provider: req.Provider}
		if ep != nil {
			probe = ep.clone()
		}
		probe.Steps = append(probe.Steps, c.step)
		c.ev.Next = e.nextStepLocked(probe)
		c.ev.AtMax = t.attemptsSince(e.now().Add(-window))+1 >= max
	}
	return e.applyLocked(t, c)
}

// nextStepLocked is the episode's next action: its ladder as configured
// now, at the episode's position, skipping actions its provider lacks;
// "" when the ladder is used up.
func (e *Engine) nextStepLocked(ep *Episode) string {
	var ladder episode.Ladder
	switch {
	case ep.Source == "rule":
		r := e.ruleByNameLocked(ep.Rule)
		if r == nil {
			return ""
		}
		ladder = episode.RuleLadder(r.Action, r.Escalate)
	case len(ep.Steps) > 0:
		ladder = episode.AlertLadder(ep.Steps[0].Action, e.cfg.Webhook.Escalate)
	}
	return ladder.Next(ep.position(), func(a string) bool { return config.Supports(ep.Provider, a) })
}

// verdictLocked gives the machine a verdict on the episode's last step:
// window_ended in verifying, fresh_view in awaiting_view (view_timeout for
// unknown), with the ladder's next step and max_attempts; pending at the
// window's end makes the verdict wait for a fresh view. clear is when the
// condition was first seen clear (recovered). An alert-driven next step
// due with the webhook off ends the episode instead.
func (e *Engine) verdictLocked(t *track, verdict episode.Verdict, detail string, clear time.Time) []*loopWrite {
	ev := episode.Event{Kind: episode.WindowEnded, Verdict: verdict, Detail: detail}
	if stateOf(t.Episode) == episode.AwaitingView {
		switch verdict {
		case episode.VerdictPending:
			return nil // still waiting
		case episode.VerdictUnknown:
			ev.Kind = episode.ViewTimeout
		default:
			ev.Kind = episode.FreshView
		}
	}
	ev = e.ladderLocked(t, ev)
	ws := []*loopWrite{e.applyLocked(t, change{ev: ev, clear: clear})}
	if ep := t.Episode; ep != nil && ep.Source == "alert" && !e.cfg.Webhook.Enabled && stateOf(ep) == episode.EscalationDue {
		ws = append(ws, e.endLocked(t, episode.WebhookOff, reasonWebhookOff))
	}
	return ws
}

// exhaustRequestLocked exhausts a server a request asked for after
// max_attempts: its active episode, or a new one without steps. The
// alert that asked is the episode's: its resolution hands the server
// back.
func (e *Engine) exhaustRequestLocked(t *track, req Request, reason string) *loopWrite {
	return e.applyLocked(t, change{ev: episode.Event{Kind: episode.MaxAttempts, Detail: reason}, open: &req,
		mark: func(ep *Episode) { ep.marks().mark(req.alert, req.Rule, req.alertStart) }})
}

// exhaustLocked hands the track's server to a person (kind:
// next_step_impossible, ladder_changed with no step left): every request
// for it is suppressed (exhausted) until its condition has been clear for
// its verify window or an operator resets it.
func (e *Engine) exhaustLocked(t *track, kind episode.Kind, reason string) *loopWrite {
	return e.applyLocked(t, change{ev: episode.Event{Kind: kind, Detail: reason}})
}

// releaseLocked hands an exhausted server back to the loop: its condition
// has been clear for its verify window.
func (e *Engine) releaseLocked(t *track) *loopWrite {
	return e.applyLocked(t, change{ev: episode.Event{Kind: episode.ConditionClear, Detail: releasedClear}, by: releasedClear})
}

// endLocked ends an active episode that can neither recover nor exhaust
// (kind: server_gone, rule_removed, excluded, webhook_off). An exhausted
// server is released only when it is gone: its rule's removal keeps it
// exhausted.
func (e *Engine) endLocked(t *track, kind episode.Kind, reason string) *loopWrite {
	return e.applyLocked(t, change{ev: episode.Event{Kind: kind, Detail: reason}, by: reason})
}

// recoveredEarlyLocked ends an open episode whose server recovered with
// no verdict due (before its next step): recovered, late, no verdict
// counted.
func (e *Engine) recoveredEarlyLocked(t *track, why string) *loopWrite {
	return e.applyLocked(t, change{ev: episode.Event{Kind: episode.ConditionClear, Detail: "recovered before its next step (" + why + ")"}})
}

// reasonWebhookOff ends the alert-driven episodes that would take a next
// step while remediation.webhook.enabled is false.
const reasonWebhookOff = "webhook disabled: remediation.webhook.enabled is false, alert-driven steps are not taken"

// goneAfter is how many successive lists of its account a server must be
// missing from before its episode ends (one list without it is no proof
// it left: a page the provider skipped); the provider's ErrNotFound on a
// re-read ends it at once.
const goneAfter = 3

// episodeVerifyLocked is the verify window of an episode's steps.
func (e *Engine) episodeVerifyLocked(ep *Episode) time.Duration {
	if ep.Source == "alert" {
		return alertVerify(e.cfg.Webhook)
	}
	if r := e.ruleByNameLocked(ep.Rule); r != nil {
		return ruleVerify(r)
	}
	return config.DefaultVerify
}

// clearOn says whether a rule's condition is clear on a server of a list
// (it does not hold and the server runs), and whether the list can say:
// it has the server, and the rule's metric when the rule has one (an
// absent reading is no sign of recovery).
func clearOn(r *config.Rule, s providers.Server, found bool) (clear, known bool) {
	if !found {
		return false, false
	}
	if s.State == providers.StateRunning && r.Metric != "" && !s.Reading(r.Metric).OK {
		return false, false
	}
	return !conditionHolds(r, s) && s.State == providers.StateRunning, true
}

// exhaustedClearLocked says whether an exhausted server's condition is
// clear on a list, and whether the list can say: its rule's (r), or with
// the rule gone (removed or renamed by a reload), every configured rule's
// that covers the server: none holds, and it runs (no rule covers it: the
// list cannot say, and it stays exhausted until a reset).
func (e *Engine) exhaustedClearLocked(ep *Episode, r *config.Rule, s providers.Server, found bool) (clear, known bool) {
	if r != nil {
		return clearOn(r, s, found)
	}
	if !found {
		return false, false
	}
	covered := false
	for i := range e.cfg.Rules {
		o := &e.cfg.Rules[i]
		if !ruleMatchesAccount(o, ep.Provider, ep.Account) {
			continue
		}
		covered = true
		if c, k := clearOn(o, s, found); !k || !c {
			return c, k
		}
	}
	// No rule covers it any more: nothing says its condition cleared;
	// it waits for a person (a reset).
	return covered && s.State == providers.StateRunning, covered
}

func (e *Engine) episodeLogger(ep *Episode) log.Logger {
	return log.With(e.logger, "provider", ep.Provider, "account", ep.Account, "id", ep.ID, "episode", ep.Seq, "source", ep.Source, "rule", ep.Rule)
}

// loopRefresh runs the closed loop on a fresh snapshot of one account:
// it ends the episodes of servers that left (roots: the lineage roots of
// the servers present; missing from goneAfter successive lists), notes
// when a verified server's condition clears, starts the verdict re-reads
// whose window ended, releases exhausted servers whose condition has been
// clear for their verify window, and returns the escalations due, each
// the next step of its ladder as configured now.
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
			t.missing++
			if t.missing >= goneAfter && !e.inFlight[root] {
				ws = append(ws, e.endLocked(t, episode.ServerGone, fmt.Sprintf("the server left its account (missing from %d successive lists)", t.missing)))
			}
			continue
		}
		t.missing = 0
		s, found := lookupServer(snap.Servers, ep.ID)
		if ep.Source == "rule" {
			r := e.ruleByNameLocked(ep.Rule)
			if ep.exhausted() {
				// Exhaustion belongs to the server: a rule removed or
				// renamed by a reload does not release it; with its rule
				// gone, its condition is clear when no configured rule's
				// holds on it.
				clear, known := e.exhaustedClearLocked(ep, r, s, found)
				verify := config.DefaultVerify
				if r != nil {
					verify = ruleVerify(r)
				}
				switch {
				case !known:
					// No reading says either way: the clock neither
					// starts nor stops.
				case !clear:
					ep.ClearSince = time.Time{}
				case ep.ClearSince.IsZero():
					ep.ClearSince = now
				case now.Sub(ep.ClearSince) >= verify:
					ws = append(ws, e.releaseLocked(t))
				}
				continue
			}
			if r == nil {
				if !e.inFlight[root] {
					ws = append(ws, e.endLocked(t, episode.RuleRemoved, fmt.Sprintf("rule %q is no longer configured", ep.Rule)))
				}
				continue
			}
			clear, known := clearOn(r, s, found)
			if ep.verifying() {
				last := ep.last()
				if snap.LastSuccess.After(last.Finished) && known {
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
		if ep.exhausted() || ep.Escalate == "" || e.inFlight[root] {
			continue
		}
		if w, ended := e.endWithoutStepLocked(t); ended {
			ws = append(ws, w)
			continue
		}
		if ep.EscalateSince.IsZero() {
			ep.EscalateSince = now // a record from an older version
		}
		if w, due := e.followLadderLocked(t); w != nil {
			ws = append(ws, w)
			if !due {
				continue
			}
		}
		if !found {
			continue
		}
		req := Request{Provider: snap.Provider, Account: snap.Account, ID: ep.ID, Action: providers.Action(ep.Escalate),
			Source: ep.Source, Rule: ep.Rule, escalation: true, epSeq: ep.Seq}
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
	e.mu.Unlock()
	e.store(ws...)
	return due
}

// followLadderLocked points the episode's due step at the ladder as
// configured now (a reload may have shortened or changed it since the
// verdict): the machine's ladder_changed, exhausted when it has no step
// left. w: the change to write (nil: none); due: a step is still due.
func (e *Engine) followLadderLocked(t *track) (w *loopWrite, due bool) {
	ep := t.Episode
	next := e.nextStepLocked(ep)
	if next == ep.Escalate {
		return nil, true
	}
	return e.applyLocked(t, change{ev: episode.Event{Kind: episode.LadderChanged, Next: next,
		Detail: fmt.Sprintf("the ladder, as reloaded, has no step after %d", ep.position())}}), next != ""
}

// endWithoutStepLocked ends an episode whose next step is due but no
// longer called for: its rule was removed; every alert of an alert-driven
// one resolved (recovered before its next step), or the webhook was
// turned off. The caller checked that no request of the server is under
// way.
func (e *Engine) endWithoutStepLocked(t *track) (*loopWrite, bool) {
	ep := t.Episode
	if ep.Escalate == "" || ep.exhausted() {
		return nil, false
	}
	if ep.Source == "rule" {
		if e.ruleByNameLocked(ep.Rule) == nil {
			return e.endLocked(t, episode.RuleRemoved, fmt.Sprintf("rule %q is no longer configured", ep.Rule)), true
		}
		return nil, false
	}
	if e.alertsClearLocked(ep) {
		return e.recoveredEarlyLocked(t, "Alertmanager resolved the alert(s), and the server reads running"), true
	}
	if !e.cfg.Webhook.Enabled {
		return e.endLocked(t, episode.WebhookOff, reasonWebhookOff), true
	}
	return nil, false
}

// ruleVerdict re-reads a server whose rule action's verify window ended
// and takes the verdict (episode.Judge) on the provider's answer, the
// exporter's fresh view: recovered when the server is running, its
// account refreshed within stale_after and the rule's condition does not
// hold. A read that fails is no view: the verdict waits for the next
// refresh, at most stale_after after the window (then unknown: tick); so
// does a running server whose answer lacks the rule's metric (no reading
// is no recovery), at most maxMetricMisses times or until twice the
// verify window has passed: then not_recovered.
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
	if ep == nil || ep.last() == nil || ep.last().Seq != seq || !ep.verifying() || ep.exhausted() {
		e.mu.Unlock()
		return // the episode moved on meanwhile (reset, reload, a late read)
	}
	var ws []*loopWrite
	now, last := e.now(), ep.last()
	absent := err == nil && srv.State == providers.StateRunning && r.Metric != "" && !srv.Reading(r.Metric).OK
	if absent {
		t.metricMisses++
	}
	in := episode.Inputs{Source: episode.FromRule, Now: now, Finished: last.Finished, Window: ruleVerify(r), StaleAfter: e.staleAfter}
	detail := ""
	switch {
	case errors.Is(err, providers.ErrNotFound):
		ws = append(ws, e.endLocked(t, episode.ServerGone, "the provider no longer has the server"))
		e.mu.Unlock()
		e.store(ws...)
		return
	case err != nil:
		level.Debug(e.episodeLogger(ep)).Log("msg", "cannot re-read the server for its verdict; trying at the next refresh", "err", err)
	default:
		in.View = episode.View{At: now, AccountRefreshed: e.accountRefreshedLocked(provider, account), Listed: true, State: string(srv.State)}
		switch {
		case absent && t.metricMisses < maxMetricMisses && now.Sub(last.Finished) < 2*ruleVerify(r):
			in.Condition = episode.CondUnread
			level.Debug(e.episodeLogger(ep)).Log("msg", "the re-read lacks the rule's metric; its verdict waits for the next refresh", "metric", r.Metric, "misses", t.metricMisses)
		case absent:
			in.Condition = episode.CondHolds
			detail = fmt.Sprintf("%d re-read(s) up to %s after the action lacked the rule's metric %s: no sign of recovery",
				t.metricMisses, now.Sub(last.Finished).Round(time.Second), r.Metric)
		case conditionHolds(r, srv):
			in.Condition = episode.CondHolds
		default:
			in.Condition = episode.CondClear
		}
	}
	v, why := episode.Judge(in)
	switch {
	case v == episode.VerdictPending && err == nil && in.Condition == episode.CondUnread:
		// The metric's reading may come with the next refresh.
	case detail != "" && v == episode.VerdictNotRecovered:
		ws = e.verdictLocked(t, v, detail, time.Time{})
	case v == episode.VerdictRecovered:
		ws = e.verdictLocked(t, v, fmt.Sprintf("re-read after %s: %s", ruleVerify(r), why), last.ClearAt)
	case v == episode.VerdictNotRecovered:
		ws = e.verdictLocked(t, v, fmt.Sprintf("re-read after %s: state %s (%s), rule condition %s", ruleVerify(r), srv.State, srv.RawStatus, holdsText(conditionHolds(r, srv))), time.Time{})
	default:
		ws = e.verdictLocked(t, v, why, time.Time{})
	}
	e.mu.Unlock()
	e.store(ws...)
}

// maxMetricMisses bounds the verdict re-reads of a step that may lack the
// rule's metric before its verdict is not_recovered.
const maxMetricMisses = 3

func holdsText(holds bool) string {
	if holds {
		return "holds"
	}
	return "clear"
}

// tick takes the alert verdicts that are due (episode.Judge on the
// resolved notifications and the exporter's own view: not_recovered only
// after webhook.resolve_grace past the window), ends the alert-driven
// episodes whose next step is no longer called for, releases exhausted
// alert-driven servers whose alerts have all been resolved for
// webhook.verify on a fresh view, and makes unknown the verdicts (rules
// too) that waited stale_after for a fresh view. The flusher calls it
// every few seconds. Only the configured accounts' servers are ticked.
func (e *Engine) tick() {
	e.mu.Lock()
	accounts := make([]string, 0, len(e.accounts))
	for a := range e.accounts {
		accounts = append(accounts, a)
	}
	e.mu.Unlock()
	snaps := e.snapshots(accounts)
	var ws []*loopWrite
	e.mu.Lock()
	now, verify := e.now(), alertVerify(e.cfg.Webhook)
	for root, t := range e.tracks {
		ep := t.Episode
		if ep == nil || e.accounts[ep.Account] != ep.Provider {
			continue
		}
		if ep.Source != "alert" {
			ws = append(ws, e.ruleTimeoutLocked(t, now)...)
			continue
		}
		view := viewOf(snaps[ep.Account], ep.ID)
		if ep.exhausted() {
			if e.alertsClearOn(ep, view) && !ep.ClearSince.IsZero() && now.Sub(ep.ClearSince) >= verify {
				ws = append(ws, e.releaseLocked(t))
			}
			continue
		}
		if !e.inFlight[root] {
			if w, ended := e.endWithoutStepLocked(t); ended {
				ws = append(ws, w)
				continue
			}
		}
		ws = append(ws, e.alertVerdictLocked(t, view)...)
	}
	e.mu.Unlock()
	e.store(ws...)
}

// ruleTimeoutLocked makes unknown the verdict of a rule's step that had
// no fresh view stale_after past its window (no re-read could be made:
// the account down, the server not read); it never escalates.
func (e *Engine) ruleTimeoutLocked(t *track, now time.Time) []*loopWrite {
	ep := t.Episode
	if t.verifying || !ep.verifying() || ep.last().Finished.IsZero() {
		return nil
	}
	in := episode.Inputs{Source: episode.FromRule, Now: now, Finished: ep.last().Finished, Window: e.episodeVerifyLocked(ep), StaleAfter: e.staleAfter}
	if v, why := episode.Judge(in); v == episode.VerdictUnknown {
		return e.verdictLocked(t, v, why, time.Time{})
	}
	return nil
}

// alertVerdictLocked takes the verdict of an alert-driven episode's last
// step on its alerts and view, if one is due: recovered as soon as every
// alert resolved with endsAt inside the window and the view agrees;
// otherwise none before the grace after the window.
func (e *Engine) alertVerdictLocked(t *track, view episode.View) []*loopWrite {
	ep := t.Episode
	last := ep.last()
	if !ep.verifying() || last.Finished.IsZero() {
		return nil
	}
	all, at := ep.allResolved()
	in := episode.Inputs{Source: episode.FromAlert, Now: e.now(), Finished: last.Finished, Window: alertVerify(e.cfg.Webhook),
		Grace: resolveGrace(e.cfg.Webhook), StaleAfter: e.staleAfter, View: view, Resolved: all, EndsAt: at}
	v, why := episode.Judge(in)
	if v == episode.VerdictPending && in.Now.Before(last.Finished.Add(in.Window+in.Grace)) {
		return nil
	}
	return e.verdictLocked(t, v, why, at)
}

// alertsClearOn reports whether an alert-driven episode's condition is
// clear: every alert resolved, and the exporter's fresh view has the
// server running.
func (e *Engine) alertsClearOn(ep *Episode, v episode.View) bool {
	all, _ := ep.allResolved()
	return all && v.Listed && v.State == string(providers.StateRunning) && !v.AccountRefreshed.IsZero() &&
		e.now().Sub(v.AccountRefreshed) <= e.staleAfter
}

// alertsClearLocked is alertsClearOn on the account's snapshot now (the
// collector's store is memory: no call).
func (e *Engine) alertsClearLocked(ep *Episode) bool {
	snap, ok := e.deps.Snapshot(ep.Account)
	if !ok {
		return false
	}
	return e.alertsClearOn(ep, viewOf(&snap, ep.ID))
}

// snapshots are the accounts' snapshots, read without the engine's lock.
func (e *Engine) snapshots(accounts []string) map[string]*collector.Snapshot {
	out := make(map[string]*collector.Snapshot, len(accounts))
	for _, a := range accounts {
		if s, ok := e.deps.Snapshot(a); ok {
			out[a] = &s
		}
	}
	return out
}

// viewOf is the exporter's own view of server id in its account's
// snapshot (nil: none): as of the last successful list; the account's
// refresh counts only while it is up.
func viewOf(snap *collector.Snapshot, id string) episode.View {
	if snap == nil || !snap.Refreshed || snap.LastSuccess.IsZero() {
		return episode.View{}
	}
	v := episode.View{At: snap.LastSuccess}
	if snap.Up {
		v.AccountRefreshed = snap.LastSuccess
	}
	if s, found := lookupServer(snap.Servers, id); found {
		v.Listed, v.State = true, string(s.State)
	}
	return v
}

// accountRefreshedLocked is the account's last successful list while it
// is up (zero: down, or never listed).
func (e *Engine) accountRefreshedLocked(provider, account string) time.Time {
	h, ok := e.health[account]
	if !ok || h.provider != provider || !h.up {
		return time.Time{}
	}
	return h.lastSuccess
}

// resolveGrace is webhook.resolve_grace: how long after an alert's verify
// window a resolved notification may still arrive (Alertmanager sends it
// at the group's next flush).
func resolveGrace(w config.Webhook) time.Duration {
	if w.ResolveGrace > 0 {
		return time.Duration(w.ResolveGrace)
	}
	return config.DefaultResolveGrace
}

// alertResolved records Alertmanager's resolved notification of an
// occurrence of an alert (startsAt) for a server: on its active episode
// if the episode knows the alert, or on the pending marks of a request of
// the server under way (its episode takes them). When every alert of an
// episode resolved, its last step's verdict is taken (recovered when the
// exporter's view agrees), an exhausted server's condition is clear from
// now, and a next step due is no longer called for. Any other
// notification is only counted. It returns the change to store (the
// caller batches a payload's in one transaction).
func (e *Engine) alertResolved(provider, account, id, fingerprint string, startsAt, at time.Time) *loopWrite {
	var snap *collector.Snapshot
	if s, ok := e.deps.Snapshot(account); ok {
		snap = &s
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	if at.IsZero() || at.After(now) {
		at = now
	}
	if e.accounts[account] != provider {
		return nil
	}
	root := e.rootLocked(serverKey(provider, account, id))
	t := e.tracks[root]
	if t == nil || t.Episode == nil {
		if pm, ok := e.pendingMarks[root]; ok {
			pm.resolve(fingerprint, startsAt, at)
			e.pendingMarks[root] = pm
		}
		return nil
	}
	ep := t.Episode
	if !ep.marks().resolve(fingerprint, startsAt, at) {
		return nil
	}
	all, _ := ep.allResolved()
	switch {
	case all && ep.exhausted():
		if ep.ClearSince.IsZero() {
			ep.ClearSince = now
		}
	case all && ep.Source == "alert" && ep.verifying() && !ep.last().Finished.IsZero():
		if w := mergeWrites(e.alertVerdictLocked(t, viewOf(snap, ep.ID))); w != nil {
			return w
		}
	case all && !e.inFlight[root]:
		if w, ended := e.endWithoutStepLocked(t); ended {
			return w
		}
	}
	return e.captureLocked(t, nil)
}

// mergeWrites is one track's successive changes as one write: the newest
// track, every episode at its newest version, every counter.
func mergeWrites(ws []*loopWrite) *loopWrite {
	var out *loopWrite
	for _, w := range ws {
		if w == nil {
			continue
		}
		if out == nil {
			c := *w
			out = &c
			continue
		}
		counts := append(append([]string(nil), out.counts...), w.counts...)
		eps := append([]*Episode(nil), out.eps...)
		for _, ep := range w.eps {
			if i := slices.IndexFunc(eps, func(x *Episode) bool { return x.Seq == ep.Seq }); i >= 0 {
				eps[i] = ep
			} else {
				eps = append(eps, ep)
			}
		}
		c := *w
		c.counts, c.eps = counts, eps
		out = &c
	}
	return out
}

// alertFiring notes that an occurrence of an alert fires for a server
// (before its request goes through the gate): an alert its active episode
// waits for (an exhausted server's condition is not clear), or one the
// episode a request under way opens will.
func (e *Engine) alertFiring(req Request) {
	if req.alert == "" {
		return
	}
	var w *loopWrite
	e.mu.Lock()
	root := e.rootLocked(serverKey(req.Provider, req.Account, req.ID))
	t := e.tracks[root]
	switch {
	case t != nil && t.Episode != nil:
		if t.Episode.marks().mark(req.alert, req.Rule, req.alertStart) {
			t.Episode.ClearSince = time.Time{}
			w = e.captureLocked(t, nil)
		}
	default:
		if pm, ok := e.pendingMarks[root]; ok {
			pm.mark(req.alert, req.Rule, req.alertStart)
			e.pendingMarks[root] = pm
		}
	}
	e.mu.Unlock()
	e.store(w)
}

// escalationRefused handles an episode's next step that the gate did not
// let through. The step is first checked against the ladder as configured
// now (a reload may have changed or removed it: the new one is due, or
// the server is exhausted) and, for alerts, against the webhook (off:
// the episode ends) and the alerts (all resolved: recovered). Then by
// reason: an action the provider lacks exhausts the server; an exclusion
// ends the episode; a precondition that keeps failing past the step's
// verify window exhausts it; a condition that cleared ends it recovered
// (late: no verdict is counted). Other reasons (budget, window, pause,
// stale data, dry-run switched on, a transient not_allowed...) leave it
// due. A dry-run decision never gets here: dry runs read the live
// episodes, never change them.
func (e *Engine) escalationRefused(req Request, d Decision) {
	var w *loopWrite
	e.mu.Lock()
	defer func() { e.mu.Unlock(); e.store(w) }()
	root := e.rootLocked(serverKey(req.Provider, req.Account, req.ID))
	t := e.tracks[root]
	// Not while another request carries the step out (it was refused
	// for what that one is doing to the server).
	if t == nil || t.Episode == nil || t.Episode.Seq != req.epSeq || t.Episode.Escalate == "" || t.Episode.exhausted() || e.inFlight[root] {
		return
	}
	ep := t.Episode
	if ww, ended := e.endWithoutStepLocked(t); ended {
		w = ww
		return
	}
	if ww, _ := e.followLadderLocked(t); ww != nil {
		w = ww
		return
	}
	if ep.Escalate != string(req.Action) {
		return
	}
	switch {
	case d.Reason == ReasonNotAllowed && d.permanent:
		w = e.exhaustLocked(t, episode.NextStepImpossible, fmt.Sprintf("the next step, %s, cannot be taken: %s", req.Action, d.Detail))
	case d.Reason == ReasonExcluded:
		w = e.endLocked(t, episode.Excluded, "excluded: "+d.Detail)
	case d.Reason == ReasonPrecondition:
		if verify := e.episodeVerifyLocked(ep); !ep.EscalateSince.IsZero() && e.now().Sub(ep.EscalateSince) >= verify {
			w = e.exhaustLocked(t, episode.NextStepImpossible, fmt.Sprintf("the next step, %s, could not be taken for %s (its verify window): %s", req.Action, e.now().Sub(ep.EscalateSince).Round(time.Second), d.Detail))
		}
	case d.Reason == ReasonConditionCleared:
		w = e.recoveredEarlyLocked(t, d.Detail)
	}
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
		ep.Escalate, ep.EscalateSince = "", time.Time{}
		ep.Steps = append(ep.Steps, Step{Seq: r.Seq, Action: r.Action, ID: r.ID, Source: r.Source, Rule: r.Rule,
			Time: r.Time, Finished: now, Outcome: r.Result, Alert: r.Alert})
		ep.marks().mark(r.Alert, r.Rule, r.AlertStartsAt)
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
// account that left the configuration); the state file keeps them, and
// gives them back if the account comes back (adoptTracksLocked).
func (e *Engine) forgetTracksLocked(prefix string) {
	for root := range e.tracks {
		if strings.HasPrefix(root, prefix) {
			delete(e.tracks, root)
		}
	}
}

// adoptTracksLocked takes back the tracks of accounts added back by a
// reload, as the state file has them; a track in memory that is newer
// (changed while its account was away: an action under way then) stays.
func (e *Engine) adoptTracksLocked(l *loopState) {
	for root, t := range l.tracks {
		if cur := e.tracks[root]; cur == nil || cur.Version < t.Version {
			e.tracks[root] = t
		}
	}
	e.loopVer = max(e.loopVer, l.maxVer)
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
		if ep == nil || !ep.exhausted() || e.accounts[ep.Account] != ep.Provider {
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
// episode) ends, its attempts, its live cooldown and the alert
// occurrences handled for it are forgotten, so that the next request (a
// still-firing alert's resend too) starts its ladder again; a next step
// under way meanwhile is recorded in no episode. The change is written to the
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
				res.Exhausted, res.Episode = ep.exhausted(), !ep.exhausted()
				// The machine's reset, on the copy the file gets first.
				if to, _, err := episode.Transition(stateOf(ended), episode.Event{Kind: episode.Reset}, e.now()); err == nil {
					settleFields(ended, to, "reset by an operator", releasedReset, e.now())
				}
			}
		}
		now := e.now()
		e.mu.Unlock()
		// The tombstone holds the reset's version over any older change
		// still on its way to the file.
		w := &loopWrite{root: root, ver: ver, track: tombstoneJSON(root, ver, now)}
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
