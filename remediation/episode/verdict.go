package episode

import (
	"fmt"
	"time"
)

// Verdict is what a step did to its server.
type Verdict string

// The verdicts. Pending is no verdict yet (the window has not ended, or
// there is no fresh view); the others are counted.
const (
	VerdictPending      Verdict = ""
	VerdictRecovered    Verdict = "recovered"
	VerdictNotRecovered Verdict = "not_recovered"
	// VerdictUnknown: no fresh view within stale_after after the window:
	// it is counted and never escalates.
	VerdictUnknown Verdict = "unknown"
)

// Source is what asked for the step.
type Source string

// The sources.
const (
	FromRule  Source = "rule"
	FromAlert Source = "alert"
)

// Condition is a rule's condition on the exporter's view of the server.
type Condition int

// The conditions.
const (
	// CondUnread: the view cannot say (it lacks the rule's metric).
	CondUnread Condition = iota
	// CondClear: the condition does not hold.
	CondClear
	// CondHolds: the condition holds.
	CondHolds
)

// View is the exporter's own view of the server.
type View struct {
	// At is when the view was read (a list's or a re-read's time); zero:
	// there is none.
	At time.Time
	// AccountRefreshed is the account's last successful list.
	AccountRefreshed time.Time
	// Listed: the account's list (or the provider's re-read) has the
	// server; State is its normalized state.
	Listed bool
	State  string
}

// Inputs are what the verdict of one step is taken on.
type Inputs struct {
	Source Source
	// Now is the time of the verdict; Finished when the provider
	// answered the step (its window starts there); Window its verify
	// window; Grace, for alerts, the time after the window a resolved
	// notification may still arrive (webhook.resolve_grace); StaleAfter
	// bounds the wait for a fresh view after the window.
	Now, Finished time.Time
	Window        time.Duration
	Grace         time.Duration
	StaleAfter    time.Duration
	View          View
	// Condition: rules.
	Condition Condition
	// Resolved: alerts: every alert of the episode resolved, the last
	// with EndsAt.
	Resolved bool
	EndsAt   time.Time
}

// fresh reports whether v is a fresh view at now: read after the step
// finished, and the account refreshed within staleAfter.
func (v View) fresh(finished, now time.Time, staleAfter time.Duration) bool {
	return !v.At.IsZero() && v.At.After(finished) && !v.AccountRefreshed.IsZero() && now.Sub(v.AccountRefreshed) <= staleAfter
}

// Judge is the one verdict rule for rules and alerts. No verdict is
// taken before the window ends. recovered only when the exporter's own
// fresh view agrees: the server is listed, its normalized state running,
// its account refreshed within stale_after, AND the condition is clear
// (rules) or every alert resolved with endsAt inside [the step's answer,
// the window's end] (alerts, on a view read after endsAt: at the window's
// end, or when a late notification arrives before the grace after the
// window ends). A resolution before the step's answer (the alert cleared
// while the step was under way) does not count. not_recovered on a fresh
// view that disagrees, once the window (alerts: and the grace) ended.
// Without a fresh view (alerts resolved inside the window: without one
// read after endsAt) the verdict is Pending until stale_after past the
// window's end (alerts: and the grace), then Unknown. detail says on what
// it was taken.
func Judge(in Inputs) (Verdict, string) {
	end := in.Finished.Add(in.Window)
	due := end
	if in.Source == FromAlert {
		due = end.Add(in.Grace)
	}
	fresh := in.View.fresh(in.Finished, in.Now, in.StaleAfter)
	switch in.Source {
	case FromAlert:
		resolvedInside := in.Resolved && !in.EndsAt.Before(in.Finished) && !in.EndsAt.After(end)
		// The view that agrees is one read after the alert resolved.
		seenSince := !in.View.At.Before(in.EndsAt)
		switch {
		case in.Now.Before(end):
			return VerdictPending, ""
		case resolvedInside && fresh && seenSince && in.View.Listed && in.View.State == "running":
			return VerdictRecovered, "Alertmanager resolved the alert(s) inside webhook.verify, and the server reads running"
		case resolvedInside && !(fresh && seenSince):
			// Wait for a view read after the resolution (bounded below).
		case in.Now.Before(due):
			return VerdictPending, ""
		case fresh && in.View.Listed && in.View.State != "running":
			return VerdictNotRecovered, fmt.Sprintf("the server reads %s", in.View.State)
		case fresh && in.View.Listed && in.Resolved && in.EndsAt.Before(in.Finished):
			return VerdictNotRecovered, fmt.Sprintf("the alert(s) resolved before the step's answer (endsAt %s), none inside webhook.verify %s (judged %s after it)",
				in.EndsAt.UTC().Format(time.RFC3339), in.Window, in.Grace)
		case fresh && in.View.Listed:
			return VerdictNotRecovered, fmt.Sprintf("no resolved notification with endsAt inside webhook.verify %s (judged %s after it)", in.Window, in.Grace)
		}
	default:
		switch {
		case in.Now.Before(end):
			return VerdictPending, ""
		case fresh && in.View.Listed && in.View.State != "running":
			return VerdictNotRecovered, fmt.Sprintf("the server reads %s", in.View.State)
		case fresh && in.View.Listed && in.Condition == CondHolds:
			return VerdictNotRecovered, "running, rule condition holds"
		case fresh && in.View.Listed && in.Condition == CondClear:
			return VerdictRecovered, "running, rule condition clear"
		}
	}
	if in.Now.Sub(due) >= in.StaleAfter {
		return VerdictUnknown, fmt.Sprintf("no fresh view of the server within stale_after %s after the verify window", in.StaleAfter)
	}
	return VerdictPending, ""
}
