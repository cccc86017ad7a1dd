package remediation

import (
	"context"
	"sort"
	"time"
)

// The history as people read it (GET /api/v1/remediation and the status
// page): the stored records with what the loop knows of them, and without
// the state file's bookkeeping (versions, the time a condition was first
// seen clear, lineage roots). Unset times are left out, never shown as
// the zero time; a call the provider accepted reads "accepted" (the
// metric label keeps result="success", the public contract). Every field
// is listed in docs/api.md.

// ResultAccepted is how the history reads an action or a call the
// provider accepted (stored, and counted, as ResultSuccess).
const ResultAccepted = "accepted"

// shownResult is a stored result as the history reads it.
func shownResult(r string) string {
	if r == ResultSuccess {
		return ResultAccepted
	}
	return r
}

// HistoryView is the history as GET /api/v1/remediation answers it.
type HistoryView struct {
	Enabled      bool              `json:"enabled"`
	DryRun       bool              `json:"dry_run"`
	Paused       *PauseView        `json:"paused,omitempty"`
	Actions      []ActionView      `json:"actions"`
	Suppressions []SuppressionView `json:"suppressions"`
	Episodes     []EpisodeView     `json:"episodes"`
	// Role is this replica's part with remediation.ha (leader, standby,
	// unavailable) and LeaderURL the leader's advertise URL; both absent
	// without ha. A standby forwards GET /api/v1/remediation to the
	// leader, so the API shows it answered by the leader.
	Role      Role   `json:"role,omitempty"`
	LeaderURL string `json:"leader_url,omitempty"`
	// Error says what could not be read (the rest is what could).
	Error string `json:"error,omitempty"`
}

// PauseView is an operator's pause; no Until: until resumed.
type PauseView struct {
	Since  time.Time `json:"since"`
	Until  time.Time `json:"until,omitzero"`
	Reason string    `json:"reason"`
}

// ActionView is one action of the audit log, with its verdict.
type ActionView struct {
	// Seq numbers the action; an episode's step names it.
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Provider string    `json:"provider"`
	Account  string    `json:"account"`
	ID       string    `json:"id"`
	// Name is the server's name in its account's last list (absent when
	// it is not listed).
	Name   string `json:"name,omitempty"`
	Action string `json:"action"`
	Source string `json:"source"`
	Rule   string `json:"rule"`
	// Result is accepted, failed, dry_run or unknown.
	Result   string `json:"result"`
	Response string `json:"response,omitempty"`
	Error    string `json:"error,omitempty"`
	NewID    string `json:"new_id,omitempty"`
	// Calls are the provider calls of a power cycle, in order.
	Calls []CallView `json:"calls,omitempty"`
	// Verdict is the closed loop's: verifying, recovered, not_recovered
	// or unknown; absent when the action gets none (a dry run, a refused
	// call) or its episode is not in this answer.
	Verdict       string    `json:"verdict,omitempty"`
	Alert         string    `json:"alert,omitempty"`
	AlertStartsAt time.Time `json:"alert_starts_at,omitzero"`
}

// CallView is one provider call of an action made of several.
type CallView struct {
	Action   string    `json:"action"`
	Time     time.Time `json:"time"`
	Result   string    `json:"result"`
	Response string    `json:"response,omitempty"`
	Error    string    `json:"error,omitempty"`
}

// SuppressionView is an action the safety gate held back.
type SuppressionView struct {
	Time     time.Time `json:"time"`
	Provider string    `json:"provider"`
	Account  string    `json:"account"`
	ID       string    `json:"id"`
	Name     string    `json:"name,omitempty"`
	Action   string    `json:"action"`
	Source   string    `json:"source"`
	Rule     string    `json:"rule"`
	Reason   string    `json:"reason"`
	Detail   string    `json:"detail,omitempty"`
}

// EpisodeView is one episode of the closed loop: a server's actions since
// the first, their verdicts and its outcome; an active one (open, or
// exhausted and not released) with its place in its ladder and its
// attempts.
type EpisodeView struct {
	Seq      uint64 `json:"seq"`
	Provider string `json:"provider"`
	Account  string `json:"account"`
	ID       string `json:"id"`
	Name     string `json:"name,omitempty"`
	Source   string `json:"source"`
	Rule     string `json:"rule"`
	// Outcome is open, recovered, exhausted or ended; Reason says why.
	Outcome string    `json:"outcome"`
	Reason  string    `json:"reason,omitempty"`
	Opened  time.Time `json:"opened"`
	Ended   time.Time `json:"ended,omitzero"`
	// Step is the episode's place in its ladder (its steps the provider
	// did not refuse); Ladder the actions as configured now; Attempts its
	// server's live actions within attempts_window, MaxAttempts the
	// limit. Shown for an active episode only.
	Step        int      `json:"step,omitempty"`
	Ladder      []string `json:"ladder,omitempty"`
	Attempts    int      `json:"attempts,omitempty"`
	MaxAttempts int      `json:"max_attempts,omitempty"`
	// Next is the ladder's next action, due since NextSince (it has not
	// passed the gate yet).
	Next      string    `json:"escalate,omitempty"`
	NextSince time.Time `json:"escalate_since,omitzero"`
	// ClearSince: an exhausted server's condition is clear since then.
	ClearSince time.Time `json:"clear_since,omitzero"`
	// Released: an exhausted server handed back (ReleasedBy
	// condition_clear or reset).
	Released   time.Time   `json:"released,omitzero"`
	ReleasedBy string      `json:"released_by,omitempty"`
	Steps      []StepView  `json:"steps"`
	Alerts     []AlertView `json:"alerts,omitempty"`
}

// StepView is one action of an episode and its verdict.
type StepView struct {
	// Seq is the action's in the audit log.
	Seq    uint64 `json:"seq"`
	Action string `json:"action"`
	ID     string `json:"id"`
	Name   string `json:"name,omitempty"`
	Source string `json:"source"`
	Rule   string `json:"rule"`
	// Time: sent; Finished: answered (the verify window starts there).
	Time     time.Time `json:"time"`
	Finished time.Time `json:"finished,omitzero"`
	// Outcome is accepted, failed or unknown; Refused: the provider
	// refused it (no verdict, the same step is due again).
	Outcome     string    `json:"outcome"`
	Refused     bool      `json:"refused,omitempty"`
	Verdict     string    `json:"verdict,omitempty"`
	VerdictTime time.Time `json:"verdict_time,omitzero"`
	Detail      string    `json:"detail,omitempty"`
	Alert       string    `json:"alert,omitempty"`
}

// AlertView is one alert that asked for an episode's server to be
// repaired.
type AlertView struct {
	Fingerprint string    `json:"fingerprint"`
	Name        string    `json:"name"`
	StartsAt    time.Time `json:"starts_at,omitzero"`
	Resolved    time.Time `json:"resolved,omitzero"`
}

// activeView is what the engine's memory adds to an active episode.
type activeView struct {
	ladder      []string
	attempts    int
	maxAttempts int
}

// View returns the history f selects as people read it (see
// HistoryView); with an error, what could be read.
func (e *Engine) View(ctx context.Context, f Filter) (HistoryView, error) {
	h, err := e.History(ctx, f)
	out := HistoryView{Enabled: h.Enabled, DryRun: h.DryRun, Actions: []ActionView{}, Suppressions: []SuppressionView{}, Episodes: []EpisodeView{}}
	out.Role, out.LeaderURL = e.Leadership()
	if p := h.Paused; p != nil {
		out.Paused = &PauseView{Since: p.Since, Until: p.Until, Reason: p.Reason}
	}
	// The verdicts of the active episodes' steps, from memory: an action
	// of one has its verdict even when the episode is past the limit.
	active, verdicts := e.activeViews()
	names := e.namer()
	for i := range h.Episodes {
		ep := &h.Episodes[i]
		var a *activeView
		if av, ok := active[ep.Seq]; ok && (ep.Outcome == EpisodeOpen || ep.exhausted()) {
			a = &av
		}
		v := episodeView(ep, names, a, verdicts)
		out.Episodes = append(out.Episodes, v)
	}
	for _, r := range h.Actions {
		a := ActionView{Seq: r.Seq, Time: r.Time, Provider: r.Provider, Account: r.Account, ID: r.ID, Name: names(r.Provider, r.Account, r.ID),
			Action: r.Action, Source: r.Source, Rule: r.Rule, Result: shownResult(r.Result), Response: r.Response, Error: r.Error,
			NewID: r.NewID, Alert: r.Alert, AlertStartsAt: r.AlertStartsAt}
		if r.Result != ResultDryRun {
			a.Verdict = verdicts[r.Seq]
		}
		for _, c := range r.Calls {
			a.Calls = append(a.Calls, CallView{Action: c.Action, Time: c.Time, Result: shownResult(c.Result), Response: c.Response, Error: c.Error})
		}
		out.Actions = append(out.Actions, a)
	}
	for _, ev := range h.Suppressions {
		out.Suppressions = append(out.Suppressions, SuppressionView{Time: ev.Time, Provider: ev.Provider, Account: ev.Account, ID: ev.ID,
			Name: names(ev.Provider, ev.Account, ev.ID), Action: ev.Action, Source: ev.Source, Rule: ev.Rule, Reason: ev.Reason, Detail: ev.Detail})
	}
	if err != nil {
		out.Error = err.Error()
	}
	return out, err
}

// OpenEpisodes lists the open episodes (an action being verified, or the
// ladder's next step due), oldest first, from the engine's memory: each
// with its step, ladder and attempts.
func (e *Engine) OpenEpisodes() []EpisodeView {
	e.mu.Lock()
	from := e.now().Add(-time.Duration(e.cfg.AttemptsWindow))
	type open struct {
		ep *Episode
		a  activeView
	}
	var eps []open
	for _, t := range e.tracks {
		if ep := t.Episode; ep != nil && ep.Outcome == EpisodeOpen && e.accounts[ep.Account] == ep.Provider {
			eps = append(eps, open{ep.clone(), activeView{ladder: e.configuredLadderLocked(ep), attempts: t.attemptsSince(from), maxAttempts: e.cfg.MaxAttempts}})
		}
	}
	e.mu.Unlock()
	sort.Slice(eps, func(i, j int) bool { return eps[i].ep.Seq < eps[j].ep.Seq })
	names := e.namer()
	out := make([]EpisodeView, 0, len(eps))
	for _, o := range eps {
		showVerifying(o.ep)
		out = append(out, episodeView(o.ep, names, &o.a, nil))
	}
	return out
}

// episodeView is ep as people read it; a (nil: none) is what the
// engine's memory adds to an active episode; the verdicts of its steps
// are noted in verdicts (by audit record) unless it is nil.
func episodeView(ep *Episode, names func(provider, account, id string) string, a *activeView, verdicts map[uint64]string) EpisodeView {
	v := EpisodeView{Seq: ep.Seq, Provider: ep.Provider, Account: ep.Account, ID: ep.ID, Name: names(ep.Provider, ep.Account, ep.ID),
		Source: ep.Source, Rule: ep.Rule, Outcome: ep.Outcome, Reason: ep.Reason, Opened: ep.Opened, Ended: ep.Ended,
		Next: ep.Escalate, NextSince: ep.EscalateSince, ClearSince: ep.ClearSince, Released: ep.Released, ReleasedBy: ep.ReleasedBy,
		Steps: make([]StepView, 0, len(ep.Steps))}
	if a != nil {
		v.Step, v.Ladder, v.Attempts, v.MaxAttempts = ep.position(), a.ladder, a.attempts, a.maxAttempts
	}
	for _, s := range ep.Steps {
		v.Steps = append(v.Steps, StepView{Seq: s.Seq, Action: s.Action, ID: s.ID, Name: names(ep.Provider, ep.Account, s.ID), Source: s.Source, Rule: s.Rule,
			Time: s.Time, Finished: s.Finished, Outcome: shownResult(s.Outcome), Refused: s.Refused, Verdict: s.Verdict,
			VerdictTime: s.VerdictTime, Detail: s.Detail, Alert: s.Alert})
		if s.Verdict != "" && verdicts != nil {
			verdicts[s.Seq] = s.Verdict
		}
	}
	for _, m := range ep.Alerts {
		v.Alerts = append(v.Alerts, AlertView{Fingerprint: m.Fingerprint, Name: m.Name, StartsAt: m.StartsAt, Resolved: m.Resolved})
	}
	return v
}

// activeViews is, by episode number, what the engine's memory knows of
// each active episode: its ladder as configured now and its attempts;
// and, by audit record, the verdicts of their steps (verifying for an
// open episode's last step that waits for its verdict).
func (e *Engine) activeViews() (map[uint64]activeView, map[uint64]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	from := e.now().Add(-time.Duration(e.cfg.AttemptsWindow))
	out, verdicts := make(map[uint64]activeView, len(e.tracks)), map[uint64]string{}
	for _, t := range e.tracks {
		ep := t.Episode
		if ep == nil {
			continue
		}
		out[ep.Seq] = activeView{ladder: e.configuredLadderLocked(ep), attempts: t.attemptsSince(from), maxAttempts: e.cfg.MaxAttempts}
		for i, s := range ep.Steps {
			switch {
			case s.Verdict != "":
				verdicts[s.Seq] = s.Verdict
			case i == len(ep.Steps)-1 && ep.Outcome == EpisodeOpen && ep.verifying():
				verdicts[s.Seq] = VerdictVerifying
			}
		}
	}
	return out, verdicts
}

// configuredLadderLocked is an episode's ladder as configured now: its rule's
// action and escalate list, or the alert's action and webhook.escalate's
// steps for it (nil: its rule is gone). Its step counts in it.
func (e *Engine) configuredLadderLocked(ep *Episode) []string {
	switch {
	case ep.Source == "rule":
		if r := e.ruleByNameLocked(ep.Rule); r != nil {
			return ruleLadder(r)
		}
	case len(ep.Steps) > 0:
		return alertLadder(e.cfg.Webhook, ep.Steps[0].Action)
	}
	return nil
}

// namer returns the names of servers in their accounts' last lists,
// reading each account's snapshot once.
func (e *Engine) namer() func(provider, account, id string) string {
	type listed struct {
		provider string
		find     func(id string) (string, bool)
	}
	cache := map[string]listed{}
	return func(provider, account, id string) string {
		l, ok := cache[account]
		if !ok {
			if s, found := e.deps.Snapshot(account); found {
				servers := s.Servers
				l = listed{provider: s.Provider, find: func(id string) (string, bool) {
					srv, ok := lookupServer(servers, id)
					return srv.Name, ok
				}}
			}
			cache[account] = l
		}
		if l.find == nil || l.provider != provider {
			return ""
		}
		name, _ := l.find(id)
		return name
	}
}
