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
// way), and counts it as an attempt. A step the provider refused gets no
// verdict: the same step is due again, after its cooldown (doubled by
// each refusal). The next step of an episode that ended while it was
// under way (an operator's reset) is no step: it is in the audit log and
// counts as an attempt, and the server's next request starts its ladder
// from the beginning.
func (e *Engine) recordStepLocked(g *gate, rec *Record) *loopWrite {
	req := g.req
	t := e.trackLocked(g.root)
	pending := e.pendingMarks[g.root]
	delete(e.pendingMarks, g.root)
	t.Attempts = append(t.Attempts, rec.Time)
	ep := t.Episode
	if req.escalation && (ep == nil || ep.Seq != req.epSeq || ep.Outcome != EpisodeOpen) {
		level.Info(e.logger).Log("msg", "the next step of an episode that ended while it was under way was carried out; it is in the audit log, in no episode",
			"provider", req.Provider, "account", req.Account, "id", req.ID, "action", req.Action, "episode", req.epSeq)
		return e.captureLocked(t, nil)
	}
	if ep == nil || ep.Outcome != EpisodeOpen {
		e.epSeq++
		ep = &Episode{Seq: e.epSeq, Provider: req.Provider, Account: req.Account, ID: req.ID, Root: g.root,
			Source: req.Source, Rule: req.Rule, Opened: rec.Time, Outcome: EpisodeOpen, Alerts: pending}
		t.Episode = ep
	}
	now := e.now()
	refused := rec.Result == ResultFailed && !slices.ContainsFunc(rec.Calls, func(c Call) bool { return c.Result == ResultSuccess })
	ep.Escalate, ep.EscalateSince = "", time.Time{}
	ep.Steps = append(ep.Steps, Step{Seq: rec.Seq, Action: rec.Action, ID: req.ID, Source: req.Source, Rule: req.Rule,
		Time: rec.Time, Finished: now, Outcome: rec.Result, Refused: refused, Alert: req.alert})
	if rec.NewID != "" {
		ep.ID = rec.NewID
	}
	e.watchStepLocked(t, rec) // a redeploy whose answer was lost
	ep.marks().mark(req.alert, req.Rule, req.alertStart)
	if at := req.occ.resolvedAt(); !at.IsZero() {
		ep.marks().resolve(req.alert, req.alertStart, at)
	}
	t.metricMisses = 0
	if refused {
		ep.Escalate, ep.EscalateSince = rec.Action, now
		level.Info(e.episodeLogger(ep)).Log("msg", "the provider refused the action: no verdict; the same step is due again after its cooldown", "action", rec.Action, "err", rec.Error)
	}
	if w := e.failedCycleLocked(t, rec); w != nil {
		return w // issue 22 fault 1: a failed power cycle is not_recovered at once
	}
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
	for i := ep.position(); i < len(ladder); i++ {
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
	case ep.Source == "alert" && !e.cfg.Webhook.Enabled:
		// Alert-driven steps are not taken with the webhook off.
		ep.Outcome, ep.Ended, ep.Reason = EpisodeEnded, now, reasonWebhookOff
		t.Episode = nil
		level.Info(logger).Log("msg", "remediation episode ended", "reason", reasonWebhookOff, "action", last.Action, "detail", detail)
		return e.captureLocked(t, ep, counts...)
	case next == "":
		e.exhaustLocked(t, fmt.Sprintf("the ladder is used up after %d step(s); the last, %s, did not recover it", len(ep.Steps), last.Action))
	case n >= max:
		e.exhaustLocked(t, fmt.Sprintf("max_attempts %d reached: %d actions in %s", max, n, window))
	default:
		ep.Escalate, ep.EscalateSince = next, now
		level.Info(logger).Log("msg", "action did not recover the server; escalating", "action", last.Action, "next", next, "detail", detail)
	}
	return e.captureLocked(t, nil, counts...)
}

// exhaustLocked hands the track's server to a person: every request for
// it is suppressed (exhausted) until its condition has been clear for its
// verify window or an operator resets it.
func (e *Engine) exhaustLocked(t *track, reason string) {
	ep := t.Episode
	ep.Outcome, ep.Ended, ep.Reason, ep.Escalate, ep.EscalateSince, ep.ClearSince = EpisodeExhausted, e.now(), reason, "", time.Time{}, time.Time{}
	if e.accounts[ep.Account] == ep.Provider {
		e.m.exhausted.WithLabelValues(ep.Provider, ep.Account, ep.ID).Set(1)
	}
	level.Warn(e.episodeLogger(ep)).Log("msg", "remediation exhausted: no repair recovered this server; it needs a person (POST /api/v1/remediation/reset hands it back)", "reason", reason)
}

// exhaustRequestLocked exhausts a server a request asked for after
// max_attempts: its active episode, or a new one without steps. The
// alert that asked is the episode's: its resolution hands the server
// back.
func (e *Engine) exhaustRequestLocked(t *track, req Request, reason string) *loopWrite {
	if t.Episode == nil {
		e.epSeq++
		t.Episode = &Episode{Seq: e.epSeq, Provider: req.Provider, Account: req.Account, ID: req.ID, Root: t.Root,
			Source: req.Source, Rule: req.Rule, Opened: e.now(), Outcome: EpisodeOpen}
	}
	t.Episode.marks().mark(req.alert, req.Rule, req.alertStart)
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
		ep.Outcome, ep.Ended, ep.Reason, ep.Escalate, ep.EscalateSince = EpisodeEnded, e.now(), reason, "", time.Time{}
	}
	t.Episode = nil
	level.Info(e.episodeLogger(ep)).Log("msg", "remediation episode ended", "reason", reason)
	return e.captureLocked(t, ep)
}

// recoveredEarlyLocked ends an open episode whose server recovered with
// no verdict due (before its next step): recovered, late, no verdict
// counted.
func (e *Engine) recoveredEarlyLocked(t *track, why string) *loopWrite {
	ep := t.Episode
	ep.Outcome, ep.Ended, ep.Escalate, ep.EscalateSince, ep.Reason = EpisodeRecovered, e.now(), "", time.Time{}, "recovered before its next step ("+why+")"
	t.Episode = nil
	level.Info(e.episodeLogger(ep)).Log("msg", "server recovered before its next step", "detail", why)
	return e.captureLocked(t, ep)
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
	var links []string
	e.mu.Lock()
	now := e.now()
	for root, t := range e.tracks {
		ep := t.Episode
		if ep == nil || !strings.HasPrefix(root, prefix) {
			continue
		}
		if t.Watch != nil {
			// A lost redeploy's replacement first (lineage_watch.go).
			w, l, watching := e.watchLocked(t, snap)
			ws, links = append(ws, w), append(links, l...)
			if watching {
				continue
			}
		}
		if !roots[root] {
			t.missing++
			if t.missing >= goneAfter && !e.inFlight[root] {
				ws = append(ws, e.endLocked(t, fmt.Sprintf("the server left its account (missing from %d successive lists)", t.missing)))
			}
			continue
		}
		t.missing = 0
		s, found := lookupServer(snap.Servers, ep.ID)
		if ep.Source == "rule" {
			r := e.ruleByNameLocked(ep.Rule)
			if r == nil {
				if !e.inFlight[root] {
					ws = append(ws, e.endLocked(t, fmt.Sprintf("rule %q is no longer configured", ep.Rule)))
				}
				continue
			}
			clear, known := clearOn(r, s, found)
			if ep.exhausted() {
				switch {
				case !known:
					// No reading says either way: the clock neither
					// starts nor stops.
				case !clear:
					ep.ClearSince = time.Time{}
				case ep.ClearSince.IsZero():
					ep.ClearSince = now
				case now.Sub(ep.ClearSince) >= ruleVerify(r):
					ws = append(ws, e.releaseLocked(t, releasedClear))
				}
				continue
			}
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
		if changed, due := e.followLadderLocked(t); changed {
			ws = append(ws, e.captureLocked(t, nil))
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
	e.storeLinks(links)
	e.store(ws...)
	return due
}

// followLadderLocked points the episode's due step at the ladder as
// configured now (a reload may have shortened or changed it since the
// verdict): exhausted when it has no step left. changed: the episode
// changed (to be written); due: a step is still due.
func (e *Engine) followLadderLocked(t *track) (changed, due bool) {
	ep := t.Episode
	next := e.nextStepLocked(ep)
	if next == ep.Escalate {
		return false, true
	}
	if next == "" {
		e.exhaustLocked(t, fmt.Sprintf("the ladder, as reloaded, has no step after %d", ep.position()))
		return true, false
	}
	ep.Escalate = next
	return true, true
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
			return e.endLocked(t, fmt.Sprintf("rule %q is no longer configured", ep.Rule)), true
		}
		return nil, false
	}
	if all, _ := ep.allResolved(); all {
		return e.recoveredEarlyLocked(t, "Alertmanager resolved the alert(s)"), true
	}
	if !e.cfg.Webhook.Enabled {
		return e.endLocked(t, reasonWebhookOff), true
	}
	return nil, false
}

// ruleVerdict re-reads a server whose rule action's verify window ended
// and takes the verdict on the provider's answer: recovered when the
// rule's condition does not hold and the server is running. A read that
// fails leaves the verdict to the next refresh; so does a running server
// whose answer lacks the rule's metric (no reading is no recovery), at
// most maxMetricMisses times or until twice the verify window has passed:
// then not_recovered.
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
	var w *loopWrite
	absent := err == nil && srv.State == providers.StateRunning && r.Metric != "" && !srv.Reading(r.Metric).OK
	if absent {
		t.metricMisses++
	}
	switch {
	case errors.Is(err, providers.ErrNotFound):
		w = e.endLocked(t, "the provider no longer has the server")
	case err != nil:
		level.Debug(e.episodeLogger(ep)).Log("msg", "cannot re-read the server for its verdict; trying at the next refresh", "err", err)
	case absent && t.metricMisses < maxMetricMisses && e.now().Sub(ep.last().Finished) < 2*ruleVerify(r):
		level.Debug(e.episodeLogger(ep)).Log("msg", "the re-read lacks the rule's metric; its verdict waits for the next refresh", "metric", r.Metric, "misses", t.metricMisses)
	case absent:
		w = e.verdictLocked(t, VerdictNotRecovered, fmt.Sprintf("%d re-read(s) up to %s after the action lacked the rule's metric %s: no sign of recovery",
			t.metricMisses, e.now().Sub(ep.last().Finished).Round(time.Second), r.Metric), time.Time{})
	case !conditionHolds(r, srv) && srv.State == providers.StateRunning:
		w = e.verdictLocked(t, VerdictRecovered, fmt.Sprintf("re-read after %s: running, rule condition clear", ruleVerify(r)), ep.last().ClearAt)
	default:
		w = e.verdictLocked(t, VerdictNotRecovered, fmt.Sprintf("re-read after %s: state %s (%s), rule condition %s", ruleVerify(r), srv.State, srv.RawStatus, holdsText(conditionHolds(r, srv))), time.Time{})
	}
	e.mu.Unlock()
	e.store(w)
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

// tick takes the alert verdicts whose window ended (no resolved
// notification for every alert of the episode: not_recovered), ends the
// alert-driven episodes whose next step is no longer called for, and
// releases exhausted alert-driven servers whose alerts have all been
// resolved for webhook.verify. The flusher calls it every few seconds.
// Only the configured accounts' servers are ticked.
func (e *Engine) tick() {
	var ws []*loopWrite
	e.mu.Lock()
	now, verify := e.now(), alertVerify(e.cfg.Webhook)
	for root, t := range e.tracks {
		ep := t.Episode
		if ep == nil || ep.Source != "alert" || e.accounts[ep.Account] != ep.Provider || t.watching() {
			continue
		}
		all, at := ep.allResolved()
		if ep.exhausted() {
			if all && !ep.ClearSince.IsZero() && now.Sub(ep.ClearSince) >= verify {
				ws = append(ws, e.releaseLocked(t, releasedClear))
			}
			continue
		}
		if !e.inFlight[root] {
			if w, ended := e.endWithoutStepLocked(t); ended {
				ws = append(ws, w)
				continue
			}
		}
		last := ep.last()
		if !ep.verifying() || last.Finished.IsZero() {
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

// alertResolved records Alertmanager's resolved notification of an
// occurrence of an alert (startsAt) for a server: on its active episode
// if the episode knows the alert, or on the pending marks of a request of
// the server under way (its episode takes them). When every alert of an
// episode resolved, its last step is recovered, an exhausted server's
// condition is clear from now, and a next step due is no longer called
// for. Any other notification is only counted. It returns the change to
// store (the caller batches a payload's in one transaction).
func (e *Engine) alertResolved(provider, account, id, fingerprint string, startsAt, at time.Time) *loopWrite {
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
	all, last := ep.allResolved()
	switch {
	case all && ep.exhausted():
		if ep.ClearSince.IsZero() {
			ep.ClearSince = now
		}
	case all && ep.Source == "alert" && ep.verifying() && !ep.last().Finished.IsZero():
		return e.verdictLocked(t, VerdictRecovered, "Alertmanager resolved the alert(s)", last)
	case all && !e.inFlight[root]:
		if w, ended := e.endWithoutStepLocked(t); ended {
			return w
		}
	}
	return e.captureLocked(t, nil)
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
	if changed, _ := e.followLadderLocked(t); changed {
		w = e.captureLocked(t, nil)
		return
	}
	if ep.Escalate != string(req.Action) {
		return
	}
	switch {
	case d.Reason == ReasonNotAllowed && d.permanent:
		e.exhaustLocked(t, fmt.Sprintf("the next step, %s, cannot be taken: %s", req.Action, d.Detail))
		w = e.captureLocked(t, nil)
	case d.Reason == ReasonExcluded:
		w = e.endLocked(t, "excluded: "+d.Detail)
	case d.Reason == ReasonPrecondition:
		if verify := e.episodeVerifyLocked(ep); !ep.EscalateSince.IsZero() && e.now().Sub(ep.EscalateSince) >= verify {
			e.exhaustLocked(t, fmt.Sprintf("the next step, %s, could not be taken for %s (its verify window): %s", req.Action, e.now().Sub(ep.EscalateSince).Round(time.Second), d.Detail))
			w = e.captureLocked(t, nil)
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
		watchRecovered(t, r)
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
