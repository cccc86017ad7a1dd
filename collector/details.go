package collector

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/apiclient"
)

// details schedules one account's per-server detail reads (VPS.org) apart
// from its list: the list is read every interval, the details as the API
// budget allows, the least recently tried first (a new server before any
// other), each server at most once per interval. A read that fails keeps
// the server's last detail values until they are older than the keep limit
// (maxAgeLocked); the time of its last successful read stays. Credentials
// refused on a list (401/403) stop the reads until a list succeeds again.
// A detail read refused so marks its server only, however many others are
// refused too: it is retried with a backoff (retryAfterLocked) while the
// others are read as before. A revoked key shows as the next refused list.
type details struct {
	p        providers.Detailer
	interval time.Duration
	logger   log.Logger

	mu      sync.Mutex
	servers map[string]*detailRec
	queue   []string // ids to read next, in order; rebuilt when empty
	wake    chan struct{}
	dirty   bool // a read finished since the last publish
	// The keep limit grows with the time a full pass takes, measured as
	// the rate of successful reads: completions reads in active time,
	// counted from one successful read to the next only. A failure or a
	// stop ends the stretch (lastOK zero), so the measure stands still
	// while reads fail.
	completions int
	active      time.Duration
	lastOK      time.Time
	// stopped: nothing is read until the next successful list: the list
	// was refused (401/403).
	stopped bool
	// accountDown: the account's last list failed. Detail failures are
	// then the account's, logged with it, not server by server.
	accountDown bool
	// recovered are the servers whose logged failure ended since the last
	// report.
	recovered []string
}

type detailRec struct {
	srv      providers.Server // the detail read, converted
	at       time.Time        // last successful read; zero when none
	tried    time.Time        // last attempt; zero when never tried
	inFlight bool
	// failing: the last attempt failed, at failedAt, with err.
	failing  bool
	failedAt time.Time
	err      error
	// refusals is how many reads in a row were refused (401/403): the
	// server is retried after retryAfterLocked, not every interval.
	refusals int
	// reported: the failure has been dealt with in the log, by a line of
	// its own or (quiet) as part of the account's outage.
	reported, quiet bool
}

// maxLoggedServers is how many servers starting (or ending) to fail at
// once are logged one line each; more are one line with their count.
const maxLoggedServers = 3

// maxBackoffShift bounds a refused server's backoff: 2^4 = 16 intervals.
const maxBackoffShift = 4

func newDetails(p providers.Detailer, interval time.Duration, logger log.Logger) *details {
	return &details{p: p, interval: interval, logger: logger, servers: map[string]*detailRec{}, wake: make(chan struct{}, 1)}
}

// retryAfterLocked is how long after its last attempt a server is due
// again: an interval, doubled for each refused read in a row (at most
// 2^maxBackoffShift intervals).
func (d *details) retryAfterLocked(r *detailRec) time.Duration {
	return d.interval << min(r.refusals, maxBackoffShift)
}

// setList makes the scheduled servers those of the latest list; new ones
// are read first.
func (d *details) setList(list []providers.Server) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.setListLocked(list)
}

func (d *details) setListLocked(list []providers.Server) {
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
	resume := d.stopped
	d.stopped = false
	if len(fresh) > 0 {
		d.queue = append(fresh, d.queue...)
	}
	if len(fresh) > 0 || resume {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// listed is told of every list refresh (started at started): a list
// refused for its credentials stops the detail reads; a failed list makes
// detail failures the account's (not logged server by server); a
// successful one schedules its servers, resumes stopped reads and logs the
// detail failures and recoveries since the last list, which started after
// them (so that a failure the list then shows to be the account's is not
// logged per server).
func (d *details) listed(list []providers.Server, err error, started time.Time) {
	var lines logLines
	defer lines.write(d.logger) // after the unlock
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		if errors.Is(err, providers.ErrUnauthorized) {
			d.stopped, d.lastOK = true, time.Time{}
		}
		d.accountDown = true
		for _, r := range d.servers {
			if r.failing && !r.reported {
				r.reported, r.quiet = true, true
			}
		}
		return
	}
	if d.accountDown {
		// The outage is over: its failures are forgotten (the refused
		// servers are read again at once), and a server that fails from
		// now on is logged.
		d.accountDown = false
		for _, r := range d.servers {
			if r.quiet {
				r.failing, r.reported, r.quiet, r.refusals = false, false, false, 0
			}
		}
	}
	d.setListLocked(list)
	d.reportLocked(started, &lines)
}

// reportLocked reports the servers that started failing before started
// and those whose logged failure has ended: a line each, or one line for
// many.
func (d *details) reportLocked(started time.Time, lines *logLines) {
	var failed, refused []string
	for id, r := range d.servers {
		if r.failing && !r.reported && !r.failedAt.After(started) {
			r.reported = true
			if errors.Is(r.err, providers.ErrUnauthorized) {
				refused = append(refused, id)
			} else {
				failed = append(failed, id)
			}
		}
	}
	d.reportGroupLocked(failed, lines, "detail read failed; the server keeps its list data and its last detail values",
		"detail reads failed; these servers keep their list data and their last detail values")
	d.reportGroupLocked(refused, lines, "detail read refused for this server (the account's list is accepted); it is retried with a backoff, its detail values age",
		"detail reads refused for these servers (the account's list is accepted); they are retried with a backoff, their detail values age")
	var rec []string
	for _, id := range d.recovered {
		if _, ok := d.servers[id]; ok { // not gone from the list meanwhile
			rec = append(rec, id)
		}
	}
	d.recovered = nil
	slices.SortFunc(rec, cmpID)
	if len(rec) <= maxLoggedServers {
		for _, id := range rec {
			lines.add(level.Info, "id", id, "msg", "detail read recovered")
		}
	} else {
		lines.add(level.Info, "msg", "detail reads recovered", "servers", len(rec), "ids", idSample(rec))
	}
}

// reportGroupLocked logs servers starting to fail: a line each (one), or
// one line for many.
func (d *details) reportGroupLocked(ids []string, lines *logLines, one, many string) {
	slices.SortFunc(ids, cmpID)
	if len(ids) <= maxLoggedServers {
		for _, id := range ids {
			lines.add(level.Warn, "id", id, "msg", one, "err", d.servers[id].err)
		}
		return
	}
	lines.add(level.Warn, "msg", many, "servers", len(ids), "ids", idSample(ids), "err", d.servers[ids[0]].err)
}

// logLines are log lines gathered under the lock and written after it.
type logLines []logLine

type logLine struct {
	level func(log.Logger) log.Logger
	kv    []any
}

func (l *logLines) add(lvl func(log.Logger) log.Logger, kv ...any) {
	*l = append(*l, logLine{lvl, kv})
}

func (l *logLines) write(logger log.Logger) {
	for _, ln := range *l {
		_ = ln.level(logger).Log(ln.kv...)
	}
}

// idSample is the first few ids of a sorted list, for a log line.
func idSample(ids []string) string {
	const n = 5
	if len(ids) <= n {
		return strings.Join(ids, ",")
	}
	return strings.Join(ids[:n], ",") + ",..."
}

func cmpID(a, b string) int {
	switch {
	case a == b:
		return 0
	case providers.IDLess(a, b):
		return -1
	}
	return 1
}

// detailState is what one account's detail reads leave to the poller
// that replaces theirs (a reload): every server's record, the measure of
// the keep limit, and the list the details were merged into.
type detailState struct {
	servers     map[string]*detailRec
	completions int
	active      time.Duration
	last        []providers.Server
}

// handOver returns the state of reads that have stopped, for adopt.
func (d *details) handOver(last []providers.Server) *detailState {
	d.mu.Lock()
	defer d.mu.Unlock()
	return &detailState{servers: d.servers, completions: d.completions, active: d.active, last: last}
}

// adopt takes over a predecessor's state (before the reads start) and
// returns its last list. The servers keep their detail values, read
// times and failures as logged; a refused server is tried again at its
// time, without a backoff (the credentials may be new), and refusals in
// a row are not carried: the new credentials start with the next list.
func (d *details) adopt(st *detailState) []providers.Server {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.servers = make(map[string]*detailRec, len(st.servers))
	for id, r := range st.servers {
		c := *r
		c.inFlight, c.refusals = false, 0
		d.servers[id] = &c
	}
	d.completions, d.active = st.completions, st.active
	return st.last
}

// maxAgeLocked is how long detail values are kept without a successful
// read: ten intervals, or three times a full pass over the account at the
// rate successful reads completed, whichever is longer. Time spent
// failing or stopped does not count, so the limit does not grow while the
// reads fail.
func (d *details) maxAgeLocked() time.Duration {
	limit := 10 * d.interval
	if d.completions >= 10 && d.active > 0 {
		pass := time.Duration(float64(len(d.servers)) * float64(d.active) / float64(d.completions))
		limit = max(limit, 3*pass)
	}
	return limit
}

// merge returns the list with each server's detail values (where they are
// recent enough), when each server's detail was last read successfully
// (zero: never; kept when its values are dropped for age, so that alerts
// see how old it is), and the backlog: how many servers have no detail
// read younger than the interval.
func (d *details) merge(list []providers.Server, now time.Time) ([]providers.Server, []time.Time, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	maxAge := d.maxAgeLocked()
	out := make([]providers.Server, len(list))
	at := make([]time.Time, len(list))
	backlog := 0
	for i, s := range list {
		out[i] = s
		r := d.servers[s.ID]
		if r == nil || r.at.IsZero() {
			backlog++
			continue
		}
		at[i] = r.at
		if now.Sub(r.at) > d.interval {
			backlog++
		}
		if now.Sub(r.at) <= maxAge {
			out[i] = d.p.MergeDetail(s, r.srv)
		}
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
	if d.stopped {
		return "", d.interval // until setList resumes the reads
	}
	due := func(r *detailRec) bool {
		return r != nil && !r.inFlight && (r.tried.IsZero() || now.Sub(r.tried) >= d.retryAfterLocked(r))
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
				wait = min(wait, r.tried.Add(d.retryAfterLocked(r)).Sub(now))
			}
		}
		if len(d.queue) == 0 {
			return "", max(wait, 10*time.Millisecond)
		}
		slices.SortFunc(d.queue, func(a, b string) int {
			if c := d.servers[a].tried.Compare(d.servers[b].tried); c != 0 {
				return c
			}
			if providers.IDLess(a, b) {
				return -1
			}
			return 1
		})
	}
}

// done records the outcome of one read. Failures are logged by
// reportLocked once the next list shows whether they are the account's;
// a refused read backs its server off, whatever the other servers' reads
// did: only a refused list stops the account's reads.
func (d *details) done(id string, srv providers.Server, err error, now time.Time) {
	var lines logLines
	defer lines.write(d.logger) // after the unlock
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.servers[id]
	if r != nil {
		r.inFlight = false
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return // the poller stops: not the provider's failure
		}
		d.lastOK = time.Time{}
		lines.add(level.Debug, "id", id, "msg", "detail read attempt failed", "err", err)
		if throttled(err) {
			return // the account's rate, cut by the client: not this server
		}
		if r == nil {
			return // gone from the list meanwhile
		}
		if errors.Is(err, providers.ErrUnauthorized) {
			d.refusedLocked(r, err, now)
			return
		}
		r.failing, r.failedAt, r.err = true, now, err
		if d.accountDown && !r.reported {
			r.reported, r.quiet = true, true
		}
		return
	}
	if !d.lastOK.IsZero() {
		d.active += now.Sub(d.lastOK)
		d.completions++
	}
	d.lastOK = now
	if r == nil {
		return
	}
	if r.failing && r.reported && !r.quiet {
		d.recovered = append(d.recovered, id)
	}
	r.failing, r.reported, r.quiet, r.err, r.refusals = false, false, false, nil, 0
	r.srv, r.at, d.dirty = srv, now, true
}

// refusedLocked records a read of server id refused for its credentials:
// the server alone is backed off, and its refusal is logged by
// reportLocked at the next list, unless the account is down (then it is
// the outage's, quiet). It never stops the other servers' reads: only a
// refused list says the account's key is refused.
func (d *details) refusedLocked(r *detailRec, err error, now time.Time) {
	r.refusals++
	r.failing, r.failedAt, r.err = true, now, err
	if d.accountDown && !r.reported {
		r.reported, r.quiet = true, true
	}
}

// throttled is whether err is the provider's 429.
func throttled(err error) bool {
	var ae *apiclient.Error
	return errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests
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
