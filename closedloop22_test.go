package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// Binary tests of issue 22's faults 3, 4 and 5 against the simulator:
// the verdict needs the exporter's own view, a late resolved
// notification inside webhook.resolve_grace is a recovery, and
// exhaustion survives a rule's removal or rename.

// alertLoopConfig is a webhook-driven config: reboot, then power_cycle;
// webhook.verify and resolve_grace as given.
func alertLoopConfig(t *testing.T, urls map[sim.API]string, verify, grace string) string {
	t.Helper()
	return writeLoopConfig(t, t.TempDir(), urls, fmt.Sprintf(`  webhook:
    enabled: true
    allowed_actions: [reboot]
    bearer_token: %s
    verify: %s
    resolve_grace: %s
    escalate: {reboot: [power_cycle]}
`, loopToken, verify, grace))
}

// amAlert is one alert of a webhook payload for a VPS.org server of
// vps-main; endsAt zero: firing.
func amAlert(status, id string, startsAt, endsAt time.Time) string {
	ends := "0001-01-01T00:00:00Z"
	if !endsAt.IsZero() {
		ends = endsAt.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprintf(`{"status":%q,"labels":{"alertname":"Broken","provider":"vpsorg","account":"vps-main","id":%q,"remediation":"reboot"},"startsAt":%q,"endsAt":%q,"fingerprint":"fp-%s"}`,
		status, id, startsAt.UTC().Format(time.RFC3339), ends, id)
}

// mustPostAlerts posts alerts with the credential (postAlerts) and
// fails the test unless they are taken.
func (e *exporter) mustPostAlerts(t *testing.T, alerts ...string) {
	t.Helper()
	code, body := e.postAlerts(alerts...)
	if code != 200 {
		t.Fatalf("webhook: %d %s", code, body)
	}
}

// Fault 3: a resolved alert while the server reads stopped, or while its
// account is down, is never recovered: stopped is not_recovered (a fresh
// view disagrees); account down is no verdict until global.stale_after,
// then unknown, counted, and nothing escalates.
func TestClosedLoopAlertVerdictNeedsTheView(t *testing.T) {
	t.Parallel() // mostly waiting on the simulator: beside the other long binary tests
	for _, tc := range []struct {
		name    string
		breakIt func(*sim.Sim)
		// seen says the exporter saw it (the alert resolves after).
		seen    func(metrics string) bool
		verdict string
		outcome string
	}{
		{"server reads stopped", func(s *sim.Sim) {
			s.Update(sim.VPSOrg, 12003, func(m *sim.Machine) { m.Status = "stopped" })
		}, func(m string) bool {
			return metricValue(m, "vps_server_state", `id="12003"`, `state="stopped"`) == 1
		}, "not_recovered", ""},
		{"account down", func(s *sim.Sim) {
			s.SetFault(sim.VPSOrg, sim.Fault{Kind: sim.FaultStatus, Status: 503})
		}, func(m string) bool {
			return hasLine(m, `vps_provider_up{account="vps-main",provider="vpsorg"} 0`)
		}, "unknown", "ended"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, urls := startSimSettle(t, 10, 500*time.Millisecond)
			e := startExporter(t, "--config.file="+alertLoopConfig(t, urls, "3s", "2s"))
			started := time.Now().Add(-time.Minute)
			e.mustPostAlerts(t, amAlert("firing", "12003", started, time.Time{}))
			within(t, 20*time.Second, "the reboot", func() bool { return len(callsTo(s, "12003")) == 1 })
			time.Sleep(time.Second) // the reboot settled
			tc.breakIt(s)
			within(t, 20*time.Second, "the exporter to see it", func() bool { return tc.seen(e.metrics()) })
			e.mustPostAlerts(t, amAlert("resolved", "12003", started, time.Now()))
			var h history
			deadline := time.Now().Add(40 * time.Second)
			for {
				h = e.history(t, "?id=12003")
				if len(h.Episodes) == 1 && len(h.Episodes[0].Steps) > 0 && h.Episodes[0].Steps[0].Verdict == tc.verdict {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no %s verdict within 40s: episodes %+v, calls %q", tc.verdict, h.Episodes, names(callsTo(s, "12003")))
				}
				time.Sleep(200 * time.Millisecond)
			}
			if tc.outcome != "" && h.Episodes[0].Outcome != tc.outcome {
				t.Errorf("outcome %q, want %q", h.Episodes[0].Outcome, tc.outcome)
			}
			m := e.metrics()
			if v := metricValue(m, "vps_remediation_verifications_total", `result="recovered"`); v != 0 {
				t.Errorf("%v recovered verdicts: the exporter's own view disagreed", v)
			}
			want := fmt.Sprintf(`vps_remediation_verifications_total{account="vps-main",action="reboot",provider="vpsorg",result="%s",source="alert"} 1`, tc.verdict)
			if !hasLine(m, want) {
				t.Errorf("/metrics lacks %s", want)
			}
			if tc.verdict == "unknown" {
				s.ClearFaults()
				time.Sleep(4 * time.Second) // the account back: nothing follows an unknown verdict
				if got := names(callsTo(s, "12003")); got != "reboot" {
					t.Errorf("provider calls %q after an unknown verdict, want the reboot only", got)
				}
			}
		})
	}
}

// Fault 4: Alertmanager sends a resolved notification at the group's next
// flush: one that arrives after webhook.verify, inside resolve_grace, with
// endsAt inside the window, is a recovery; nothing escalates before the
// grace has passed.
func TestClosedLoopLateResolvedNotification(t *testing.T) {
	t.Parallel() // mostly waiting on the simulator: beside the other long binary tests
	s, urls := startSimSettle(t, 10, 500*time.Millisecond)
	e := startExporter(t, "--config.file="+alertLoopConfig(t, urls, "3s", "8s"))
	started := time.Now().Add(-time.Minute)
	e.mustPostAlerts(t, amAlert("firing", "12003", started, time.Time{}))
	within(t, 20*time.Second, "the reboot", func() bool { return len(callsTo(s, "12003")) == 1 })
	rebooted := callsTo(s, "12003")[0].Time
	time.Sleep(time.Until(rebooted.Add(5 * time.Second))) // the window is over, the grace is not
	h := e.history(t, "?id=12003")
	if len(h.Episodes) != 1 || ladder(h.Episodes[0].Steps) != "reboot:verifying" {
		t.Fatalf("episodes %+v inside the grace, want the reboot still verifying", h.Episodes)
	}
	e.mustPostAlerts(t, amAlert("resolved", "12003", started, rebooted.Add(time.Second)))
	within(t, 20*time.Second, "the recovery", func() bool {
		h = e.history(t, "?id=12003")
		return len(h.Episodes) == 1 && h.Episodes[0].Outcome == "recovered"
	})
	if got := ladder(h.Episodes[0].Steps); got != "reboot:recovered" {
		t.Errorf("episode %q, want reboot:recovered", got)
	}
	time.Sleep(time.Until(rebooted.Add(14 * time.Second))) // past the grace
	if got := names(callsTo(s, "12003")); got != "reboot" {
		t.Errorf("provider calls %q: a recovered server was escalated", got)
	}
	if !hasLine(e.metrics(), `vps_remediation_verifications_total{account="vps-main",action="reboot",provider="vpsorg",result="recovered",source="alert"} 1`) {
		t.Error("the late recovery is not counted")
	}
}

// Fault 5: renaming or removing (by a reload) the rule that exhausted a
// server does not release it, and nothing acts on it again.
func TestClosedLoopExhaustionSurvivesRuleReload(t *testing.T) {
	t.Parallel() // mostly waiting on the simulator: beside the other long binary tests
	for _, tc := range []struct {
		name  string
		rules string
		// reloaded says the new configuration is in force.
		reloaded func(metrics string) bool
	}{
		{"renamed", "    - {name: hot-cpu-renamed, provider: vpsorg, state: [running], metric: cpu_usage_ratio, above: 0.95, action: reboot, verify: 4s}\n",
			func(m string) bool { return strings.Contains(m, `rule="hot-cpu-renamed"`) }},
		{"removed", "",
			func(m string) bool { return !strings.Contains(m, `rule="hot-cpu"`) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, urls := startSimSettle(t, 24, 500*time.Millisecond)
			onlyHot(s)
			s.SetSick(sim.VPSOrg, 12001, sim.Sickness{Cure: sim.CureNone})
			dir := t.TempDir()
			head := "  cooldown: 1s\n"
			cfg := writeLoopConfig(t, dir, urls, head+hotCPURule("reboot"))
			e := startExporter(t, "--config.file="+cfg)
			const gauge = `vps_remediation_exhausted{account="vps-main",id="12001",provider="vpsorg"} 1`
			within(t, 60*time.Second, "the server exhausted", func() bool { return hasLine(e.metrics(), gauge) })
			rules := "  rules:\n" + tc.rules
			if tc.rules == "" {
				rules = "  rules: []\n"
			}
			writeLoopConfig(t, dir, urls, head+rules+fmt.Sprintf("  webhook: {enabled: false, bearer_token: %s}\n", loopToken))
			if b, err := os.ReadFile(cfg); err != nil || !strings.Contains(string(b), "rules:") {
				t.Fatalf("config: %v", err)
			}
			if err := e.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			within(t, 20*time.Second, "the reload", func() bool { return tc.reloaded(e.metrics()) })
			time.Sleep(6 * time.Second) // many refreshes, cooldowns and verify windows
			m := e.metrics()
			if !hasLine(m, gauge) {
				t.Errorf("the rule %s by a reload released the exhausted server", tc.name)
			}
			if got := names(callsTo(s, "12001")); got != "reboot" {
				t.Errorf("provider calls %q: the exhausted server was acted on after its rule was %s", got, tc.name)
			}
			h := e.history(t, "?id=12001")
			if len(h.Episodes) != 1 || h.Episodes[0].Outcome != "exhausted" {
				t.Errorf("episodes %+v, want one exhausted", h.Episodes)
			}
			if tc.name == "renamed" && metricValue(m, "vps_remediation_suppressed_total", `reason="exhausted"`, `rule="hot-cpu-renamed"`) < 1 &&
				metricValue(m, "vps_remediation_suppressed_total", `reason="exhausted"`) < 1 {
				t.Error("the renamed rule's requests are not held back as exhausted")
			}
		})
	}
}
