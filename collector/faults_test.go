package collector

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/vps-exporter/vps_exporter/internal/syncbuf"
	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/apiclient"
	"github.com/vps-exporter/vps_exporter/providers/sim"
	"github.com/vps-exporter/vps_exporter/providers/vpsorg"
)

// flakyAccount is a provider whose list and details fail on demand: the
// list with listErr, every detail with detailErr (nil: they succeed).
type flakyAccount struct {
	name string
	ids  []string

	mu        sync.Mutex
	listErr   error
	detailErr error
	lists     int
	details   int
}

func (f *flakyAccount) Type() string    { return "vpsorg" }
func (f *flakyAccount) Account() string { return f.name }
func (f *flakyAccount) List(ctx context.Context) ([]providers.Server, error) {
	return f.ListSummary(ctx)
}
func (f *flakyAccount) Get(context.Context, string) (providers.Server, error) {
	return providers.Server{}, errors.New("not used")
}
func (f *flakyAccount) Actions() []providers.Action { return nil }
func (f *flakyAccount) Do(context.Context, string, providers.Action, providers.ActionParams) (providers.ActionResult, error) {
	return providers.ActionResult{}, errors.New("not used")
}
func (f *flakyAccount) ListSummary(context.Context) ([]providers.Server, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	if f.listErr != nil {
		return nil, f.listErr
	}
	return servers(f.ids...), nil
}
func (f *flakyAccount) Detail(_ context.Context, id string) (providers.Server, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.details++
	if f.detailErr != nil {
		return providers.Server{}, f.detailErr
	}
	return providers.Server{ID: id, CPUUsageRatio: providers.Some(0.5)}, nil
}
func (f *flakyAccount) MergeDetail(list, d providers.Server) providers.Server {
	list.CPUUsageRatio = d.CPUUsageRatio
	return list
}

func (f *flakyAccount) set(listErr, detailErr error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listErr, f.detailErr = listErr, detailErr
}

func (f *flakyAccount) counts() (lists, details int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lists, f.details
}

// linesAt returns the lines of logs at the given levels.
func linesAt(logs *syncbuf.Buffer, levels ...string) []string {
	var out []string
	for _, l := range strings.Split(logs.String(), "\n") {
		for _, lv := range levels {
			if strings.Contains(l, "level="+lv+" ") {
				out = append(out, l)
			}
		}
	}
	return out
}

func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ids(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprint(100 + i)
	}
	return out
}

// An account that goes down is logged once with its error, reminded of at
// most once per reminder period while it stays down, and logged once when
// it recovers: not at every refresh.
func TestPollerLogsWhatChanged(t *testing.T) {
	for _, tc := range []struct {
		name    string
		details bool
	}{{"list only", false}, {"with details", true}} {
		t.Run(tc.name, func(t *testing.T) {
			f := &flakyAccount{name: "acct", ids: ids(5)}
			var p providers.Provider = f
			if !tc.details {
				p = listOnly{f}
			}
			logs := &syncbuf.Buffer{}
			st := NewStore()
			m := NewManager(st, log.NewLogfmtLogger(logs), nil)
			m.remindEvery = 400 * time.Millisecond
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			m.Apply(ctx, []Account{{Provider: p, Interval: 20 * time.Millisecond, Key: "k", StaleAfter: time.Hour}})
			defer m.Stop()
			waitUntil(t, "the first refresh", 5*time.Second, m.Ready)

			f.set(errors.New("HTTP 503: upstream down"), errors.New("HTTP 503: upstream down"))
			start := time.Now()
			waitUntil(t, "the account down", 5*time.Second, func() bool { sn, _ := st.Snapshot("acct"); return !sn.Up })
			lists0, _ := f.counts()
			// Stay down for about 2.5 reminder periods.
			for time.Since(start) < time.Second {
				time.Sleep(10 * time.Millisecond)
			}
			lists1, _ := f.counts()
			downFor := time.Since(start)
			warns := linesAt(logs, "warn")
			// The first line, then at most one per reminder period.
			maxWarns := 1 + int(downFor/m.remindEvery)
			if len(warns) == 0 || len(warns) > maxWarns {
				t.Fatalf("%d failed refreshes in %v logged %d warnings; want 1 to %d:\n%s",
					lists1-lists0, downFor.Round(time.Millisecond), len(warns), maxWarns, strings.Join(warns, "\n"))
			}
			if lists1-lists0 < 10 {
				t.Fatalf("only %d refreshes while down: the test proves nothing", lists1-lists0)
			}
			if !strings.Contains(warns[0], "upstream down") || !strings.Contains(warns[0], "account=acct") {
				t.Errorf("the first warning lacks the error or the account: %s", warns[0])
			}
			if len(warns) < 2 || !strings.Contains(warns[1], "still down") {
				t.Errorf("no reminder after %v down with a %v reminder period:\n%s", downFor, m.remindEvery, strings.Join(warns, "\n"))
			}
			if n := len(linesAt(logs, "info")); n != 0 {
				t.Errorf("%d info lines while down", n)
			}

			f.set(nil, nil)
			waitUntil(t, "the account up", 5*time.Second, func() bool { sn, _ := st.Snapshot("acct"); return sn.Up })
			time.Sleep(200 * time.Millisecond) // more successful refreshes
			infos := linesAt(logs, "info")
			if len(infos) != 1 || !strings.Contains(infos[0], "recovered") {
				t.Errorf("recovery logged as %q; want one info line", infos)
			}
			if n := len(linesAt(logs, "warn")); n != len(warns) {
				t.Errorf("%d more warnings after the recovery", n-len(warns))
			}
		})
	}
}

// While the whole account fails (its list and every detail: the API is
// down), detail failures are not logged server by server: the account's
// one warning says it. The same on the real client against the simulator.
func TestDetailFailuresQuietWhileAccountDown(t *testing.T) {
	s := sim.New(sim.Options{PerAPI: map[sim.API]int{sim.VPSOrg: 40, sim.VPNBingo: 0, sim.E2E: 0}, Seed: 9})
	u := serveSim(t, s)(sim.VPSOrg)
	p := vpsorg.New(vpsorg.Options{Account: "vps", BaseURL: u, Token: "t", HTTP: apiclient.Config{BackoffBase: time.Millisecond, MaxRetries: 1}})
	logs := &syncbuf.Buffer{}
	st := NewStore()
	m := NewManager(st, log.NewLogfmtLogger(logs), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const interval = 200 * time.Millisecond
	m.Apply(ctx, []Account{{Provider: p, Interval: interval, Key: "k", MaxConcurrency: 4, StaleAfter: time.Hour}})
	defer m.Stop()
	waitUntil(t, "every detail read", 15*time.Second, func() bool {
		sn, _ := st.Snapshot("vps")
		n := 0
		for _, sv := range sn.Servers {
			if sv.CPUUsageRatio.OK {
				n++
			}
		}
		return n == 40
	})
	s.SetFault(sim.VPSOrg, sim.Fault{Kind: sim.FaultStatus, Status: 503})
	time.Sleep(10 * interval) // every server's detail is tried again
	req := s.Requests(sim.VPSOrg)
	lines := linesAt(logs, "warn", "info", "error")
	if len(lines) != 1 || !strings.Contains(lines[0], "account down") {
		t.Errorf("an API down for %v (%v requests) logged %d lines; want the account's one warning:\n%s",
			10*interval, req, len(lines), strings.Join(lines, "\n"))
	}
	s.ClearFaults()
	waitUntil(t, "the account up", 5*time.Second, func() bool { sn, _ := st.Snapshot("vps"); return sn.Up })
	time.Sleep(10 * interval)
	lines = linesAt(logs, "warn", "info", "error")
	if len(lines) != 2 || !strings.Contains(lines[1], "recovered") {
		t.Errorf("after the recovery: %d lines; want the warning and one recovery line:\n%s", len(lines), strings.Join(lines, "\n"))
	}
}

// A single server whose detail fails while the rest of the account works
// is logged once by id, and once when it recovers; many servers starting
// to fail together are one line.
func TestDetailFailureLoggedOncePerServer(t *testing.T) {
	f := &fakeDetailer{cpu: map[string]float64{}}
	for _, id := range ids(30) {
		f.cpu[id] = 0.5
	}
	logs := &syncbuf.Buffer{}
	d := newDetails(f, time.Minute, log.NewLogfmtLogger(logs))
	t0 := time.Unix(1.7e9, 0)
	d.setList(servers(ids(30)...))
	pass := func(now time.Time) {
		for {
			id, _ := d.next(now)
			if id == "" {
				return
			}
			srv, err := f.Detail(context.Background(), id)
			d.done(id, srv, err, now)
		}
	}
	pass(t0)
	d.listed(servers(ids(30)...), nil, t0)
	// One server fails, for several passes.
	delete(f.cpu, "105")
	for i := 1; i <= 3; i++ {
		now := t0.Add(time.Duration(i) * time.Minute)
		pass(now)
		d.listed(servers(ids(30)...), nil, now)
	}
	warns := linesAt(logs, "warn")
	if len(warns) != 1 || !strings.Contains(warns[0], "id=105") || !strings.Contains(warns[0], "HTTP 500") {
		t.Fatalf("one failing server logged as:\n%s", strings.Join(warns, "\n"))
	}
	f.cpu["105"] = 0.7
	now := t0.Add(4 * time.Minute)
	pass(now)
	d.listed(servers(ids(30)...), nil, now)
	if infos := linesAt(logs, "info"); len(infos) != 1 || !strings.Contains(infos[0], "id=105") {
		t.Fatalf("its recovery logged as %q", infos)
	}
	// A throttled read (429) is the account's rate, not a server failing.
	now = t0.Add(4*time.Minute + time.Second)
	d.done("110", providers.Server{}, &apiclient.Error{Status: 429, Msg: "Request was throttled."}, now)
	d.listed(servers(ids(30)...), nil, now)
	if warns := linesAt(logs, "warn"); len(warns) != 1 {
		t.Fatalf("a throttled read was logged:\n%s", strings.Join(warns[1:], "\n"))
	}
	// Twenty servers fail at once: one line, with the count.
	for _, id := range ids(20) {
		delete(f.cpu, id)
	}
	now = t0.Add(5 * time.Minute)
	pass(now)
	d.listed(servers(ids(30)...), nil, now)
	warns = linesAt(logs, "warn")
	if len(warns) != 2 || !strings.Contains(warns[1], "servers=20") {
		t.Fatalf("twenty failing servers logged as:\n%s", strings.Join(warns[1:], "\n"))
	}
}

// 401/403 on a list: the account is down and no detail is read until a
// list succeeds again. Detail reads refused the same way (a key without
// the detail scope) back each server off, and only it: they never stop the
// account's reads (issue 24), and the account stays up.
func TestUnauthorizedStopsDetailReads(t *testing.T) {
	refused := fmt.Errorf(`vpsorg account "acct": GET /api/v1/servers/: HTTP 401: Invalid or missing API token: %w`, providers.ErrUnauthorized)
	f := &flakyAccount{name: "acct", ids: ids(40)}
	logs := &syncbuf.Buffer{}
	st := NewStore()
	m := NewManager(st, log.NewLogfmtLogger(logs), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const interval = 50 * time.Millisecond
	m.Apply(ctx, []Account{{Provider: f, Interval: interval, Key: "k", MaxConcurrency: 4, StaleAfter: time.Hour}})
	defer m.Stop()
	waitUntil(t, "the first pass of details", 5*time.Second, func() bool { _, d := f.counts(); return d >= 40 })

	// The key is revoked: lists and details get 401.
	f.set(refused, refused)
	waitUntil(t, "the account down", 5*time.Second, func() bool { sn, _ := st.Snapshot("acct"); return !sn.Up })
	// A read dispatched before the refused list stopped the reads may
	// still reach the provider: counted from two lists later.
	listsDown, _ := f.counts()
	waitUntil(t, "two more refused lists", 5*time.Second, func() bool { l, _ := f.counts(); return l >= listsDown+2 })
	lists0, details0 := f.counts()
	time.Sleep(20 * interval)
	lists1, details1 := f.counts()
	if lists1-lists0 < 5 {
		t.Fatalf("only %d lists in %v", lists1-lists0, 20*interval)
	}
	if n := details1 - details0; n > 0 {
		t.Errorf("%d detail reads while every list was refused (%d lists); want none", n, lists1-lists0)
	}
	if lines := linesAt(logs, "warn", "info", "error"); len(lines) > 2 {
		t.Errorf("%d log lines for one revoked key:\n%s", len(lines), strings.Join(lines, "\n"))
	}

	// A new key: the next list succeeds and details are read again.
	f.set(nil, nil)
	waitUntil(t, "detail reads again", 5*time.Second, func() bool { _, d := f.counts(); return d >= details1+40 })

	// Only the detail endpoint refuses (a key without that scope): each
	// server is backed off on its own (tried after 1, 2, 4, 8, 16
	// intervals), not read every interval, and logged in one line for
	// them all, once.
	warns0 := len(linesAt(logs, "warn"))
	f.set(nil, refused)
	_, d0 := f.counts()
	lists0, _ = f.counts()
	time.Sleep(20 * interval)
	lists1, d1 := f.counts()
	refreshes := lists1 - lists0
	if n := d1 - d0; n > 40*6 {
		t.Errorf("%d refused detail reads of 40 servers over %d lists; want each server backed off (at most 6 tries in 20 intervals)", n, refreshes)
	}
	// Each server is logged once, in a line of its own or in one line
	// for many (those refused before the same list).
	warns := linesAt(logs, "warn")[warns0:]
	logged := 0
	for _, w := range warns {
		var n int
		if _, err := fmt.Sscanf(w[strings.Index(w, " servers=")+1:], "servers=%d", &n); strings.Contains(w, " servers=") && err == nil {
			logged += n
		} else if strings.Contains(w, " id=") {
			logged++
		}
		if !strings.Contains(w, "refused for th") {
			t.Errorf("a refused detail read logged as %s", w)
		}
	}
	if logged != 40 || len(warns) > 8 {
		t.Errorf("40 servers' refused detail reads logged as %d servers in %d lines; want each once:\n%s", logged, len(warns), strings.Join(warns, "\n"))
	}
	if sn, _ := st.Snapshot("acct"); !sn.Up {
		t.Error("refused detail reads took the account down; only its list does")
	}
}

// The detail keep limit (how long a server keeps its detail values
// without a successful read) is three full passes measured while reads
// succeed; while they fail it stays where it was, and the values go.
func TestDetailKeepLimitFrozenWhileFailing(t *testing.T) {
	f := &fakeDetailer{cpu: map[string]float64{}}
	all := ids(100)
	for _, id := range all {
		f.cpu[id] = 0.5
	}
	d := newDetails(f, time.Second, log.NewNopLogger())
	d.setList(servers(all...))
	t0 := time.Unix(1.7e9, 0)
	now := t0
	// Ten reads a second: a full pass takes 10 s, 3 passes 30 s.
	for i := 0; i < 300; i++ {
		now = t0.Add(time.Duration(i) * 100 * time.Millisecond)
		if id, _ := d.next(now); id != "" {
			srv, err := f.Detail(context.Background(), id)
			d.done(id, srv, err, now)
		}
	}
	d.mu.Lock()
	before := d.maxAgeLocked()
	d.mu.Unlock()
	if before < 25*time.Second || before > 35*time.Second {
		t.Fatalf("keep limit %v after reads at 10/s over 100 servers; want about 30 s", before)
	}
	// Every read fails for ten minutes, at the same pace.
	f.cpu = map[string]float64{}
	failStart := now
	for now.Sub(failStart) < 10*time.Minute {
		now = now.Add(100 * time.Millisecond)
		if id, _ := d.next(now); id != "" {
			srv, err := f.Detail(context.Background(), id)
			d.done(id, srv, err, now)
		}
	}
	d.mu.Lock()
	after := d.maxAgeLocked()
	d.mu.Unlock()
	if after != before {
		t.Errorf("keep limit %v after ten minutes of failures; want it frozen at %v", after, before)
	}
	merged, at, _ := d.merge(servers(all...), now)
	for i, sv := range merged {
		if sv.CPUUsageRatio.OK {
			t.Fatalf("server %s keeps values %v old after ten minutes of failed reads", sv.ID, now.Sub(at[i]))
		}
		if at[i].IsZero() {
			t.Fatalf("server %s lost the time of its last successful read with its values", sv.ID)
		}
	}
}

// Past stale_after a failing account's per-server series leave /metrics
// (its vps_provider_* series stay, vps_provider_up 0); its snapshot keeps
// the last servers; they come back when the account recovers. Dropping
// them re-renders no other account's servers.
func TestStaleAccountLeavesMetrics(t *testing.T) {
	st := NewStore()
	t0 := time.Unix(1.7e9, 0)
	apply := func(account string, at time.Time, err error) Snapshot {
		var list []providers.Server
		if err == nil {
			list = servers("1", "2", "3")
		}
		return st.Apply(Refresh{Provider: "vpsorg", Account: account, Servers: list, Err: err, Started: at, At: at, StaleAfter: 5 * time.Minute})
	}
	apply("a", t0, nil)
	apply("b", t0, nil)
	h := NewHandler(st, accountRegistry(st), log.NewNopLogger())
	scrape(t, h, false)
	bBlocks := st.accounts["b"].blocks
	var rendered []string
	st.rendered = func(account, id string) { rendered = append(rendered, account+"/"+id) }
	down := errors.New("HTTP 503")
	for i := 1; i <= 5; i++ {
		at := t0.Add(time.Duration(i) * time.Minute)
		apply("a", at, down)
		apply("b", at, nil)
		out, _ := scrape(t, h, false)
		if !strings.Contains(out, `vps_server_up{provider="vpsorg",account="a",id="1"} 1`) {
			t.Fatalf("after %d min down (stale_after 5m) account a's servers already left /metrics", i)
		}
	}
	at := t0.Add(5*time.Minute + 30*time.Second)
	sn := apply("a", at, down)
	apply("b", at, nil)
	out, _ := scrape(t, h, false)
	if strings.Contains(out, `account="a",id=`) {
		t.Errorf("past stale_after account a still has per-server series:\n%s", grep(out, `account="a"`))
	}
	for _, want := range []string{`vps_provider_up{account="a",provider="vpsorg"} 0`, `vps_provider_servers{account="a",provider="vpsorg"} 3`,
		`vps_server_up{provider="vpsorg",account="b",id="1"} 1`} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("missing %s", want)
		}
	}
	if len(sn.Servers) != 3 || !sn.Withdrawn {
		t.Errorf("snapshot past stale_after: %d servers, withdrawn %v; want the last 3 kept, withdrawn", len(sn.Servers), sn.Withdrawn)
	}
	if got := st.Snapshots(); len(got) != 2 || len(got[0].Servers) != 3 {
		t.Errorf("Snapshots past stale_after: %+v", got)
	}
	if len(rendered) != 0 || !slices.Equal(st.accounts["b"].blocks, bBlocks) {
		t.Fatalf("servers were rendered again (%v), or account b's blocks rebuilt, when a's series were dropped", rendered)
	}
	// Recovery: the series are back, identical to a fresh render.
	apply("a", t0.Add(7*time.Minute), nil)
	out, _ = scrape(t, h, false)
	if !strings.Contains(out, `vps_server_up{provider="vpsorg",account="a",id="3"} 1`) {
		t.Error("the series did not come back when the account recovered")
	}
	fresh := NewStore()
	for _, sn := range st.Snapshots() {
		fresh.Update(sn.Provider, sn.Account, sn.Servers, nil, t0, 0)
	}
	if a, b := st.current().text(), fresh.current().text(); a != b {
		t.Errorf("after recovery /metrics differs from a fresh render:\n%s", firstDiff(a, b))
	}
}

// The same through the poller: Account.StaleAfter, 0 meaning five
// intervals.
func TestPollerStaleAfter(t *testing.T) {
	for _, tc := range []struct {
		name       string
		staleAfter time.Duration
		wantAfter  time.Duration // with a 50 ms interval
	}{{"explicit", 150 * time.Millisecond, 150 * time.Millisecond}, {"default five intervals", 0, 250 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			f := &flakyAccount{name: "acct", ids: ids(3)}
			st := NewStore()
			logs := &syncbuf.Buffer{}
			m := NewManager(st, log.NewLogfmtLogger(logs), nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			m.Apply(ctx, []Account{{Provider: listOnly{f}, Interval: 50 * time.Millisecond, Key: "k", StaleAfter: tc.staleAfter}})
			defer m.Stop()
			waitUntil(t, "the first refresh", 5*time.Second, m.Ready)
			hasSeries := func() bool { return strings.Contains(st.current().text(), `account="acct",id="100"`) }
			f.set(errors.New("dial tcp: connection refused"), nil)
			waitUntil(t, "the account down", 5*time.Second, func() bool { sn, _ := st.Snapshot("acct"); return !sn.Up })
			sn, _ := st.Snapshot("acct")
			if !hasSeries() {
				t.Fatal("the series left at once")
			}
			waitUntil(t, "the series to leave", 5*time.Second, func() bool { return !hasSeries() })
			if took := time.Since(sn.LastSuccess); took < tc.wantAfter {
				t.Errorf("series left %v after the last success; want after %v", took, tc.wantAfter)
			}
			if sn, _ := st.Snapshot("acct"); len(sn.Servers) != 3 {
				t.Errorf("the snapshot lost its servers: %d", len(sn.Servers))
			}
			if n := strings.Count(logs.String(), "left /metrics"); n != 1 {
				t.Errorf("the series leaving logged %d times; want once", n)
			}
			f.set(nil, nil)
			waitUntil(t, "the series back", 5*time.Second, hasSeries)
		})
	}
}

// vps_server_detail_timestamp_seconds is when the detail was read; a
// server is rendered again only when its data or its detail read changes,
// not when time passes or the list is read again.
func TestDetailTimestampRenderedOncePerRead(t *testing.T) {
	st := NewStore()
	t0 := time.Unix(1.7e9, 0)
	list := servers("1", "2")
	apply := func(detailsOnly bool, now time.Time, at []time.Time) {
		st.Apply(Refresh{Provider: "vpsorg", Account: "a", Servers: list, DetailAt: at, Details: true, DetailsOnly: detailsOnly, Started: now, At: now})
	}
	apply(false, t0.Add(10*time.Second), []time.Time{t0, t0.Add(1500 * time.Millisecond)})
	got := st.current().text()
	for _, want := range []string{
		`vps_server_detail_timestamp_seconds{provider="vpsorg",account="a",id="1"} 1700000000`,
		`vps_server_detail_timestamp_seconds{provider="vpsorg",account="a",id="2"} 1700000001`,
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("missing %s in:\n%s", want, got)
		}
	}
	if strings.Contains(got, "detail_age") {
		t.Error("the former vps_server_detail_age_seconds is still exported")
	}
	var rendered []string
	st.rendered = func(_, id string) { rendered = append(rendered, id) }
	gen := st.gen
	// List refreshes later, nothing read: nothing rendered, body unchanged.
	apply(false, t0.Add(70*time.Second), []time.Time{t0, t0.Add(1500 * time.Millisecond)})
	apply(true, t0.Add(75*time.Second), []time.Time{t0, t0.Add(1500 * time.Millisecond)})
	if len(rendered) != 0 || st.gen != gen {
		t.Fatalf("a list refresh without a new detail read rendered a server again: %v", rendered)
	}
	// Server 1 read again: only it is rendered.
	apply(true, t0.Add(80*time.Second), []time.Time{t0.Add(79 * time.Second), t0.Add(1500 * time.Millisecond)})
	if strings.Join(rendered, ",") != "1" || st.gen == gen {
		t.Fatalf("a new detail read of server 1 rendered %v", rendered)
	}
	if got := st.current().text(); !strings.Contains(got, `id="1"} 1700000079`+"\n") {
		t.Errorf("new read time not exported:\n%s", got)
	}
}

func grep(text, substr string) string {
	var b strings.Builder
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// A reload that replaces a down account's poller (new credentials, say):
// the new poller's first failed refresh says once that the account is
// still down, and its first success that it recovered, down_for counted
// from the first failure (before: a failure was a new "account down" line
// and the recovery was not logged at all). An account of the same name
// that is now of another provider is a new account: nothing carried.
func TestReplacedPollerCarriesTheAccountsState(t *testing.T) {
	f := &flakyAccount{name: "acct", ids: ids(5)}
	logs := &syncbuf.Buffer{}
	st := NewStore()
	m := NewManager(st, log.NewLogfmtLogger(logs), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	acct := Account{Provider: listOnly{f}, Interval: 20 * time.Millisecond, Key: "k1", StaleAfter: time.Hour}
	m.Apply(ctx, []Account{acct})
	defer m.Stop()
	waitUntil(t, "the first refresh", 5*time.Second, m.Ready)
	f.set(errors.New("HTTP 401: token revoked"), nil)
	downAt := time.Now()
	waitUntil(t, "the account down", 5*time.Second, func() bool { sn, _ := st.Snapshot("acct"); return !sn.Up })
	time.Sleep(time.Second)

	// A reload with another key: still failing, then working.
	acct.Key = "k2"
	m.Apply(ctx, []Account{acct})
	waitUntil(t, "the new poller's failed refresh", 5*time.Second, func() bool {
		return strings.Contains(logs.String(), "account still down")
	})
	time.Sleep(200 * time.Millisecond) // ten more failed refreshes
	f.set(nil, nil)
	waitUntil(t, "the recovery logged", 5*time.Second, func() bool {
		return strings.Contains(logs.String(), `msg="account recovered"`)
	})
	outage := time.Since(downAt)
	count := func(msg string) (n int, last string) {
		for _, l := range linesAt(logs, "warn", "info", "error") {
			if strings.Contains(l, msg) {
				n, last = n+1, l
			}
		}
		return n, last
	}
	if n, _ := count(`msg="account down`); n != 1 {
		t.Errorf("%d 'account down' lines for one outage across a reload:\n%s", n, logs.String())
	}
	if n, _ := count("account still down"); n != 1 {
		t.Errorf("%d 'still down' lines after the reload, want 1:\n%s", n, logs.String())
	}
	_, rec := count(`msg="account recovered"`)
	i := strings.Index(rec, "down_for=")
	if i < 0 {
		t.Fatalf("recovery line without down_for: %s", rec)
	}
	d, err := time.ParseDuration(strings.Fields(rec[i+len("down_for="):])[0])
	if err != nil || d < time.Second || d > outage+time.Second {
		t.Errorf("down_for %v (%v), want the outage since the first failure, about %v", d, err, outage.Round(time.Second))
	}

	// Down again, then the same name as another provider: a new account.
	f.set(errors.New("HTTP 401: token revoked"), nil)
	waitUntil(t, "the account down again", 5*time.Second, func() bool { sn, _ := st.Snapshot("acct"); return !sn.Up })
	m.Apply(ctx, []Account{{Provider: otherType{listOnly{f}}, Interval: 20 * time.Millisecond, Key: "k3", StaleAfter: time.Hour}})
	waitUntil(t, "the new provider's first refresh logged", 5*time.Second, func() bool {
		n, _ := count(`msg="account down`)
		return n == 3
	})
	if n, _ := count("account still down"); n != 1 {
		t.Errorf("the account of another provider was taken as still down:\n%s", logs.String())
	}
}

// otherType is a provider of another type with the same account name.
type otherType struct{ providers.Provider }

func (otherType) Type() string { return "e2e" }
