package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/config"
)

// buildVPSSim builds cmd/vps_sim into a directory of the test.
func buildVPSSim(t testing.TB) string {
	t.Helper()
	skipShort(t)
	bin := filepath.Join(t.TempDir(), "vps_sim")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/vps_sim").CombinedOutput(); err != nil {
		t.Fatalf("build vps_sim: %v\n%s", err, out)
	}
	return bin
}

// TestVPSSim runs the built simulator as its own process and the built
// exporter on the configuration it writes: the file passes --config.check,
// every account is up with every server, remediation runs in dry run, no
// credential shows anywhere, and SIGTERM stops the simulator within a few
// seconds (after which the exporter sees its accounts down).
func TestVPSSim(t *testing.T) {
	simBin := buildVPSSim(t)
	cfgPath := filepath.Join(t.TempDir(), "sim.yml")
	simLogs := &syncBuffer{}
	simCmd := startCmd(t, simLogs, "vps_sim", simBin, "--servers=31", "--config-out="+cfgPath, "--refresh-interval=2s", "--seed=5")

	var c *config.Config
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		if c, err = config.Load(cfgPath); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vps_sim wrote no loadable configuration at %s: %v\n%s", cfgPath, err, simLogs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var creds []string
	for _, p := range c.Providers {
		creds = append(creds, string(p.Token))
		if p.APIKey != "" {
			creds = append(creds, string(p.APIKey))
		}
	}
	noCreds := func(where, text string) {
		t.Helper()
		for _, s := range creds {
			if strings.Contains(text, s) {
				t.Errorf("a credential of the simulated fleet shows in %s", where)
			}
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	out, err := exec.CommandContext(ctx, binPath, "--config.check", "--config.file="+cfgPath).CombinedOutput()
	cancel()
	if err != nil || !strings.Contains(string(out), "configuration is valid") {
		t.Fatalf("vps_exporter --config.check on vps_sim's file: %v\n%s", err, out)
	}

	e := startExporter(t, "--config.file="+cfgPath)
	want := []string{
		up("vpnbingo", "sim-bingo", 1), up("vpsorg", "sim-vpsorg", 1), up("e2e", "sim-e2e", 1),
		`vps_provider_servers{account="sim-bingo",provider="vpnbingo"} 11`,
		`vps_provider_servers{account="sim-vpsorg",provider="vpsorg"} 10`,
		`vps_provider_servers{account="sim-e2e",provider="e2e"} 10`,
		"vps_remediation_enabled 1", "vps_remediation_dry_run 1",
	}
	var m string
	e.waitFor("every account up with its servers", func() bool {
		m = e.metrics()
		for _, w := range want {
			if !hasLine(m, w) {
				return false
			}
		}
		return true
	})
	if n := strings.Count(m, "\nvps_server_info{"); n != 31 {
		t.Errorf("%d vps_server_info series, want 31", n)
	}
	for _, p := range c.Providers {
		if !strings.Contains(simLogs.String(), "url="+p.URL.String()) {
			t.Errorf("vps_sim's log does not give %s's URL %s", p.Name, p.URL)
		}
	}

	start := time.Now()
	if err := simCmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- simCmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("vps_sim after SIGTERM: %v", err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("vps_sim took %s to stop after SIGTERM", took)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("vps_sim still running 15 s after SIGTERM")
	}
	if !strings.Contains(simLogs.String(), `msg="shutting down"`) {
		t.Error("vps_sim did not log its shutdown")
	}
	e.waitFor("the accounts down once the simulator stopped", func() bool {
		return hasLine(e.metrics(), up("vpsorg", "sim-vpsorg", 0))
	})

	noCreds("vps_sim's log", simLogs.String())
	noCreds("the exporter's log", e.logs.String())
	noCreds("the exporter's pages", e.seen.String())
	if _, err := os.Stat(c.Remediation.StateFile); err != nil {
		t.Errorf("remediation state file beside the configuration: %v", err)
	}
	if filepath.Dir(c.Remediation.StateFile) != filepath.Dir(cfgPath) {
		t.Errorf("state file %s is not beside %s", c.Remediation.StateFile, cfgPath)
	}
}
