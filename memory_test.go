package main

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The memory bound of issue 18: the exporter alone, 100,000 servers, a
// gzip scrape every 10 s.
const (
	memServers    = 100000
	memMedianMiB  = 500
	memPeakMiB    = 750
	memScrapeEach = 10 * time.Second
	memMeasure    = 2 * time.Minute
	memWaitServed = 3 * time.Minute
)

// simBinary returns the simulator program, built from ./cmd/vps_sim for
// this test (VPS_SIM_BIN: a prebuilt one with the same flags): the
// simulator runs as its own process so that only the exporter's memory is
// measured.
func simBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("VPS_SIM_BIN"); p != "" {
		return p
	}
	return buildVPSSim(t)
}

// startBounded runs a process for at most limit (startCmdFor).
func startBounded(t *testing.T, limit time.Duration, logs *syncBuffer, label, name string, args ...string) *exec.Cmd {
	t.Helper()
	return startCmdFor(t, limit, logs, label, "", name, args...)
}

// scrapeStats is what one gzip scrape of /metrics showed.
type scrapeStats struct {
	servers  int     // vps_server_up series
	vpsorg   int     // of which VPS.org's
	details  int     // vps_server_detail_timestamp_seconds series
	backlog  float64 // sum of vps_provider_detail_backlog
	backlogs int     // accounts reporting a backlog
	bytes    int64   // uncompressed
	took     time.Duration
}

// gzipScrape reads /metrics as Prometheus does (gzip) and counts it as it
// streams, without holding the body.
func gzipScrape(client *http.Client, addr string) (scrapeStats, error) {
	var st scrapeStats
	start := time.Now()
	req, _ := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := client.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "gzip" {
		return st, fmt.Errorf("HTTP %d, Content-Encoding %q", resp.StatusCode, resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		return st, err
	}
	sc := bufio.NewScanner(zr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		st.bytes += int64(len(line)) + 1
		switch {
		case len(line) > 14 && string(line[:14]) == "vps_server_up{":
			st.servers++
			if strings.HasPrefix(string(line[14:]), `provider="vpsorg"`) {
				st.vpsorg++
			}
		case strings.HasPrefix(string(line), "vps_server_detail_timestamp_seconds{"):
			st.details++
		case strings.HasPrefix(string(line), "vps_provider_detail_backlog{"):
			s := string(line)
			v, err := strconv.ParseFloat(s[strings.LastIndexByte(s, ' ')+1:], 64)
			if err != nil {
				return st, fmt.Errorf("backlog line %q: %w", s, err)
			}
			st.backlog += v
			st.backlogs++
		}
	}
	if err := sc.Err(); err != nil {
		return st, err
	}
	st.took = time.Since(start)
	return st, nil
}

// vmKB reads a kB field of /proc/<pid>/status.
func vmKB(pid int, field string) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// TestMemory100k is issue 18's memory bound on the built exporter: the
// simulator (cmd/vps_sim) runs 100,000 servers as its own process with a
// 30 s refresh; once every server is on /metrics and every VPS.org server
// has its detail data (a vps_server_detail_timestamp_seconds series; the
// detail backlog, servers whose last read is older than the interval, is
// logged: on a loaded 2-core machine the simulator serves fewer than the
// 1,100 detail reads a second that would keep it at 0), /metrics is
// scraped with gzip every 10 s for two minutes while the exporter's VmRSS
// is read every second: median at most 500 MiB, peak (the samples' and
// VmHWM, the start included) at most 750 MiB.
func TestMemory100k(t *testing.T) {
	skipShort(t)
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc:", err)
	}
	simBin := simBinary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "vps_sim.yml")
	limit := memWaitServed + memMeasure + 2*time.Minute
	startBounded(t, limit, &syncBuffer{}, "vps_sim", simBin,
		"--servers="+strconv.Itoa(memServers), "--config-out="+cfg, "--refresh-interval=30s")
	// The configuration is there once its size holds still.
	deadline := time.Now().Add(time.Minute)
	for last := int64(-1); ; {
		if fi, err := os.Stat(cfg); err == nil && fi.Size() > 0 && fi.Size() == last {
			break
		} else if err == nil {
			last = fi.Size()
		}
		if time.Now().After(deadline) {
			t.Fatal("vps_sim wrote no configuration within a minute")
		}
		time.Sleep(300 * time.Millisecond)
	}

	addr := freePort(t)
	exp := startBounded(t, limit, &syncBuffer{}, "exporter", binPath, "--config.file="+cfg, "--web.listen-address="+addr)
	pid := exp.Process.Pid
	client := &http.Client{Timeout: memScrapeEach, Transport: &http.Transport{DisableCompression: true}}

	// RSS every second, from now to the end of the measurement.
	var mu sync.Mutex
	var rss []float64
	measuring := false
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(time.Second)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				kb, err := vmKB(pid, "VmRSS")
				if err != nil {
					continue // the process is going away; the scrapes will say so
				}
				mu.Lock()
				if measuring {
					rss = append(rss, kb/1024)
				}
				mu.Unlock()
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	start := time.Now()
	var st scrapeStats
	for {
		time.Sleep(memScrapeEach)
		var err error
		st, err = gzipScrape(client, addr)
		rssNow, _ := vmKB(pid, "VmRSS")
		t.Logf("%v: servers %d, VPS.org %d with detail data %d, backlog %.0f; RSS %.0f MiB; err %v",
			time.Since(start).Round(time.Second), st.servers, st.vpsorg, st.details, st.backlog, rssNow/1024, err)
		if err == nil && st.servers == memServers && st.vpsorg > 0 && st.details == st.vpsorg && st.backlogs > 0 {
			break
		}
		if time.Since(start) > memWaitServed {
			t.Fatalf("not everything served after %v: servers %d of %d, VPS.org %d of which %d with detail data, err %v",
				memWaitServed, st.servers, memServers, st.vpsorg, st.details, err)
		}
	}
	hwmServed, _ := vmKB(pid, "VmHWM")
	t.Logf("everything served after %v: %d servers, every VPS.org server with detail data (backlog %.0f), %.0f MB a scrape; peak RSS so far %.0f MiB",
		time.Since(start).Round(time.Second), st.servers, st.backlog, float64(st.bytes)/1e6, hwmServed/1024)

	mu.Lock()
	measuring = true
	mu.Unlock()
	var took []time.Duration
	backlog := 0.0 // the largest detail backlog seen
	end := time.Now().Add(memMeasure)
	for time.Now().Before(end) {
		next := time.Now().Add(memScrapeEach)
		s, err := gzipScrape(client, addr)
		if err != nil {
			t.Fatalf("scrape: %v", err)
		}
		if s.servers != memServers || s.details != s.vpsorg {
			t.Fatalf("a scrape had %d servers (want %d), %d of %d VPS.org servers with detail data", s.servers, memServers, s.details, s.vpsorg)
		}
		backlog = max(backlog, s.backlog)
		took = append(took, s.took)
		time.Sleep(time.Until(next))
	}
	mu.Lock()
	samples := slices.Clone(rss)
	mu.Unlock()
	hwm, err := vmKB(pid, "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) < int(memMeasure/time.Second)/2 {
		t.Fatalf("only %d RSS samples", len(samples))
	}
	slices.Sort(samples)
	median, peak := samples[len(samples)/2], samples[len(samples)-1]
	slices.Sort(took)
	t.Logf("RSS over %d samples while scraped every %v: median %.0f MiB, min %.0f, max %.0f; lifetime peak (VmHWM) %.0f MiB; a scrape (gzip, read and counted by this test) median %v, max %v; detail backlog at most %.0f",
		len(samples), memScrapeEach, median, samples[0], peak, hwm/1024, took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond), backlog)
	if median > memMedianMiB {
		t.Errorf("median RSS %.0f MiB, want at most %d", median, memMedianMiB)
	}
	if peak > memPeakMiB || hwm/1024 > memPeakMiB {
		t.Errorf("peak RSS %.0f MiB while scraped, %.0f MiB since start; want at most %d", peak, hwm/1024, memPeakMiB)
	}
}
