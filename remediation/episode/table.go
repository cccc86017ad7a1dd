package episode

import (
	"fmt"
	"strings"
)

// Guard is a named condition over an event's data that chooses among the
// rows of one (state, event) pair.
type Guard string

// The guards.
const (
	// Always: the row takes every event of its kind.
	Always Guard = ""
	// IsRecovered: the verdict is recovered.
	IsRecovered Guard = "recovered"
	// NextDue: not recovered, and the ladder has a next step under
	// max_attempts.
	NextDue Guard = "not_recovered, next step, under max_attempts"
	// NoNext: not recovered, and the ladder is used up or max_attempts
	// is reached.
	NoNext Guard = "not_recovered, no next step or max_attempts"
	// NoView: no fresh view yet (the verdict is pending).
	NoView Guard = "no fresh view"
	// IsUnknown: the verdict is unknown.
	IsUnknown Guard = "unknown"
	// HasNext: the ladder has a step (LadderChanged).
	HasNext Guard = "a step"
	// UsedUp: the ladder has no step (LadderChanged).
	UsedUp Guard = "no step"
)

func (g Guard) holds(ev Event) bool {
	verdict := ev.Verdict
	if ev.Kind == StepFailed {
		verdict = VerdictNotRecovered
	}
	switch g {
	case Always:
		return true
	case IsRecovered:
		return verdict == VerdictRecovered
	case NextDue:
		return verdict == VerdictNotRecovered && ev.Next != "" && !ev.AtMax
	case NoNext:
		return verdict == VerdictNotRecovered && (ev.Next == "" || ev.AtMax)
	case NoView:
		return verdict == VerdictPending
	case IsUnknown:
		return verdict == VerdictUnknown
	case HasNext:
		return ev.Next != ""
	case UsedUp:
		return ev.Next == ""
	}
	return false
}

// Row is one transition of the table: in state From, event On whose
// Guard holds leads to To with Effects, and the log line Msg at Level.
type Row struct {
	From    State
	On      Kind
	Guard   Guard
	To      State
	Effects []Op
	Level   string
	Msg     string
}

// Table returns the machine's rows (a copy), in the order Transition
// tries them. docs/remediation.md carries the same table (Markdown).
func Table() []Row {
	out := make([]Row, len(table))
	for i, r := range table {
		r.Effects = append([]Op(nil), r.Effects...)
		out[i] = r
	}
	return out
}

// The rows. Every (state, event) pair not here is refused.
var table = []Row{
	{From: None, On: StepAccepted, To: Verifying, Effects: []Op{Open, AddStep, CountAttempt}},
	{From: None, On: StepRefused, To: EscalationDue, Effects: []Op{Open, AddStep, CountAttempt, RequestStep},
		Level: "info", Msg: "the provider refused the action: no verdict; the same step is due again after its cooldown"},
	{From: None, On: StepFailed, Guard: NextDue, To: EscalationDue, Effects: []Op{Open, AddStep, CountAttempt, SetVerdict, RequestStep},
		Level: "info", Msg: "the step failed; escalating"},
	{From: None, On: StepFailed, Guard: NoNext, To: Exhausted, Effects: []Op{Open, AddStep, CountAttempt, SetVerdict, MarkExhausted},
		Level: "warn", Msg: exhaustedMsg},
	{From: None, On: MaxAttempts, To: Exhausted, Effects: []Op{Open, MarkExhausted}, Level: "warn", Msg: exhaustedMsg},
	{From: None, On: StepAbandoned, To: Exhausted, Effects: []Op{Open, AddStep, CountAttempt, SetVerdict, MarkExhausted},
		Level: "warn", Msg: abandonedMsg},

	{From: Verifying, On: WindowEnded, Guard: IsRecovered, To: Recovered, Effects: []Op{SetVerdict, Close},
		Level: "info", Msg: "server recovered"},
	{From: Verifying, On: WindowEnded, Guard: NextDue, To: EscalationDue, Effects: []Op{SetVerdict, RequestStep},
		Level: "info", Msg: "action did not recover the server; escalating"},
	{From: Verifying, On: WindowEnded, Guard: NoNext, To: Exhausted, Effects: []Op{SetVerdict, MarkExhausted},
		Level: "warn", Msg: exhaustedMsg},
	{From: Verifying, On: WindowEnded, Guard: NoView, To: AwaitingView, Effects: []Op{AwaitView},
		Level: "info", Msg: "the verify window ended without a fresh view of the server; the verdict waits for one, at most stale_after"},
	{From: Verifying, On: WindowEnded, Guard: IsUnknown, To: Ended, Effects: []Op{SetVerdict, Close},
		Level: "warn", Msg: verdictUnknownMsg},
	{From: Verifying, On: ServerGone, To: Ended, Effects: []Op{Close}, Level: "info", Msg: endedMsg},
	{From: Verifying, On: RuleRemoved, To: Ended, Effects: []Op{Close}, Level: "info", Msg: endedMsg},
	{From: Verifying, On: Reset, To: Ended, Effects: []Op{Close}, Level: "info", Msg: endedMsg},
	{From: Verifying, On: LineageLost, To: Exhausted, Effects: []Op{MarkExhausted}, Level: "warn", Msg: exhaustedMsg},

	{From: AwaitingView, On: FreshView, Guard: IsRecovered, To: Recovered, Effects: []Op{SetVerdict, Close},
		Level: "info", Msg: "server recovered"},
	{From: AwaitingView, On: FreshView, Guard: NextDue, To: EscalationDue, Effects: []Op{SetVerdict, RequestStep},
		Level: "info", Msg: "action did not recover the server; escalating"},
	{From: AwaitingView, On: FreshView, Guard: NoNext, To: Exhausted, Effects: []Op{SetVerdict, MarkExhausted},
		Level: "warn", Msg: exhaustedMsg},
	{From: AwaitingView, On: ViewTimeout, To: Ended, Effects: []Op{SetVerdict, Close}, Level: "warn", Msg: verdictUnknownMsg},
	{From: AwaitingView, On: ServerGone, To: Ended, Effects: []Op{Close}, Level: "info", Msg: endedMsg},
	{From: AwaitingView, On: RuleRemoved, To: Ended, Effects: []Op{Close}, Level: "info", Msg: endedMsg},
	{From: AwaitingView, On: Reset, To: Ended, Effects: []Op{Close}, Level: "info", Msg: endedMsg},
	{From: AwaitingView, On: LineageLost, To: Exhausted, Effects: []Op{MarkExhausted}, Level: "warn", Msg: exhaustedMsg},

	{From: EscalationDue, On: StepAccepted, To: Verifying, Effects: []Op{AddStep, CountAttempt}},
	{From: EscalationDue, On: StepRefused, To: EscalationDue, Effects: []Op{AddStep, CountAttempt, RequestStep},
		Level: "info", Msg: "the provider refused the action: no verdict; the same step is due again after its cooldown"},
	{From: EscalationDue, On: StepFailed, Guard: NextDue, To: EscalationDue, Effects: []Op{AddStep, CountAttempt, SetVerdict, RequestStep},
		Level: "info", Msg: "the step failed; escalating"},
	{From: EscalationDue, On: StepFailed, Guard: NoNext, To: Exhausted, Effects: []Op{AddStep, CountAttempt, SetVerdict, MarkExhausted},
		Level: "warn", Msg: exhaustedMsg},
	{From: EscalationDue, On: StepAbandoned, To: Exhausted, Effects: []Op{AddStep, CountAttempt, SetVerdict, MarkExhausted},
		Level: "warn", Msg: abandonedMsg},
	{From: EscalationDue, On: LadderChanged, Guard: HasNext, To: EscalationDue, Effects: []Op{RequestStep}},
	{From: EscalationDue, On: LadderChanged, Guard: UsedUp, To: Exhausted, Effects: []Op{MarkExhausted}, Level: "warn", Msg: exhaustedMsg},
	{From: EscalationDue, On: NextStepImpossible, To: Exhausted, Effects: []Op{MarkExhausted}, Level: "warn", Msg: exhaustedMsg},
	{From: EscalationDue, On: MaxAttempts, To: Exhausted, Effects: []Op{MarkExhausted}, Level: "warn", Msg: exhaustedMsg},
	{From: EscalationDue, On: ConditionClear, To: Recovered, Effects: []Op{Close},
		Level: "info", Msg: "server recovered before its next step"},
	{From: EscalationDue, On: ServerGone, To: Ended, Effects: []Op{Close}, Level: "info", Msg: endedMsg},
	{From: EscalationDue, On: RuleRemoved, To: Ended, Effects: []Op{Close}, Level: "info", Msg: endedMsg},
	{From: EscalationDue, On: Excluded, To: Ended, Effects: []Op{Close}, Level: "info", Msg: endedMsg},
	{From: EscalationDue, On: WebhookOff, To: Ended, Effects: []Op{Close}, Level: "info", Msg: endedMsg},
	{From: EscalationDue, On: Reset, To: Ended, Effects: []Op{Close}, Level: "info", Msg: endedMsg},

	{From: Exhausted, On: ConditionClear, To: Released, Effects: []Op{UnmarkExhausted},
		Level: "info", Msg: "exhausted server handed back to remediation"},
	{From: Exhausted, On: Reset, To: Released, Effects: []Op{UnmarkExhausted},
		Level: "info", Msg: "exhausted server handed back to remediation"},
	{From: Exhausted, On: ServerGone, To: Released, Effects: []Op{UnmarkExhausted},
		Level: "info", Msg: "exhausted server handed back to remediation"},
	{From: Exhausted, On: RuleRemoved, To: Exhausted, Effects: nil,
		Level: "info", Msg: "the rule of an exhausted server is no longer configured; the server stays exhausted until its condition is clear or a reset"},
}

const (
	exhaustedMsg      = "remediation exhausted: no repair recovered this server; it needs a person (POST /api/v1/remediation/reset hands it back)"
	verdictUnknownMsg = "no fresh view of the server within stale_after after the verify window: the verdict is unknown; nothing more is done, a person should look"
	endedMsg          = "remediation episode ended"
	abandonedMsg      = "the step was not finished and is not verified: its outcome is unknown; remediation exhausted: the server needs a person (POST /api/v1/remediation/reset hands it back)"
)

// Markdown renders the table as docs/remediation.md carries it: one row
// per (state, event, guard), in the order Transition tries them, with its
// effects and, when the row logs or changes anything, the log line and the
// journal write. The refused pairs are not rendered: every pair not in the
// table is refused.
func Markdown() string {
	var b strings.Builder
	b.WriteString("| state | event | when | next state | effects |\n|---|---|---|---|---|\n")
	for _, r := range table {
		ops := make([]string, 0, len(r.Effects)+2)
		for _, op := range r.Effects {
			ops = append(ops, string(op))
		}
		if r.Msg != "" {
			ops = append(ops, "log ("+r.Level+")")
		}
		if len(r.Effects) > 0 || r.To != r.From {
			ops = append(ops, string(Journal))
		}
		if len(ops) == 0 {
			ops = append(ops, "-")
		}
		guard := string(r.Guard)
		if guard == "" {
			guard = "-"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r.From, r.On, guard, r.To, strings.Join(ops, ", "))
	}
	return b.String()
}
