package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// Binary test of issue 22's fault 6: a VPN.bingo redeploy whose answer is
// lost (the provider does it, the connection drops before its answer)
// does not escape max_attempts.

// oneSickNode leaves exactly one VPN.bingo node degraded, sick with no
// cure (its replacements are degraded too), and returns its id.
func oneSickNode(t *testing.T, s *sim.Sim) int {
	t.Helper()
	sick := 0
	for _, m := range s.Machines(sim.VPNBingo) {
		switch {
		case sick == 0 && m.Code == 19 && m.CanRedepl:
			sick = m.ID
		case m.Code == 18 || m.Code == 10:
			s.SetBingoStatus(m.ID, 19)
		}
	}
	if sick == 0 || !s.SetSick(sim.VPNBingo, sick, sim.Sickness{Cure: sim.CureNone}) {
		t.Fatal("no VPN.bingo node to make sick")
	}
	return sick
}

// redeploys lists the simulator's redeploys.
func redeploys(s *sim.Sim) []sim.ActionRecord {
	var out []sim.ActionRecord
	for _, a := range s.Actions() {
		if a.API == sim.VPNBingo && a.Action == "redeploy" {
			out = append(out, a)
		}
	}
	return out
}

// Every redeploy's answer is lost. Each replacement is found from the
// lists and inherits the episode: max_attempts 3 holds (before: each
// replacement started a fresh ladder, 24 redeploys in 12 h were measured),
// then the lineage is exhausted, and its last replacement is never acted
// on again.
func TestLostRedeployAnswersKeepMaxAttempts(t *testing.T) {
	t.Parallel() // mostly waiting on the simulator: beside the other long binary tests
	s, urls := startSimSettle(t, 24, time.Second)
	sick := oneSickNode(t, s)
	// The provider carries every redeploy out; its answer never arrives.
	s.SetFault(sim.VPNBingo, sim.Fault{Kind: sim.FaultReset, Served: true, Only: "/redeploy/"})
	dir := t.TempDir()
	path := filepath.Join(dir, "vps_exporter.yml")
	cfg := fmt.Sprintf(`global: {refresh_interval: 1s, request_timeout: 1s}
providers:
  - {type: vpnbingo, name: bingo-main, base_url: %s, token: %s}
remediation:
  enabled: true
  dry_run: false
  max_actions_per_hour: 100
  max_fleet_fraction: 1
  max_attempts: 3
  state_file: %s
  rules:
    - {name: redeploy-degraded, provider: vpnbingo, state: [degraded], action: redeploy, escalate: [redeploy, redeploy, redeploy, redeploy], verify: 3s}
  webhook: {enabled: false, bearer_token: %s}
`, urls[sim.VPNBingo], secretBingo, filepath.Join(dir, "state.db"), loopToken)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startExporter(t, "--config.file="+path)
	within(t, 120*time.Second, "the lineage exhausted", func() bool {
		if rs := redeploys(s); len(rs) > 3 {
			t.Fatalf("%d redeploys with max_attempts 3: a replacement started a fresh ladder", len(rs))
		}
		return strings.Contains(e.metrics(), `vps_remediation_exhausted{account="bingo-main"`)
	})
	time.Sleep(8 * time.Second) // a fresh ladder would show by now
	rs := redeploys(s)
	if len(rs) != 3 {
		t.Fatalf("%d redeploys, want 3 (max_attempts): %+v", len(rs), rs)
	}
	// One lineage: each redeploy acts on the previous one's replacement.
	from := fmt.Sprint(sick)
	for i, r := range rs {
		if r.ID != from || r.Status != 200 || r.NewID == "" {
			t.Errorf("redeploy %d: %+v, want of %s, carried out", i+1, r, from)
		}
		from = r.NewID
	}
	m := e.metrics()
	// The exhausted server is the lineage's last replacement.
	if want := fmt.Sprintf(`vps_remediation_exhausted{account="bingo-main",id=%q,provider="vpnbingo"} 1`, rs[len(rs)-1].NewID); !hasLine(m, want) {
		t.Errorf("/metrics lacks %s:\n%s", want, grepLines(m, "vps_remediation_exhausted"))
	}
	if !hasLine(m, `vps_remediation_actions_total{account="bingo-main",action="redeploy",provider="vpnbingo",result="unknown",rule="redeploy-degraded"} 3`) {
		t.Errorf("the lost redeploys are not counted unknown:\n%s", grepLines(m, "vps_remediation_actions_total"))
	}
	h := e.history(t, "")
	if len(h.Episodes) != 1 || h.Episodes[0].Outcome != "exhausted" || len(h.Episodes[0].Steps) != 3 {
		t.Fatalf("episodes %+v, want one, exhausted after 3 steps", h.Episodes)
	}
	for _, st := range h.Episodes[0].Steps {
		if st.Action != "redeploy" || st.Outcome != "unknown" {
			t.Errorf("step %+v, want a redeploy, outcome unknown", st)
		}
	}
	if !strings.Contains(e.logs.String(), "the lost redeploy's replacement is found") {
		t.Error("no log line says a replacement was found")
	}
	if n := metricValue(m, "vps_remediation_suppressed_total", `reason="exhausted"`); n < 1 {
		t.Errorf("the last replacement's requests are not held back as exhausted (%v)", n)
	}
}
