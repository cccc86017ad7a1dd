package episode

import (
	"testing"
	"time"
)

func TestJudge(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	const window, grace, stale = 10 * time.Minute, 5 * time.Minute, 5 * time.Minute
	end := t0.Add(window)
	running := View{At: end.Add(time.Second), AccountRefreshed: end.Add(time.Second), Listed: true, State: "running"}
	stopped := running
	stopped.State = "stopped"
	unlisted := running
	unlisted.Listed = false
	// The account's last good list is older than stale_after at the
	// verdict: it is down.
	accountDown := running
	accountDown.AccountRefreshed = t0.Add(-time.Hour)
	// A view from before the step finished shows the server as it was.
	old := running
	old.At = t0.Add(-time.Second)
	// A list read 30 s after the step.
	early := running
	early.At, early.AccountRefreshed = t0.Add(30*time.Second), t0.Add(30*time.Second)
	// A fresh list read 3 min before the window's end (the account's
	// refresh_interval is long): it cannot say what happened after.
	beforeEnd := running
	beforeEnd.At, beforeEnd.AccountRefreshed = end.Add(-3*time.Minute), end.Add(-3*time.Minute)
	for _, tc := range []struct {
		name string
		in   Inputs
		want Verdict
	}{
		// Rules.
		{"rule in window", Inputs{Source: FromRule, Now: end.Add(-time.Second), View: running, Condition: CondClear}, VerdictPending},
		{"rule clear running", Inputs{Source: FromRule, Now: end.Add(time.Minute), View: running, Condition: CondClear}, VerdictRecovered},
		{"rule holds", Inputs{Source: FromRule, Now: end.Add(time.Minute), View: running, Condition: CondHolds}, VerdictNotRecovered},
		{"rule clear but stopped", Inputs{Source: FromRule, Now: end.Add(time.Minute), View: stopped, Condition: CondClear}, VerdictNotRecovered},
		{"rule metric unread", Inputs{Source: FromRule, Now: end.Add(time.Minute), View: running, Condition: CondUnread}, VerdictPending},
		{"rule account down waits", Inputs{Source: FromRule, Now: end.Add(time.Minute), View: accountDown, Condition: CondClear}, VerdictPending},
		{"rule account down past stale_after", Inputs{Source: FromRule, Now: end.Add(stale), View: accountDown, Condition: CondClear}, VerdictUnknown},
		{"rule unlisted past stale_after", Inputs{Source: FromRule, Now: end.Add(stale + time.Minute), View: unlisted, Condition: CondClear}, VerdictUnknown},
		{"rule old view", Inputs{Source: FromRule, Now: end.Add(time.Minute), View: old, Condition: CondClear}, VerdictPending},
		{"rule no view", Inputs{Source: FromRule, Now: end.Add(time.Minute)}, VerdictPending},
		// Alerts.
		{"alert resolved inside, running, in the window waits", Inputs{Source: FromAlert, Now: t0.Add(time.Minute), View: early, Resolved: true, EndsAt: t0.Add(20 * time.Second)}, VerdictPending},
		{"alert resolved inside, running, at the window's end", Inputs{Source: FromAlert, Now: end.Add(time.Second), View: running, Resolved: true, EndsAt: t0.Add(30 * time.Second)}, VerdictRecovered},
		{"alert resolved before the step's answer, in the window", Inputs{Source: FromAlert, Now: t0.Add(41 * time.Second), View: early, Resolved: true, EndsAt: t0.Add(-2 * time.Minute)}, VerdictPending},
		{"alert resolved before the step's answer, at the window's end", Inputs{Source: FromAlert, Now: end.Add(time.Second), View: running, Resolved: true, EndsAt: t0.Add(-2 * time.Minute)}, VerdictPending},
		{"alert resolved before the step's answer, after grace", Inputs{Source: FromAlert, Now: end.Add(grace), View: running, Resolved: true, EndsAt: t0.Add(-2 * time.Minute)}, VerdictNotRecovered},
		{"alert resolved inside, view older than endsAt, after grace", Inputs{Source: FromAlert, Now: end.Add(grace), View: beforeEnd, Resolved: true, EndsAt: end.Add(-time.Minute)}, VerdictPending},
		{"alert resolved inside, view older than endsAt, past stale_after", Inputs{Source: FromAlert, Now: end.Add(grace + stale), View: beforeEnd, Resolved: true, EndsAt: end.Add(-time.Minute)}, VerdictUnknown},
		{"alert resolved inside, late notification in grace", Inputs{Source: FromAlert, Now: end.Add(4 * time.Minute), View: running, Resolved: true, EndsAt: end.Add(-time.Minute)}, VerdictRecovered},
		{"alert resolved but stopped (fault 3)", Inputs{Source: FromAlert, Now: end.Add(grace), View: stopped, Resolved: true, EndsAt: t0.Add(time.Minute)}, VerdictNotRecovered},
		{"alert resolved but stopped, in grace", Inputs{Source: FromAlert, Now: end.Add(time.Minute), View: stopped, Resolved: true, EndsAt: t0.Add(time.Minute)}, VerdictPending},
		{"alert resolved, account down (fault 3)", Inputs{Source: FromAlert, Now: end.Add(grace), View: accountDown, Resolved: true, EndsAt: t0.Add(time.Minute)}, VerdictPending},
		{"alert resolved, account down past stale_after", Inputs{Source: FromAlert, Now: end.Add(grace + stale), View: accountDown, Resolved: true, EndsAt: t0.Add(time.Minute)}, VerdictUnknown},
		{"alert unresolved in grace (fault 4)", Inputs{Source: FromAlert, Now: end.Add(grace - time.Second), View: running}, VerdictPending},
		{"alert unresolved after grace", Inputs{Source: FromAlert, Now: end.Add(grace), View: running}, VerdictNotRecovered},
		{"alert resolved, view read before the resolution", Inputs{Source: FromAlert, Now: t0.Add(2 * time.Minute), View: early, Resolved: true, EndsAt: t0.Add(time.Minute)}, VerdictPending},
		{"alert resolved, view read after the resolution, in the window", Inputs{Source: FromAlert, Now: t0.Add(2 * time.Minute), View: early, Resolved: true, EndsAt: t0.Add(20 * time.Second)}, VerdictPending},
		{"alert resolved after the window", Inputs{Source: FromAlert, Now: end.Add(grace), View: running, Resolved: true, EndsAt: end.Add(time.Second)}, VerdictNotRecovered},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Finished, tc.in.Window, tc.in.StaleAfter = t0, window, stale
			if tc.in.Source == FromAlert {
				tc.in.Grace = grace
			}
			got, detail := Judge(tc.in)
			if got != tc.want {
				t.Fatalf("Judge = %q (%s), want %q", got, detail, tc.want)
			}
			if got != VerdictPending && detail == "" {
				t.Fatal("a verdict says on what")
			}
		})
	}
}

// TestJudgeAlertResolutionTiming: the second review of issue 22. A
// resolution counts only with endsAt inside [the step's answer, the
// window's end], no alert verdict is taken before the window ends, and a
// resolution inside the window seen only by a view read before it waits
// for a newer view (bounded by stale_after) instead of not_recovered.
func TestJudgeAlertResolutionTiming(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	const window, grace, stale = 15 * time.Minute, 5 * time.Minute, 50 * time.Minute
	end := t0.Add(window)
	at := func(d time.Time) View { return View{At: d, AccountRefreshed: d, Listed: true, State: "running"} }
	for _, tc := range []struct {
		name string
		in   Inputs
		want Verdict
	}{
		// The CPU alert cleared while the power cycle had the server off.
		{"resolved before the answer, first list after it", Inputs{Now: t0.Add(41 * time.Second), View: at(t0.Add(40 * time.Second)), Resolved: true, EndsAt: t0.Add(-2 * time.Minute)}, VerdictPending},
		{"resolved before the answer, at the window's end", Inputs{Now: end.Add(time.Second), View: at(end), Resolved: true, EndsAt: t0.Add(-2 * time.Minute)}, VerdictPending},
		{"resolved before the answer, after grace", Inputs{Now: end.Add(grace), View: at(end.Add(grace - time.Second)), Resolved: true, EndsAt: t0.Add(-2 * time.Minute)}, VerdictNotRecovered},
		{"resolved at the answer counts", Inputs{Now: end, View: at(end), Resolved: true, EndsAt: t0}, VerdictRecovered},
		{"resolved inside, a minute into the window", Inputs{Now: t0.Add(time.Minute), View: at(t0.Add(time.Minute)), Resolved: true, EndsAt: t0.Add(10 * time.Second)}, VerdictPending},
		{"resolved inside, view older than endsAt, after grace", Inputs{Now: end.Add(grace), View: at(end.Add(-3 * time.Minute)), Resolved: true, EndsAt: end.Add(-time.Minute)}, VerdictPending},
		{"resolved inside, view older than endsAt, stale_after after grace", Inputs{Now: end.Add(grace + stale), View: at(end.Add(-3 * time.Minute)), Resolved: true, EndsAt: end.Add(-time.Minute)}, VerdictUnknown},
		{"resolved inside, a view after endsAt", Inputs{Now: end.Add(grace + time.Minute), View: at(end.Add(grace + time.Minute)), Resolved: true, EndsAt: end.Add(-time.Minute)}, VerdictRecovered},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Source, tc.in.Finished, tc.in.Window, tc.in.Grace, tc.in.StaleAfter = FromAlert, t0, window, grace, stale
			got, detail := Judge(tc.in)
			if got != tc.want {
				t.Fatalf("Judge = %q (%s), want %q", got, detail, tc.want)
			}
		})
	}
}
