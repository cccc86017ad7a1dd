package collector

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/vps-exporter/vps_exporter/internal/syncbuf"
	"github.com/vps-exporter/vps_exporter/providers/apiclient"
	"github.com/vps-exporter/vps_exporter/providers/e2e"
	"github.com/vps-exporter/vps_exporter/providers/sim"
	"github.com/vps-exporter/vps_exporter/providers/vpnbingo"
	"github.com/vps-exporter/vps_exporter/providers/vpsorg"
)

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	return len(ents)
}

// settles waits up to 10 s for the goroutine and fd counts to come back
// within slack of the baseline, and reports the last counts.
func settles(t *testing.T, g0, fd0, slack int) (int, int, bool) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		g, fd := runtime.NumGoroutine(), openFDs(t)
		if (g <= g0+slack && fd <= fd0+slack) || time.Now().After(deadline) {
			return g, fd, g <= g0+slack && fd <= fd0+slack
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNoLeakOver1000FaultyRefreshes runs the real pollers through 1,000
// refreshes while the simulator cycles through every network fault: 5xx,
// 429 with a Retry-After beyond the deadline, junk, HTML, a hang, a reset,
// a slow drip and an oversized body. Every refresh ends within its
// deadline, every account recovers, and goroutines and file descriptors
// come back to where they were after warm-up.
func TestNoLeakOver1000FaultyRefreshes(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 refreshes")
	}
	s := sim.New(sim.Options{Servers: 6, Seed: 5, PageSize: 4})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	u := serveSim(t, s)
	hc := apiclient.Config{MaxBodyBytes: 1 << 20, BackoffBase: time.Millisecond, ThrottleRecovery: 2 * time.Second}
	const interval = 80 * time.Millisecond
	// A refresh may end a little after its deadline on a loaded machine
	// (the race detector, other packages' tests); a retry or back-off
	// that ignored the deadline would take seconds (Retry-After: 2).
	const slack = 300 * time.Millisecond
	// Every fault's error, logged at debug level, is checked for these.
	const tok, key = "tok-LEAK-SECRET-71", "key-LEAK-SECRET-72"
	accounts := []Account{
		{Provider: vpnbingo.New(vpnbingo.Options{Account: "bingo", BaseURL: u(sim.VPNBingo), Token: tok, HTTP: hc}), Interval: interval, Key: "b"},
		{Provider: vpsorg.New(vpsorg.Options{Account: "vps", BaseURL: u(sim.VPSOrg), Token: tok, MaxConcurrency: 3, HTTP: hc}), Interval: interval, Key: "v"},
		{Provider: e2e.New(e2e.Options{Account: "e2e", BaseURL: u(sim.E2E), Token: tok, APIKey: key, ProjectID: "1", PerPage: 4, HTTP: hc}), Interval: interval, Key: "e"},
	}
	api := map[string]sim.API{"bingo": sim.VPNBingo, "vps": sim.VPSOrg, "e2e": sim.E2E}
	faults := []sim.Fault{
		{}, {Kind: sim.FaultStatus, Status: 500, Count: 10}, {Kind: sim.FaultStatus, Status: 429, RetryAfter: "2", Count: 1},
		{Kind: sim.FaultJunk, Count: 1}, {Kind: sim.FaultHTML, Count: 1}, {Kind: sim.FaultHang, Count: 1},
		{Kind: sim.FaultReset, Count: 1}, {Kind: sim.FaultSlowDrip, DripEvery: 5 * time.Millisecond, Count: 1},
		{Kind: sim.FaultOversize, Size: 2 << 20, Count: 1},
	}

	var (
		refreshes atomic.Int64
		mu        sync.Mutex
		overrun   []time.Duration
		downs     = map[string]int{}
		warm      = make(chan struct{})
		warmOnce  sync.Once
		done      = make(chan struct{})
		doneOnce  sync.Once
		stopFault atomic.Bool
	)
	logs := &syncbuf.Buffer{}
	m := NewManager(NewStore(), log.NewLogfmtLogger(logs), func(_ context.Context, snap Snapshot) {
		n := refreshes.Add(1)
		mu.Lock()
		if snap.Duration > interval+slack {
			overrun = append(overrun, snap.Duration)
		}
		if !snap.Up {
			downs[snap.Account]++
		}
		mu.Unlock()
		if !stopFault.Load() {
			s.SetFault(api[snap.Account], faults[int(n)%len(faults)])
		}
		switch {
		case n == 90:
			warmOnce.Do(func() { close(warm) })
		case n >= 1090:
			doneOnce.Do(func() { close(done) })
		}
	})
	m.Apply(ctx, accounts)
	defer m.Stop()

	select {
	case <-warm:
	case <-time.After(time.Minute):
		t.Fatal("no warm-up")
	}
	runtime.GC()
	g0, fd0 := runtime.NumGoroutine(), openFDs(t)
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("only %d refreshes", refreshes.Load())
	}
	stopFault.Store(true)
	s.ClearFaults()
	deadline := time.Now().Add(10 * time.Second)
	for _, a := range []string{"bingo", "vps", "e2e"} {
		for {
			if sn, _ := m.store.Snapshot(a); sn.Up {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("account %s did not recover", a)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	g, fd, ok := settles(t, g0, fd0, 12)
	mu.Lock()
	failed := fmt.Sprint(downs) // the pollers still run: read under the lock
	mu.Unlock()
	t.Logf("after warm-up: %d goroutines, %d fds; after 1,000 faulty refreshes: %d goroutines, %d fds; refreshes failed per account %s",
		g0, fd0, g, fd, failed)
	if !ok {
		buf := make([]byte, 1<<20)
		t.Fatalf("leak: goroutines %d -> %d, fds %d -> %d\n%s", g0, g, fd0, fd, buf[:runtime.Stack(buf, true)])
	}
	for _, secret := range []string{tok, key} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("secret %q in the log of the faulty refreshes", secret)
		}
	}
	if !strings.Contains(logs.String(), "refresh failed") {
		t.Error("the failed refreshes were not logged")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(overrun) > 0 {
		t.Errorf("%d refreshes outlived the %v deadline by more than %v: %v", len(overrun), interval, slack, overrun)
	}
	for _, a := range []string{"bingo", "vps", "e2e"} {
		if downs[a] < 50 {
			t.Errorf("account %s failed only %d refreshes: the faults did not bite", a, downs[a])
		}
	}
}
