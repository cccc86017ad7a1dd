package collector

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/vps-exporter/vps_exporter/providers"
)

// Account is one account to poll.
type Account struct {
	Provider providers.Provider
	// Interval is the refresh period.
	Interval time.Duration
	// Key identifies the account's configuration: an account whose key
	// is unchanged on reload keeps its poller and its data.
	Key string
	// MaxConcurrency bounds the detail reads in flight (providers that
	// implement providers.Detailer); 0 means 8.
	MaxConcurrency int
	// StaleAfter is how long a failing account's servers keep their
	// series on /metrics after its last successful list (global.stale_after);
	// 0 means 5 x Interval. Past it they leave /metrics; the snapshot
	// keeps them.
	StaleAfter time.Duration
	// Origin identifies the API the account reads (its base URL and
	// project, no secret): a poller replacing one of the same provider
	// and origin (a reload that changed a global or a credential) takes
	// over its detail data and times.
	Origin string
}

// staleAfter is StaleAfter with its default.
func (a Account) staleAfter() time.Duration {
	if a.StaleAfter > 0 {
		return a.StaleAfter
	}
	return 5 * a.Interval
}

// RefreshFunc is told of every refresh, after the store has it.
type RefreshFunc func(ctx context.Context, s Snapshot)

// Manager runs one poller per account and reconciles them on reload.
type Manager struct {
	store     *Store
	logger    log.Logger
	onRefresh RefreshFunc
	// remindEvery is how often an account that stays down is logged again.
	remindEvery time.Duration

	// applyMu serializes Apply and Stop; mu guards pollers and is never
	// held while waiting for a poller, which may itself ask for Provider
	// (its refresh hook runs the remediation rules).
	applyMu sync.Mutex
	mu      sync.Mutex
	pollers map[string]*poller
	wg      sync.WaitGroup
	// clients is the running accounts' clients, replaced whole by Apply:
	// Provider reads it without a lock.
	clients atomic.Pointer[map[string]providers.Provider]
}

type poller struct {
	acct   Account
	cancel context.CancelFunc
	done   chan struct{}
	// left is what the poller knew when it stopped; read only once done
	// is closed.
	left *leftover
}

// NewManager returns a Manager writing to store. onRefresh may be nil.
func NewManager(store *Store, logger log.Logger, onRefresh RefreshFunc) *Manager {
	return &Manager{store: store, logger: logger, onRefresh: onRefresh, remindEvery: 10 * time.Minute, pollers: map[string]*poller{}}
}

// stopWait bounds how long Apply waits for a replaced poller to finish
// its refresh; it has been cancelled, so it ends within a request's time.
const stopWait = 15 * time.Second

// Apply makes the running pollers match accounts: unchanged ones keep
// running, changed ones restart, removed ones stop and leave the store.
// Replaced pollers are cancelled under the lock but waited for outside it.
func (m *Manager) Apply(ctx context.Context, accounts []Account) {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	want := map[string]Account{}
	for _, a := range accounts {
		want[a.Provider.Account()] = a
	}
	var stopped []*poller
	m.mu.Lock()
	for name, p := range m.pollers {
		if a, ok := want[name]; ok && a.Key == p.acct.Key {
			delete(want, name)
			continue
		}
		p.cancel()
		stopped = append(stopped, p)
		delete(m.pollers, name)
	}
	m.publishLocked()
	m.mu.Unlock()
	// A replacement of the same provider takes over the outage its
	// predecessor was in, and of the same origin its detail data (only
	// from one that stopped in time).
	left := map[string]*leftover{}
	for _, p := range stopped {
		name := p.acct.Provider.Account()
		select {
		case <-p.done:
			left[name] = p.left
		case <-time.After(stopWait):
			level.Warn(m.logger).Log("msg", "a replaced poller did not stop in time; going on without it", "account", name)
		}
		if _, ok := want[name]; !ok {
			m.store.Remove(name)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, a := range want {
		pctx, cancel := context.WithCancel(ctx)
		p := &poller{acct: a, cancel: cancel, done: make(chan struct{})}
		m.pollers[name] = p
		carried := left[name]
		if carried != nil && carried.provider != a.Provider.Type() {
			carried = nil // another provider under the same name: a new account
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer close(p.done)
			p.left = m.run(pctx, a, carried)
		}()
	}
	m.publishLocked()
}

// Stop ends every poller and waits for them, at most stopWait.
func (m *Manager) Stop() {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.mu.Lock()
	for _, p := range m.pollers {
		p.cancel()
	}
	m.pollers = map[string]*poller{}
	m.publishLocked()
	m.mu.Unlock()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(stopWait):
		level.Warn(m.logger).Log("msg", "pollers did not stop in time")
	}
}

// Ready reports whether every account has been refreshed at least once.
func (m *Manager) Ready() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name := range m.pollers {
		if s, ok := m.store.Snapshot(name); !ok || !s.Refreshed {
			return false
		}
	}
	return true
}

// Provider returns the client of a running account. It takes no lock:
// the remediation engine calls it while a reload may be waiting for a
// poller.
func (m *Manager) Provider(account string) (providers.Provider, bool) {
	cs := m.clients.Load()
	if cs == nil {
		return nil, false
	}
	p, ok := (*cs)[account]
	return p, ok
}

// publishLocked replaces the clients Provider answers from.
func (m *Manager) publishLocked() {
	cs := make(map[string]providers.Provider, len(m.pollers))
	for name, p := range m.pollers {
		cs[name] = p.acct.Provider
	}
	m.clients.Store(&cs)
}

// run polls one account until ctx ends and returns what it then knows. A
// poller replacing one of the same provider and name (a reload that
// changed the account) takes over its outage (carried): down stays down
// until a refresh succeeds ("account recovered", down_for from the first
// failure), and a refresh that fails again is said once ("still down"),
// so the reload's effect is in the log. Of the same origin too, it takes
// over the detail data and when each was read, so that no detail series
// leaves /metrics and no server is read again before its time.
func (m *Manager) run(ctx context.Context, a Account, carried *leftover) (left *leftover) {
	pl := &pollState{acct: a, logger: log.With(m.logger, "provider", a.Provider.Type(), "account", a.Provider.Account())}
	if carried != nil && carried.down != nil {
		pl.down, pl.downSince, pl.withdrawn = true, carried.down.downSince, carried.down.withdrawn
	}
	defer func() { // after the detail reads have stopped (deferred below)
		left = &leftover{provider: a.Provider.Type(), origin: a.Origin}
		if pl.down {
			left.down = &outage{downSince: pl.downSince, withdrawn: pl.withdrawn}
		}
		if pl.details != nil {
			left.details = pl.details.handOver(pl.last)
		}
	}()
	if d, ok := a.Provider.(providers.Detailer); ok {
		pl.details = newDetails(d, a.Interval, pl.logger)
		if carried != nil && carried.details != nil && carried.origin == a.Origin {
			pl.last = pl.details.adopt(carried.details)
		}
		conc := a.MaxConcurrency
		if conc <= 0 {
			conc = 8
		}
		dctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); pl.details.run(dctx, conc) }()
		defer func() { cancel(); <-done }()
	}
	m.refresh(ctx, pl)
	// Spread accounts over the interval so they do not refresh in step.
	jitter := time.Duration(rand.Int64N(int64(a.Interval)/10 + 1))
	t := time.NewTimer(a.Interval + jitter)
	defer t.Stop()
	// Details that arrived between lists are published this often (a
	// nil channel, never ready, without details).
	var publish <-chan time.Time
	if pl.details != nil {
		tk := time.NewTicker(min(max(a.Interval/4, time.Second), 5*time.Second))
		defer tk.Stop()
		publish = tk.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.refresh(ctx, pl)
			t.Reset(a.Interval)
		case <-publish:
			// A poller replaced by a reload (and already cancelled)
			// publishes nothing more.
			if ctx.Err() == nil && pl.last != nil && pl.details.takeDirty() {
				now := time.Now()
				servers, at, backlog := pl.details.merge(pl.last, now)
				m.store.Apply(Refresh{Provider: a.Provider.Type(), Account: a.Provider.Account(), Servers: servers,
					DetailAt: at, Details: true, States: reportedStates(a.Provider), Backlog: backlog, DetailsOnly: true, At: now, StaleAfter: a.staleAfter()})
			}
		}
	}
}

// leftover is what a stopped poller leaves for the poller that replaces
// it: its provider and origin, the outage it was in (nil: up) and its
// detail data (nil: none).
type leftover struct {
	provider, origin string
	down             *outage
	details          *detailState
}

// outage is the outage a stopped poller of a down account was in.
type outage struct {
	downSince time.Time
	withdrawn bool
}

// pollState is what one account's poller keeps between refreshes.
type pollState struct {
	acct    Account
	logger  log.Logger
	details *details           // nil when the provider has no detail reads
	last    []providers.Server // the last list, for merging details into
	// down: the last refresh failed; since downSince, last logged at
	// remindedAt. withdrawn: the servers' series have left /metrics.
	down                  bool
	downSince, remindedAt time.Time
	withdrawn             bool
}

// refresh lists an account once, bounded by its interval, and stores the
// result with the detail values read so far. A failure leaves the
// previous servers in place, marked stale, until stale_after.
func (m *Manager) refresh(ctx context.Context, pl *pollState) {
	p := pl.acct.Provider
	rctx, cancel := context.WithTimeout(ctx, pl.acct.Interval)
	defer cancel()
	start := time.Now()
	var servers []providers.Server
	var err error
	if pl.details != nil {
		servers, err = pl.details.p.ListSummary(rctx)
	} else {
		servers, err = p.List(rctx)
	}
	took := time.Since(start)
	if ctx.Err() != nil {
		return // shutting down or replaced: not a provider failure
	}
	r := Refresh{Provider: p.Type(), Account: p.Account(), Servers: servers, Err: err, Started: start, Took: took, At: start.Add(took),
		StaleAfter: pl.acct.staleAfter(), States: reportedStates(p)}
	if pl.details != nil {
		r.Details = true
		pl.details.listed(servers, err, start)
		if err == nil {
			pl.last = servers
		}
		if pl.last != nil {
			r.Servers, r.DetailAt, r.Backlog = pl.details.merge(pl.last, r.At)
		}
	}
	snap := m.store.Apply(r)
	m.logRefresh(pl, snap, err, r.At)
	if m.onRefresh != nil {
		m.onRefresh(ctx, snap)
	}
}

// logRefresh logs what changed: one warning when the account goes down
// (with the error), a reminder at most every remindEvery while it stays
// down, one line when its series leave /metrics, one when it recovers.
// Every failure is at debug level.
func (m *Manager) logRefresh(pl *pollState, snap Snapshot, err error, now time.Time) {
	logger := pl.logger
	switch {
	case err != nil && !pl.down:
		pl.down, pl.downSince, pl.remindedAt = true, now, now
		msg := "account down: refresh failed; its last servers are kept as stale until stale_after"
		if len(snap.Servers) == 0 {
			msg = "account down: refresh failed; it has no servers yet"
			if !snap.LastSuccess.IsZero() {
				msg = "account down: refresh failed; its last list had no servers"
			}
		}
		if errors.Is(err, providers.ErrUnauthorized) {
			msg = "account down: refresh failed, credentials refused; no detail reads until a list succeeds"
		}
		level.Warn(logger).Log("msg", msg, "stale_after", pl.acct.staleAfter(), "err", err)
	case err != nil && now.Sub(pl.remindedAt) >= m.remindEvery:
		pl.remindedAt = now
		level.Warn(logger).Log("msg", "account still down: refresh failed", "down_for", now.Sub(pl.downSince).Round(time.Second), "err", err)
	case err != nil:
		level.Debug(logger).Log("msg", "refresh failed", "err", err)
	case pl.down:
		pl.down = false
		level.Info(logger).Log("msg", "account recovered", "down_for", now.Sub(pl.downSince).Round(time.Second), "servers", len(snap.Servers))
	default:
		level.Debug(logger).Log("msg", "refreshed", "servers", len(snap.Servers))
	}
	if snap.Withdrawn && !pl.withdrawn && len(snap.Servers) > 0 {
		level.Info(logger).Log("msg", "account down longer than stale_after: its servers' series left /metrics until it recovers (service discovery keeps them)",
			"stale_after", pl.acct.staleAfter(), "servers", len(snap.Servers))
	}
	pl.withdrawn = snap.Withdrawn
}

// reportedStates is the states p's servers can be in (nil: any).
func reportedStates(p providers.Provider) []providers.State {
	if r, ok := p.(providers.StateReporter); ok {
		return r.ReportedStates()
	}
	return nil
}
