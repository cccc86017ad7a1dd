package episode

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// variants are the event data a transition may choose on.
var variants = map[string]Event{
	"plain":     {Action: "reboot"},
	"recovered": {Action: "reboot", Verdict: VerdictRecovered, Next: "power_cycle"},
	"next":      {Action: "reboot", Verdict: VerdictNotRecovered, Next: "power_cycle"},
	"used_up":   {Action: "reboot", Verdict: VerdictNotRecovered},
	"at_max":    {Action: "reboot", Verdict: VerdictNotRecovered, Next: "power_cycle", AtMax: true},
	"pending":   {Action: "reboot", Verdict: VerdictPending, Next: "power_cycle"},
	"unknown":   {Action: "reboot", Verdict: VerdictUnknown, Next: "power_cycle"},
}

type pair struct {
	from State
	on   Kind
}

// want is the machine as issue 22 and DESIGN.md "Closed loop" describe
// it, written out independently of the table: for each (state, event) the
// next state by variant ("*": every variant). Every pair or variant not
// here must be refused.
var want = map[pair]map[string]State{
	{None, StepAccepted}: {"*": Verifying},
	{None, StepRefused}:  {"*": EscalationDue},
	// A failed step is not_recovered whatever verdict the event carries.
	{None, StepFailed}:  {"plain": Exhausted, "recovered": EscalationDue, "next": EscalationDue, "used_up": Exhausted, "at_max": Exhausted, "pending": EscalationDue, "unknown": EscalationDue},
	{None, MaxAttempts}: {"*": Exhausted},
	// A step left unfinished that the engine will not finish (a power
	// cycle whose start is not sent): a person, whatever the event says.
	{None, StepAbandoned}: {"*": Exhausted},

	{Verifying, WindowEnded}: {"recovered": Recovered, "next": EscalationDue, "used_up": Exhausted, "at_max": Exhausted, "pending": AwaitingView, "unknown": Ended, "plain": AwaitingView},
	{Verifying, ServerGone}:  {"*": Ended},
	{Verifying, RuleRemoved}: {"*": Ended},
	{Verifying, Reset}:       {"*": Ended},
	// A lost redeploy whose replacement cannot be told apart: a person.
	{Verifying, LineageLost}: {"*": Exhausted},

	{AwaitingView, FreshView}:   {"recovered": Recovered, "next": EscalationDue, "used_up": Exhausted, "at_max": Exhausted},
	{AwaitingView, ViewTimeout}: {"*": Ended},
	{AwaitingView, ServerGone}:  {"*": Ended},
	{AwaitingView, RuleRemoved}: {"*": Ended},
	{AwaitingView, Reset}:       {"*": Ended},
	{AwaitingView, LineageLost}: {"*": Exhausted},

	{EscalationDue, StepAccepted}:       {"*": Verifying},
	{EscalationDue, StepRefused}:        {"*": EscalationDue},
	{EscalationDue, StepFailed}:         {"plain": Exhausted, "recovered": EscalationDue, "next": EscalationDue, "used_up": Exhausted, "at_max": Exhausted, "pending": EscalationDue, "unknown": EscalationDue},
	{EscalationDue, LadderChanged}:      {"plain": Exhausted, "used_up": Exhausted, "recovered": EscalationDue, "next": EscalationDue, "at_max": EscalationDue, "pending": EscalationDue, "unknown": EscalationDue},
	{EscalationDue, NextStepImpossible}: {"*": Exhausted},
	{EscalationDue, MaxAttempts}:        {"*": Exhausted},
	{EscalationDue, StepAbandoned}:      {"*": Exhausted},
	{EscalationDue, ConditionClear}:     {"*": Recovered},
	{EscalationDue, ServerGone}:         {"*": Ended},
	{EscalationDue, RuleRemoved}:        {"*": Ended},
	{EscalationDue, Excluded}:           {"*": Ended},
	{EscalationDue, WebhookOff}:         {"*": Ended},
	{EscalationDue, Reset}:              {"*": Ended},

	{Exhausted, ConditionClear}: {"*": Released},
	{Exhausted, Reset}:          {"*": Released},
	{Exhausted, ServerGone}:     {"*": Released},
	// Fault 5: removing or renaming a rule never releases its server.
	{Exhausted, RuleRemoved}: {"*": Exhausted},
}

func TestTransitionEveryPair(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	for _, from := range States {
		for _, kind := range Kinds {
			for name, v := range variants {
				ev := v
				ev.Kind = kind
				t.Run(string(from)+"/"+string(kind)+"/"+name, func(t *testing.T) {
					to, effects, err := Transition(from, ev, now)
					exp, ok := want[pair{from, kind}]["*"]
					if !ok {
						exp, ok = want[pair{from, kind}][name]
					}
					if !ok {
						if !errors.Is(err, ErrRefused) || to != from || effects != nil {
							t.Fatalf("want refused, got %s %v %v", to, effects, err)
						}
						return
					}
					if err != nil {
						t.Fatalf("want %s, refused: %v", exp, err)
					}
					if to != exp {
						t.Fatalf("want %s, got %s", exp, to)
					}
					if (to != from || len(effects) > 1) && (len(effects) == 0 || effects[len(effects)-1].Op != Journal) {
						t.Fatalf("a change must end with the journal: %v", effects)
					}
					checkEffects(t, from, ev, to, effects)
				})
			}
		}
	}
}

// checkEffects pins what each kind of change does besides its state.
func checkEffects(t *testing.T, from State, ev Event, to State, effects []Effect) {
	t.Helper()
	has := func(op Op) *Effect {
		for i := range effects {
			if effects[i].Op == op {
				return &effects[i]
			}
		}
		return nil
	}
	if (from == None) != (has(Open) != nil) {
		t.Fatalf("open iff from none: %v", effects)
	}
	if to == Exhausted && from != Exhausted && has(MarkExhausted) == nil {
		t.Fatalf("exhausting without marking: %v", effects)
	}
	if from == Exhausted && to != Exhausted && has(UnmarkExhausted) == nil {
		t.Fatalf("releasing without unmarking: %v", effects)
	}
	if from == Exhausted && to == Exhausted && len(effects) > 1 {
		t.Fatalf("an exhausted server that stays must not change: %v", effects)
	}
	if (to == Recovered || to == Ended) && has(Close) == nil {
		t.Fatalf("final without close: %v", effects)
	}
	if r := has(RequestStep); r != nil {
		wantStep := ev.Next
		if ev.Kind == StepRefused {
			wantStep = ev.Action
		}
		if r.Action != wantStep || r.Action == "" {
			t.Fatalf("request_step %q, want %q", r.Action, wantStep)
		}
	}
	if to == EscalationDue && from != EscalationDue && has(RequestStep) == nil {
		t.Fatalf("escalation due without a request: %v", effects)
	}
	v := has(SetVerdict)
	switch {
	case ev.Kind == StepFailed:
		if v == nil || v.Verdict != VerdictNotRecovered {
			t.Fatalf("a failed step must score not_recovered: %v", effects)
		}
	case ev.Kind == ViewTimeout, ev.Kind == StepAbandoned:
		if v == nil || v.Verdict != VerdictUnknown {
			t.Fatalf("a view timeout or an abandoned step must score unknown: %v", effects)
		}
	case ev.Kind == WindowEnded && ev.Verdict == VerdictPending, ev.Kind == StepAccepted, ev.Kind == StepRefused:
		if v != nil {
			t.Fatalf("no verdict here: %v", effects)
		}
	case ev.Kind == WindowEnded || ev.Kind == FreshView:
		if v == nil || v.Verdict != ev.Verdict {
			t.Fatalf("verdict %v, want %s", v, ev.Verdict)
		}
	}
	if (ev.Kind == StepAccepted || ev.Kind == StepRefused || ev.Kind == StepFailed || ev.Kind == StepAbandoned) && (has(AddStep) == nil || has(CountAttempt) == nil) {
		t.Fatalf("a step is added and counted: %v", effects)
	}
	if (ev.Kind == WindowEnded || ev.Kind == FreshView || ev.Kind == ViewTimeout) && ev.Verdict == VerdictUnknown && to == EscalationDue {
		t.Fatal("unknown never escalates")
	}
}

func TestFinalStatesTakeNothing(t *testing.T) {
	for _, s := range States {
		if !s.Final() {
			continue
		}
		for _, k := range Kinds {
			if _, _, err := Transition(s, Event{Kind: k, Verdict: VerdictRecovered, Next: "x"}, time.Time{}); !errors.Is(err, ErrRefused) {
				t.Errorf("%s/%s: want refused, got %v", s, k, err)
			}
		}
	}
}

// TestDocTable: docs/remediation.md carries the code's table, exactly.
func TestDocTable(t *testing.T) {
	b, err := os.ReadFile("../../docs/remediation.md")
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- episode-table:begin -->\n", "<!-- episode-table:end -->"
	doc := string(b)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("docs/remediation.md has no %q ... %q block", begin, end)
	}
	if got, want := doc[i+len(begin):j], Markdown(); got != want {
		t.Fatalf("docs/remediation.md's table differs from the code's; the code's is:\n%s", want)
	}
	for _, s := range States {
		if !strings.Contains(Markdown(), "| "+string(s)+" |") && !s.Final() {
			t.Errorf("state %s has no row", s)
		}
	}
}

func TestLadderNext(t *testing.T) {
	l := RuleLadder("reboot", []string{"redeploy", "power_cycle"})
	noRedeploy := func(a string) bool { return a != "redeploy" }
	for _, tc := range []struct {
		pos      int
		supports func(string) bool
		want     string
	}{
		{0, nil, "reboot"},
		{1, nil, "redeploy"},
		{1, noRedeploy, "power_cycle"},
		{2, noRedeploy, "power_cycle"},
		{3, nil, ""},
		{-1, nil, "reboot"},
	} {
		if got := l.Next(tc.pos, tc.supports); got != tc.want {
			t.Errorf("Next(%d) = %q, want %q", tc.pos, got, tc.want)
		}
	}
	if got := AlertLadder("reboot", map[string][]string{"reboot": {"power_cycle"}}); !slices.Equal(got, Ladder{"reboot", "power_cycle"}) {
		t.Errorf("AlertLadder = %v", got)
	}
}
