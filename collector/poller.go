package collector

import (
	"context"
	"math/rand/v2"
	"sync"
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
}

// RefreshFunc is told of every refresh, after the store has it.
type RefreshFunc func(ctx context.Context, s Snapshot)

// Manager runs one poller per account and reconciles them on reload.
type Manager struct {
	store     *Store
	logger    log.Logger
	onRefresh RefreshFunc

	mu      sync.Mutex
	pollers map[string]*poller
	wg      sync.WaitGroup
}

type poller struct {
	acct   Account
	cancel context.CancelFunc
	done   chan struct{}
}

// NewManager returns a Manager writing to store. onRefresh may be nil.
func NewManager(store *Store, logger log.Logger, onRefresh RefreshFunc) *Manager {
	return &Manager{store: store, logger: logger, onRefresh: onRefresh, pollers: map[string]*poller{}}
}

// Apply makes the running pollers match accounts: unchanged ones keep
// running, changed ones restart, removed ones stop and leave the store.
func (m *Manager) Apply(ctx context.Context, accounts []Account) {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[string]Account{}
	for _, a := range accounts {
		want[a.Provider.Account()] = a
	}
	for name, p := range m.pollers {
		if a, ok := want[name]; ok && a.Key == p.acct.Key {
			delete(want, name)
			continue
		}
		p.cancel()
		<-p.done
		delete(m.pollers, name)
		if _, ok := want[name]; !ok {
			m.store.Remove(name)
		}
	}
	for name, a := range want {
		pctx, cancel := context.WithCancel(ctx)
		p := &poller{acct: a, cancel: cancel, done: make(chan struct{})}
		m.pollers[name] = p
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer close(p.done)
			m.run(pctx, a)
		}()
	}
}

// Stop ends every poller and waits for them.
func (m *Manager) Stop() {
	m.mu.Lock()
	for _, p := range m.pollers {
		p.cancel()
	}
	m.pollers = map[string]*poller{}
	m.mu.Unlock()
	m.wg.Wait()
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

// Provider returns the client of a running account.
func (m *Manager) Provider(account string) (providers.Provider, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.pollers[account]
	if !ok {
		return nil, false
	}
	return p.acct.Provider, true
}

func (m *Manager) run(ctx context.Context, a Account) {
	m.refresh(ctx, a)
	// Spread accounts over the interval so they do not refresh in step.
	jitter := time.Duration(rand.Int64N(int64(a.Interval)/10 + 1))
	t := time.NewTimer(a.Interval + jitter)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.refresh(ctx, a)
			t.Reset(a.Interval)
		}
	}
}

// refresh lists an account once, bounded by its interval, and stores the
// result. A failure leaves the previous servers in place, marked stale.
func (m *Manager) refresh(ctx context.Context, a Account) {
	p := a.Provider
	rctx, cancel := context.WithTimeout(ctx, a.Interval)
	defer cancel()
	start := time.Now()
	servers, err := p.List(rctx)
	took := time.Since(start)
	if ctx.Err() != nil {
		return // shutting down or replaced: not a provider failure
	}
	snap := m.store.Update(p.Type(), p.Account(), servers, err, start, took)
	logger := log.With(m.logger, "provider", p.Type(), "account", p.Account())
	if err != nil {
		level.Warn(logger).Log("msg", "refresh failed; account marked down, last servers kept as stale", "duration", took, "err", err)
	} else {
		level.Debug(logger).Log("msg", "refreshed", "servers", len(servers), "duration", took)
	}
	if m.onRefresh != nil {
		m.onRefresh(ctx, snap)
	}
}
