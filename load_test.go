package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// loadDuration is how long the scrape load runs: 30 s, or VPS_LOAD_DURATION.
func loadDuration(t *testing.T) time.Duration {
	d := 30 * time.Second
	if v := os.Getenv("VPS_LOAD_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("VPS_LOAD_DURATION: %v", err)
		}
	}
	return d
}

// procStatus reads a kB field of the exporter's /proc/<pid>/status in MiB.
func (e *exporter) procStatus(field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", e.cmd.Process.Pid))
	if err != nil {
		e.t.Skip("no /proc:", err)
	}
	m := regexp.MustCompile(`(?m)^` + field + `:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		e.t.Fatalf("no %s in /proc status", field)
	}
	kb, _ := strconv.ParseFloat(string(m[1]), 64)
	return kb / 1024
}

// metricValue returns the sum of the samples of a family whose label text
// contains every one of labels.
func metricValue(metrics, name string, labels ...string) float64 {
	sum := 0.0
	for _, line := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// TestLoadFiftyScrapers: 50 clients scrape a 10,000-server fleet as fast as
// they can for 30 s, half asking for gzip. Every response is complete, the
// exporter's peak resident size stays bounded, and its goroutines come back.
func TestLoadFiftyScrapers(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	e := startExporter(t, "--demo", "--demo.servers=10000", "--demo.refresh-interval=60s")
	e.seen = nil
	e.waitFor("the 10,000 servers", func() bool {
		return metricValue(e.metrics(), "vps_provider_servers") == 10000
	})
	goroutines0 := metricValue(e.metrics(), "go_goroutines")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}, Timeout: 30 * time.Second}
	var scrapes, failures atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		failures.Add(1)
		firstErr.CompareAndSwap(nil, err)
	}
	stop := time.Now().Add(loadDuration(t))
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(gz bool) {
			defer wg.Done()
			for time.Now().Before(stop) {
				req, _ := http.NewRequest("GET", "http://"+e.addr+"/metrics", nil)
				if gz {
					req.Header.Set("Accept-Encoding", "gzip")
				}
				resp, err := client.Do(req)
				if err != nil {
					fail(err)
					continue
				}
				var r io.Reader = resp.Body
				if gz {
					zr, err := gzip.NewReader(resp.Body)
					if err != nil {
						resp.Body.Close()
						fail(fmt.Errorf("gzip: %w", err))
						continue
					}
					r = zr
				}
				tail := &tailWriter{}
				n, err := io.Copy(tail, r)
				resp.Body.Close()
				switch {
				case err != nil:
					fail(fmt.Errorf("read after %d bytes: %w", n, err))
				case resp.StatusCode != 200:
					fail(fmt.Errorf("HTTP %d", resp.StatusCode))
				case n < 1<<20 || !bytes.HasSuffix(tail.b, []byte("\n")):
					fail(fmt.Errorf("truncated: %d bytes", n))
				default:
					scrapes.Add(1)
				}
			}
		}(i%2 == 0)
	}
	wg.Wait()
	client.CloseIdleConnections()
	peak := e.procStatus("VmHWM")
	var goroutines float64
	deadline := time.Now().Add(10 * time.Second)
	for {
		goroutines = metricValue(e.metrics(), "go_goroutines")
		if goroutines <= goroutines0+5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%d complete scrapes by 50 clients, %d failures; exporter peak RSS %.0f MiB; goroutines %v before, %v after",
		scrapes.Load(), failures.Load(), peak, goroutines0, goroutines)
	if failures.Load() > 0 {
		t.Errorf("%d failed scrapes; first: %v", failures.Load(), firstErr.Load())
	}
	if scrapes.Load() < 50 {
		t.Errorf("only %d scrapes completed", scrapes.Load())
	}
	if peak > 300 {
		t.Errorf("peak RSS %.0f MiB under load, want at most 300", peak)
	}
	if goroutines > goroutines0+5 {
		t.Errorf("goroutines %v after the load, %v before", goroutines, goroutines0)
	}
}

// tailWriter keeps the last bytes written.
type tailWriter struct{ b []byte }

func (w *tailWriter) Write(p []byte) (int, error) {
	if len(p) >= 64 {
		w.b = append(w.b[:0], p[len(p)-64:]...)
	} else {
		w.b = append(w.b, p...)
		if len(w.b) > 64 {
			w.b = w.b[len(w.b)-64:]
		}
	}
	return len(p), nil
}

// TestWebhookFlood: 20 senders post 10,000 distinct firing alerts in
// batches of 50 as fast as they can. Batches the queue cannot hold are
// refused with 429 (nothing queued without limit); every alert of an
// accepted batch ends as an action (dry-run here) or a suppression, counted.
func TestWebhookFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	_, urls := startSim(t, 200)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "vps_exporter.yml")
	writeConfig(t, cfgPath, urls, false)
	appendRemediation(t, cfgPath, "  dry_run: true\n  max_actions_per_hour: 100000\n  max_fleet_fraction: 1\n  webhook: {enabled: true}\n")
	e := startExporter(t, "--config.file="+cfgPath)
	e.seen = nil
	const total, batch, senders = 10000, 50, 20
	var accepted, refused, other atomic.Int64
	now := time.Now().UTC().Format(time.RFC3339)
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				b := int(next.Add(1)) - 1
				if b*batch >= total {
					return
				}
				var sb strings.Builder
				sb.WriteString(`{"version":"4","status":"firing","receiver":"vps","alerts":[`)
				for i := 0; i < batch; i++ {
					n := b*batch + i
					if i > 0 {
						sb.WriteByte(',')
					}
					// ids 1000..1199 exist (some degraded, most not):
					// actions and every kind of suppression. (An id the
					// account does not have is not queued: counted as
					// unknown_server only.)
					fmt.Fprintf(&sb, `{"status":"firing","labels":{"alertname":"Flood","provider":"vpnbingo","account":"bingo-prod","id":"%d","remediation":"redeploy"},"startsAt":%q,"fingerprint":"f%d"}`, 1000+n%200, now, n)
				}
				sb.WriteString(`]}`)
				code, body := e.send("POST", "/webhook/alertmanager", sb.String(), false)
				switch {
				case code == 200 && strings.HasPrefix(body, fmt.Sprintf("queued %d alert(s)", batch)):
					accepted.Add(batch)
				case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
					refused.Add(batch)
				default:
					other.Add(1)
					t.Errorf("HTTP %d: %s", code, body)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("posted %d alerts: %d accepted, %d refused (429)", total, accepted.Load(), refused.Load())
	if accepted.Load()+refused.Load() != total || other.Load() != 0 {
		t.Fatalf("accepted %d + refused %d != %d", accepted.Load(), refused.Load(), total)
	}
	if refused.Load() == 0 {
		t.Error("a flood of 10,000 alerts was never refused: the queue is not bounded")
	}
	if accepted.Load() == 0 {
		t.Fatal("nothing accepted")
	}
	// Every accepted alert is accounted for once the queue drains.
	var m string
	done := func() bool {
		m = e.metrics()
		return metricValue(m, "vps_remediation_actions_total")+metricValue(m, "vps_remediation_suppressed_total") >= float64(accepted.Load())
	}
	deadline := time.Now().Add(3 * time.Minute)
	for !done() {
		if time.Now().After(deadline) {
			t.Fatalf("after 3 min, %v actions + %v suppressions for %d accepted alerts", metricValue(m, "vps_remediation_actions_total"), metricValue(m, "vps_remediation_suppressed_total"), accepted.Load())
		}
		time.Sleep(250 * time.Millisecond)
	}
	acts, supp := metricValue(m, "vps_remediation_actions_total"), metricValue(m, "vps_remediation_suppressed_total")
	queued := metricValue(m, "vps_remediation_webhook_alerts_total", `outcome="queued"`)
	rejected := metricValue(m, "vps_remediation_webhook_alerts_total", `outcome="rejected"`)
	t.Logf("exporter: %v queued, %v rejected; %v actions (dry-run), %v suppressions; peak RSS %.0f MiB", queued, rejected, acts, supp, e.procStatus("VmHWM"))
	if acts+supp != float64(accepted.Load()) || queued != float64(accepted.Load()) || rejected != float64(refused.Load()) {
		t.Errorf("accounting: %v actions + %v suppressions, %v queued, %v rejected; posted %d accepted, %d refused",
			acts, supp, queued, rejected, accepted.Load(), refused.Load())
	}
	if acts == 0 || math.IsNaN(acts) {
		t.Error("no alert led to a (dry-run) action")
	}
	assertNoSecrets(t, "logs", e.logs.String())
}
