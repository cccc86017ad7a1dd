package episode

// Ladder is an episode's actions in order: the first action, then its
// escalation steps.
type Ladder []string

// RuleLadder is a rule's action and its escalate list.
func RuleLadder(action string, escalate []string) Ladder {
	return append(Ladder{action}, escalate...)
}

// AlertLadder is an alert-driven action and the steps
// webhook.escalate[action] gives it.
func AlertLadder(first string, escalate map[string][]string) Ladder {
	return append(Ladder{first}, escalate[first]...)
}

// Next is the step at position (the episode's steps but the refused
// ones), skipping actions the provider lacks (supports false); "" when
// the ladder is used up.
func (l Ladder) Next(position int, supports func(action string) bool) string {
	for i := max(position, 0); i < len(l); i++ {
		if supports == nil || supports(l[i]) {
			return l[i]
		}
	}
	return ""
}
