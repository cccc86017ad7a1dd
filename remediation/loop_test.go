package remediation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// hotCPU is a VPS.org rule: CPU over 95% on a running server, reboot, then
// the escalate steps; verify 5 min.
func hotCPU(escalate ...string) config.Rule {
	return config.Rule{Name: "hot-cpu", Provider: "vpsorg", State: []string{"running"}, Metric: "cpu_usage_ratio", Above: ptr(0.95),
		Action: "reboot", Escalate: escalate, Verify: model.Duration(5 * time.Minute)}
}

// episodes returns the history's episodes of one server, newest first.
func (h *harness) episodes(id string) []Episode {
	h.t.Helper()
	hist, err := h.engine.History(context.Background(), Filter{ID: id, Limit: 100})
	if err != nil {
		h.t.Fatal(err)
	}
	return hist.Episodes
}

// ladderOf summarises an episode: "reboot:not_recovered power_cycle:recovered".
func ladderOf(ep Episode) string {
	var parts []string
	for _, s := range ep.Steps {
		parts = append(parts, s.Action+":"+s.Verdict)
	}
	return strings.Join(parts, " ")
}

// simActions lists the calls the simulator got for one server.
func (h *harness) simActions(api sim.API, id string) []string {
	var out []string
	for _, a := range h.sim.Actions() {
		if a.API == api && a.ID == id {
			out = append(out, a.Action)
		}
	}
	return out
}

// The verdict and the ladder of rule actions, with the clock injected:
// each server is verified after its verify window on a re-read; a
// not_recovered verdict asks for the next step, the ladder as configured
// now at the episode's position; no next step or max_attempts exhausts
// the server. 12001 (web-0001) runs its CPU at 97.5%.
func TestRuleVerdictsAndLadder(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rule     config.Rule
		sick     *sim.Sickness
		attempts int
		// reload changes the configuration after the first action.
		reload  func(*config.Remediation)
		ladder  string   // the episode's steps and verdicts
		calls   []string // what the provider got
		outcome string
	}{
		{name: "a reboot heals", rule: hotCPU("power_cycle"),
			ladder: "reboot:recovered", calls: []string{"reboot"}, outcome: EpisodeRecovered},
		{name: "a power cycle heals what a reboot does not", rule: hotCPU("power_cycle"), sick: &sim.Sickness{Cure: sim.CurePowerCycle},
			ladder: "reboot:not_recovered power_cycle:recovered", calls: []string{"reboot", "stop", "start"}, outcome: EpisodeRecovered},
		{name: "nothing heals: exhausted", rule: hotCPU("power_cycle"), sick: &sim.Sickness{Cure: sim.CureNone},
			ladder: "reboot:not_recovered power_cycle:not_recovered", calls: []string{"reboot", "stop", "start"}, outcome: EpisodeExhausted},
		{name: "max_attempts before the ladder's end", rule: hotCPU("reboot", "power_cycle"), sick: &sim.Sickness{Cure: sim.CureNone}, attempts: 2,
			ladder: "reboot:not_recovered reboot:not_recovered", calls: []string{"reboot", "reboot"}, outcome: EpisodeExhausted},
		{name: "a reload shortens the ladder mid-episode", rule: hotCPU("power_cycle"), sick: &sim.Sickness{Cure: sim.CurePowerCycle},
			reload: func(c *config.Remediation) { c.Rules[0].Escalate = nil },
			ladder: "reboot:not_recovered", calls: []string{"reboot"}, outcome: EpisodeExhausted},
		{name: "a reload lengthens the ladder mid-episode", rule: hotCPU(), sick: &sim.Sickness{Cure: sim.CurePowerCycle},
			reload: func(c *config.Remediation) { c.Rules[0].Escalate = []string{"power_cycle"} },
			ladder: "reboot:not_recovered power_cycle:recovered", calls: []string{"reboot", "stop", "start"}, outcome: EpisodeRecovered},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(t)
			cfg.Rules = []config.Rule{tc.rule}
			if tc.attempts > 0 {
				cfg.MaxAttempts = tc.attempts
			}
			h := newHarness(t, 24, cfg)
			// Only 12001 is hot: the other hot servers of the fleet cool down.
			for _, m := range h.sim.Machines(sim.VPSOrg) {
				if m.ID != 12001 && m.CPUPercent > 95 {
					h.sim.Update(sim.VPSOrg, m.ID, func(m *sim.Machine) { m.CPUPercent = 20 })
				}
			}
			if tc.sick != nil {
				h.sim.SetSick(sim.VPSOrg, 12001, *tc.sick)
			}
			h.refresh("vps")
			if tc.reload != nil {
				tc.reload(&h.cfg)
				if err := h.engine.Configure(h.cfg, time.Minute, h.accounts()); err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i < 4; i++ {
				h.settle()
				h.advance(6 * time.Minute)
				h.refresh("vps") // verdicts
				h.refresh("vps") // the next step
			}
			eps := h.episodes("12001")
			if len(eps) != 1 {
				t.Fatalf("%d episodes, want 1: %+v", len(eps), eps)
			}
			ep := eps[0]
			if got := ladderOf(ep); got != tc.ladder || ep.Outcome != tc.outcome {
				t.Errorf("episode %q %s (%s), want %q %s", got, ep.Outcome, ep.Reason, tc.ladder, tc.outcome)
			}
			if got := h.simActions(sim.VPSOrg, "12001"); !slices.Equal(got, tc.calls) {
				t.Errorf("provider calls %v, want %v", got, tc.calls)
			}
			m := h.engine.m
			for _, s := range ep.Steps {
				if v := testutil.ToFloat64(m.verifications.WithLabelValues("vpsorg", "vps", s.Action, "rule", s.Verdict)); v < 1 {
					t.Errorf("verifications_total{action=%q,result=%q} = %v", s.Action, s.Verdict, v)
				}
			}
			if n := testutil.CollectAndCount(m.exhausted); n != int(b2f(tc.outcome == EpisodeExhausted)) {
				t.Errorf("%d exhausted series: one per exhausted server, none for others", n)
			}
			if tc.outcome == EpisodeExhausted {
				if v := testutil.ToFloat64(m.exhausted.WithLabelValues("vpsorg", "vps", "12001")); v != 1 {
					t.Errorf("vps_remediation_exhausted = %v, want 1", v)
				}
			}
			if tc.outcome == EpisodeRecovered {
				last := ep.Steps[len(ep.Steps)-1]
				if n := testutil.CollectAndCount(m.recovery); n == 0 {
					t.Error("no recovery_seconds series")
				}
				if !strings.Contains(histogramText(t, h), fmt.Sprintf(`vps_remediation_recovery_seconds_count{account="vps",action="%s",provider="vpsorg"} 1`, last.Action)) {
					t.Errorf("recovery_seconds did not observe the %s:\n%s", last.Action, histogramText(t, h))
				}
			}
			if tc.outcome == EpisodeExhausted {
				// Every request for it is suppressed, and nothing is sent.
				before := h.suppressed("vps", ReasonExhausted)
				h.advance(2 * time.Hour)
				h.refresh("vps")
				if h.suppressed("vps", ReasonExhausted) <= before || len(h.simActions(sim.VPSOrg, "12001")) != len(tc.calls) {
					t.Error("an exhausted server was not held back")
				}
			}
		})
	}
}

func histogramText(t *testing.T, h *harness) string {
	t.Helper()
	var b strings.Builder
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "vps_remediation_recovery_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			fmt.Fprintf(&b, "vps_remediation_recovery_seconds_count{%s} %d\n", strings.Join(labels, ","), m.GetHistogram().GetSampleCount())
		}
	}
	return b.String()
}

// Alert verdicts (webhook.verify 5 min, webhook.escalate reboot ->
// power_cycle): resolved within verify is recovered; still firing at its
// end is not_recovered and escalated; two alerts for one server are one
// episode, recovered when both resolved.
func TestAlertVerdicts(t *testing.T) {
	type step struct {
		advance  time.Duration
		fire     []string // alert names firing (fingerprint fp-<name>)
		resolve  []string
		refresh  bool
		wantLast string // the episode's ladder after this step ("" skips)
	}
	for _, tc := range []struct {
		name    string
		steps   []step
		outcome string
		calls   []string
	}{
		{"resolved within verify", []step{
			{fire: []string{"A"}},
			{advance: 2 * time.Minute, resolve: []string{"A"}, wantLast: "reboot:recovered"},
		}, EpisodeRecovered, []string{"reboot"}},
		{"still firing: escalated", []step{
			{fire: []string{"A"}},
			{advance: 6 * time.Minute, wantLast: "reboot:not_recovered"},
			{refresh: true, wantLast: "reboot:not_recovered power_cycle:verifying"},
			{advance: time.Minute, resolve: []string{"A"}, wantLast: "reboot:not_recovered power_cycle:recovered"},
		}, EpisodeRecovered, []string{"reboot", "stop", "start"}},
		{"two alerts, both resolved", []step{
			{fire: []string{"A"}},
			{advance: time.Minute, fire: []string{"B"}}, // same server, same episode: held back
			{advance: time.Minute, resolve: []string{"A"}, wantLast: "reboot:verifying"},
			{advance: time.Minute, resolve: []string{"B"}, wantLast: "reboot:recovered"},
		}, EpisodeRecovered, []string{"reboot"}},
		{"two alerts, one still firing", []step{
			{fire: []string{"A"}},
			{advance: time.Minute, fire: []string{"B"}},
			{advance: time.Minute, resolve: []string{"A"}, wantLast: "reboot:verifying"},
			{advance: 5 * time.Minute, wantLast: "reboot:not_recovered"},
			{refresh: true, wantLast: "reboot:not_recovered power_cycle:verifying"},
		}, EpisodeOpen, []string{"reboot", "stop", "start"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(t)
			cfg.Webhook.Verify = model.Duration(5 * time.Minute)
			cfg.Webhook.Escalate = map[string][]string{"reboot": {"power_cycle"}}
			h := newHarness(t, 10, cfg)
			h.refresh("vps")
			wh := h.webhook(t, 1)
			started := h.now().Add(-time.Minute)
			send := func(status, name string) {
				ends := "0001-01-01T00:00:00Z"
				if status == "resolved" {
					ends = h.now().UTC().Format(time.RFC3339Nano)
				}
				body := fmt.Sprintf(`{"version":"4","status":%q,"alerts":[{"status":%q,"labels":{"alertname":%q,"provider":"vpsorg","account":"vps","id":"12003","remediation":"reboot"},"startsAt":%q,"endsAt":%q,"fingerprint":"fp-%s"}]}`,
					status, status, name, started.UTC().Format(time.RFC3339), ends, name)
				if code, out := post(t, wh, body); code != 200 {
					t.Fatalf("%s %s: %d %s", status, name, code, out)
				}
			}
			for i, st := range tc.steps {
				h.advance(st.advance)
				for _, a := range st.fire {
					n := len(h.sim.Actions())
					send("firing", a)
					waitFor(t, func() bool { // acted, or held back
						return len(h.sim.Actions()) > n || h.suppressed("vps", ReasonCooldown) > 0
					})
					h.engine.Wait()
				}
				for _, a := range st.resolve {
					send("resolved", a)
				}
				h.engine.tick()
				if st.refresh {
					h.refresh("vps")
				}
				if st.wantLast != "" {
					eps := h.episodes("12003")
					if len(eps) != 1 || ladderOf(eps[0]) != st.wantLast {
						var got []string
						for _, ep := range eps {
							got = append(got, ladderOf(ep)+" "+ep.Outcome)
						}
						t.Fatalf("step %d: episodes %q, want one %q", i, got, st.wantLast)
					}
				}
			}
			eps := h.episodes("12003")
			if len(eps) != 1 || eps[0].Outcome != tc.outcome {
				t.Fatalf("episodes %+v, want one %s", eps, tc.outcome)
			}
			if got := h.simActions(sim.VPSOrg, "12003"); !slices.Equal(got, tc.calls) {
				t.Errorf("provider calls %v, want %v", got, tc.calls)
			}
		})
	}
}

// An exhausted server stays exhausted across a restart, with its gauge;
// a reset (the credential required) clears its exhaustion, attempts and
// cooldown and its ladder starts again; and an exhausted server whose
// condition has been clear for its verify window is handed back.
func TestExhaustionDurableResetAndRelease(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{hotCPU()}
	cfg.Webhook.BearerToken = "ctl-SECRET"
	h := newHarness(t, 12, cfg)
	for _, m := range h.sim.Machines(sim.VPSOrg) {
		if m.ID != 12001 && m.CPUPercent > 95 {
			h.sim.Update(sim.VPSOrg, m.ID, func(m *sim.Machine) { m.CPUPercent = 20 })
		}
	}
	h.sim.SetSick(sim.VPSOrg, 12001, sim.Sickness{Cure: sim.CureNone})
	h.refresh("vps")
	h.settle()
	h.advance(6 * time.Minute)
	h.refresh("vps")
	if x := h.engine.Exhausted(); len(x) != 1 || x[0].ID != "12001" || !slices.Equal(x[0].Actions, []string{"reboot"}) {
		t.Fatalf("exhausted %+v", x)
	}
	h.engine.Close()
	h.start()
	if v := testutil.ToFloat64(h.engine.m.exhausted.WithLabelValues("vpsorg", "vps", "12001")); v != 1 {
		t.Fatalf("after a restart vps_remediation_exhausted = %v", v)
	}
	h.advance(2 * time.Hour) // past the cooldown
	h.refresh("vps")
	if n := len(h.simActions(sim.VPSOrg, "12001")); n != 1 {
		t.Fatalf("an exhausted server was acted on after a restart: %d calls", n)
	}
	ctl := NewControlHandler(h.engine)
	reset := func(auth, body string) (int, string) {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest("POST", "/api/v1/remediation/reset", strings.NewReader(body))
		if auth != "" {
			r.Header.Set("Authorization", "Bearer "+auth)
		}
		ctl.ServeHTTP(rec, r)
		return rec.Code, rec.Body.String()
	}
	if code, _ := reset("", `{"provider":"vpsorg","account":"vps","id":"12001"}`); code != 401 {
		t.Errorf("reset without the credential: %d", code)
	}
	if code, _ := reset("ctl-SECRET", `{"provider":"vpsorg","account":"nobody","id":"12001"}`); code != 404 {
		t.Errorf("reset of an unknown account: %d", code)
	}
	if code, _ := reset("ctl-SECRET", `{"provider":"vpsorg"}`); code != 400 {
		t.Errorf("reset without an id: %d", code)
	}
	code, body := reset("ctl-SECRET", `{"provider":"vpsorg","account":"vps","id":"12001"}`)
	var res ResetResult
	if code != 200 || json.Unmarshal([]byte(body), &res) != nil || !res.Exhausted || res.Attempts != 1 {
		t.Fatalf("reset: %d %s", code, body)
	}
	if n := testutil.CollectAndCount(h.engine.m.exhausted); n != 0 {
		t.Errorf("%d exhausted series after the reset", n)
	}
	h.refresh("vps")
	if got := h.simActions(sim.VPSOrg, "12001"); !slices.Equal(got, []string{"reboot", "reboot"}) {
		t.Fatalf("after the reset: calls %v, want its ladder again", got)
	}
	// Exhausted again; then it heals by itself: clear for verify, released.
	h.settle()
	h.advance(6 * time.Minute)
	h.refresh("vps")
	if len(h.engine.Exhausted()) != 1 {
		t.Fatal("not exhausted again")
	}
	h.sim.SetSick(sim.VPSOrg, 12001, sim.Sickness{Cure: sim.CureReboot})
	h.sim.Update(sim.VPSOrg, 12001, func(m *sim.Machine) { m.CPUPercent = 10 })
	h.refresh("vps")
	h.advance(4 * time.Minute)
	h.refresh("vps")
	if len(h.engine.Exhausted()) != 1 {
		t.Fatal("released before its condition was clear for its verify window")
	}
	h.advance(2 * time.Minute)
	h.refresh("vps")
	if x := h.engine.Exhausted(); len(x) != 0 {
		t.Fatalf("still exhausted after its condition was clear for verify: %+v", x)
	}
	eps := h.episodes("12001")
	if len(eps) != 2 || eps[0].ReleasedBy != releasedClear || eps[1].ReleasedBy != releasedReset {
		t.Errorf("episodes %+v", eps)
	}
}

// A power cycle sends its start only once the server reads stopped; a
// server that never does is failed and not started.
func TestPowerCycleWaitsForStopped(t *testing.T) {
	for _, tc := range []struct {
		name   string
		settle time.Duration
		result string
		calls  []string
	}{
		{"stops", 300 * time.Millisecond, ResultSuccess, []string{"stop", "start"}},
		{"never reads stopped", time.Hour, ResultFailed, []string{"stop"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(t)
			cfg.Webhook.AllowedActions = []string{"power_cycle"}
			h := newHarnessSim(t, sim.Options{Servers: 10, Seed: 1, Settle: tc.settle}, cfg)
			h.engine.cycleWait = 2 * time.Second
			h.refresh("vps")
			d := h.engine.Submit(context.Background(), Request{Provider: "vpsorg", Account: "vps", ID: "12000", Action: "power_cycle", Source: "alert", Rule: "A"})
			if !d.Acted || d.Result != tc.result {
				t.Fatalf("decided %+v, want %s", d, tc.result)
			}
			var got []sim.ActionRecord
			for _, a := range h.sim.Actions() {
				got = append(got, a)
			}
			var names []string
			for _, a := range got {
				names = append(names, a.Action)
			}
			if !slices.Equal(names, tc.calls) {
				t.Fatalf("calls %v, want %v", names, tc.calls)
			}
			if len(got) == 2 && got[1].Time.Sub(got[0].Time) < tc.settle {
				t.Errorf("start sent %v after the stop, before the server could read stopped (%v)", got[1].Time.Sub(got[0].Time), tc.settle)
			}
			recs, _ := h.engine.Recent(1)
			if len(recs) != 1 || recs[0].Action != "power_cycle" || len(recs[0].Calls) != len(tc.calls) || recs[0].Result != tc.result {
				t.Errorf("audit %+v", recs)
			}
			used, _ := h.engine.ActionsThisHour()
			if used != 1 {
				t.Errorf("a power cycle counted %d times in the budget, want 1", used)
			}
		})
	}
}

// A crash between a power cycle's stop and its start: the restart
// records it unknown (with its stop), as a step of the server's episode,
// and does not repeat it.
func TestPowerCycleCrashBetweenStopAndStart(t *testing.T) {
	cfg := baseConfig(t)
	r := hotCPU()
	r.Action = "power_cycle"
	cfg.Rules = []config.Rule{r}
	h := newHarness(t, 12, cfg)
	h.refresh("vps")
	h.engine.Close()
	for _, a := range h.sim.Actions() {
		t.Logf("before the crash: %s %s", a.Action, a.ID)
	}
	// The intent and its answered stop are on disk; no finish.
	st, err := OpenState(cfg.StateFile)
	if err != nil {
		t.Fatal(err)
	}
	at := h.now()
	rec := &Record{Time: at, Provider: "vpsorg", Account: "vps", ID: "12003", Action: "power_cycle", Source: "rule", Rule: "hot-cpu"}
	if err := st.Begin(rec, serverKey("vpsorg", "vps", "12003")); err != nil {
		t.Fatal(err)
	}
	rec.Calls = []Call{{Action: "stop", Time: at, Result: ResultSuccess}}
	if err := st.Progress(rec); err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	h.sim.Update(sim.VPSOrg, 12003, func(m *sim.Machine) { m.Status, m.CPUPercent = "stopped", 99 })
	calls := len(h.sim.Actions())
	h.start()
	recs, _ := h.engine.Recent(10)
	if len(recs) == 0 || recs[0].Seq != rec.Seq || recs[0].Result != ResultUnknown || len(recs[0].Calls) != 1 || !strings.Contains(recs[0].Error, "after its stop") {
		t.Fatalf("recovered %+v", recs)
	}
	eps := h.episodes("12003")
	if len(eps) != 1 || ladderOf(eps[0]) != "power_cycle:verifying" || eps[0].Steps[0].Outcome != ResultUnknown {
		t.Fatalf("episodes %+v", eps)
	}
	for i := 0; i < 3; i++ {
		h.settle()
		h.advance(6 * time.Minute)
		h.refresh("vps")
		h.refresh("vps")
	}
	if n := len(h.sim.Actions()); n != calls {
		t.Errorf("%d calls after the restart: the interrupted power cycle was repeated", n-calls)
	}
	eps = h.episodes("12003")
	if len(eps) != 1 || eps[0].Outcome != EpisodeExhausted || ladderOf(eps[0]) != "power_cycle:not_recovered" {
		t.Errorf("the stopped server: episodes %+v, want exhausted (handed to a person)", eps)
	}
}

// A refresh while an episode's next step is under way (the server reads
// stopping during its power cycle) does not ask for the step again, nor
// take the server's state for a refusal (before: exhausted by its own
// power cycle, which then opened a second episode).
func TestEscalationUnderWayIsNotAskedAgain(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{hotCPU("power_cycle")}
	h := newHarnessSim(t, sim.Options{Servers: 12, Seed: 1, Settle: 300 * time.Millisecond}, cfg)
	for _, m := range h.sim.Machines(sim.VPSOrg) {
		if m.ID != 12001 && m.CPUPercent > 95 {
			h.sim.Update(sim.VPSOrg, m.ID, func(m *sim.Machine) { m.CPUPercent = 20 })
		}
	}
	h.sim.SetSick(sim.VPSOrg, 12001, sim.Sickness{Cure: sim.CurePowerCycle})
	h.refresh("vps")
	time.Sleep(400 * time.Millisecond)
	h.advance(6 * time.Minute)
	h.refresh("vps") // not_recovered: the power cycle is due
	listed := func() {
		p := h.provs["vps"]
		servers, err := p.List(context.Background())
		h.engine.OnRefresh(context.Background(), h.store.Update(p.Type(), "vps", servers, err, h.now(), time.Millisecond))
	}
	listed() // starts the power cycle, not waited for
	waitFor(t, func() bool { return slices.Contains(h.simActions(sim.VPSOrg, "12001"), "stop") })
	listed() // 12001 reads stopping
	h.engine.Wait()
	time.Sleep(400 * time.Millisecond)
	h.advance(6 * time.Minute)
	h.refresh("vps")
	eps := h.episodes("12001")
	if len(eps) != 1 || ladderOf(eps[0]) != "reboot:not_recovered power_cycle:recovered" {
		var got []string
		for _, ep := range eps {
			got = append(got, ladderOf(ep)+" "+ep.Outcome+" "+ep.Reason)
		}
		t.Fatalf("episodes %q, want one: reboot:not_recovered power_cycle:recovered", got)
	}
}
