package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHARefusedUntilWired: this build validates remediation.ha but its
// remediation engine does not run on etcd yet, so a file that asks for HA
// is refused at every load (--config.check, start, reload) with one line
// that says so, rather than run unfenced beside other replicas. A reload
// to such a file keeps the running configuration.
func TestHARefusedUntilWired(t *testing.T) {
	_, urls := startSim(t, 3)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yml")
	writeConfig(t, good, urls, false)
	base, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(dir, "etcd.pw")
	if err := os.WriteFile(pw, []byte("etcd-SECRET-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ha := filepath.Join(dir, "ha.yml")
	haConfig := string(base) + "remediation:\n  enabled: true\n  ha:\n    advertise_url: http://127.0.0.1:9877\n" +
		"    etcd:\n      endpoints: [http://127.0.0.1:2379]\n      username: exporter\n      password_file: " + pw + "\n"
	if err := os.WriteFile(ha, []byte(haConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	const want = "remediation.ha: not supported yet in this build"

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"config check", []string{"--config.check", "--config.file=" + ha}},
		{"start", []string{"--config.file=" + ha, "--web.listen-address=" + freePort(t)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, logs, took := runToExit(t, 20*time.Second, tc.args...)
			if code != 1 || took > 5*time.Second {
				t.Fatalf("exit code %d after %v, want 1 within 5 s; log:\n%s", code, took.Round(time.Millisecond), logs)
			}
			if n := strings.Count(logs, want); n != 1 || !strings.Contains(logs, "level=error") {
				t.Errorf("%q on %d lines, want 1 error line:\n%s", want, n, logs)
			}
			if strings.Contains(logs, "etcd-SECRET") {
				t.Errorf("the etcd password in the log:\n%s", logs)
			}
			assertNoSecrets(t, "logs", logs)
		})
	}

	t.Run("reload", func(t *testing.T) {
		live := filepath.Join(dir, "live.yml")
		if err := os.WriteFile(live, base, 0o600); err != nil {
			t.Fatal(err)
		}
		e := startExporter(t, "--config.file="+live, "--web.enable-lifecycle")
		if err := os.WriteFile(live, []byte(haConfig), 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+e.addr+"/-/reload", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusInternalServerError {
			t.Errorf("reload to a file with ha: HTTP %d, want 500", resp.StatusCode)
		}
		m := e.metrics()
		if !hasLine(m, "vps_exporter_config_last_reload_successful 0") || !hasLine(m, "vps_remediation_enabled 0") {
			t.Errorf("after the refused reload: want last_reload_successful 0 and remediation still off")
		}
		e.waitFor("the refusal in the log", func() bool { return strings.Contains(e.logs.String(), want) })
		if strings.Contains(e.logs.String(), "etcd-SECRET") {
			t.Errorf("the etcd password in the log")
		}
	})
}
