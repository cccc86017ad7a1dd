package remediation

import (
	"slices"
	"time"

	"github.com/go-kit/log/level"

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
			settleFields(ep, episode.Exhausted, c.ev.Detail, "", now)
			if e.accounts[ep.Account] == ep.Provider {
				e.m.exhausted.WithLabelValues(ep.Provider, ep.Account, ep.ID).Set(1)
			}
		case episode.UnmarkExhausted:
			settleFields(ep, episode.Released, "", c.by, now)
			e.m.exhausted.DeleteLabelValues(ep.Provider, ep.Account, ep.ID)
			t.Episode, ended = nil, ep
		case episode.Close:
			reason := c.ev.Detail
			if c.ev.Kind == episode.WindowEnded || c.ev.Kind == episode.FreshView {
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
// the episode's next step as configured now, and whether max_attempts is
// reached in attempts_window.
func (e *Engine) ladderLocked(t *track, ev episode.Event) episode.Event {
	max, window := attemptsLimit(e.cfg)
	ev.Next = e.nextStepLocked(t.Episode)
	ev.AtMax = t.attemptsSince(e.now().Add(-window)) >= max
	return ev
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
	switch {
	case !accepted:
		return episode.StepRefused
	case rec.Calls[len(rec.Calls)-1].Result == ResultFailed:
		return episode.StepFailed
	}
	return episode.StepAccepted
}
