package remediation

import (
	"context"
	"slices"
	"time"
)

// Filter selects records and suppressions for History.
type Filter struct {
	Provider, Account, ID string
	Since                 time.Time
	Limit                 int
}

func (f Filter) keep(provider, account, id string, at time.Time) bool {
	return (f.Provider == "" || f.Provider == provider) && (f.Account == "" || f.Account == account) &&
		(f.ID == "" || f.ID == id) && !at.Before(f.Since)
}

// keepEpisode: an episode of the server (id: the server now, or one its
// steps acted on) active at or after Since.
func (f Filter) keepEpisode(ep *Episode) bool {
	if (f.Provider != "" && f.Provider != ep.Provider) || (f.Account != "" && f.Account != ep.Account) {
		return false
	}
	if f.ID != "" && f.ID != ep.ID && !slices.ContainsFunc(ep.Steps, func(s Step) bool { return s.ID == f.ID }) {
		return false
	}
	latest := ep.Opened
	for _, t := range []time.Time{ep.Ended, ep.Released} {
		if t.After(latest) {
			latest = t
		}
	}
	if s := ep.last(); s != nil && s.Finished.After(latest) {
		latest = s.Finished
	}
	return ep.Outcome == EpisodeOpen || ep.exhausted() || !latest.Before(f.Since)
}

// History is the audit log and the suppression history, newest first.
type History struct {
	Enabled      bool     `json:"enabled"`
	DryRun       bool     `json:"dry_run"`
	Paused       *Pause   `json:"paused,omitempty"`
	Actions      []Record `json:"actions"`
	Suppressions []Event  `json:"suppressions"`
	// Episodes are the closed loop's, newest first: each server's
	// actions since the first, their verdicts and its outcome.
	Episodes []Episode `json:"episodes"`
}

// History returns the actions, suppressions and episodes f selects. It
// writes nothing: the suppressions not flushed yet come from memory. It
// stops when ctx ends.
func (e *Engine) History(ctx context.Context, f Filter) (History, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	e.mu.Lock()
	st, err := e.state, e.stateErr
	h := History{Enabled: e.cfg.Enabled && st != nil, DryRun: e.cfg.DryRun, Actions: []Record{}, Suppressions: []Event{}, Episodes: []Episode{}}
	if e.pausedLocked(e.now()) != "" {
		p := *e.pause
		h.Paused = &p
	}
	// The events not in the file yet, oldest first: those a flush is
	// writing, then the rest (the order flushes write them in).
	seq := e.eventSeq
	mem := make([]Event, 0, len(e.flushing)+len(e.events))
	mem = append(append(mem, e.flushing...), e.events...)
	if st != nil {
		st.hold() // a reload switching files closes this one after
		defer st.unhold()
	}
	e.mu.Unlock()
	if cerr := ctx.Err(); cerr != nil {
		return h, cerr
	}
	if st == nil {
		return h, err
	}
	recs, err := st.Matching(ctx, f.Since, func(r Record) bool { return f.keep(r.Provider, r.Account, r.ID, r.Time) }, f.Limit)
	if err != nil {
		return h, err
	}
	h.Actions = append(h.Actions, recs...)
	keep := func(ev Event) bool { return f.keep(ev.Provider, ev.Account, ev.ID, ev.Time) }
	evs, fileSeq, err := st.events(ctx, keep, f.Limit)
	if err != nil {
		return h, err
	}
	// A flush that ended meanwhile wrote the oldest of mem: the file
	// has them now.
	if fileSeq > seq {
		mem = mem[min(fileSeq-seq, uint64(len(mem))):]
	}
	for i := len(mem) - 1; i >= 0 && len(h.Suppressions) < f.Limit; i-- {
		if keep(mem[i]) {
			h.Suppressions = append(h.Suppressions, mem[i])
		}
	}
	h.Suppressions = append(h.Suppressions, evs[:min(len(evs), f.Limit-len(h.Suppressions))]...)
	eps, err := st.episodes(ctx, f.keepEpisode, f.Limit)
	if err != nil {
		return h, err
	}
	for i := range eps {
		showVerifying(&eps[i])
	}
	h.Episodes = append(h.Episodes, eps...)
	return h, nil
}

// showVerifying marks, for the history, the last step of an open episode
// whose verdict is not taken yet as verifying (never stored; a refused
// step gets none).
func showVerifying(ep *Episode) {
	if ep.Outcome == EpisodeOpen && ep.verifying() {
		ep.last().Verdict = VerdictVerifying
	}
}

// Recent returns the newest audit records.
func (e *Engine) Recent(n int) ([]Record, error) {
	h, err := e.History(context.Background(), Filter{Limit: n})
	return h.Actions, err
}
