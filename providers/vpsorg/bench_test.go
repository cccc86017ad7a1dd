package vpsorg_test

import (
	"context"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/providertest"
	"github.com/vps-exporter/vps_exporter/providers/sim"
	"github.com/vps-exporter/vps_exporter/providers/vpsorg"
)

// BenchmarkRefresh1000 refreshes 1,000 VPS.org servers against the
// simulator with 50 ms per request and 8 detail requests in flight, and
// reports the time against the ideal: calls / concurrency x latency.
func BenchmarkRefresh1000(b *testing.B) {
	const (
		servers     = 1000
		concurrency = 8
		latency     = 50 * time.Millisecond
	)
	s := sim.New(sim.Options{Servers: servers, Seed: 1})
	s.SetLatency(sim.VPSOrg, latency)
	srv := providertest.Wrap(b, s.Handler(sim.VPSOrg))
	c := vpsorg.New(vpsorg.Options{Account: "a", BaseURL: srv.BaseURL(b), Token: "t", MaxConcurrency: concurrency})
	var calls int
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		s.ResetRequests()
		got, err := c.List(context.Background())
		if err != nil || len(got) != servers {
			b.Fatalf("%d servers, %v", len(got), err)
		}
		r := s.Requests(sim.VPSOrg)
		calls = r["list"] + r["detail"]
	}
	perOp := time.Since(start) / time.Duration(b.N)
	ideal := time.Duration(float64(calls) / concurrency * float64(latency))
	b.ReportMetric(float64(calls), "calls/op")
	b.ReportMetric(perOp.Seconds()/ideal.Seconds(), "x_ideal")
}
