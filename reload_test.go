package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// exited reports whether process pid has ended (gone, or a zombie waiting
// to be reaped).
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) STATE ...: comm may hold spaces, the state follows ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z'
}

// TestReloadsWhileRulesRun is the reload deadlock: rules evaluated over a
// fleet held back by cooldowns and the budget (dry-run), while 30 reloads
// change an account (its rate_limit). Every reload answers, the accounts
// keep refreshing, and SIGTERM ends the daemon within 15 s. Before, a
// reload waited for the poller under the manager's lock while the poller's
// rules asked that lock for the provider: reload, /-/ready, the webhook and
// SIGTERM hung within 2-4 reloads.
func TestReloadsWhileRulesRun(t *testing.T) {
	s, urls := startSim(t, 60)
	s.SetLatency(sim.VPSOrg, 30*time.Millisecond) // rule re-reads take a while
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "vps_exporter.yml")
	write := func(rate int) {
		writeConfig(t, cfgPath, urls, false)
		b, _ := os.ReadFile(cfgPath)
		cfg := strings.Replace(string(b), "    token: "+secretVPS+"\n", fmt.Sprintf("    token: %s\n    rate_limit: %d\n", secretVPS, rate), 1)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		appendRemediation(t, cfgPath, `  dry_run: true
  max_actions_per_hour: 5
  rules:
    - {name: reboot-running, provider: vpsorg, state: [running], action: reboot}
    - {name: redeploy-degraded, provider: vpnbingo, state: [degraded], action: redeploy}
`)
	}
	write(200)
	e := startExporter(t, "--config.file="+cfgPath, "--web.enable-lifecycle")
	// The fleet is in (dry-run) cooldown or over the budget from here on.
	e.waitFor("rules evaluated", func() bool {
		return metricValue(e.metrics(), "vps_remediation_suppressed_total", `reason="rate_limit"`) > 0
	})
	client := &http.Client{Timeout: 10 * time.Second}
	for i := 0; i < 30; i++ {
		write(200 + i%2)
		req, _ := http.NewRequest("POST", "http://"+e.addr+"/-/reload", nil)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("reload %d: %v (after %v): the reload hangs", i, err, time.Since(start))
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("reload %d: HTTP %d", i, resp.StatusCode)
		}
		time.Sleep(time.Duration(50+i*10) * time.Millisecond) // land in different phases of the refresh
	}
	// The changed account is polled again, and everything answers.
	before := metricValue(e.metrics(), "vps_provider_api_requests_total", `account="vps-main"`, `endpoint="servers_list"`)
	e.waitFor("the reloaded account refreshing", func() bool {
		m := e.metrics()
		return hasLine(m, up("vpsorg", "vps-main", 1)) &&
			metricValue(m, "vps_provider_api_requests_total", `account="vps-main"`, `endpoint="servers_list"`) > before
	})
	if code, _ := e.get("/-/ready"); code != 200 {
		t.Errorf("/-/ready: %d", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for !exited(e.cmd.Process.Pid) {
		if ctx.Err() != nil {
			t.Fatal("SIGTERM: the daemon did not exit within 15 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
