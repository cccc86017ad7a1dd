package collector

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
)

// detailLines are the lines of body that start with prefix.
func detailLines(body, prefix string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A reload that replaces an account's poller (a changed global or
// credential: a new key) hands its detail data and read times to the new
// poller when the account reads the same API (origin): every scrape
// during and after the reload has every server's detail series, with the
// same timestamps, though the new poller's detail reads fail. Another
// origin is another API: nothing is handed over.
func TestReloadHandsOverDetails(t *testing.T) {
	for _, tc := range []struct {
		name      string
		newOrigin string
		kept      bool
	}{
		{"same origin", "https://api.example|", true},
		{"other origin", "https://other.example|", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &flakyAccount{name: "acct", ids: ids(40)}
			st := NewStore()
			h := NewHandler(st, prometheus.NewRegistry(), log.NewNopLogger())
			m := NewManager(st, log.NewNopLogger(), nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			const interval = 300 * time.Millisecond
			acct := Account{Provider: f, Interval: interval, Key: "k1", MaxConcurrency: 4, StaleAfter: time.Hour, Origin: "https://api.example|"}
			m.Apply(ctx, []Account{acct})
			defer m.Stop()
			cpuSeries := func() (int, string) {
				body, _ := scrape(t, h, false)
				return strings.Count(body, "\nvps_server_cpu_usage_ratio{"), detailLines(body, "vps_server_detail_timestamp_seconds{")
			}
			waitUntil(t, "every server's detail", 10*time.Second, func() bool { n, _ := cpuSeries(); return n == 40 })
			f.set(nil, errors.New("HTTP 500")) // the new poller reads no detail
			_, times0 := cpuSeries()
			lists0, _ := f.counts()

			// Scrapes all along the reload.
			var stop atomic.Bool
			var wg sync.WaitGroup
			var minSeen atomic.Int64
			minSeen.Store(40)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					if n, _ := cpuSeries(); int64(n) < minSeen.Load() {
						minSeen.Store(int64(n))
					}
					time.Sleep(5 * time.Millisecond)
				}
			}()
			acct.Key, acct.Origin, acct.Interval = "k2", tc.newOrigin, 250*time.Millisecond
			m.Apply(ctx, []Account{acct})
			waitUntil(t, "two lists of the new poller", 10*time.Second, func() bool { l, _ := f.counts(); return l >= lists0+2 })
			time.Sleep(2 * interval) // and the details it would publish
			stop.Store(true)
			wg.Wait()
			n, times1 := cpuSeries()
			if tc.kept {
				if got := minSeen.Load(); got != 40 {
					t.Errorf("a scrape during the reload had %d servers with detail data; want all 40", got)
				}
				if n != 40 || times1 != times0 {
					t.Errorf("after the reload %d servers with detail data; the detail timestamps changed: %v", n, times1 != times0)
				}
				return
			}
			if n != 0 {
				t.Errorf("another API's account kept %d servers' detail data", n)
			}
		})
	}
}
