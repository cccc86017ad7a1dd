package collector

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/apiclient"
	"github.com/vps-exporter/vps_exporter/providers/sim"
	"github.com/vps-exporter/vps_exporter/providers/vpsorg"
)

// listOnly hides a client's Detailer side: the poller then reads list and
// every detail inside one interval, all or nothing, as before details were
// scheduled apart.
type listOnly struct{ providers.Provider }

type coverageCase struct {
	servers  int
	rate     float64       // the account's rate_limit
	throttle float64       // the simulated provider's own limit; 0: none
	latency  time.Duration // of every simulated response
	interval time.Duration
	conc     int
	limit    time.Duration // give up after this long
}

// coverage runs one account's poller against the simulator until every
// server has resource metrics (or limit passes) and reports how long it
// took, the requests per endpoint kind, and the heap in use then.
func coverage(b *testing.B, c coverageCase, allOrNothing bool) (time.Duration, int, map[string]int, uint64) {
	s := sim.New(sim.Options{PerAPI: map[sim.API]int{sim.VPSOrg: c.servers, sim.VPNBingo: 0, sim.E2E: 0}, Seed: 4, MaxPageSize: 100})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	u := serveSim(b, s)(sim.VPSOrg)
	s.SetLatency(sim.VPSOrg, c.latency)
	if c.throttle > 0 {
		s.SetThrottle(sim.VPSOrg, c.throttle, int(c.throttle))
	}
	var p providers.Provider = vpsorg.New(vpsorg.Options{Account: "vps", BaseURL: u, Token: "t", MaxConcurrency: c.conc,
		HTTP: apiclient.Config{RateLimit: c.rate, Timeout: c.latency + 5*time.Second}})
	if allOrNothing {
		p = listOnly{p}
	}
	store := NewStore()
	m := NewManager(store, log.NewNopLogger(), nil)
	start := time.Now()
	m.Apply(ctx, []Account{{Provider: p, Interval: c.interval, Key: "k", MaxConcurrency: c.conc}})
	defer m.Stop()
	best := 0
	lastLog := time.Duration(0)
	for time.Since(start) < c.limit {
		sn, _ := store.Snapshot("vps")
		n := 0
		for _, sv := range sn.Servers {
			if sv.CPUUsageRatio.OK {
				n++
			}
		}
		best = max(best, n)
		if el := time.Since(start); el-lastLog >= 10*time.Second {
			lastLog = el
			b.Logf("%3.0fs: %d of %d servers have detail data, backlog %d, requests %v", el.Seconds(), n, c.servers, sn.DetailBacklog, s.Requests(sim.VPSOrg))
		}
		if n == c.servers {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			return time.Since(start), best, s.Requests(sim.VPSOrg), ms.HeapInuse
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 0, best, s.Requests(sim.VPSOrg), 0
}

// BenchmarkDetailCoverage measures how long an account takes until every
// server has its detail data, against the ideal servers/rate, for the
// detail reads scheduled apart from the list (impl=scheduled) and for the
// former all-or-nothing refresh (impl=all_or_nothing), which must read
// every detail inside one interval. Run with -benchtime 1x.
func BenchmarkDetailCoverage(b *testing.B) {
	for _, tc := range []struct {
		name string
		c    coverageCase
	}{
		// The mid-sized account: throttled provider, small budget.
		{"servers=200/rate=6/latency=0s", coverageCase{servers: 200, rate: 6, throttle: 20, interval: 10 * time.Second, conc: 8, limit: 90 * time.Second}},
		// A big account on a slow API.
		{"servers=10000/rate=200/latency=1s", coverageCase{servers: 10000, rate: 200, latency: time.Second, interval: 60 * time.Second, conc: 256, limit: 150 * time.Second}},
	} {
		for _, impl := range []string{"scheduled", "all_or_nothing"} {
			b.Run(tc.name+"/impl="+impl, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					took, best, req, heap := coverage(b, tc.c, impl == "all_or_nothing")
					ideal := float64(tc.c.servers) / tc.c.rate
					b.ReportMetric(float64(best)/float64(tc.c.servers)*100, "%covered")
					if took > 0 {
						b.ReportMetric(took.Seconds(), "s-to-full")
						b.ReportMetric(took.Seconds()/ideal, "x-ideal")
						b.ReportMetric(float64(heap)/(1<<20), "heap-MiB")
					} else {
						b.Logf("%s: never fully covered within %v (best %d of %d)", impl, tc.c.limit, best, tc.c.servers)
					}
					b.ReportMetric(float64(req["list"]), "list-calls")
					b.ReportMetric(float64(req["detail"]), "detail-calls")
					b.ReportMetric(float64(req["throttled"]), "429s")
					fmt.Fprintf(b.Output(), "ideal servers/rate = %.0f s; requests %v\n", ideal, req)
				}
			})
		}
	}
}
