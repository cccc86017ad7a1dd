// Package collector is the inventory: one background poller per account,
// a snapshot store that renders each server's series once per change, and
// the /metrics handler that streams the stored bytes. A scrape never calls
// a provider.
package collector

import (
	"bytes"
	"compress/flate"
	"hash/crc32"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/vps-exporter/vps_exporter/providers"
)

// Snapshot is what the store holds of one account after its last refresh.
type Snapshot struct {
	Provider string
	Account  string
	// Servers of the last successful refresh, ordered by id. When Up is
	// false they are stale: kept, but not to be acted on. They are kept
	// past stale_after too (Withdrawn), for service discovery, which keeps
	// the last targets as Prometheus' own discoveries do.
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
	Servers           []providers.Server
	// DetailAt, when not nil, is parallel to Servers: when each server's
	// detail values were read (zero: it has none).
	DetailAt []time.Time
	Details  bool
	Backlog  int
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

type account struct {
	snap    Snapshot
	entries []*entry // ordered like snap.Servers
}

// Store holds every account's snapshot and the rendered /metrics body.
type Store struct {
	names *[numFamilies]family

	mu       sync.RWMutex
	accounts map[string]*account
	gen      uint64 // bumped whenever the rendered series change

	bodyMu sync.Mutex
	body   *body // nil until first assembled; never modified once built
}

// body is the assembled per-server part of /metrics for one generation. It
// is the only copy of the rendered series of servers that did not change
// since it was assembled: their entries point into it.
type body struct {
	gen   uint64
	plain []byte
	// deflate is plain compressed as non-final deflate blocks ending in a
	// sync flush, so a scrape can append its dynamic part in new blocks.
	deflate []byte
	crc     uint32
}

// NewStore returns an empty store.
func NewStore() *Store {
	names := families()
	return &Store{names: &names, accounts: map[string]*account{}}
}

// Update records one list refresh of an account (without detail reads).
// On error the previous servers are kept (stale) and only the account's
// status changes.
func (s *Store) Update(provider, name string, servers []providers.Server, err error, started time.Time, took time.Duration) Snapshot {
	return s.Apply(Refresh{Provider: provider, Account: name, Servers: servers, Err: err, Started: started, Took: took, At: started.Add(took)})
}

// Apply records one update of an account. A failed refresh keeps the
// previous servers (stale) and changes only the account's status, until
// r.StaleAfter has passed since the last successful one: then the
// account's per-server series leave /metrics (its snapshot keeps the
// servers) until a refresh succeeds.
func (s *Store) Apply(r Refresh) Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	provider, name := r.Provider, r.Account
	a := s.accounts[name]
	if a == nil || a.snap.Provider != provider {
		a = &account{snap: Snapshot{Provider: provider, Account: name}}
		s.accounts[name] = a
		s.gen++
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
		if len(a.entries) > 0 {
			a.entries = nil
			s.gen++
		}
		a.snap.Withdrawn = true
		return copySnap(a.snap)
	}
	if r.Err != nil && r.DetailAt == nil {
		if !a.snap.Withdrawn {
			return copySnap(a.snap)
		}
		// Back within stale_after (it was raised): the last servers'
		// series return.
		r.Servers = a.snap.Servers
	}
	a.snap.Withdrawn = false
	a.snap.DetailBacklog = r.Backlog

	type item struct {
		srv      providers.Server
		detailAt int64 // Unix seconds of the detail read; 0: none
	}
	sorted := make([]item, len(r.Servers))
	for i, sv := range r.Servers {
		sorted[i] = item{sv, 0}
		if r.DetailAt != nil && !r.DetailAt[i].IsZero() {
			sorted[i].detailAt = r.DetailAt[i].Unix()
		}
	}
	sort.Slice(sorted, func(i, j int) bool { return idLess(sorted[i].srv.ID, sorted[j].srv.ID) })
	old := make(map[string]*entry, len(a.entries))
	for _, e := range a.entries {
		old[e.srv.ID] = e
	}
	entries := make([]*entry, 0, len(sorted))
	for i, it := range sorted {
		if i > 0 && sorted[i-1].srv.ID == it.srv.ID {
			continue // a duplicate id would emit duplicate series
		}
		// A server is rendered again only when its data or its detail
		// read changed.
		if e, ok := old[it.srv.ID]; ok && e.srv == it.srv && e.detailAt == it.detailAt {
			entries = append(entries, e)
			continue
		}
		entries = append(entries, render(provider, name, it.srv, it.detailAt, s.names))
	}
	if !slices.Equal(entries, a.entries) {
		s.gen++
	}
	a.entries = entries
	a.snap.Servers = make([]providers.Server, len(entries))
	for i, e := range entries {
		a.snap.Servers[i] = e.srv
	}
	return copySnap(a.snap)
}

// Remove forgets an account (it left the configuration).
func (s *Store) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.accounts[name]; ok {
		delete(s.accounts, name)
		s.gen++
	}
}

// Snapshot returns one account's snapshot.
func (s *Store) Snapshot(name string) (Snapshot, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a, ok := s.accounts[name]
	if !ok {
		return Snapshot{}, false
	}
	return copySnap(a.snap), true
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

func copySnap(s Snapshot) Snapshot {
	s.Servers = append([]providers.Server(nil), s.Servers...)
	return s
}

// idLess orders ids numerically when both are numbers, else as text.
func idLess(a, b string) bool {
	if len(a) != len(b) && isDigits(a) && isDigits(b) {
		return len(a) < len(b)
	}
	return a < b
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// current returns the assembled body, rebuilding it if the series changed
// since it was built. Concurrent scrapes share one rebuild.
func (s *Store) current() *body {
	s.mu.RLock()
	gen := s.gen
	s.mu.RUnlock()
	s.bodyMu.Lock()
	defer s.bodyMu.Unlock()
	if s.body != nil && s.body.gen == gen {
		return s.body
	}
	// Assembly moves every entry's lines into the new body: exclusive.
	s.mu.Lock()
	gen = s.gen
	plain := s.assembleLocked()
	s.mu.Unlock()
	var z bytes.Buffer
	z.Grow(len(plain) / 4)
	fw, _ := flate.NewWriter(&z, flate.BestSpeed)
	_, _ = fw.Write(plain)
	_ = fw.Flush() // sync flush: byte-aligned, not final
	s.body = &body{gen: gen, plain: plain, deflate: bytes.Clone(z.Bytes()), crc: crc32.ChecksumIEEE(plain)}
	return s.body
}

// assembleLocked writes each family's HELP/TYPE once, then that family's
// stored lines of every server of every account, and points every entry at
// its lines in the result (dropping its own copy, if it had one).
func (s *Store) assembleLocked() []byte {
	var prev []byte
	if s.body != nil {
		prev = s.body.plain
	}
	names := make([]string, 0, len(s.accounts))
	size := 0
	for n, a := range s.accounts {
		names = append(names, n)
		for _, e := range a.entries {
			size += e.size()
		}
	}
	sort.Strings(names)
	out := make([]byte, 0, size+numFamilies*160)
	for f := 0; f < numFamilies; f++ {
		header := false
		for _, n := range names {
			for _, e := range s.accounts[n].entries {
				lines := e.lines(f, prev)
				if len(lines) == 0 {
					continue
				}
				if !header {
					out = append(out, "# HELP "...)
					out = append(out, s.names[f].name...)
					out = append(out, ' ')
					out = append(out, s.names[f].help...)
					out = append(out, "\n# TYPE "...)
					out = append(out, s.names[f].name...)
					out = append(out, " gauge\n"...)
					header = true
				}
				// Family f is not read again in this pass: repoint it now.
				e.at[f] = uint32(len(out))
				out = append(out, lines...)
			}
		}
	}
	for _, a := range s.accounts {
		for _, e := range a.entries {
			e.buf = nil
		}
	}
	return out
}
