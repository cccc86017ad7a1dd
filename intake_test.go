package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// Binary tests of the webhook's durable intake (issue 22, fault 7): an
// alert answered 200 is journaled in the state file, handled exactly
// once across a kill -9, held while a passing reason holds it back, and
// a hold ends at remediation.webhook.hold.

// writeIntakeConfig writes a VPS.org-only config with live remediation
// and the webhook on (reboot), with the extra global and webhook lines.
func writeIntakeConfig(t *testing.T, dir string, urls map[sim.API]string, global, webhook string) string {
	t.Helper()
	path := filepath.Join(dir, "vps_exporter.yml")
	cfg := fmt.Sprintf(`global: {refresh_interval: 1s%s}
providers:
  - {type: vpsorg, name: vps-main, base_url: %s, token: %s}
remediation:
  enabled: true
  dry_run: false
  max_actions_per_hour: 100
  max_fleet_fraction: 1
  state_file: %s
  webhook: {enabled: true, allowed_actions: [reboot], bearer_token: %s%s}
`, global, urls[sim.VPSOrg], secretVPS, filepath.Join(dir, "state.db"), loopToken, webhook)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// rebootAlert is a firing alert that asks for a reboot of a VPS.org
// server; name and fingerprint tell alerts apart.
func rebootAlert(name, id, fingerprint string, started time.Time) string {
	return fmt.Sprintf(`{"status":"firing","labels":{"alertname":%q,"provider":"vpsorg","account":"vps-main","id":%q,"remediation":"reboot"},"startsAt":%q,"endsAt":"0001-01-01T00:00:00Z","fingerprint":%q}`,
		name, id, started.UTC().Format(time.RFC3339), fingerprint)
}

// postAlerts posts a webhook payload with the credential.
func (e *exporter) postAlerts(alerts ...string) (int, string) {
	return e.sendAuth("POST", "/webhook/alertmanager", `{"version":"4","status":"firing","alerts":[`+strings.Join(alerts, ",")+`]}`)
}

// listed waits until the account's servers are listed.
func (e *exporter) listed(t *testing.T) {
	t.Helper()
	within(t, 30*time.Second, "the account listed", func() bool {
		return hasLine(e.metrics(), `vps_provider_up{account="vps-main",provider="vpsorg"} 1`)
	})
}

// callsFor counts the simulator's action calls for one server.
func callsFor(s *sim.Sim, id string) int { return len(callsTo(s, id)) }

// An alert answered 200 whose handling is under way (the server's
// re-read is slow) when the daemon is killed with SIGKILL, or stopped
// with SIGTERM, is handled after the restart, from the journal, with no
// resend: one reboot.
func TestWebhookIntakeSurvivesKill9(t *testing.T) {
	t.Parallel() // mostly waiting on the simulator: beside the other long binary tests
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			s, urls := startSimSettle(t, 10, time.Second)
			dir := t.TempDir()
			cfg := writeIntakeConfig(t, dir, urls, ", request_timeout: 10s", "")
			e := startExporter(t, "--config.file="+cfg)
			e.listed(t)
			// Every request of the account now takes 3 s: the re-read
			// before the action is under way when the daemon stops.
			s.SetLatency(sim.VPSOrg, 3*time.Second)
			time.Sleep(1500 * time.Millisecond) // a refresh already on the wire finishes fresh
			started := time.Now().Add(-time.Minute)
			if code, body := e.postAlerts(rebootAlert("Hung", "12003", "fp-hung", started)); code != 200 || !strings.HasPrefix(body, "queued 1 alert(s)") {
				t.Fatalf("webhook: %d %s", code, body)
			}
			time.Sleep(300 * time.Millisecond)
			if err := e.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			_ = e.cmd.Wait()
			if n := callsFor(s, "12003"); n != 0 {
				t.Fatalf("%d calls before the stop: the test did not stop the daemon before the action", n)
			}
			s.SetLatency(sim.VPSOrg, 0)
			e = startExporter(t, "--config.file="+cfg)
			within(t, 60*time.Second, "the journaled alert acted on after the restart", func() bool { return callsFor(s, "12003") >= 1 })
			// Room for a wrong second action: the journal is read every second.
			time.Sleep(4 * time.Second)
			if got := names(callsTo(s, "12003")); got != "reboot" {
				t.Errorf("calls after the restart %q, want one reboot", got)
			}
			if v := metricValue(e.metrics(), "vps_remediation_actions_total", `action="reboot"`, `result="success"`); v != 1 {
				t.Errorf("actions_total{reboot,success} = %v, want 1", v)
			}
			// Alertmanager's resend of the same occurrence now: a duplicate.
			if code, body := e.postAlerts(rebootAlert("Hung", "12003", "fp-hung", started)); code != 200 {
				t.Fatalf("resend: %d %s", code, body)
			}
			if v := metricValue(e.metrics(), "vps_remediation_webhook_alerts_total", `outcome="duplicate"`); v != 1 {
				t.Errorf("webhook_alerts_total{duplicate} = %v, want 1", v)
			}
			time.Sleep(2 * time.Second)
			if n := callsFor(s, "12003"); n != 1 {
				t.Errorf("%d calls after the resend, want 1", n)
			}
		})
	}
}

// An alert for a down account is held (counted by reason, logged once)
// and acted on once the account recovers, with no resend from
// Alertmanager; a hold that outlasts remediation.webhook.hold expires,
// counted as a suppression, and nothing acts on it later.
func TestWebhookHoldsAlertWhileAccountDown(t *testing.T) {
	t.Parallel() // mostly waiting on the simulator: beside the other long binary tests
	for _, tc := range []struct {
		name   string
		hold   string
		expire bool
	}{
		{"recovers within the hold", "", false},
		{"hold expires", ", hold: 3s", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, urls := startSimSettle(t, 10, time.Second)
			cfg := writeIntakeConfig(t, t.TempDir(), urls, ", request_timeout: 1s", tc.hold)
			e := startExporter(t, "--config.file="+cfg)
			e.listed(t)
			s.SetFault(sim.VPSOrg, sim.Fault{Kind: sim.FaultStatus, Status: 500})
			within(t, 30*time.Second, "the account down", func() bool {
				return hasLine(e.metrics(), `vps_provider_up{account="vps-main",provider="vpsorg"} 0`)
			})
			if code, body := e.postAlerts(rebootAlert("Down", "12004", "fp-down", time.Now().Add(-time.Minute))); code != 200 {
				t.Fatalf("webhook: %d %s", code, body)
			}
			within(t, 20*time.Second, "the alert held as stale_data", func() bool {
				return metricValue(e.metrics(), "vps_remediation_webhook_held_total", `reason="stale_data"`) == 1
			})
			if tc.expire {
				within(t, 20*time.Second, "the hold expired", func() bool {
					return metricValue(e.metrics(), "vps_remediation_suppressed_total", `reason="hold_expired"`) == 1
				})
			} else {
				time.Sleep(2 * time.Second)
			}
			if n := callsFor(s, "12004"); n != 0 {
				t.Fatalf("%d calls while the account was down", n)
			}
			s.SetFault(sim.VPSOrg, sim.Fault{})
			within(t, 30*time.Second, "the account up", func() bool {
				return hasLine(e.metrics(), `vps_provider_up{account="vps-main",provider="vpsorg"} 1`)
			})
			if tc.expire {
				time.Sleep(4 * time.Second) // room for a wrong action
				if n := callsFor(s, "12004"); n != 0 {
					t.Errorf("%d calls for an alert whose hold expired", n)
				}
				if n := strings.Count(e.logs.String(), `outcome=expired`); n != 1 {
					t.Errorf("%d hold-expired log lines, want 1", n)
				}
				return
			}
			within(t, 30*time.Second, "the held alert acted on", func() bool { return callsFor(s, "12004") >= 1 })
			time.Sleep(3 * time.Second)
			if got := names(callsTo(s, "12004")); got != "reboot" {
				t.Errorf("calls %q, want one reboot", got)
			}
			logs := e.logs.String()
			for _, want := range []string{`msg="alert held: kept and retried`, `msg="alert hold ended"`} {
				if n := strings.Count(logs, want); n != 1 {
					t.Errorf("%d log lines %s, want 1", n, want)
				}
			}
			if !strings.Contains(logs, "outcome=taken") {
				t.Error("the hold's end was not logged as taken")
			}
			m := e.metrics()
			if v := metricValue(m, "vps_remediation_webhook_held_total", `reason="stale_data"`); v != 1 {
				t.Errorf("held_total{stale_data} = %v, want 1", v)
			}
			// The alert's end is counted once: an action, no suppression.
			if v := metricValue(m, "vps_remediation_suppressed_total"); v != 0 {
				t.Errorf("suppressed_total = %v for an alert that was held, then acted on; want 0", v)
			}
		})
	}
}

// When the alerts cannot be journaled (here: the state file cannot grow,
// the process's file size limit reached), the webhook answers 503, so
// that Alertmanager retries, and acts on none of them.
func TestWebhookUnwritableStateAnswers503(t *testing.T) {
	s, urls := startSimSettle(t, 24, time.Second)
	dir := t.TempDir()
	cfg := writeIntakeConfig(t, dir, urls, ", request_timeout: 1s", "")
	// A first run makes the state file; the second may not grow it.
	first := startExporter(t, "--config.file="+cfg)
	first.listed(t)
	_ = first.cmd.Process.Signal(syscall.SIGTERM)
	_ = first.cmd.Wait()
	fi, err := os.Stat(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	e := &exporter{t: t, addr: freePort(t), logs: &syncBuffer{}, seen: &syncBuffer{}}
	// ulimit -f counts 512-byte blocks in a POSIX sh; the Go runtime
	// ignores SIGXFSZ: a write past the limit fails with EFBIG.
	limit := fi.Size()/512 + 8
	e.cmd = startCmd(t, e.logs, "exporter", "sh", "-c", fmt.Sprintf(`ulimit -f %d && exec "$0" "$@"`, limit),
		binPath, "--web.listen-address="+e.addr, "--log.level=debug", "--config.file="+cfg)
	e.waitFor("ready", func() bool { code, _ := e.get("/-/ready"); return code == 200 })
	e.listed(t)
	// 24 servers x 8 alerts with long names: more than the file holds.
	var alerts []string
	started := time.Now().Add(-time.Minute)
	for id := 12000; id < 12024; id++ {
		for i := 0; i < 8; i++ {
			alerts = append(alerts, rebootAlert(strings.Repeat("LongAlertName", 15)+fmt.Sprint(i), fmt.Sprint(id), fmt.Sprintf("fp-%d-%d", id, i), started))
		}
	}
	code, body := e.postAlerts(alerts...)
	if code != 503 || !strings.Contains(body, "cannot journal") {
		t.Fatalf("webhook with a state file of %d bytes that cannot grow: %d %s, want 503", fi.Size(), code, body)
	}
	t.Logf("state file %d bytes, limit %d blocks: %.200s", fi.Size(), limit, body)
	// The log reaches the test through a pipe: it may come just after
	// the answer.
	within(t, 10*time.Second, "the refusal logged", func() bool {
		return strings.Contains(e.logs.String(), `msg="cannot journal webhook alerts; answering 503`)
	})
	m := e.metrics()
	if v := metricValue(m, "vps_remediation_webhook_alerts_total", `outcome="rejected"`); v != float64(len(alerts)) {
		t.Errorf("webhook_alerts_total{rejected} = %v, want %d", v, len(alerts))
	}
	if v := metricValue(m, "vps_remediation_state_ok"); v != 0 {
		t.Errorf("vps_remediation_state_ok = %v, want 0", v)
	}
	time.Sleep(3 * time.Second) // room for a wrong action
	if n := len(s.Actions()); n != 0 {
		t.Errorf("%d provider calls for alerts answered 503", n)
	}
	// A small batch still fits in the file as it is: 200.
	if code, body := e.postAlerts(rebootAlert("Small", "12005", "fp-small", started)); code != 200 {
		t.Errorf("a batch that fits: %d %s, want 200", code, body)
	}
}
