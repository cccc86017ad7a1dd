package remediation

import (
	"context"
	"time"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/providers"
)

// An account's rate limit is shared by its list, its detail reads and
// remediation. A rule that fires on hundreds of servers at once must not
// put hundreds of re-reads and actions in the account's token queue ahead
// of its next list page: the list would miss its deadline, the account
// would go down, and actions would go on being sent while it is. So
// remediation talks to an account one request at a time (its turn): a
// request's re-read and its action, a verdict's re-read, each re-read of a
// power cycle's wait; at most one remediation call is waiting for a token
// ahead of a list page. A request waits for its turn at most as long as
// data stays fresh (2 refresh intervals + 30 s), cancelled at shutdown;
// then it is suppressed not_sent (nothing went out) and the next refresh
// asks again. Each call is preceded by a look at the account's latest
// refresh: none goes out while the account is down or its data is stale.

// maxReadAge bounds the age of the re-read an action is decided on, when
// the call is handed to the provider's client.
const maxReadAge = 30 * time.Second

// accountHealth is an account's latest list refresh.
type accountHealth struct {
	provider    string
	refreshed   bool
	up          bool
	lastSuccess time.Time
	err         string
}

func healthOf(s collector.Snapshot) accountHealth {
	return accountHealth{provider: s.Provider, refreshed: s.Refreshed, up: s.Up, lastSuccess: s.LastSuccess, err: s.Err}
}

// turnWait is how long a request waits for its account's turn.
func (e *Engine) turnWait() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.maxTurnWait > 0 {
		return e.maxTurnWait
	}
	return e.staleness
}

// takeTurn waits for the account's turn, at most wait, until ctx ends.
// The returned release ends the turn (call it once).
func (e *Engine) takeTurn(ctx context.Context, provider, account string, wait time.Duration) (release func(), d *Decision) {
	key := provider + "\x00" + account
	e.mu.Lock()
	ch := e.turns[key]
	if ch == nil {
		ch = make(chan struct{}, 1)
		e.turns[key] = ch
	}
	e.mu.Unlock()
	if ctx.Err() != nil {
		return nil, supp(ReasonShutdown, "stopped while waiting for the account's turn")
	}
	select {
	case ch <- struct{}{}: // free: no timer to race with
		return func() { <-ch }, nil
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, supp(ReasonShutdown, "stopped while waiting for the account's turn")
	case <-t.C:
		return nil, supp(ReasonNotSent, "not sent: the account's remediation requests, one at a time, were busy for %s; the next refresh asks again", wait.Round(time.Second))
	}
}

// enterTurn is a re-read's way to its account: the account's turn (at
// most wait, until ctx ends), then the account up and fresh. d says why
// not (the turn is then not held); release gives the turn back.
func (e *Engine) enterTurn(ctx context.Context, provider, account string, wait time.Duration) (release func(), d *Decision) {
	release, d = e.takeTurn(ctx, provider, account, wait)
	if d != nil {
		return func() {}, d
	}
	if d = e.accountStale(provider, account); d != nil {
		release()
		return func() {}, d
	}
	return release, nil
}

// reReadTimeout bounds one re-read of a server.
const reReadTimeout = 30 * time.Second

// reRead reads one server from its provider, bounded by reReadTimeout.
func reRead(ctx context.Context, prov providers.Provider, id string) (providers.Server, error) {
	rctx, cancel := context.WithTimeout(ctx, reReadTimeout)
	defer cancel()
	return prov.Get(rctx, id)
}

// accountStale says why no call may go to an account now: its latest
// refresh failed, or its data is older than the freshness bound. It reads
// what OnRefresh saw last (the account's snapshot, before the first).
func (e *Engine) accountStale(provider, account string) *Decision {
	e.mu.Lock()
	h, ok := e.health[account]
	staleness, now := e.staleness, e.now()
	e.mu.Unlock()
	if !ok {
		snap, found := e.deps.Snapshot(account)
		if !found {
			return supp(ReasonStaleData, "account not refreshed yet")
		}
		h = healthOf(snap)
	}
	if h.provider != provider {
		return supp(ReasonStaleData, "no %s account named %q has been refreshed", provider, account)
	}
	return staleHealth(h, now, staleness)
}

// staleHealth is the stale_data decision on an account's last refresh
// (nil: fresh): never refreshed, down, or data older than staleness (or
// from the future). The gate and the checks around a call share it.
func staleHealth(h accountHealth, now time.Time, staleness time.Duration) *Decision {
	switch {
	case !h.refreshed:
		return supp(ReasonStaleData, "account not refreshed yet")
	case !h.up:
		return supp(ReasonStaleData, "the account is down: its last refresh failed: %s", h.err)
	case now.Sub(h.lastSuccess) > staleness || h.lastSuccess.After(now.Add(time.Minute)):
		return supp(ReasonStaleData, "the account's data is from %s", h.lastSuccess.UTC().Format(time.RFC3339))
	}
	return nil
}
