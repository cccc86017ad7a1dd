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
		{"alert resolved inside, running, early", Inputs{Source: FromAlert, Now: t0.Add(time.Minute), View: running, Resolved: true, EndsAt: t0.Add(30 * time.Second)}, VerdictRecovered},
		{"alert resolved inside, late notification in grace", Inputs{Source: FromAlert, Now: end.Add(4 * time.Minute), View: running, Resolved: true, EndsAt: end.Add(-time.Minute)}, VerdictRecovered},
		{"alert resolved but stopped (fault 3)", Inputs{Source: FromAlert, Now: end.Add(grace), View: stopped, Resolved: true, EndsAt: t0.Add(time.Minute)}, VerdictNotRecovered},
		{"alert resolved but stopped, in grace", Inputs{Source: FromAlert, Now: end.Add(time.Minute), View: stopped, Resolved: true, EndsAt: t0.Add(time.Minute)}, VerdictPending},
		{"alert resolved, account down (fault 3)", Inputs{Source: FromAlert, Now: end.Add(grace), View: accountDown, Resolved: true, EndsAt: t0.Add(time.Minute)}, VerdictPending},
		{"alert resolved, account down past stale_after", Inputs{Source: FromAlert, Now: end.Add(grace + stale), View: accountDown, Resolved: true, EndsAt: t0.Add(time.Minute)}, VerdictUnknown},
		{"alert unresolved in grace (fault 4)", Inputs{Source: FromAlert, Now: end.Add(grace - time.Second), View: running}, VerdictPending},
		{"alert unresolved after grace", Inputs{Source: FromAlert, Now: end.Add(grace), View: running}, VerdictNotRecovered},
		{"alert resolved, view read before the resolution", Inputs{Source: FromAlert, Now: t0.Add(2 * time.Minute), View: early, Resolved: true, EndsAt: t0.Add(time.Minute)}, VerdictPending},
		{"alert resolved, view read after the resolution", Inputs{Source: FromAlert, Now: t0.Add(2 * time.Minute), View: early, Resolved: true, EndsAt: t0.Add(20 * time.Second)}, VerdictRecovered},
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
