package remediation

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// The history as people read it follows the loop: the action reads
// accepted with its verdict (verifying, then not_recovered), the server
// its name, the open episode its step, ladder and attempts. No zero time
// and no internal field in its JSON.
func TestViewShowsTheLoop(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{hotCPU("power_cycle")}
	h := newHarness(t, 24, cfg)
	coolAllBut(h, 12001)
	h.sim.SetSick(sim.VPSOrg, 12001, sim.Sickness{Cure: sim.CureNone})
	var name string
	for _, m := range h.sim.Machines(sim.VPSOrg) {
		if strconv.Itoa(m.ID) == "12001" {
			name = m.Name
		}
	}
	h.refresh("vps")
	h.settle()

	type step struct {
		name           string
		advance        time.Duration
		actionVerdicts []string // newest first
		step           int
		ladder         []string
		attempts       int
		escalate       string
	}
	for _, tc := range []step{
		{name: "the reboot verifying", actionVerdicts: []string{"verifying"}, step: 1, ladder: []string{"reboot", "power_cycle"}, attempts: 1},
		{name: "the reboot not recovered, the power cycle verifying", advance: 6 * time.Minute,
			actionVerdicts: []string{"verifying", "not_recovered"}, step: 2, ladder: []string{"reboot", "power_cycle"}, attempts: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.advance > 0 {
				h.advance(tc.advance)
				h.refresh("vps") // the verdict: the next step is due
				h.refresh("vps") // the next step
				h.settle()
			}
			v, err := h.engine.View(context.Background(), Filter{ID: "12001", Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range v.Actions {
				got = append(got, a.Verdict)
				if a.Result != ResultAccepted || a.Name != name || name == "" {
					t.Errorf("action %+v, want result accepted and name %q", a, name)
				}
			}
			if !slices.Equal(got, tc.actionVerdicts) {
				t.Errorf("action verdicts %q, want %q", got, tc.actionVerdicts)
			}
			if tc.step > 0 {
				if len(v.Episodes) != 1 {
					t.Fatalf("episodes %+v", v.Episodes)
				}
				ep := v.Episodes[0]
				if ep.Outcome != EpisodeOpen || ep.Name != name || ep.Step != tc.step || !slices.Equal(ep.Ladder, tc.ladder) || ep.Attempts != tc.attempts || ep.MaxAttempts != 3 {
					t.Errorf("episode %+v, want open at step %d of %q with %d attempts of 3", ep, tc.step, tc.ladder, tc.attempts)
				}
				for _, s := range ep.Steps {
					if s.Outcome != ResultAccepted {
						t.Errorf("step %+v, want outcome accepted", s)
					}
				}
			}
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			for _, bad := range []string{"0001-01-01", `"version"`, `"clear_at"`, `"root"`, `"success"`} {
				if strings.Contains(string(b), bad) {
					t.Errorf("%s in %s", bad, b)
				}
			}
		})
	}
}
