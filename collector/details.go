package collector

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/vps-exporter/vps_exporter/providers"
)

// details schedules one account's per-server detail reads (VPS.org) apart
// from its list: the list is read every interval, the details as the API
// budget allows, the least recently tried first (a new server before any
// other), each server at most once per interval. A read that fails keeps
// the server's last detail values until they are older than maxAge.
type details struct {
	p        providers.Detailer
	interval time.Duration
	logger   log.Logger

	mu      sync.Mutex
	servers map[string]*detailRec
	queue   []string // ids to read next, in order; rebuilt when empty
	wake    chan struct{}
	dirty   bool // a read finished since the last publish
	// completions and first measure the rate details are read at, so
	// that the staleness limit grows with the time a full pass takes.
	completions int
	first       time.Time
}

type detailRec struct {
	srv      providers.Server // the detail read, converted
	at       time.Time        // last successful read; zero when none
	tried    time.Time        // last attempt; zero when never tried
	failing  bool             // the last attempt failed (logged once)
	inFlight bool
}

func newDetails(p providers.Detailer, interval time.Duration, logger log.Logger) *details {
	return &details{p: p, interval: interval, logger: logger, servers: map[string]*detailRec{}, wake: make(chan struct{}, 1)}
}

// setList makes the scheduled servers those of the latest list; new ones
// are read first.
func (d *details) setList(list []providers.Server) {
	d.mu.Lock()
	defer d.mu.Unlock()
	present := make(map[string]bool, len(list))
	var fresh []string
	for _, s := range list {
		present[s.ID] = true
		if _, ok := d.servers[s.ID]; !ok {
			d.servers[s.ID] = &detailRec{}
			fresh = append(fresh, s.ID)
		}
	}
	for id := range d.servers {
		if !present[id] {
			delete(d.servers, id)
		}
	}
	if len(fresh) > 0 {
		d.queue = append(fresh, d.queue...)
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// maxAgeLocked is how long detail values are kept without a successful
// read: ten intervals, or three times a full pass over the account at
// the rate reads have completed, whichever is longer.
func (d *details) maxAgeLocked(now time.Time) time.Duration {
	limit := 10 * d.interval
	if d.completions >= 10 {
		perSec := float64(d.completions) / max(now.Sub(d.first).Seconds(), 1e-3)
		pass := time.Duration(float64(len(d.servers)) / perSec * float64(time.Second))
		limit = max(limit, 3*pass)
	}
	return limit
}

// merge returns the list with each server's detail values (where they are
// recent enough), when each was read (zero: none), and the backlog: how
// many servers have no detail read younger than the interval.
func (d *details) merge(list []providers.Server, now time.Time) ([]providers.Server, []time.Time, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	maxAge := d.maxAgeLocked(now)
	out := make([]providers.Server, len(list))
	at := make([]time.Time, len(list))
	backlog := 0
	for i, s := range list {
		out[i] = s
		r := d.servers[s.ID]
		if r == nil || r.at.IsZero() || now.Sub(r.at) > maxAge {
			backlog++
			continue
		}
		if now.Sub(r.at) > d.interval {
			backlog++
		}
		out[i] = d.p.MergeDetail(s, r.srv)
		at[i] = r.at
	}
	return out, at, backlog
}

// takeDirty reports whether a read finished since the last call.
func (d *details) takeDirty() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	dirty := d.dirty
	d.dirty = false
	return dirty
}

// next picks the server to read now and marks it in flight, or says how
// long until one is due.
func (d *details) next(now time.Time) (string, time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	due := func(r *detailRec) bool {
		return r != nil && !r.inFlight && (r.tried.IsZero() || now.Sub(r.tried) >= d.interval)
	}
	for {
		for len(d.queue) > 0 {
			id := d.queue[0]
			d.queue = d.queue[1:]
			if r := d.servers[id]; due(r) {
				r.inFlight, r.tried = true, now
				return id, 0
			}
		}
		// A new pass: every due server, least recently tried first.
		wait := d.interval
		for id, r := range d.servers {
			switch {
			case due(r):
				d.queue = append(d.queue, id)
			case r.inFlight:
			default:
				wait = min(wait, r.tried.Add(d.interval).Sub(now))
			}
		}
		if len(d.queue) == 0 {
			return "", max(wait, 10*time.Millisecond)
		}
		slices.SortFunc(d.queue, func(a, b string) int {
			if c := d.servers[a].tried.Compare(d.servers[b].tried); c != 0 {
				return c
			}
			if idLess(a, b) {
				return -1
			}
			return 1
		})
	}
}

// done records the outcome of one read. A failure is logged when a server
// starts failing and when it recovers, not on every attempt.
func (d *details) done(id string, srv providers.Server, err error, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.servers[id]
	if r == nil {
		return // gone from the list meanwhile
	}
	r.inFlight = false
	logger := log.With(d.logger, "id", id)
	if err != nil {
		if !r.failing && !errors.Is(err, context.Canceled) {
			level.Warn(logger).Log("msg", "detail read failed; the server keeps its list data and its last detail values", "err", err)
		}
		r.failing = true
		return
	}
	if r.failing {
		level.Info(logger).Log("msg", "detail read recovered")
	}
	if d.completions == 0 {
		d.first = now
	}
	d.completions++
	r.srv, r.at, r.failing, d.dirty = srv, now, false, true
}

// run reads details with up to workers requests in flight until ctx ends.
func (d *details) run(ctx context.Context, workers int) {
	jobs := make(chan string)
	var wg sync.WaitGroup
	for i := 0; i < max(workers, 1); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range jobs {
				srv, err := d.p.Detail(ctx, id)
				d.done(id, srv, err, time.Now())
			}
		}()
	}
	defer wg.Wait()
	defer close(jobs)
	for ctx.Err() == nil {
		id, wait := d.next(time.Now())
		if id == "" {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-d.wake:
				t.Stop()
			case <-t.C:
			}
			continue
		}
		select {
		case jobs <- id:
		case <-ctx.Done():
			return
		}
	}
}
