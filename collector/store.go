// Package collector is the inventory: one background poller per account,
// a snapshot store that renders each server's series once per change, and
// the /metrics handler that streams the stored bytes. A scrape never calls
// a provider.
package collector

import (
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vps-exporter/vps_exporter/providers"
)

// Snapshot is what the store holds of one account after its last refresh.
// Snapshots are shared, not copied: the store never changes one it has
// handed out (an update makes a new one), and a reader must not modify
// one, its Servers included.
type Snapshot struct {
	Provider string
	Account  string
	// Servers of the last successful refresh, ordered by id, shared by
	// every reader: must not be modified. When Up is false they are
	// stale: kept, but not to be acted on. They are kept past stale_after
	// too (Withdrawn), for service discovery, which keeps the last targets
	// as Prometheus' own discoveries do.
	Servers []providers.Server
	// Up is whether the last refresh succeeded.
	Up bool
	// Withdrawn is whether the account has been failing for longer than
	// its stale_after: its servers' series have left /metrics (Servers
	// still holds them). They come back when a refresh succeeds.
	Withdrawn bool
	// Refreshed is whether any refresh has been attempted yet.
	Refreshed   bool
	LastAttempt time.Time
	LastSuccess time.Time
	Duration    time.Duration
	// Err is the last refresh's error text (already free of secrets).
	Err string
	// Details is whether the account has per-server detail reads apart
	// from its list; DetailBacklog is how many of its servers have no
	// detail read younger than the refresh interval.
	Details       bool
	DetailBacklog int
}

// Refresh is one update of an account: a list refresh, or (DetailsOnly)
// detail values read since the last one.
type Refresh struct {
	Provider, Account string
	// Servers becomes the snapshot's server list as it is when it is
	// ordered by id without duplicates (else a sorted copy): the caller
	// must not modify it after Apply.
	Servers []providers.Server
	// DetailAt, when not nil, is parallel to Servers: when each server's
	// detail values were read (zero: it has none).
	DetailAt []time.Time
	Details  bool
	Backlog  int
	// States are the states the account's state-set lists (the client's
	// providers.StateReporter); nil: every normalized state.
	States []providers.State
	// DetailsOnly updates the servers only, not the refresh status.
	DetailsOnly bool
	Err         error
	Started     time.Time
	Took        time.Duration
	// At is when the data was current.
	At time.Time
	// StaleAfter, when positive, is how long after its last successful
	// refresh a failing account keeps its servers' series: past it (as of
	// At) they leave /metrics, and the snapshot keeps the servers.
	StaleAfter time.Duration
}

// account is one account's state. It is never modified once published in
// Store.accounts: an update publishes a new one, so a reader may keep
// using what it read after the lock is released.
type account struct {
	snap Snapshot
	// detail is parallel to snap.Servers: when each server's detail was
	// read, Unix seconds (0: never); nil when none has been.
	detail []int64
	// blocks are the rendered series of snap.Servers, in order; start[i]
	// is the index in snap.Servers of blocks[i]'s first server. Both nil
	// while the account's series are withdrawn.
	blocks []*block
	start  []int
	// states and skip are what the blocks were rendered with: the
	// state-set's states and the families left out.
	states []providers.State
	skip   [numFamilies]bool
}

// Store holds every account's snapshot and its servers' rendered series.
type Store struct {
	names   *[numFamilies]family
	headers *[numFamilies]piece
	// rendered, when set (tests), is told of every server rendered.
	rendered func(account, id string)

	// applyMu serializes the updates (Apply, Remove): one account is
	// rendered at a time, outside mu, so a scrape or a snapshot reader
	// never waits for rendering, and the memory an update needs on top of
	// what is kept is one account's changed blocks at most.
	applyMu sync.Mutex
	bld     *builder // guarded by applyMu

	mu       sync.RWMutex
	accounts map[string]*account
	gen      uint64 // bumped whenever the rendered series change

	// body is the plan of the last scrape, dropped when the series change
	// (so that it does not keep replaced blocks); bodyMu serializes
	// planning, so concurrent scrapes share one plan.
	bodyMu sync.Mutex
	body   atomic.Pointer[body]
}

// NewStore returns an empty store.
func NewStore() *Store {
	names := families()
	s := &Store{names: &names, accounts: map[string]*account{}}
	s.bld = newBuilder(s.names)
	s.headers = s.bld.headers()
	return s
}

// Update records one list refresh of an account (without detail reads).
// On error the previous servers are kept (stale) and only the account's
// status changes. Unlike Apply it keeps a copy of servers: the caller may
// reuse the slice.
func (s *Store) Update(provider, name string, servers []providers.Server, err error, started time.Time, took time.Duration) Snapshot {
	if servers != nil {
		servers = append([]providers.Server(nil), servers...)
	}
	return s.Apply(Refresh{Provider: provider, Account: name, Servers: servers, Err: err, Started: started, Took: took, At: started.Add(took)})
}

// Apply records one update of an account. A failed refresh keeps the
// previous servers (stale) and changes only the account's status, until
// r.StaleAfter has passed since the last successful one: then the
// account's per-server series leave /metrics (its snapshot keeps the
// servers) until a refresh succeeds. The snapshot returned is the store's
// own (shared, not to be modified). The store keeps r.Servers when it is
// ordered by id (no copy): the caller hands it over and must not modify
// it afterwards (a change would not be rendered); Update copies.
func (s *Store) Apply(r Refresh) Snapshot {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	provider, name := r.Provider, r.Account
	// Only updates change s.accounts, and they hold applyMu: reading it
	// here needs no other lock.
	old := s.accounts[name]
	var a account
	changed := false
	if old == nil || old.snap.Provider != provider {
		a.snap = Snapshot{Provider: provider, Account: name}
		old, changed = nil, true
	} else {
		a = *old
	}
	a.snap.Details = r.Details
	if !r.DetailsOnly {
		a.snap.Refreshed = true
		a.snap.LastAttempt = r.Started
		a.snap.Duration = r.Took
		if r.Err != nil {
			a.snap.Up = false
			a.snap.Err = r.Err.Error()
		} else {
			a.snap.Up = true
			a.snap.Err = ""
			a.snap.LastSuccess = r.Started.Add(r.Took)
		}
	}
	if r.StaleAfter > 0 && !a.snap.Up && r.At.Sub(a.snap.LastSuccess) > r.StaleAfter {
		// Past stale_after: the series go (no other account's are
		// rendered again); the snapshot keeps the last servers.
		if r.DetailAt != nil {
			a.snap.DetailBacklog = r.Backlog
		}
		if len(a.blocks) > 0 {
			a.blocks, a.start = nil, nil
			changed = true
		}
		a.snap.Withdrawn = true
		return s.publish(name, &a, changed)
	}
	if r.Err != nil && r.DetailAt == nil {
		if !a.snap.Withdrawn {
			return s.publish(name, &a, changed)
		}
		// Back within stale_after (it was raised): the last servers'
		// series return.
		r.Servers = a.snap.Servers
	}
	a.snap.Withdrawn = false
	a.snap.DetailBacklog = r.Backlog

	a.snap.Servers, a.detail = ordered(r.Servers, r.DetailAt)
	a.states = r.States
	if a.states == nil {
		a.states = providers.States()
	}
	a.blocks, a.start = s.bld.build(provider, name, old, a.snap.Servers, a.detail, a.states, s.rendered)
	a.skip = s.bld.skip
	changed = changed || old == nil || !slices.Equal(a.blocks, old.blocks)
	return s.publish(name, &a, changed)
}

// publish makes a the account's state; changed: its series changed.
func (s *Store) publish(name string, a *account, changed bool) Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accounts[name] = a
	if changed {
		s.gen++
		s.body.Store(nil)
	}
	return a.snap
}

// ordered returns servers ordered by id without duplicates (the first of
// each id kept) and the detail read times parallel to it (nil when none
// has one). servers itself is returned when it is in order already.
func ordered(servers []providers.Server, at []time.Time) ([]providers.Server, []int64) {
	inOrder := true
	for i := 1; i < len(servers); i++ {
		if !providers.IDLess(servers[i-1].ID, servers[i].ID) {
			inOrder = false
			break
		}
	}
	out, keep := servers, []int32(nil) // out[j] is servers[keep[j]]; keep nil: servers[j]
	if !inOrder {
		idx := make([]int32, len(servers))
		for i := range idx {
			idx[i] = int32(i)
		}
		sort.SliceStable(idx, func(i, j int) bool { return providers.IDLess(servers[idx[i]].ID, servers[idx[j]].ID) })
		out, keep = make([]providers.Server, 0, len(servers)), idx[:0]
		for _, i := range idx {
			if len(out) > 0 && out[len(out)-1].ID == servers[i].ID {
				continue // a duplicate id would emit duplicate series
			}
			out = append(out, servers[i])
			keep = append(keep, i)
		}
	}
	if at == nil {
		return out, nil
	}
	var detail []int64
	for j := range out {
		i := j
		if keep != nil {
			i = int(keep[j])
		}
		if !at[i].IsZero() {
			if detail == nil {
				detail = make([]int64, len(out))
			}
			detail[j] = at[i].Unix()
		}
	}
	return out, detail
}

// SetExclude makes names (per-server family names; others are ignored)
// the families left out of /metrics, and renders every account's series
// again when that changes them (a reload that changed
// global.exclude_metrics). It reports whether anything changed.
func (s *Store) SetExclude(names []string) bool {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	var skip [numFamilies]bool
	for f := range s.names {
		skip[f] = slices.Contains(names, s.names[f].name)
	}
	if skip == s.bld.skip {
		return false
	}
	s.bld.skip = skip
	// Only updates change s.accounts, and they hold applyMu.
	for name, old := range s.accounts {
		a := *old
		if a.blocks != nil {
			a.blocks, a.start = s.bld.build(a.snap.Provider, name, old, a.snap.Servers, a.detail, a.states, s.rendered)
		}
		a.skip = skip
		s.publish(name, &a, true)
	}
	return true
}

// Remove forgets an account (it left the configuration).
func (s *Store) Remove(name string) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.accounts[name]; ok {
		delete(s.accounts, name)
		s.gen++
		s.body.Store(nil)
	}
}

// Snapshot returns one account's snapshot (shared: not to be modified).
func (s *Store) Snapshot(name string) (Snapshot, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a, ok := s.accounts[name]
	if !ok {
		return Snapshot{}, false
	}
	return a.snap, true
}

// Snapshots returns every account's snapshot, ordered by account name. The
// server slices are shared and must not be modified.
func (s *Store) Snapshots() []Snapshot {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Snapshot, 0, len(s.accounts))
	for _, a := range s.accounts {
		out = append(out, a.snap)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Account < out[j].Account })
	return out
}

// generation changes whenever a server's data changes.
func (s *Store) generation() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.gen
}

// body is what a scrape writes for one generation: the stored blocks'
// family parts in exposition order, each family after its HELP and TYPE.
// The text is views into the blocks (nothing is copied); the compressed
// form is one buffer, the blocks' compressed parts moved into it (each
// exists once, in the last body planned). It is never modified once
// built.
type body struct {
	gen   uint64
	plain [][]byte
	// deflate is all of plain compressed: non-final deflate blocks
	// ending in a sync flush, so that a scrape can append its dynamic
	// part in new blocks.
	deflate []byte
	size    int    // bytes of plain in all
	crc     uint32 // CRC-32 of all of plain
}

// current returns the body of the current generation, planning it again
// if the series changed since the last. Concurrent scrapes share one plan.
func (s *Store) current() *body {
	s.mu.RLock()
	gen := s.gen
	s.mu.RUnlock()
	if b := s.body.Load(); b != nil && b.gen == gen {
		return b
	}
	s.bodyMu.Lock()
	defer s.bodyMu.Unlock()
	s.mu.RLock()
	gen = s.gen
	if b := s.body.Load(); b != nil && b.gen == gen {
		s.mu.RUnlock()
		return b
	}
	names := make([]string, 0, len(s.accounts))
	for n := range s.accounts {
		names = append(names, n)
	}
	sort.Strings(names)
	accts := make([]*account, len(names))
	for i, n := range names {
		accts[i] = s.accounts[n]
	}
	s.mu.RUnlock()
	// The accounts read are never modified (their blocks' compressed
	// parts are bodyMu's, held): planned without the lock. A plan that
	// an update overtook meanwhile serves this scrape but is not kept
	// (it would hold replaced blocks until the next scrape); the next
	// scrape plans again.
	b := plan(gen, accts, s.headers)
	s.mu.RLock()
	if s.gen == gen {
		s.body.Store(b)
	}
	s.mu.RUnlock()
	return b
}

// plan lays out the body of the given accounts (in order) and moves their
// blocks' compressed parts into it. The caller holds bodyMu.
func plan(gen uint64, accts []*account, headers *[numFamilies]piece) *body {
	n, zsize := 0, 0
	for f := 0; f < numFamilies; f++ {
		zsize += len(headers[f].z)
	}
	for _, a := range accts {
		n += len(a.blocks)
		for _, bl := range a.blocks {
			for f := 0; f < numFamilies; f++ {
				zsize += bl.zlen[f]
			}
		}
	}
	b := &body{gen: gen, plain: make([][]byte, 0, numFamilies*(n+1)), deflate: make([]byte, 0, zsize)}
	// Where each block's parts land in b.deflate: moved there once all
	// are copied (a part is read from where the block has it now).
	at := make(map[*block]*[numFamilies]int, n)
	for f := 0; f < numFamilies; f++ {
		header := false
		for _, a := range accts {
			for _, bl := range a.blocks {
				plain := bl.family(f)
				if len(plain) == 0 {
					continue
				}
				if !header {
					h := &headers[f]
					b.plain = append(b.plain, h.plain)
					b.deflate = append(b.deflate, h.z...)
					b.size += len(h.plain)
					b.crc = crcCombine(b.crc, h.crc, h.shift)
					header = true
				}
				pos := at[bl]
				if pos == nil {
					pos = new([numFamilies]int)
					at[bl] = pos
				}
				pos[f] = len(b.deflate)
				b.plain = append(b.plain, plain)
				b.deflate = append(b.deflate, bl.zpart(f)...)
				b.size += len(plain)
				b.crc = crcCombine(b.crc, bl.crc[f], bl.shift[f])
			}
		}
	}
	for bl, pos := range at {
		bl.z, bl.zat = b.deflate, *pos
	}
	return b
}
