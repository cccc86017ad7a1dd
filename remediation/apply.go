package remediation

import (
	"fmt"
	"slices"
	"time"

	"github.com/go-kit/log/level"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/remediation/episode"
)

// The engine's side of the episode machine (remediation/episode): every
// change of an episode's state is an event given to episode.Transition,
// and its effects are applied here, in one place: the episode's fields,
// the track's attempts, the metrics, the log line and the journal write.

// stateOf is the machine's state of an episode, from its fields (nil:
// none).
func stateOf(ep *Episode) episode.State {
	switch {
	case ep == nil:
		return episode.None
	case ep.Outcome == EpisodeRecovered:
		return episode.Recovered
	case ep.Outcome == EpisodeEnded:
		return episode.Ended
	case ep.Outcome == EpisodeExhausted && !ep.Released.IsZero():
		return episode.Released
	case ep.Outcome == EpisodeExhausted:
		return episode.Exhausted
	case ep.Escalate != "":
		return episode.EscalationDue
	case !ep.AwaitingView.IsZero() && ep.verifying():
		return episode.AwaitingView
	case ep.verifying():
		return episode.Verifying
	}
	// An open episode with no step to verify and none due: a record of
	// an older version; its next step is the ladder's.
	return episode.EscalationDue
}

// change is one event for a track's episode, with what its effects need.
type change struct {
	ev episode.Event
	// step is AddStep's step.
	step Step
	// open is what Open opens an episode with (the request's server,
	// source and rule).
	open *Request
	// pending are the alerts noted while the request was under way (the
	// episode Open opens takes them).
	pending alertMarks
	// clear is when the condition was first seen clear (a recovered
	// verdict's time to recover).
	clear time.Time
	// by is how an exhausted server is handed back (released_by).
	by string
	// why, when set, is an exhaustion's reason (else the event's
	// detail).
	why string
	// mark, when set, notes the request's alert on the episode before
	// it is journaled.
	mark func(ep *Episode)
}

// applyLocked gives c's event to the machine and applies its effects to
// t. It returns the write to store (nil: the event was refused, or
// changed nothing to write).
func (e *Engine) applyLocked(t *track, c change) *loopWrite {
	ep := t.Episode
	from := stateOf(ep)
	now := e.now()
	to, effects, err := episode.Transition(from, c.ev, now)
	if err != nil {
		var logger = e.logger
		if ep != nil {
			logger = e.episodeLogger(ep)
		}
		level.Debug(logger).Log("msg", "episode event refused", "err", err)
		return nil
	}
	var ended *Episode
	var counts []string
	for _, eff := range effects {
		switch eff.Op {
		case episode.Open:
			r := c.open
			e.epSeq++
			ep = &Episode{Seq: e.epSeq, Provider: r.Provider, Account: r.Account, ID: r.ID, Root: t.Root,
				Source: r.Source, Rule: r.Rule, Opened: now, Outcome: EpisodeOpen, Alerts: c.pending}
			if !c.step.Time.IsZero() {
				ep.Opened = c.step.Time
			}
			t.Episode = ep
		case episode.AddStep:
			ep.Escalate, ep.EscalateSince, ep.AwaitingView = "", time.Time{}, time.Time{}
			ep.Steps = append(ep.Steps, c.step)
			t.metricMisses = 0
		case episode.CountAttempt:
			t.Attempts = append(t.Attempts, c.step.Time)
		case episode.SetVerdict:
			counts = append(counts, e.setVerdictLocked(ep, string(eff.Verdict), c.ev.Detail, c.clear))
		case episode.AwaitView:
			ep.AwaitingView = now
		case episode.RequestStep:
			if c.ev.Kind != episode.LadderChanged || ep.EscalateSince.IsZero() {
				ep.EscalateSince = now
			}
			ep.Escalate = eff.Action
		case episode.MarkExhausted:
			why := c.why
			if why == "" {
				why = c.ev.Detail
			}
			settleFields(ep, episode.Exhausted, why, "", now)
			if e.accounts[ep.Account] == ep.Provider {
				e.m.exhausted.WithLabelValues(ep.Provider, ep.Account, ep.ID).Set(1)
			}
		case episode.UnmarkExhausted:
			settleFields(ep, episode.Released, "", c.by, now)
			e.m.exhausted.DeleteLabelValues(ep.Provider, ep.Account, ep.ID)
			t.Episode, ended = nil, ep
		case episode.Close:
			reason := c.ev.Detail
			if to == episode.Recovered && (c.ev.Kind == episode.WindowEnded || c.ev.Kind == episode.FreshView) {
				reason = "" // the verdict's detail is the step's
			}
			settleFields(ep, to, reason, "", now)
			t.Episode, ended = nil, ep
		case episode.Log:
			l := level.Info(e.episodeLogger(ep))
			if eff.Level == "warn" {
				l = level.Warn(e.episodeLogger(ep))
			}
			kv := []any{"msg", eff.Msg, "event", string(c.ev.Kind)}
			if last := ep.last(); last != nil {
				kv = append(kv, "action", last.Action)
			}
			if ep.Escalate != "" {
				kv = append(kv, "next", ep.Escalate)
			}
			if c.ev.Detail != "" {
				kv = append(kv, "detail", c.ev.Detail)
			}
			l.Log(kv...)
		case episode.Journal:
			if c.mark != nil && ep != nil {
				c.mark(ep)
			}
			if got := stateOf(ep); got != to {
				level.Error(e.episodeLogger(ep)).Log("msg", "the episode's fields disagree with the machine's state", "want", string(to), "got", string(got))
			}
			return e.captureLocked(t, ended, counts...)
		}
	}
	return nil
}

// settleFields sets an episode's fields for the state the machine took
// it to: exhausted (why), released (by), recovered or ended (why, when
// given). Reset uses it on its copy too.
func settleFields(ep *Episode, to episode.State, why, by string, now time.Time) {
	switch to {
	case episode.Exhausted:
		ep.Outcome, ep.Ended, ep.Reason = EpisodeExhausted, now, why
		ep.Escalate, ep.EscalateSince, ep.ClearSince, ep.AwaitingView = "", time.Time{}, time.Time{}, time.Time{}
	case episode.Released:
		ep.Released, ep.ReleasedBy = now, by
	case episode.Recovered, episode.Ended:
		ep.Outcome, ep.Ended = EpisodeEnded, now
		if to == episode.Recovered {
			ep.Outcome = EpisodeRecovered
		}
		ep.Escalate, ep.EscalateSince, ep.AwaitingView = "", time.Time{}, time.Time{}
		if why != "" {
			ep.Reason = why
		}
	}
}

// setVerdictLocked records a verdict on the episode's last step and counts
// it (recovered: the time to recover, from the first sign at clear); it
// returns the durable counter's key.
func (e *Engine) setVerdictLocked(ep *Episode, verdict, detail string, clear time.Time) string {
	now := e.now()
	last := ep.last()
	last.Verdict, last.VerdictTime, last.Detail = verdict, now, detail
	configured := e.accounts[ep.Account] == ep.Provider
	if configured {
		e.m.verifications.WithLabelValues(ep.Provider, ep.Account, last.Action, last.Source, verdict).Inc()
	}
	if verdict == VerdictRecovered && configured {
		if clear.IsZero() || clear.After(now) {
			clear = now
		}
		if clear.Before(last.Finished) {
			clear = last.Finished
		}
		e.m.recovery.WithLabelValues(ep.Provider, ep.Account, last.Action).Observe(clear.Sub(last.Finished).Seconds())
	}
	return verifyKey(ep.Provider, ep.Account, last.Action, last.Source, verdict)
}

// ladderLocked fills a verdict's event with what the machine chooses on:
// the episode's next step as configured now (of ep, the track's episode
// with the step being recorded), and whether max_attempts is reached in
// attempts_window (counting extra attempts not on the track yet). why is
// the exhaustion's reason, should the machine exhaust the server.
func (e *Engine) ladderLocked(t *track, ep *Episode, extra int, ev episode.Event) (_ episode.Event, why string) {
	max, window := attemptsLimit(e.cfg)
	ev.Next = e.nextStepLocked(ep)
	n := t.attemptsSince(e.now().Add(-window)) + extra
	ev.AtMax = n >= max
	switch {
	case ev.Next == "" && len(ep.Steps) > 0:
		why = fmt.Sprintf("the ladder is used up after %d step(s); the last, %s, did not recover it", len(ep.Steps), ep.Steps[len(ep.Steps)-1].Action)
	case ev.AtMax:
		why = fmt.Sprintf("max_attempts %d reached: %d actions in %s", max, n, window)
	}
	return ev, why
}

// stepKind is the machine's event for an answered step: refused (none of
// its calls accepted: nothing to verify), failed (a call was accepted and
// a later one of the same action refused: a power cycle stopped and not
// started; not_recovered at once), or accepted.
func stepKind(rec *Record) episode.Kind {
	if rec.Result != ResultFailed {
		return episode.StepAccepted
	}
	accepted := slices.ContainsFunc(rec.Calls, func(c Call) bool { return c.Result == ResultSuccess })
	if !accepted {
		return episode.StepRefused
	}
	// Part of it was accepted, then it failed: a power cycle whose start
	// was refused, could not be sent, or whose server never read stopped
	// (left off: not_recovered at once).
	return episode.StepFailed
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
	t.InFlightAlerts = nil // written with the step
	ep := t.Episode
	from := stateOf(ep)
	stray := req.escalation && (ep == nil || ep.Seq != req.epSeq || ep.Outcome != EpisodeOpen)
	if !stray && from != episode.None && from != episode.EscalationDue {
		stray = true // the gate lets no step through in another state
	}
	if stray && g.abandoned && (from == episode.None || from == episode.EscalationDue) {
		stray = false // an abandoned step still hands its server to a person
	}
	if stray {
		t.Attempts = append(t.Attempts, rec.Time)
		level.Info(e.logger).Log("msg", "the next step of an episode that ended while it was under way was carried out; it is in the audit log, in no episode",
			"provider", req.Provider, "account", req.Account, "id", req.ID, "action", req.Action, "episode", req.epSeq)
		return e.captureLocked(t, nil)
	}
	kind := stepKind(rec)
	if g.abandoned {
		kind = episode.StepAbandoned // a power cycle whose start is not sent: a person
	}
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
			e.watchStepLocked(t, rec) // a redeploy whose answer was lost
		},
	}
	if kind == episode.StepFailed {
		// Not recovered at once: the ladder after this step.
		c.ev.Detail = "the step failed after the provider accepted part of it: " + rec.Error
		probe := &Episode{Source: req.Source, Rule: req.Rule, Provider: req.Provider}
		if ep != nil {
			probe = ep.clone()
		}
		probe.Steps = append(probe.Steps, c.step)
		c.ev, c.why = e.ladderLocked(t, probe, 1, c.ev)
	}
	return e.applyLocked(t, c)
}

// nextStepLocked is the episode's next action: its ladder as configured
// now, at the episode's position, skipping actions its provider lacks;
// "" when the ladder is used up.
func (e *Engine) nextStepLocked(ep *Episode) string {
	ladder := episode.Ladder(e.configuredLadderLocked(ep))
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
	ev, why := e.ladderLocked(t, t.Episode, 0, ev)
	ws := []*loopWrite{e.applyLocked(t, change{ev: ev, clear: clear, why: why})}
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
