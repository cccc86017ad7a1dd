package main

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runToExit runs the built binary with args and waits at most limit for it
// to end on its own; it returns the exit code (-1: still running, then
// killed) and what it logged.
func runToExit(t *testing.T, limit time.Duration, args ...string) (int, string, time.Duration) {
	t.Helper()
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	logs := &syncBuffer{}
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.WaitDelay = time.Second
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return -1, logs.String(), took
	case err == nil:
		return 0, logs.String(), took
	case errors.As(err, &ee):
		return ee.ExitCode(), logs.String(), took
	}
	t.Fatalf("run: %v", err)
	return 0, "", took
}

// skipShort skips a test that runs the built binary under -short (make
// test-short builds none).
func skipShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: starts no process")
	}
}

// TestFailedStartExits is the start that never ended: every way a start
// can fail logs the reason and exits 1 within 5 s. Before, the main
// goroutine waited in a deferred wait for the webhook workers, which only
// a signal ends: the process stayed alive without serving (systemd showed
// it active, no orchestrator restarted it).
func TestFailedStartExits(t *testing.T) {
	_, urls := startSim(t, 3)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yml")
	writeConfig(t, good, urls, false)

	bad := filepath.Join(dir, "bad.yml")
	b, _ := os.ReadFile(good)
	if err := os.WriteFile(bad, []byte(strings.Replace(string(b), "refresh_interval: 1s", "refresh_interval: soon", 1)), 0o600); err != nil {
		t.Fatal(err)
	}

	// A state file that is no bbolt database, with remediation on.
	corrupt := filepath.Join(dir, "corrupt.yml")
	writeConfig(t, corrupt, urls, false)
	appendRemediation(t, corrupt, "  dry_run: true\n")
	if err := os.WriteFile(filepath.Join(dir, "state.db"), []byte(strings.Repeat("not a database\n", 512)), 0o600); err != nil {
		t.Fatal(err)
	}

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	for _, tc := range []struct {
		name string
		args []string
		want string // in the log
	}{
		{"missing config file", []string{"--config.file=" + filepath.Join(dir, "missing.yml"), "--web.listen-address=" + freePort(t)}, "missing.yml"},
		{"invalid config", []string{"--config.file=" + bad, "--web.listen-address=" + freePort(t)}, "global.refresh_interval"},
		{"listen address taken", []string{"--config.file=" + good, "--web.listen-address=" + taken.Addr().String()}, "address already in use"},
		{"state file unusable", []string{"--config.file=" + corrupt, "--web.listen-address=" + freePort(t)}, "remediation.state_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, logs, took := runToExit(t, 20*time.Second, tc.args...)
			if code != 1 || took > 5*time.Second {
				t.Fatalf("exit code %d after %v, want 1 within 5 s; log:\n%s", code, took.Round(time.Millisecond), logs)
			}
			if !strings.Contains(logs, "level=error") || !strings.Contains(logs, tc.want) {
				t.Errorf("the log does not say why (want an error mentioning %q):\n%s", tc.want, logs)
			}
			assertNoSecrets(t, "logs", logs)
		})
	}
}

// TestLifecycleFlag: POST /-/reload is refused with 403 unless
// --web.enable-lifecycle is given, as in Prometheus; SIGHUP always reloads.
func TestLifecycleFlag(t *testing.T) {
	_, urls := startSim(t, 3)
	cfgPath := filepath.Join(t.TempDir(), "vps_exporter.yml")
	writeConfig(t, cfgPath, urls, false)
	e := startExporter(t, "--config.file="+cfgPath)
	if code, body := e.do("POST", "/-/reload"); code != 403 {
		t.Errorf("POST /-/reload without --web.enable-lifecycle: %d %q, want 403", code, body)
	}
	writeConfig(t, cfgPath, urls, true) // adds the e2e account
	if err := e.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	e.waitFor("SIGHUP reload", func() bool { return hasLine(e.metrics(), up("e2e", "e2e-delhi", 1)) })

	on := startExporter(t, "--config.file="+cfgPath, "--web.enable-lifecycle")
	if code, body := on.do("POST", "/-/reload"); code != 200 {
		t.Errorf("POST /-/reload with --web.enable-lifecycle: %d %q, want 200", code, body)
	}
}

// TestOneLogFormat: exporter-toolkit's own lines (the listener) come in the
// project's format and keys (ts, caller, level, msg), in logfmt and json.
func TestOneLogFormat(t *testing.T) {
	_, urls := startSim(t, 3)
	cfgPath := filepath.Join(t.TempDir(), "vps_exporter.yml")
	writeConfig(t, cfgPath, urls, false)
	for _, format := range []string{"logfmt", "json"} {
		t.Run(format, func(t *testing.T) {
			e := startExporter(t, "--config.file="+cfgPath, "--log.format="+format)
			var toolkit string
			e.waitFor("the toolkit's listening line", func() bool {
				for _, l := range strings.Split(e.logs.String(), "\n") {
					if strings.Contains(l, "Listening on") {
						toolkit = l
						return true
					}
				}
				return false
			})
			ts, caller, lvl := "ts=", "caller=", "level=info"
			if format == "json" {
				ts, caller, lvl = `"ts":`, `"caller":`, `"level":"info"`
			}
			for _, want := range []string{ts, caller, lvl} {
				if !strings.Contains(toolkit, want) {
					t.Errorf("toolkit line lacks %s: %s", want, toolkit)
				}
			}
			if strings.Contains(toolkit, "time=") || strings.Contains(toolkit, `"time":`) {
				t.Errorf("toolkit line has its own time key: %s", toolkit)
			}
			if format == "logfmt" && !strings.HasPrefix(toolkit, "level=info ts=") {
				t.Errorf("toolkit line does not start with level= and ts= as the others do: %s", toolkit)
			}
		})
	}
}

// TestStartHints: without --config.file and without vps_exporter.yml in
// the working directory, the error says where to start from; --config.check
// looks at where the remediation state file would go.
func TestStartHints(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, "--web.listen-address="+freePort(t))
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "deploy/vps_exporter.minimal.yml") || !strings.Contains(string(out), "--demo") {
		t.Errorf("no config file: %v, want exit 1 with a hint:\n%s", err, out)
	}

	cfg := filepath.Join(dir, "c.yml")
	for _, tc := range []struct {
		state, want string
	}{
		{filepath.Join(dir, "no", "such", "dir", "state.db"), "remediation.state_file: its directory"},
		{dir, "exists and is not a regular file"},
	} {
		if err := os.WriteFile(cfg, []byte("providers: [{type: vpsorg, name: a, token: x}]\nremediation: {enabled: true, state_file: "+tc.state+"}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		code, logs, _ := runToExit(t, 20*time.Second, "--config.check", "--config.file="+cfg)
		if code != 1 || !strings.Contains(logs, tc.want) {
			t.Errorf("state_file %s: exit %d, want 1 with %q:\n%s", tc.state, code, tc.want, logs)
		}
	}
}

// TestReloadWithUnusableStateFile: a reload whose remediation state file
// cannot be opened is a failed reload (the metric says so, the log says
// what was applied), and remediation is off, not silently on the old file.
func TestReloadWithUnusableStateFile(t *testing.T) {
	_, urls := startSim(t, 3)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "vps_exporter.yml")
	writeConfig(t, cfgPath, urls, false)
	appendRemediation(t, cfgPath, "  dry_run: true\n")
	e := startExporter(t, "--config.file="+cfgPath)
	if !hasLine(e.metrics(), "vps_remediation_enabled 1") {
		t.Fatal("remediation not on at start")
	}
	b, _ := os.ReadFile(cfgPath)
	bad := strings.Replace(string(b), filepath.Join(dir, "state.db"), filepath.Join(dir, "missing", "state.db"), 1)
	if err := os.WriteFile(cfgPath, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	e.waitFor("the failed reload", func() bool {
		m := e.metrics()
		return hasLine(m, "vps_exporter_config_last_reload_successful 0") && hasLine(m, "vps_remediation_enabled 0")
	})
	logs := e.logs.String()
	if !strings.Contains(logs, `msg="reload failed"`) || !strings.Contains(logs, "the accounts were reloaded") {
		t.Errorf("the log does not say what the reload did:\n%s", grepLines(logs, "level=error"))
	}
}
