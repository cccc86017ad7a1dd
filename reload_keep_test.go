package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// TestReloadKeepsDetailData: a rate-limited VPS.org account has every
// server's detail data; a reload then replaces its poller, for a changed
// global or for a rotated token (token_file re-read, the provider taking
// the new token). Scraped every 100 ms throughout, no VPS.org usage
// series leaves /metrics and no detail timestamp goes back or away: the
// new poller takes over what the old one read.
func TestReloadKeepsDetailData(t *testing.T) {
	const n = 30
	const newToken = "tok-rotated-5e2a"
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, s *sim.Sim, write func(timeout, token string))
	}{
		{"changed request_timeout", func(t *testing.T, s *sim.Sim, write func(timeout, token string)) {
			write("3s", secretVPS)
		}},
		{"token rotation", func(t *testing.T, s *sim.Sim, write func(timeout, token string)) {
			write("2s", newToken)
			s.SetCredentials(sim.VPSOrg, sim.Credentials{Token: newToken})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, urls := startSim(t, n)
			dir := t.TempDir()
			cfgPath := filepath.Join(dir, "c.yml")
			write := func(timeout, token string) {
				if err := os.WriteFile(filepath.Join(dir, "vps.token"), []byte(token+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				cfg := fmt.Sprintf(`global:
  refresh_interval: 1s
  request_timeout: %s
  stale_after: 1m
providers:
  - type: vpsorg
    name: vps-main
    base_url: %s
    token_file: vps.token
    rate_limit: 10
`, timeout, urls[sim.VPSOrg])
				if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			write("2s", secretVPS)
			e := startExporter(t, "--config.file="+cfgPath)
			usage := []string{"vps_server_cpu_usage_ratio", "vps_server_memory_used_bytes", "vps_server_disk_used_bytes",
				"vps_server_transfer_used_bytes", "vps_server_detail_timestamp_seconds"}
			count := func(m string) map[string]int {
				out := map[string]int{}
				for _, f := range usage {
					out[f] = strings.Count(m, "\n"+f+`{provider="vpsorg",account="vps-main",`)
				}
				return out
			}
			within(t, 60*time.Second, "every server's detail data", func() bool {
				c := count(e.metrics())
				for _, f := range usage {
					if c[f] != n {
						return false
					}
				}
				return true
			})
			before := detailTimes(e.metrics(), "vps-main")
			loaded := strings.Count(e.logs.String(), `msg="configuration loaded"`)
			lists := func() float64 {
				return metricValue(e.metrics(), "vps_provider_api_requests_total", `account="vps-main"`, `endpoint="servers_list"`, `code="200"`)
			}
			lists0 := lists()

			// Scraped all along.
			var mu sync.Mutex
			var problems []string
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				last := before
				for {
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
					code, m := e.get("/metrics")
					if code != 200 {
						continue
					}
					c := count(m)
					now := detailTimes(m, "vps-main")
					mu.Lock()
					for _, f := range usage {
						if c[f] != n && len(problems) < 10 {
							problems = append(problems, fmt.Sprintf("a scrape had %d %s series, want %d", c[f], f, n))
						}
					}
					for id, at := range last {
						if now[id] < at && len(problems) < 10 {
							problems = append(problems, fmt.Sprintf("server %s's detail timestamp went from %v to %v", id, at, now[id]))
						}
					}
					mu.Unlock()
					last = now
				}
			}()
			tc.change(t, s, write)
			if err := e.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			e.waitFor("the reload", func() bool {
				return strings.Count(e.logs.String(), `msg="configuration loaded"`) > loaded
			})
			// The new poller lists (twice), and would publish its details.
			within(t, 30*time.Second, "the new poller's lists", func() bool { return lists() >= lists0+3 })
			time.Sleep(2 * time.Second)
			close(stop)
			wg.Wait()
			for _, p := range problems {
				t.Error(p)
			}
			after := detailTimes(e.metrics(), "vps-main")
			for id, at := range before {
				if after[id] < at {
					t.Errorf("server %s: detail timestamp %v after the reload, %v before", id, after[id], at)
				}
			}
			if strings.Contains(e.logs.String(), newToken) {
				t.Error("the new token is in the log")
			}
			assertNoSecrets(t, "logs", e.logs.String())
		})
	}
}
