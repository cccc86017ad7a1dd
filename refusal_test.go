package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// detailTimes reads each VPS.org server's vps_server_detail_timestamp_seconds.
func detailTimes(m, account string) map[string]float64 {
	out := map[string]float64{}
	prefix := `vps_server_detail_timestamp_seconds{provider="vpsorg",account="` + account + `",id="`
	for _, line := range strings.Split(m, "\n") {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			id, v, _ := strings.Cut(rest, `"} `)
			var f float64
			fmt.Sscan(v, &f)
			out[id] = f
		}
	}
	return out
}

// TestDetailRefusedForOneServer: one VPS.org server's detail read answers
// 403 (the rest of the account is fine): that server backs off (a few
// refused reads, not one a refresh), its detail timestamp ages, the
// others keep being read, and the log has one line when it starts and one
// when it ends; nothing about the account's reads.
func TestDetailRefusedForOneServer(t *testing.T) {
	s, urls := startSim(t, 20)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "c.yml")
	writeConfig(t, cfgPath, urls, false)
	e := startExporter(t, "--config.file="+cfgPath)
	var ids []string
	e.waitFor("every VPS.org server's detail data", func() bool {
		times := detailTimes(e.metrics(), "vps-main")
		ids = ids[:0]
		for id := range times {
			ids = append(ids, id)
		}
		return len(times) == 20
	})
	const bad = "12005"
	if _, ok := detailTimes(e.metrics(), "vps-main")[bad]; !ok {
		t.Fatalf("no server %s in %v", bad, ids)
	}
	var badID int
	fmt.Sscan(bad, &badID)
	refused403 := func(m string) float64 {
		return metricValue(m, "vps_provider_api_requests_total", `account="vps-main"`, `endpoint="servers_detail"`, `code="403"`)
	}
	s.SetDetailFault(sim.VPSOrg, badID, sim.Fault{Kind: sim.FaultStatus, Status: 403})
	faulted := time.Now()
	within(t, 30*time.Second, "the refusal logged", func() bool {
		return strings.Contains(e.logs.String(), "id="+bad+" msg=\"detail read refused for this server")
	})
	before := detailTimes(e.metrics(), "vps-main")
	time.Sleep(8 * time.Second) // 8 refresh intervals
	m := e.metrics()
	after := detailTimes(m, "vps-main")
	if after[bad] == 0 || after[bad] > float64(faulted.Unix())+1 {
		t.Errorf("server %s's detail timestamp %v; want its last read before the 403s (%d) kept", bad, after[bad], faulted.Unix())
	}
	for id, at := range after {
		if id != bad && at <= before[id] {
			t.Errorf("server %s's detail not read again in 8 intervals (timestamp %v, before %v) while %s is refused", id, at, before[id], bad)
		}
	}
	// Refresh 1 s: tried at 1, 3, 7, 15 s after its first refusal, not
	// once a second.
	if n := refused403(m); n < 1 || n > 5 {
		t.Errorf("%v refused reads of server %s in about 9 s; want the backoff's few", n, bad)
	}
	s.SetDetailFault(sim.VPSOrg, badID, sim.Fault{})
	within(t, 60*time.Second, "server "+bad+" read again", func() bool {
		return detailTimes(e.metrics(), "vps-main")[bad] > float64(time.Now().Add(-30*time.Second).Unix()) &&
			strings.Contains(e.logs.String(), "id="+bad+" msg=\"detail read recovered")
	})
	var lines []string
	for _, l := range infoLines(e.logs.String()) {
		if strings.Contains(l, "detail") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 || !strings.Contains(lines[0], "refused for this server") || !strings.Contains(lines[1], "recovered") {
		t.Errorf("one server's 403 logged as %d lines; want one when it starts and one when it ends:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	assertNoSecrets(t, "logs", e.logs.String())
}
