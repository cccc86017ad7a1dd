package collector

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/vps-exporter/vps_exporter/internal/metricnames"
	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/e2e"
	"github.com/vps-exporter/vps_exporter/providers/vpnbingo"
	"github.com/vps-exporter/vps_exporter/providers/vpsorg"
)

// BenchmarkScrapeSize reports what one scrape of the synthetic fleet
// costs at 10,000 and 100,000 servers: per-server series a server, and
// the response's bytes, plain and gzip (the registry's part included).
// "before" renders every normalized state and excludes nothing, which is
// byte for byte what the exporter rendered before the state-sets per
// provider and exclude_metrics (TestGoldenMetrics pins that rendering);
// "after" is the default now. Run with -benchtime=1x; the numbers are in
// docs/benchmarks.md.
func BenchmarkScrapeSize(b *testing.B) {
	states := map[string][]providers.State{
		"vpnbingo": vpnbingo.New(vpnbingo.Options{Account: "x"}).ReportedStates(),
		"vpsorg":   vpsorg.New(vpsorg.Options{Account: "x"}).ReportedStates(),
		"e2e":      e2e.New(e2e.Options{Account: "x"}).ReportedStates(),
	}
	for _, n := range []int{10000, 100000} {
		fleet := syntheticFleet(n)
		for _, mode := range []string{"before", "after"} {
			st := NewStore()
			if mode == "after" {
				st.SetExclude(metricnames.DefaultExcluded())
			}
			for k, servers := range fleet {
				r := Refresh{Provider: k[0], Account: k[1], Servers: append([]providers.Server(nil), servers...),
					Started: time.Unix(1.7e9, 0), At: time.Unix(1.7e9, 0)}
				if mode == "after" {
					r.States = states[k[0]]
				}
				st.Apply(r)
			}
			h := NewHandler(st, realRegistry(st), log.NewNopLogger())
			b.Run(fmt.Sprintf("servers=%d/%s", n, mode), func(b *testing.B) {
				var plain, gz int64
				for i := 0; i < b.N; i++ {
					for _, enc := range []string{"", "gzip"} {
						req := httptest.NewRequest("GET", "/metrics", nil)
						req.Header.Set("Accept-Encoding", enc)
						w := &sink{h: map[string][]string{}}
						h.ServeHTTP(w, req)
						if enc == "" {
							plain = w.n
						} else {
							gz = w.n
						}
					}
				}
				series := 0
				for _, line := range strings.Split(st.current().text(), "\n") {
					if line != "" && line[0] != '#' {
						series++
					}
				}
				b.ReportMetric(float64(series)/float64(n), "series/server")
				b.ReportMetric(float64(plain)/1e6, "MB-plain")
				b.ReportMetric(float64(gz)/1e6, "MB-gzip")
			})
		}
	}
}
