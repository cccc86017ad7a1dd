package remediation

import (
	"context"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/config"
)

// BenchmarkOnRefreshHeldBack is one refresh's rule evaluation over 1,000
// VPS.org servers that a rule matches and the budget holds back: every
// one a suppression. They are counted in memory and written in batches,
// so the poller does not wait on the disk (before: one bbolt write, a
// few ms with fsync, per suppression, inside the poller).
func BenchmarkOnRefreshHeldBack(b *testing.B) {
	cfg := baseConfig(b)
	cfg.MaxActionsPerHour = 0 // everything is held back
	cfg.Rules = []config.Rule{{Name: "reboot-running", Provider: "vpsorg", State: []string{"running"}, Action: "reboot"}}
	h := newHarness(b, 1000, cfg)
	p := h.provs["vps"]
	servers, err := p.List(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	snap := h.store.Update(p.Type(), "vps", servers, nil, h.now(), time.Millisecond)
	held := 0
	for _, s := range snap.Servers {
		if s.State == "running" {
			held++
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.engine.OnRefresh(context.Background(), snap)
		h.engine.Wait()
	}
	b.ReportMetric(float64(held), "held-back/op")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(held), "ns/suppression")
}
