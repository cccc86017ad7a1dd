package remediation

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// Issue 22, fault 5: exhaustion belongs to the server, not to its rule.
// A reload that removes or renames the rule that exhausted a server does
// not release it, and nothing acts on it afterwards (before: the episode
// ended with the rule, and the renamed rule acted on the server again).
func TestExhaustionSurvivesItsRulesRemoval(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reload func(*config.Remediation)
	}{
		{"removed", func(c *config.Remediation) { c.Rules = nil }},
		{"renamed", func(c *config.Remediation) { c.Rules[0].Name = "hot-cpu-renamed" }},
		{"replaced by another rule on the same servers", func(c *config.Remediation) {
			r := hotCPU()
			r.Name, r.Above = "cpu-hotter", ptr(0.96)
			c.Rules = []config.Rule{r}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(t)
			cfg.Rules = []config.Rule{hotCPU()}
			h := newHarness(t, 12, cfg)
			coolAllBut(h, 12001)
			h.sim.SetSick(sim.VPSOrg, 12001, sim.Sickness{Cure: sim.CureNone})
			h.refresh("vps")
			h.settle()
			h.advance(6 * time.Minute)
			h.refresh("vps")
			if x := h.engine.Exhausted(); len(x) != 1 || x[0].ID != "12001" {
				t.Fatalf("exhausted %+v, want 12001", x)
			}
			tc.reload(&h.cfg)
			if err := h.engine.Configure(h.cfg, time.Minute, h.accounts()); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 4; i++ {
				h.advance(2 * time.Hour) // past every cooldown
				h.refresh("vps")
			}
			if x := h.engine.Exhausted(); len(x) != 1 || x[0].ID != "12001" {
				t.Errorf("exhausted %+v after the rule was %s, want 12001 still", x, tc.name)
			}
			if v := testutil.ToFloat64(h.engine.m.exhausted.WithLabelValues("vpsorg", "vps", "12001")); v != 1 {
				t.Errorf("vps_remediation_exhausted = %v, want 1", v)
			}
			if got := h.simActions(sim.VPSOrg, "12001"); !slices.Equal(got, []string{"reboot"}) {
				t.Errorf("calls %v: the exhausted server was acted on after its rule was %s", got, tc.name)
			}
			eps := h.episodes("12001")
			if len(eps) != 1 || eps[0].Outcome != EpisodeExhausted || !eps[0].Released.IsZero() || !strings.Contains(eps[0].Reason, "ladder is used up") {
				t.Errorf("episodes %q, want one exhausted (its ladder used up), not released", summaries(eps))
			}
		})
	}
}

// With its rule gone, an exhausted server is still handed back when no
// configured rule's condition holds on it and it runs, for the default
// verify window: the release does not need the rule that exhausted it.
func TestExhaustedWithoutItsRuleReleasedWhenClear(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{hotCPU()}
	h := newHarness(t, 12, cfg)
	coolAllBut(h, 12001)
	h.sim.SetSick(sim.VPSOrg, 12001, sim.Sickness{Cure: sim.CureNone})
	h.refresh("vps")
	h.settle()
	h.advance(6 * time.Minute)
	h.refresh("vps")
	if len(h.engine.Exhausted()) != 1 {
		t.Fatal("not exhausted")
	}
	h.cfg.Rules[0].Name = "renamed"
	if err := h.engine.Configure(h.cfg, time.Minute, h.accounts()); err != nil {
		t.Fatal(err)
	}
	h.sim.SetSick(sim.VPSOrg, 12001, sim.Sickness{Cure: sim.CureReboot})
	h.sim.Update(sim.VPSOrg, 12001, func(m *sim.Machine) { m.CPUPercent = 10 })
	h.refresh("vps")
	h.advance(config.DefaultVerify - time.Minute)
	h.refresh("vps")
	if len(h.engine.Exhausted()) != 1 {
		t.Fatal("released before its condition was clear for the verify window")
	}
	h.advance(2 * time.Minute)
	h.refresh("vps")
	if x := h.engine.Exhausted(); len(x) != 0 {
		t.Fatalf("still exhausted after clear for the verify window: %+v", x)
	}
}

// alertHarness is a harness with the webhook on, webhook.verify 5m and
// webhook.resolve_grace 5m, and a power cycle after a reboot.
func alertHarness(t *testing.T) (*harness, *Webhook, time.Time) {
	cfg := baseConfig(t)
	cfg.Webhook.Verify = model.Duration(5 * time.Minute)
	cfg.Webhook.ResolveGrace = model.Duration(5 * time.Minute)
	cfg.Webhook.Escalate = map[string][]string{"reboot": {"power_cycle"}}
	h := newHarness(t, 10, cfg)
	h.refresh("vps")
	wh := h.webhook(t, 1)
	started := h.now().Add(-time.Minute)
	sendAlerts(t, h, wh, amItem{status: "firing", name: "A", id: "12003", started: started})
	waitFor(t, func() bool { return len(h.episodes("12003")) == 1 })
	h.settle()
	return h, wh, started
}

// Issue 22, fault 4: a resolved notification sent at Alertmanager's next
// group flush, after webhook.verify but inside resolve_grace, with endsAt
// inside the window, is a recovery: no verdict and no escalation before
// the grace has passed. Without one, the grace's end is not_recovered.
func TestResolveGraceLateNotification(t *testing.T) {
	for _, tc := range []struct {
		name    string
		resolve bool
		ladder  string
		outcome string
	}{
		{"late resolved notification", true, "reboot:recovered", EpisodeRecovered},
		{"none", false, "reboot:not_recovered power_cycle:verifying", EpisodeOpen},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, wh, started := alertHarness(t)
			acted := h.now()
			h.advance(7 * time.Minute) // the window is over, the grace is not
			h.refresh("vps")
			h.engine.tick()
			wantEpisode(t, h, "12003", "reboot:verifying", EpisodeOpen)
			if tc.resolve {
				sendAlerts(t, h, wh, amItem{status: "resolved", name: "A", id: "12003", started: started, ends: acted.Add(2 * time.Minute)})
				h.engine.tick()
			}
			h.advance(4 * time.Minute) // past the grace
			h.refresh("vps")
			h.engine.tick()
			h.refresh("vps") // a due next step would go now
			wantEpisode(t, h, "12003", tc.ladder, tc.outcome)
			want := []string{"reboot"}
			if !tc.resolve {
				want = []string{"reboot", "stop", "start"}
			}
			if got := h.simActions(sim.VPSOrg, "12003"); !slices.Equal(got, want) {
				t.Errorf("calls %v, want %v", got, want)
			}
		})
	}
}

// Issue 22, fault 3: an alert's verdict needs the exporter's own view. A
// resolved alert of a server that reads stopped is not_recovered (it
// escalates); of a server whose account is down, no verdict until
// stale_after, then unknown: counted, never escalated, never recovered.
func TestAlertVerdictNeedsTheExportersView(t *testing.T) {
	t.Run("server reads stopped", func(t *testing.T) {
		h, wh, started := alertHarness(t)
		h.sim.Update(sim.VPSOrg, 12003, func(m *sim.Machine) { m.Status = "stopped" })
		h.advance(time.Minute)
		h.refresh("vps")
		sendAlerts(t, h, wh, amItem{status: "resolved", name: "A", id: "12003", started: started})
		h.engine.tick()
		wantEpisode(t, h, "12003", "reboot:verifying", EpisodeOpen)
		h.advance(10 * time.Minute)
		h.refresh("vps")
		h.engine.tick()
		ep := wantEpisode(t, h, "12003", "reboot:not_recovered", EpisodeOpen)
		if !strings.Contains(ep.Steps[0].Detail, "stopped") {
			t.Errorf("detail %q, want the state it read", ep.Steps[0].Detail)
		}
		if n := testutil.ToFloat64(h.engine.m.verifications.WithLabelValues("vpsorg", "vps", "reboot", "alert", VerdictRecovered)); n != 0 {
			t.Errorf("verifications{recovered} = %v", n)
		}
	})
	t.Run("account down", func(t *testing.T) {
		h, wh, started := alertHarness(t)
		h.sim.SetFault(sim.VPSOrg, sim.Fault{Kind: sim.FaultStatus, Status: 503})
		h.advance(time.Minute)
		h.refresh("vps") // fails: the account is down
		sendAlerts(t, h, wh, amItem{status: "resolved", name: "A", id: "12003", started: started})
		h.engine.tick()
		h.advance(10 * time.Minute) // window and grace over: no view
		h.refresh("vps")
		h.engine.tick()
		wantEpisode(t, h, "12003", "reboot:verifying", EpisodeOpen)
		h.advance(5 * time.Minute) // stale_after (5 x refresh_interval) past the grace
		h.refresh("vps")
		h.engine.tick()
		ep := wantEpisode(t, h, "12003", "reboot:unknown", EpisodeEnded)
		m := h.engine.m
		if n := testutil.ToFloat64(m.verifications.WithLabelValues("vpsorg", "vps", "reboot", "alert", VerdictUnknown)); n != 1 {
			t.Errorf("verifications{unknown} = %v, want 1", n)
		}
		if n := testutil.ToFloat64(m.verifications.WithLabelValues("vpsorg", "vps", "reboot", "alert", VerdictRecovered)); n != 0 {
			t.Errorf("verifications{recovered} = %v, want 0 (%s)", n, ep.Steps[0].Detail)
		}
		h.sim.ClearFaults()
		h.advance(time.Hour)
		h.refresh("vps")
		if got := h.simActions(sim.VPSOrg, "12003"); !slices.Equal(got, []string{"reboot"}) {
			t.Errorf("calls %v: an unknown verdict escalated", got)
		}
	})
}

// h2's failed step: a power cycle whose stop was accepted and whose start
// was refused is not_recovered at once, then the ladder or exhaustion
// (before: verified like an accepted step, and its alert's resolution,
// the server being off, scored it recovered).
func TestFailedPowerCycleIsNotRecoveredAtOnce(t *testing.T) {
	cfg := baseConfig(t)
	r := hotCPU()
	r.Action = "power_cycle"
	cfg.Rules = []config.Rule{r}
	h := newHarness(t, 12, cfg)
	coolAllBut(h, 12001)
	h.sim.SetFault(sim.VPSOrg, sim.Fault{Kind: sim.FaultStatus, Status: 400, Only: "/start/"})
	h.refresh("vps")
	ep := wantEpisode(t, h, "12001", "power_cycle:not_recovered", EpisodeExhausted)
	if n := testutil.ToFloat64(h.engine.m.verifications.WithLabelValues("vpsorg", "vps", "power_cycle", "rule", VerdictNotRecovered)); n != 1 {
		t.Errorf("verifications{not_recovered} = %v, want 1 (%+v)", n, ep.Steps[0])
	}
	if ep.Steps[0].Refused {
		t.Error("a power cycle whose stop was accepted is no refusal: it acted")
	}
}

// A rule's verdict without a fresh view: the account down when the
// verify window ends, the re-read cannot be made; the verdict waits
// stale_after (5 x the 1m refresh interval), then it is unknown: counted,
// the episode ends, nothing escalates.
func TestRuleVerdictUnknownWithoutAView(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{hotCPU("power_cycle")}
	h := newHarness(t, 12, cfg)
	coolAllBut(h, 12001)
	h.sim.SetSick(sim.VPSOrg, 12001, sim.Sickness{Cure: sim.CureNone})
	h.refresh("vps")
	h.settle()
	h.sim.SetFault(sim.VPSOrg, sim.Fault{Kind: sim.FaultStatus, Status: 503})
	h.advance(6 * time.Minute) // the window is over
	h.refresh("vps")           // fails: the account is down
	h.engine.tick()
	wantEpisode(t, h, "12001", "reboot:verifying", EpisodeOpen)
	h.advance(4 * time.Minute) // 5m past the window's end: stale_after
	h.refresh("vps")
	h.engine.tick()
	ep := wantEpisode(t, h, "12001", "reboot:unknown", EpisodeEnded)
	if n := testutil.ToFloat64(h.engine.m.verifications.WithLabelValues("vpsorg", "vps", "reboot", "rule", VerdictUnknown)); n != 1 {
		t.Errorf("verifications{unknown} = %v, want 1 (%s)", n, ep.Steps[0].Detail)
	}
	h.sim.ClearFaults()
	h.advance(time.Minute)
	h.refresh("vps")
	if got := h.simActions(sim.VPSOrg, "12001"); !slices.Equal(got, []string{"reboot"}) {
		t.Errorf("calls %v: an unknown verdict escalated", got)
	}
}
