package main

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/internal/htmldom"
	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// TestStatusPageLoopInBrowser drives the built exporter's status page in
// headless chromium on a live closed loop: a rule's reboot that did not
// recover its server and the power cycle that did, and an alert's reboot
// still being verified. Each action shows its verdict and "accepted"
// (never "success"), servers their names beside their ids, and the open
// episode its step, ladder and attempts.
func TestStatusPageLoopInBrowser(t *testing.T) {
	chromium := lookTool(t, "chromium")
	s, urls := startSimSettle(t, 24, time.Second)
	onlyHot(s)
	s.SetSick(sim.VPSOrg, 12001, sim.Sickness{Cure: sim.CurePowerCycle})
	cfg := writeLoopConfig(t, t.TempDir(), urls, fmt.Sprintf(`  rules:
    - {name: hot-cpu, provider: vpsorg, state: [running], metric: cpu_usage_ratio, above: 0.95, action: reboot, escalate: [power_cycle], verify: 4s}
  webhook:
    enabled: true
    allowed_actions: [reboot]
    bearer_token: %s
    verify: 10m
    escalate: {reboot: [power_cycle]}
`, loopToken))
	e := startExporter(t, "--config.file="+cfg)
	within(t, 90*time.Second, "the rule's episode to recover", func() bool {
		h := e.history(t, "?id=12001")
		return len(h.Episodes) > 0 && h.Episodes[0].Outcome == "recovered"
	})
	started := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339)
	alert := fmt.Sprintf(`{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"Hung","provider":"vpsorg","account":"vps-main","id":"12003","remediation":"reboot"},"startsAt":%q,"endsAt":"0001-01-01T00:00:00Z","fingerprint":"fp-12003"}]}`, started)
	if code, body := e.sendAuth("POST", "/webhook/alertmanager", alert); code != 200 {
		t.Fatalf("webhook: %d %s", code, body)
	}
	within(t, 20*time.Second, "the alert's reboot", func() bool {
		h := e.history(t, "?id=12003")
		return len(h.Episodes) == 1 && ladder(h.Episodes[0].Steps) == "reboot:verifying"
	})

	dom := runChromium(t, chromium, "--dump-dom", "http://"+e.addr+"/")
	_, _ = e.seen.Write(dom)
	doc, err := htmldom.Parse(string(dom))
	if err != nil || doc.ByID("actions") == nil {
		t.Fatalf("not the status page (%v):\n%s", err, dom)
	}
	name := map[string]string{}
	for _, m := range s.Machines(sim.VPSOrg) {
		name[strconv.Itoa(m.ID)] = m.Name
	}
	server := func(id string) string { return id + " " + name[id] }
	if name["12001"] == "" || name["12003"] == "" {
		t.Fatalf("the simulator's servers have no names: %q", name)
	}

	// Recent actions: server (with its name), action, result, verdict.
	var rows []string
	for _, a := range doc.ByClass("action") {
		td := a.ByTag("td")
		if len(td) != 9 {
			t.Fatalf("action row with %d cells: %s", len(td), a.Text())
		}
		if td[6].Text() == "success" {
			t.Errorf("an action labelled success: %s", a.Text())
		}
		rows = append(rows, strings.Join([]string{td[3].Text(), td[4].Text(), td[6].Text(), td[7].Text()}, " | "))
	}
	for _, want := range []string{
		server("12003") + " | reboot | accepted | verifying",
		server("12001") + " | power_cycle | accepted | recovered",
		server("12001") + " | reboot | accepted | not recovered",
	} {
		found := false
		for _, r := range rows {
			found = found || r == want
		}
		if !found {
			t.Errorf("no action row %q among\n%s", want, strings.Join(rows, "\n"))
		}
	}

	// Open episodes: the alert's, at its first step of two, verifying.
	eps := doc.ByClass("episode")
	if len(eps) != 1 {
		t.Fatalf("%d open episode rows, want 1:\n%s", len(eps), doc.ByID("episodes").Text())
	}
	td := eps[0].ByTag("td")
	if len(td) != 9 {
		t.Fatalf("episode row with %d cells: %s", len(td), eps[0].Text())
	}
	for i, want := range map[int]string{
		2: server("12003"),
		4: "alert Hung",
		5: "1 of 2: reboot verifying",
		6: "reboot → power_cycle",
		7: "1 of 3",
		8: "none yet",
	} {
		if got := td[i].Text(); got != want {
			t.Errorf("open episode, cell %d: %q, want %q", i, got, want)
		}
	}
	if doc.ByID("exhausted-none") == nil {
		t.Error("the exhausted servers section does not say none")
	}
	assertNoSecrets(t, "the status page", string(dom))
	assertNoSecrets(t, "logs", e.logs.String())
}
