// Package episode is the closed loop's episode state machine, written
// down: typed states and events, one pure transition function over a
// table of rows, the ladder as data, and the one verdict rule for rules
// and alerts. It imports nothing of the project and holds no locks, logs,
// metrics or storage: Transition returns effects as data, and the engine
// (package remediation) applies them in one place.
package episode

import (
	"errors"
	"fmt"
	"time"
)

// State is where an episode is in its life.
type State string

// The states of an episode. None is a server with no active episode; the
// first step opens one. Recovered, Released and Ended are final.
const (
	None State = "none"
	// Verifying: the last step's verify window has not ended.
	Verifying State = "verifying"
	// AwaitingView: the window is over, but the exporter has no fresh
	// view of the server yet; the verdict waits for one, bounded by
	// stale_after.
	AwaitingView State = "awaiting_view"
	// EscalationDue: the next step of the ladder (or, after a refusal,
	// the same step again) is due and has not passed the gate yet.
	EscalationDue State = "escalation_due"
	// Recovered: a verdict (or a recovery before the next step) said the
	// server recovered.
	Recovered State = "recovered"
	// Exhausted: no repair recovered the server; it is handed to a
	// person, and no rule or alert acts on it.
	Exhausted State = "exhausted"
	// Released: an exhausted server handed back (its condition clear for
	// its verify window, a reset, the server gone).
	Released State = "released"
	// Ended: neither recovered nor exhausted (the server left, its rule
	// was removed, an exclusion, the webhook turned off, a reset, or a
	// verdict that stayed unknown).
	Ended State = "ended"
)

// States lists every state, in the order of the table.
var States = []State{None, Verifying, AwaitingView, EscalationDue, Recovered, Exhausted, Released, Ended}

// Final reports whether s is a state no event leaves.
func (s State) Final() bool { return s == Recovered || s == Released || s == Ended }

// Active reports whether an episode in s holds its server's track: open,
// or exhausted and not released.
func (s State) Active() bool {
	return s == Verifying || s == AwaitingView || s == EscalationDue || s == Exhausted
}

// Kind is the kind of an event.
type Kind string

// The events of an episode.
const (
	// StepAccepted: the provider answered a step's call (outcome
	// success or unknown): it acted, and the step is verified.
	StepAccepted Kind = "step_accepted"
	// StepRefused: the provider refused the step (none of its calls
	// accepted): nothing to verify; the same step is due again.
	StepRefused Kind = "step_refused"
	// StepFailed: the step acted but failed (a power cycle whose stop
	// was accepted and whose start was refused): not_recovered at once.
	StepFailed Kind = "step_failed"
	// WindowEnded: the verdict of the last step is due (its window
	// ended, or a recovery was proven before), with the verdict.
	WindowEnded Kind = "window_ended"
	// FreshView: a fresh view of the server came while the verdict
	// waited for one, with the verdict it gives.
	FreshView Kind = "fresh_view"
	// ViewTimeout: no fresh view within stale_after: the verdict is
	// unknown.
	ViewTimeout Kind = "view_timeout"
	// LadderChanged: a reload changed the due step (Next) or shortened
	// the ladder below the episode's position (Next "").
	LadderChanged Kind = "ladder_changed"
	// NextStepImpossible: the due step can never pass the gate (the
	// provider lacks the action, a precondition failed past its verify
	// window).
	NextStepImpossible Kind = "next_step_impossible"
	// MaxAttempts: a request reached max_attempts in attempts_window.
	MaxAttempts Kind = "max_attempts"
	// ConditionClear: the condition is clear: before the next step (a
	// late recovery, no verdict counted), or, for an exhausted server,
	// clear for its verify window on fresh data.
	ConditionClear Kind = "condition_clear"
	// Reset: an operator reset the server.
	Reset Kind = "reset"
	// ServerGone: the server left its account.
	ServerGone Kind = "server_gone"
	// RuleRemoved: the episode's rule is no longer configured. It never
	// releases an exhausted server: exhaustion belongs to the server.
	RuleRemoved Kind = "rule_removed"
	// Excluded: an exclusion now covers the server (its next step
	// refused for it).
	Excluded Kind = "excluded"
	// WebhookOff: an alert-driven next step is due with the webhook off.
	WebhookOff Kind = "webhook_off"
	// LineageLost: the step's server cannot be followed (a redeploy whose
	// answer was lost, and whose replacement cannot be told apart in the
	// lists): no verdict can be taken on it, and no fresh ladder may
	// start; a person decides.
	LineageLost Kind = "lineage_lost"
	// StepAbandoned: a step the engine will not finish and must not
	// verify (a power cycle whose start is not sent: resumed after a
	// restart with its server excluded, its account gone or stale, too
	// old, in dry run or paused; or its start could not be journaled):
	// its verdict is unknown and a person decides.
	StepAbandoned Kind = "step_abandoned"
)

// Kinds lists every event kind, in the order of the table.
var Kinds = []Kind{StepAccepted, StepRefused, StepFailed, WindowEnded, FreshView, ViewTimeout, LadderChanged,
	NextStepImpossible, MaxAttempts, ConditionClear, Reset, ServerGone, RuleRemoved, Excluded, WebhookOff, LineageLost, StepAbandoned}

// Event is something that happened to an episode, with what the
// transition needs to choose among its rows.
type Event struct {
	Kind Kind
	// Action is the step's action (step events).
	Action string
	// Verdict is the verdict (WindowEnded, FreshView).
	Verdict Verdict
	// Next is the next step of the ladder as configured now, "" when it
	// is used up (verdicts, StepFailed, LadderChanged).
	Next string
	// AtMax: max_attempts is reached in attempts_window (with this step).
	AtMax bool
	// Detail says why, for the journal and the log line.
	Detail string
}

// Op is what an effect does.
type Op string

// The effects' operations. The engine applies them in the order given,
// then journals the episode (Journal is always the last effect of a
// transition that changes anything).
const (
	// Open opens an episode.
	Open Op = "open"
	// AddStep appends the step of the event (refused or not).
	AddStep Op = "add_step"
	// CountAttempt counts the step as an attempt of the server.
	CountAttempt Op = "count_attempt"
	// SetVerdict records the verdict on the last step and counts it
	// (vps_remediation_verifications_total; recovered: the time to
	// recover too).
	SetVerdict Op = "set_verdict"
	// AwaitView notes that the verdict waits for a fresh view.
	AwaitView Op = "await_view"
	// RequestStep makes Effect.Action the episode's due step.
	RequestStep Op = "request_step"
	// MarkExhausted hands the server to a person: outcome exhausted,
	// vps_remediation_exhausted 1.
	MarkExhausted Op = "mark_exhausted"
	// UnmarkExhausted hands an exhausted server back: released, the
	// gauge's series goes.
	UnmarkExhausted Op = "unmark_exhausted"
	// Close ends the episode with the new state as its outcome.
	Close Op = "close"
	// Log writes the row's log line (Effect.Level, Effect.Msg).
	Log Op = "log"
	// Journal writes the episode (and its track) to the state file.
	Journal Op = "journal"
)

// Effect is one thing the engine does for a transition.
type Effect struct {
	Op Op
	// Action: RequestStep's step; Verdict: SetVerdict's.
	Action  string
	Verdict Verdict
	// Level ("info", "warn") and Msg: Log's line.
	Level, Msg string
}

// ErrRefused is the error of an event the state does not take: the state
// stays, nothing is done.
var ErrRefused = errors.New("event refused in this state")

// Transition is the machine: the row of the table for (from, ev) whose
// guard holds gives the next state and the effects, with the event's
// action and verdict filled in. An event no row takes is refused: the
// state stays, no effects, and an error wrapping ErrRefused. now is the
// time of the event (the machine keeps no clock of its own: it is given
// for the effects' times and for symmetry with the engine's calls).
func Transition(from State, ev Event, now time.Time) (State, []Effect, error) {
	_ = now
	for i := range table {
		r := &table[i]
		if r.From != from || r.On != ev.Kind || !r.Guard.holds(ev) {
			continue
		}
		effects := make([]Effect, 0, len(r.Effects)+2)
		for _, op := range r.Effects {
			eff := Effect{Op: op}
			switch op {
			case RequestStep:
				eff.Action = ev.Next
				if ev.Kind == StepRefused {
					eff.Action = ev.Action // the same step again
				}
			case SetVerdict:
				eff.Verdict = ev.Verdict
				if ev.Kind == StepFailed {
					eff.Verdict = VerdictNotRecovered
				}
				if ev.Kind == ViewTimeout || ev.Kind == StepAbandoned {
					eff.Verdict = VerdictUnknown
				}
			}
			effects = append(effects, eff)
		}
		if r.Msg != "" {
			effects = append(effects, Effect{Op: Log, Level: r.Level, Msg: r.Msg})
		}
		if len(r.Effects) > 0 || r.To != from {
			effects = append(effects, Effect{Op: Journal})
		}
		return r.To, effects, nil
	}
	return from, nil, fmt.Errorf("episode %s, event %s: %w", from, ev.Kind, ErrRefused)
}
