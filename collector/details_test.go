package collector

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/apiclient"
	"github.com/vps-exporter/vps_exporter/providers/sim"
	"github.com/vps-exporter/vps_exporter/providers/vpsorg"
)

// fakeDetailer answers details from a map; a missing id fails.
type fakeDetailer struct {
	providers.Provider
	mu   sync.Mutex
	cpu  map[string]float64
	seen []string
}

func (f *fakeDetailer) ListSummary(context.Context) ([]providers.Server, error) { return nil, nil }
func (f *fakeDetailer) Detail(_ context.Context, id string) (providers.Server, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, id)
	v, ok := f.cpu[id]
	if !ok {
		return providers.Server{}, errors.New("HTTP 500")
	}
	return providers.Server{ID: id, CPUUsageRatio: providers.Some(v)}, nil
}
func (f *fakeDetailer) MergeDetail(list, d providers.Server) providers.Server {
	list.CPUUsageRatio = d.CPUUsageRatio
	return list
}

func servers(ids ...string) []providers.Server {
	out := make([]providers.Server, len(ids))
	for i, id := range ids {
		out[i] = providers.Server{ID: id, State: providers.StateRunning}
	}
	return out
}

// The scheduling order: every server once per interval, the least recently
// tried first, a new server before all others; a failed read is tried
// again after the others, and keeps the last values until they are too old.
func TestDetailSchedule(t *testing.T) {
	f := &fakeDetailer{cpu: map[string]float64{"1": 0.1, "2": 0.2, "3": 0.3}}
	d := newDetails(f, time.Minute, log.NewNopLogger())
	t0 := time.Unix(1.7e9, 0)
	d.setList(servers("1", "2", "3"))
	read := func(now time.Time) string {
		id, _ := d.next(now)
		if id != "" {
			srv, err := f.Detail(context.Background(), id)
			d.done(id, srv, err, now)
		}
		return id
	}
	var order []string
	for i := 0; i < 3; i++ {
		order = append(order, read(t0.Add(time.Duration(i)*time.Second)))
	}
	if got := strings.Join(order, ","); got != "1,2,3" {
		t.Fatalf("first pass %s", got)
	}
	if id, wait := d.next(t0.Add(10 * time.Second)); id != "" || wait != 50*time.Second {
		t.Fatalf("nothing is due for 50 s; got %q after %v", id, wait)
	}
	// A new server is read first, even before due ones.
	d.setList(servers("1", "2", "3", "4"))
	f.cpu["4"] = 0.4
	if id := read(t0.Add(61 * time.Second)); id != "4" {
		t.Fatalf("next after a new server: %q, want 4", id)
	}
	// Server 2 starts failing: it keeps its values and is tried once per
	// interval; the others go on.
	delete(f.cpu, "2")
	for _, want := range []string{"1", "2", "3"} {
		if id := read(t0.Add(62 * time.Second)); id != want {
			t.Fatalf("second pass read %q, want %s", id, want)
		}
	}
	merged, at, backlog := d.merge(servers("1", "2", "3", "4"), t0.Add(70*time.Second))
	if !merged[1].CPUUsageRatio.OK || merged[1].CPUUsageRatio.V != 0.2 || at[1] != t0.Add(time.Second) {
		t.Fatalf("a failing server lost its last values: %+v at %v", merged[1].CPUUsageRatio, at[1])
	}
	if backlog != 1 {
		t.Fatalf("backlog %d, want 1 (server 2's detail is older than the interval)", backlog)
	}
	// Ten intervals later its values are too old to show; when it was
	// last read stays.
	merged, at, _ = d.merge(servers("1", "2", "3", "4"), t0.Add(11*time.Minute))
	if merged[1].CPUUsageRatio.OK || at[1] != t0.Add(time.Second) {
		t.Fatalf("values older than the staleness limit: %+v read at %v; want no values, read at %v", merged[1].CPUUsageRatio, at[1], t0.Add(time.Second))
	}
	// A server that left the list is forgotten.
	d.setList(servers("1", "3", "4"))
	if _, ok := d.servers["2"]; ok {
		t.Fatal("a removed server is still scheduled")
	}
}

// The real poller against the simulator: details arrive between lists and
// are published with the time they were read; a server whose detail starts failing keeps
// its values and the account stays up.
func TestPollerDetailsBetweenLists(t *testing.T) {
	s := sim.New(sim.Options{PerAPI: map[sim.API]int{sim.VPSOrg: 30, sim.VPNBingo: 0, sim.E2E: 0}, Seed: 9})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	u := serveSim(t, s)(sim.VPSOrg)
	// 10 requests/s: one list page each interval, the rest for details,
	// so 30 details take about three seconds, spread over intervals.
	p := vpsorg.New(vpsorg.Options{Account: "vps", BaseURL: u, Token: "t", HTTP: apiclient.Config{RateLimit: 10}})
	store := NewStore()
	m := NewManager(store, log.NewNopLogger(), nil)
	m.Apply(ctx, []Account{{Provider: p, Interval: 2 * time.Second, Key: "k", MaxConcurrency: 4}})
	defer m.Stop()
	withCPU := func() (int, Snapshot) {
		sn, _ := store.Snapshot("vps")
		n := 0
		for _, sv := range sn.Servers {
			if sv.CPUUsageRatio.OK {
				n++
			}
		}
		return n, sn
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		n, sn := withCPU()
		if n == 30 {
			if !sn.Details || sn.DetailBacklog > 30 {
				t.Fatalf("snapshot details %v backlog %d", sn.Details, sn.DetailBacklog)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 30 servers have details after 15 s", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(store.current().text(), `vps_server_detail_timestamp_seconds{provider="vpsorg",account="vps",id="12000"} `) {
		t.Error("no detail timestamp in the rendered metrics")
	}
	s.SetDetailFault(sim.VPSOrg, 12001, sim.Fault{Kind: sim.FaultStatus, Status: 503})
	time.Sleep(3 * time.Second)
	sn, _ := store.Snapshot("vps")
	if !sn.Up {
		t.Fatal("a failing detail took the account down")
	}
	for _, sv := range sn.Servers {
		if sv.ID == "12001" && !sv.CPUUsageRatio.OK {
			t.Fatal("the failing server lost its last detail values")
		}
	}
}
