package remediation

import (
	"errors"
	"fmt"

	"github.com/go-kit/log/level"

	"github.com/vps-exporter/vps_exporter/remediation/episode"
)

// ResetResult says what a reset cleared.
type ResetResult struct {
	Provider  string `json:"provider"`
	Account   string `json:"account"`
	ID        string `json:"id"`
	Exhausted bool   `json:"exhausted"` // it was exhausted (always, for a reset that was done)
	Attempts  int    `json:"attempts"`  // attempts forgotten
	Cooldown  bool   `json:"cooldown"`  // a live cooldown was cleared
}

// ErrUnknownAccount is Reset's error for an account that is not
// configured.
var ErrUnknownAccount = errors.New("no such account")

// ErrUnknownServer is Reset's error for a server its account does not
// have: not in the account's last list and not a member of a lineage
// remediation knows (a redeploy's original or replacement).
var ErrUnknownServer = errors.New("no such server")

// ErrNotExhausted is Reset's error for a server that is not exhausted:
// a reset would only drop its cooldown and attempts (and end an open
// episode), so that it is acted on again at once; nothing is changed.
var ErrNotExhausted = errors.New("the server is not exhausted")

// Reset hands one exhausted server back to remediation: its exhaustion
// ends, its attempts, its live cooldown and the alert occurrences handled
// for it are forgotten, so that the next request (a still-firing alert's
// resend too) starts its ladder again. A server that is not exhausted
// (ErrNotExhausted) or that its account does not have (ErrUnknownAccount,
// ErrUnknownServer) is left as it is: nothing is written. The change is
// written to the state file first (in one transaction) and published
// after; if the server changed meanwhile, it is computed again.
func (e *Engine) Reset(provider, account, id string) (ResetResult, error) {
	e.stateMu.Lock()
	defer e.stateMu.Unlock()
	res := ResetResult{Provider: provider, Account: account, ID: id}
	// The account's last list, read before the lock (the store's copy).
	snap, haveSnap := e.deps.Snapshot(account)
	for try := 0; try < 5; try++ {
		e.mu.Lock()
		st := e.state
		if st == nil {
			e.mu.Unlock()
			return res, fmt.Errorf("remediation has no usable state file: %w", errNoState)
		}
		if e.accounts[account] != provider || id == "" {
			e.mu.Unlock()
			return res, fmt.Errorf("%s account %q, server %q: %w", provider, account, id, ErrUnknownAccount)
		}
		key := serverKey(provider, account, id)
		root := e.rootLocked(key)
		t := e.tracks[root]
		listed := false
		if haveSnap && snap.Provider == provider {
			_, listed = lookupServer(snap.Servers, id)
		}
		if !listed && t == nil && !e.lineageMemberLocked(key) {
			e.mu.Unlock()
			return res, fmt.Errorf("%s account %q has no server %q in its last list nor in a lineage: %w", provider, account, id, ErrUnknownServer)
		}
		if t == nil || t.Episode == nil || !t.Episode.exhausted() {
			detail := "no episode"
			if t != nil && t.Episode != nil {
				detail = "its episode is " + t.Episode.Outcome
			}
			e.mu.Unlock()
			return res, fmt.Errorf("%s account %q, server %q (%s; its cooldown and attempts stay): %w", provider, account, id, detail, ErrNotExhausted)
		}
		_, res.Cooldown = e.live.cooldown[root]
		version := t.Version
		res.Attempts, res.Exhausted = len(t.Attempts), true
		e.loopVer++
		ver := e.loopVer
		now := e.now()
		ended := t.Episode.clone()
		ended.Version = ver
		// The machine's reset (exhausted -> released), on the copy the
		// file gets first.
		to, _, err := episode.Transition(stateOf(ended), episode.Event{Kind: episode.Reset}, now)
		if err != nil {
			e.mu.Unlock()
			return res, fmt.Errorf("%s account %q, server %q: %w", provider, account, id, err)
		}
		settleFields(ended, to, "reset by an operator", releasedReset, now)
		e.mu.Unlock()
		// The tombstone holds the reset's version over any older change
		// still on its way to the file.
		w := &loopWrite{root: root, ver: ver, track: tombstoneJSON(root, ver, now), eps: []*Episode{ended}}
		if err := st.ResetServer(root, w); err != nil {
			return res, fmt.Errorf("store the reset: %w", err)
		}
		e.mu.Lock()
		if cur := e.tracks[root]; cur == t && t.Version == version {
			if t.Episode != nil && t.Episode.exhausted() {
				e.m.exhausted.DeleteLabelValues(t.Episode.Provider, t.Episode.Account, t.Episode.ID)
			}
			delete(e.tracks, root)
			delete(e.live.cooldown, root)
			delete(e.live.failures, root)
			e.mu.Unlock()
			level.Warn(e.logger).Log("msg", "remediation reset by an operator: the server's exhaustion, attempts and cooldown are cleared",
				"provider", provider, "account", account, "id", id, "attempts", res.Attempts)
			return res, nil
		}
		e.mu.Unlock() // the server changed meanwhile: again
	}
	return res, errors.New("the server's remediation kept changing; try again")
}

// lineageMemberLocked reports whether key is a member of a lineage
// remediation knows: a redeploy's replacement or an original.
func (e *Engine) lineageMemberLocked(key string) bool {
	if _, ok := e.lineage[key]; ok {
		return true
	}
	for _, root := range e.lineage {
		if root == key {
			return true
		}
	}
	return false
}
