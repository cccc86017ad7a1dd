package remediation

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-kit/log/level"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/remediation/episode"
)

// The rules' side of the closed loop: at each fresh snapshot of an
// account, the episodes of its servers are moved on (loopRefresh), a
// rule's verdict is taken on its re-read (ruleVerdict), and a due next
// step the gate refused is judged (escalationRefused).

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
				// No reading says either way (!known): the clock
				// neither starts nor stops.
				if clearClock(ep, clear, known, now, verify) {
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
	e.storeLinks(links)
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
	release, d := e.enterTurn(e.base, provider, account, e.turnWait())
	switch prov, ok := e.deps.Provider(account); {
	case d != nil:
		err = errors.New(d.Detail)
	case ok && prov.Type() == provider:
		srv, err = reRead(e.base, prov, id)
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
		case absent && t.metricMisses < maxMetricMisses && now.Sub(last.Finished) < metricBound(ruleVerify(r)):
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

// metricBound is how long after a step's answer the verdict waits for a
// re-read with the rule's metric (twice its verify window): the one bound
// of ruleVerdict and of the tick's timeout (ruleTimeoutLocked).
func metricBound(verify time.Duration) time.Duration { return 2 * verify }

// maxMetricMisses bounds the verdict re-reads of a step that may lack the
// rule's metric before its verdict is not_recovered.
const maxMetricMisses = 3

func holdsText(holds bool) string {
	if holds {
		return "holds"
	}
	return "clear"
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
