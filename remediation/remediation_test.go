package remediation

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/apiclient"
	"github.com/vps-exporter/vps_exporter/providers/sim"
	"github.com/vps-exporter/vps_exporter/providers/vpnbingo"
	"github.com/vps-exporter/vps_exporter/providers/vpsorg"
)

// harness wires the simulator, real clients, the store and an engine with
// a clock the test moves.
type harness struct {
	t      testing.TB
	sim    *sim.Sim
	store  *collector.Store
	provs  map[string]providers.Provider
	urls   map[sim.API]*url.URL
	engine *Engine
	reg    *prometheus.Registry
	mu     sync.Mutex
	clock  time.Time
	cfg    config.Remediation
	// cycleWait, when set, is the engines' power cycle wait (set before
	// Configure, which may resume a cycle).
	cycleWait time.Duration
}

func (h *harness) now() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.clock
}

func (h *harness) advance(d time.Duration) {
	h.mu.Lock()
	h.clock = h.clock.Add(d)
	h.mu.Unlock()
}

func baseConfig(t testing.TB) config.Remediation {
	c := config.DefaultRemediation()
	c.Enabled, c.DryRun = true, false
	c.StateFile = filepath.Join(t.TempDir(), "state.db")
	c.Webhook.Enabled = true
	// Alert verdicts right after webhook.verify, as before issue 22's
	// resolve_grace (TestResolveGrace* pins the grace).
	c.Webhook.ResolveGrace = model.Duration(time.Second)
	c.MaxActionsPerHour = 100
	c.MaxFleetFraction = 1
	return c
}

func newHarness(t testing.TB, servers int, cfg config.Remediation) *harness {
	t.Helper()
	return newHarnessSim(t, sim.Options{Servers: servers, Seed: 1, Settle: 10 * time.Millisecond}, cfg)
}

// newHarnessSim is newHarness on a simulator made with o.
func newHarnessSim(t testing.TB, o sim.Options, cfg config.Remediation) *harness {
	t.Helper()
	h := &harness{t: t, sim: sim.New(o), store: collector.NewStore(), clock: time.Now(), cfg: cfg}
	fast := apiclient.Config{BackoffBase: time.Millisecond, MaxRetries: -1}
	h.provs = map[string]providers.Provider{}
	h.urls = map[sim.API]*url.URL{}
	for api, mk := range map[sim.API]func(*url.URL) providers.Provider{
		sim.VPNBingo: func(u *url.URL) providers.Provider {
			return vpnbingo.New(vpnbingo.Options{Account: "bingo", BaseURL: u, Token: "t", HTTP: fast})
		},
		sim.VPSOrg: func(u *url.URL) providers.Provider {
			return vpsorg.New(vpsorg.Options{Account: "vps", BaseURL: u, Token: "t", HTTP: fast})
		},
	} {
		srv := httptest.NewServer(h.sim.Handler(api))
		t.Cleanup(srv.Close)
		u, _ := url.Parse(srv.URL)
		h.urls[api] = u
		p := mk(u)
		h.provs[p.Account()] = p
	}
	t.Cleanup(h.sim.Close)
	h.start()
	return h
}

// start makes a new engine on the harness's state file (a restart).
func (h *harness) start() { h.startWith(h.accounts()) }

// startWith is start with only these accounts configured.
func (h *harness) startWith(accounts []config.Provider) {
	h.reg = prometheus.NewRegistry()
	h.engine = NewEngine(Deps{
		Snapshot: h.store.Snapshot,
		Provider: func(a string) (providers.Provider, bool) { p, ok := h.provs[a]; return p, ok },
	}, h.reg, log.NewNopLogger(), h.now)
	h.engine.cyclePoll = 5 * time.Millisecond
	if h.cycleWait > 0 {
		h.engine.cycleWait = h.cycleWait
	}
	if err := h.engine.Configure(h.cfg, time.Minute, accounts); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(h.engine.Close)
}

// accountlessEngine is an engine that knows no account: every request it
// gets is suppressed.
func accountlessEngine() *Engine {
	return NewEngine(Deps{
		Snapshot: func(string) (collector.Snapshot, bool) { return collector.Snapshot{}, false },
		Provider: func(string) (providers.Provider, bool) { return nil, false },
	}, prometheus.NewRegistry(), log.NewNopLogger(), nil)
}

// accounts lists the harness's accounts as configured providers.
func (h *harness) accounts() []config.Provider {
	var out []config.Provider
	for name, p := range h.provs {
		out = append(out, config.Provider{Type: p.Type(), Name: name})
	}
	return out
}

// refresh lists an account and runs the rules, as a poller would.
func (h *harness) refresh(account string) collector.Snapshot {
	p := h.provs[account]
	servers, err := p.List(context.Background())
	snap := h.store.Update(p.Type(), account, servers, err, h.now(), time.Millisecond)
	h.engine.OnRefresh(context.Background(), snap)
	h.engine.Wait() // the rule actions it started
	return snap
}

// settle waits for the simulator's transitions (10 ms) to end, so that a
// test's own change of a machine is not overwritten by one.
func (h *harness) settle() {
	time.Sleep(30 * time.Millisecond)
	for _, api := range sim.APIs() {
		h.sim.Machines(api) // transitions end when the machine is read
	}
}

func (h *harness) actions(api sim.API) []sim.ActionRecord {
	var out []sim.ActionRecord
	for _, a := range h.sim.Actions() {
		if a.API == api {
			out = append(out, a)
		}
	}
	return out
}

func (h *harness) suppressed(account, reason string) float64 {
	total := 0.0
	for _, a := range []string{"reboot", "redeploy", "start", "stop"} {
		total += testutil.ToFloat64(h.engine.m.suppressed.WithLabelValues(h.provs[account].Type(), account, a, reason))
	}
	return total
}

func redeployDegraded() config.Rule {
	return config.Rule{Name: "redeploy-degraded", Provider: "vpnbingo", State: []string{"degraded"}, Action: "redeploy"}
}

func startStopped() config.Rule {
	return config.Rule{Name: "start-stopped", Provider: "vpsorg", State: []string{"stopped"}, Action: "start"}
}

func TestDegradedNodeRedeployedExactlyOnce(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{redeployDegraded()}
	h := newHarness(t, 10, cfg) // node 1003 is the only degraded one
	for i := 0; i < 4; i++ {
		h.refresh("bingo")
		h.advance(time.Minute)
	}
	acts := h.actions(sim.VPNBingo)
	if len(acts) != 1 || acts[0].ID != "1003" || acts[0].Status != 200 {
		t.Fatalf("simulator saw %+v, want one redeploy of 1003", acts)
	}
	recs, _ := h.engine.Recent(10)
	if len(recs) != 1 || recs[0].Result != ResultSuccess || recs[0].NewID != acts[0].NewID || recs[0].Rule != "redeploy-degraded" {
		t.Errorf("audit %+v", recs)
	}
	if v := testutil.ToFloat64(h.engine.m.actions.WithLabelValues("vpnbingo", "bingo", "redeploy", "redeploy-degraded", "success")); v != 1 {
		t.Errorf("actions_total success = %v", v)
	}
	// The new node is in the next refresh.
	snap := h.refresh("bingo")
	if _, ok := lookupServer(snap.Servers, acts[0].NewID); !ok {
		t.Error("the redeployed node's replacement is not in the inventory")
	}
}

func TestForDuration(t *testing.T) {
	cfg := baseConfig(t)
	r := redeployDegraded()
	r.For = model.Duration(10 * time.Minute)
	cfg.Rules = []config.Rule{r}
	h := newHarness(t, 10, cfg)
	for i := 0; i < 3; i++ { // 0, 5, 10 minutes
		h.refresh("bingo")
		if n := len(h.actions(sim.VPNBingo)); (i < 2 && n != 0) || (i == 2 && n != 1) {
			t.Fatalf("after %d min: %d actions", i*5, n)
		}
		h.advance(5 * time.Minute)
	}
}

func TestDryRunCallsNothing(t *testing.T) {
	cfg := baseConfig(t)
	cfg.DryRun = true
	cfg.Rules = []config.Rule{redeployDegraded(), startStopped()}
	h := newHarness(t, 20, cfg)
	h.refresh("bingo")
	h.refresh("vps")
	if got := h.sim.Actions(); len(got) != 0 {
		t.Fatalf("dry run called the provider: %+v", got)
	}
	if v := testutil.ToFloat64(h.engine.m.actions.WithLabelValues("vpnbingo", "bingo", "redeploy", "redeploy-degraded", "dry_run")); v != 2 {
		t.Errorf("dry_run count %v, want 2 (nodes 1003 and 1013)", v)
	}
	recs, _ := h.engine.Recent(10)
	for _, r := range recs {
		if r.Result != ResultDryRun {
			t.Errorf("audit record %+v", r)
		}
	}
}

func TestProviderOutageNeverActs(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{redeployDegraded()}
	h := newHarness(t, 10, cfg)
	// First a good refresh so the store has (now stale) data, then faults.
	cfg.Rules = nil
	h.refresh("vps")
	for _, f := range []sim.Fault{{Kind: sim.FaultStatus, Status: 500}, {Kind: sim.FaultJunk}, {Kind: sim.FaultHTML}} {
		h.sim.SetFault(sim.VPNBingo, f)
		if snap := h.refresh("bingo"); snap.Up {
			t.Fatalf("fault %v: account still up", f.Kind)
		}
		d := h.engine.Submit(context.Background(), Request{Provider: "vpnbingo", Account: "bingo", ID: "1003", Action: "redeploy", Source: "alert", Rule: "X"})
		if d.Acted || d.Reason != ReasonStaleData {
			t.Errorf("fault %v: webhook request decided %+v", f.Kind, d)
		}
	}
	if n := len(h.sim.Actions()); n != 0 {
		t.Fatalf("%d actions during an outage", n)
	}
	// Old data: the last success is too long ago.
	h.sim.SetFault(sim.VPNBingo, sim.Fault{})
	h.refresh("vps")
	h.advance(10 * time.Minute)
	d := h.engine.Submit(context.Background(), Request{Provider: "vpsorg", Account: "vps", ID: "12000", Action: "reboot", Source: "alert"})
	if d.Reason != ReasonStaleData || !strings.Contains(d.Detail, "data is from") {
		t.Errorf("stale snapshot: %+v", d)
	}
}

func TestCooldownSurvivesRestart(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{startStopped()}
	h := newHarness(t, 10, cfg) // 12006 is stopped
	h.refresh("vps")
	if n := len(h.actions(sim.VPSOrg)); n != 1 {
		t.Fatalf("%d starts", n)
	}
	// The start recovers it (the verdict, after verify 10m)...
	h.settle()
	h.advance(11 * time.Minute)
	h.refresh("vps")
	// ...it stops again; the rule fires but the cooldown holds.
	h.sim.Update(sim.VPSOrg, 12006, func(m *sim.Machine) { m.Status = "stopped" })
	h.advance(time.Minute)
	h.refresh("vps")
	if n := len(h.actions(sim.VPSOrg)); n != 1 || h.suppressed("vps", ReasonCooldown) != 1 {
		t.Fatalf("cooldown did not hold: %d actions, %v suppressed", n, h.suppressed("vps", ReasonCooldown))
	}
	// A restart keeps it, and keeps the counters.
	h.engine.Close()
	h.start()
	h.refresh("vps")
	if n := len(h.actions(sim.VPSOrg)); n != 1 {
		t.Fatalf("restart forgot the cooldown: %d actions", n)
	}
	if got := h.suppressed("vps", ReasonCooldown); got != 2 {
		t.Errorf("suppressed_total after restart = %v, want 2 (1 restored + 1 new)", got)
	}
	if v := testutil.ToFloat64(h.engine.m.actions.WithLabelValues("vpsorg", "vps", "start", "start-stopped", "success")); v != 1 {
		t.Errorf("actions_total not restored: %v", v)
	}
	// Past the cooldown it acts again.
	h.advance(50 * time.Minute)
	h.refresh("vps")
	if n := len(h.actions(sim.VPSOrg)); n != 2 {
		t.Fatalf("after the cooldown: %d actions, want 2", n)
	}
}

func TestBudgetAndBlastRadius(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tune    func(*config.Remediation)
		rule    config.Rule
		account string
		api     sim.API
		reason  string
	}{
		// 1003 and 1013 are degraded: the second is over the hourly budget.
		{"hourly budget", func(c *config.Remediation) { c.MaxActionsPerHour = 1 }, redeployDegraded(), "bingo", sim.VPNBingo, ReasonRateLimit},
		// 12006 and 12016 are stopped; 5% of 20 servers allows one an hour.
		{"blast radius", func(c *config.Remediation) { c.MaxFleetFraction = 0.05 }, startStopped(), "vps", sim.VPSOrg, ReasonBlastRadius},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(t)
			tc.tune(&cfg)
			cfg.Rules = []config.Rule{tc.rule}
			h := newHarness(t, 20, cfg)
			h.refresh(tc.account)
			if n := len(h.actions(tc.api)); n != 1 || h.suppressed(tc.account, tc.reason) != 1 {
				t.Fatalf("%d actions, %s %v", n, tc.reason, h.suppressed(tc.account, tc.reason))
			}
		})
	}
}

func TestProviderFlagForbids(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{redeployDegraded()}
	h := newHarness(t, 10, cfg)
	h.sim.Update(sim.VPNBingo, 1003, func(m *sim.Machine) { m.CanRedepl = false })
	h.refresh("bingo")
	if n := len(h.sim.Actions()); n != 0 || h.suppressed("bingo", ReasonPrecondition) != 1 {
		t.Fatalf("%d actions, precondition %v", n, h.suppressed("bingo", ReasonPrecondition))
	}
}

func TestConditionReCheckedWithProvider(t *testing.T) {
	cfg := baseConfig(t)
	h := newHarness(t, 10, cfg)
	h.refresh("bingo")
	// The node recovers after the refresh, before the alert arrives.
	h.sim.SetBingoStatus(1003, 19)
	cfg.Rules = []config.Rule{redeployDegraded()}
	d := h.engine.Submit(context.Background(), Request{Provider: "vpnbingo", Account: "bingo", ID: "1003", Action: "redeploy", Source: "rule", Rule: "r", rule: &cfg.Rules[0]})
	if d.Acted || d.Reason != ReasonConditionCleared {
		t.Fatalf("decided %+v", d)
	}
}

func webhookPayload(status, id, startsAt string) string {
	return fmt.Sprintf(`{"version":"4","status":%q,"receiver":"vps","groupKey":"{}:{}","alerts":[
	 {"status":%q,"labels":{"alertname":"VPNNodeHeartbeatAbnormal","provider":"vpnbingo","account":"bingo","id":%q,"remediation":"redeploy"},
	  "annotations":{},"startsAt":%q,"endsAt":"0001-01-01T00:00:00Z","fingerprint":"fp-%s"}]}`, status, status, id, startsAt, id)
}

func post(t *testing.T, h http.Handler, body string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/webhook/alertmanager", strings.NewReader(body)))
	return rec.Code, rec.Body.String()
}

func TestWebhookActsOnceAndNeverOnResolved(t *testing.T) {
	cfg := baseConfig(t)
	h := newHarness(t, 20, cfg)
	h.refresh("bingo")
	ctx, cancel := context.WithCancel(context.Background())
	wh := NewWebhook(ctx, h.engine, 16, 2)
	defer func() { cancel(); wh.Wait() }()

	at := h.now().Add(-time.Minute).UTC().Format(time.RFC3339)
	if code, _ := post(t, wh, webhookPayload("resolved", "1013", at)); code != 200 {
		t.Fatalf("resolved: %d", code)
	}
	for i := 0; i < 3; i++ { // Alertmanager resends the same occurrence
		if code, body := post(t, wh, webhookPayload("firing", "1003", at)); code != 200 {
			t.Fatalf("firing: %d %s", code, body)
		}
	}
	// The resends are duplicates of the journaled occurrence (pending,
	// or acted on): never a second action.
	waitFor(t, func() bool {
		return testutil.ToFloat64(h.engine.m.webhookAlerts.WithLabelValues("duplicate")) == 2 && len(h.actions(sim.VPNBingo)) == 1
	})
	acts := h.actions(sim.VPNBingo)
	if len(acts) != 1 || acts[0].ID != "1003" {
		t.Fatalf("simulator saw %+v", acts)
	}
}

func TestWebhookRejectsBadPayloads(t *testing.T) {
	cfg := baseConfig(t)
	h := newHarness(t, 5, cfg)
	// Alerts are queued for listed servers only; no workers: the queue fills.
	h.refresh("bingo")
	wh := NewWebhook(context.Background(), h.engine, 1, 0)
	for _, tc := range []struct {
		body string
		code int
		want string
	}{
		{`{"version":"4","alerts":[`, 400, "malformed payload"},
		{`{"version":"3","alerts":[]}`, 400, `unsupported payload version "3"`},
		{`{"version":"4","alerts":[{"status":"firing","labels":{"remediation":"reboot","id":"1"},"startsAt":"2026-01-01T00:00:00Z"}]}`, 200, "queued 0 alert(s); ignored 1 without provider, account, id or startsAt"},
		{webhookPayload("firing", "1000", "2026-01-01T00:00:00Z"), 200, "queued 1"},
		{webhookPayload("firing", "1001", "2026-01-01T00:00:00Z"), 429, "queue full"},
		{`{"version":"4","alerts":[]}` + strings.Repeat(" ", MaxWebhookBody), 413, "payload larger than"},
	} {
		code, body := post(t, wh, tc.body)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%.60s: %d %q, want %d %q", tc.body, code, body, tc.code, tc.want)
		}
	}
	rec := httptest.NewRecorder()
	wh.ServeHTTP(rec, httptest.NewRequest("GET", "/webhook/alertmanager", nil))
	if rec.Code != 405 {
		t.Errorf("GET: %d", rec.Code)
	}
}

func TestWebhookAndRuleConcurrentlyActOnce(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{redeployDegraded()}
	h := newHarness(t, 10, cfg)
	snap, _ := func() (collector.Snapshot, bool) {
		p := h.provs["bingo"]
		servers, err := p.List(context.Background())
		return h.store.Update(p.Type(), "bingo", servers, err, h.now(), 0), true
	}()
	h.sim.SetLatency(sim.VPNBingo, 100*time.Millisecond) // widen the race
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(2)
		go func() { defer wg.Done(); h.engine.OnRefresh(context.Background(), snap) }()
		go func() {
			defer wg.Done()
			h.engine.Submit(context.Background(), Request{Provider: "vpnbingo", Account: "bingo", ID: "1003", Action: "redeploy", Source: "alert", Rule: "A"})
		}()
	}
	wg.Wait()
	h.engine.Wait()
	if n := len(h.actions(sim.VPNBingo)); n != 1 {
		t.Fatalf("%d redeploys of one node", n)
	}
	if got := h.suppressed("bingo", ReasonInFlight) + h.suppressed("bingo", ReasonCooldown); got != 7 {
		t.Errorf("in_flight+cooldown = %v, want 7", got)
	}
}

func TestCrashBetweenActionAndAudit(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{redeployDegraded()}
	h := newHarness(t, 10, cfg)
	h.refresh("vps")
	// Simulate a crash: the intent is written, the provider may have
	// acted, the audit record never came.
	h.engine.Close()
	st, err := OpenState(cfg.StateFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Begin(&Record{Time: h.now(), Provider: "vpnbingo", Account: "bingo", ID: "1003", Action: "redeploy", Source: "rule", Rule: "redeploy-degraded"}, serverKey("vpnbingo", "bingo", "1003")); err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	h.start()
	recs, _ := h.engine.Recent(5)
	if len(recs) != 1 || recs[0].Result != ResultUnknown {
		t.Fatalf("recovered audit %+v", recs)
	}
	h.refresh("bingo")
	if n := len(h.sim.Actions()); n != 0 || h.suppressed("bingo", ReasonCooldown) != 1 {
		t.Fatalf("repeated an interrupted action: %d actions", n)
	}
}

func TestClockJumpBackHoldsCooldown(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{startStopped()}
	h := newHarness(t, 10, cfg)
	h.refresh("vps")
	h.settle()
	h.sim.Update(sim.VPSOrg, 12006, func(m *sim.Machine) { m.Status = "stopped" })
	h.advance(-3 * time.Hour) // the clock goes back
	h.refresh("vps")
	if n := len(h.actions(sim.VPSOrg)); n != 1 {
		t.Fatalf("%d actions after the clock went back", n)
	}
}

func TestCorruptStateFileDisablesRemediationOnly(t *testing.T) {
	cfg := baseConfig(t)
	if err := os.WriteFile(cfg.StateFile, bytes.Repeat([]byte("not a bolt file "), 512), 0o600); err != nil {
		t.Fatal(err)
	}
	e := accountlessEngine()
	err := e.Configure(cfg, time.Minute, nil)
	if err == nil || !strings.Contains(err.Error(), "open remediation state "+cfg.StateFile) {
		t.Fatalf("err %v", err)
	}
	if e.Enabled() || testutil.ToFloat64(e.m.stateOK) != 0 || testutil.ToFloat64(e.m.enabled) != 0 {
		t.Error("remediation still on with a corrupt state file")
	}
	if d := e.Submit(context.Background(), Request{Provider: "vpnbingo", Account: "a", ID: "1", Action: "redeploy"}); d.Acted {
		t.Error("acted without state")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The counters a configuration can move exist at zero from the start, so
// that increase() sees a first failure or suppression; with remediation off
// there are none, and the state is not reported broken.
func TestCountersStartAtZero(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{redeployDegraded()}
	cfg.Webhook.Enabled = true
	cfg.Webhook.AllowedActions = []string{"reboot"}
	h := newHarness(t, 5, cfg)
	for _, tc := range []struct {
		c    prometheus.Collector
		want int
	}{
		// the rule matches bingo only: 3 results (no dry_run when live);
		// alerts may reboot on vps: 3 more, rule="alertmanager"
		{h.engine.m.actions, 6},
		// bingo: redeploy (rule; it cannot reboot); every other account: reboot (webhook)
		{h.engine.m.suppressed, len(reasons) * len(h.provs)},
	} {
		if n := testutil.CollectAndCount(tc.c); n != tc.want {
			t.Errorf("%d series, want %d", n, tc.want)
		}
	}
	if v := testutil.ToFloat64(h.engine.m.actions.WithLabelValues("vpnbingo", "bingo", "redeploy", "redeploy-degraded", ResultFailed)); v != 0 {
		t.Errorf("failed counter %v", v)
	}

	off := accountlessEngine()
	if err := off.Configure(config.DefaultRemediation(), time.Minute, h.accounts()); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(off.m.suppressed); n != 0 {
		t.Errorf("remediation off: %d suppression series", n)
	}
	if v := testutil.ToFloat64(off.m.stateOK); v != 1 {
		t.Errorf("remediation off: state_ok %v, want 1", v)
	}
}

// A state file that stops taking writes (disk full, read-only remount,
// yanked volume) never lets an action through: no intent recorded, no
// provider call; the refusal is counted as state_error.
func TestStateWriteFailureNeverActs(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{redeployDegraded()}
	h := newHarness(t, 10, cfg)
	h.refresh("vps")
	_ = h.engine.state.db.Close() // every read and write now fails
	for i := 0; i < 3; i++ {
		h.refresh("bingo")
		h.advance(time.Minute)
	}
	d := h.engine.Submit(context.Background(), Request{Provider: "vpnbingo", Account: "bingo", ID: "1003", Action: "redeploy", Source: "alert", Rule: "X"})
	if d.Acted || d.Reason != ReasonStateError {
		t.Errorf("webhook request with a dead state file: %+v", d)
	}
	if n := len(h.sim.Actions()); n != 0 {
		t.Fatalf("%d provider calls without a durable intent", n)
	}
	if h.suppressed("bingo", ReasonStateError) < 4 {
		t.Errorf("state_error suppressions: %v", h.suppressed("bingo", ReasonStateError))
	}
	if v := testutil.ToFloat64(h.engine.m.stateOK); v != 0 {
		t.Errorf("vps_remediation_state_ok %v with a dead state file", v)
	}
}

// A state file that cannot be created (its directory is a file, or on a
// read-only file system) keeps remediation off and says why.
func TestUnopenableStateFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(f, "state.db"), "/proc/vps_exporter_state.db"} {
		cfg := baseConfig(t)
		cfg.StateFile = path
		e := accountlessEngine()
		err := e.Configure(cfg, time.Minute, nil)
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: err %v", path, err)
		}
		if e.Enabled() || testutil.ToFloat64(e.m.stateOK) != 0 {
			t.Errorf("%s: remediation on without a state file", path)
		}
	}
}

// A provider that flaps between answering and failing: the rule's `for`
// needs consecutive fresh readings, and nothing is done on a failed refresh.
func TestFlappingProviderDoesNotRushActions(t *testing.T) {
	cfg := baseConfig(t)
	r := redeployDegraded()
	r.For = model.Duration(10 * time.Minute)
	cfg.Rules = []config.Rule{r}
	h := newHarness(t, 10, cfg)
	for i := 0; i < 12; i++ { // 2 minutes apart: up, down, up, down...
		if i%2 == 1 {
			h.sim.SetFault(sim.VPNBingo, sim.Fault{Kind: sim.FaultStatus, Status: 503})
		} else {
			h.sim.SetFault(sim.VPNBingo, sim.Fault{})
		}
		before := len(h.actions(sim.VPNBingo))
		snap := h.refresh("bingo")
		if snap.Up == (i%2 == 1) {
			t.Fatalf("refresh %d: up=%v", i, snap.Up)
		}
		if after := len(h.actions(sim.VPNBingo)); !snap.Up && after != before {
			t.Fatalf("acted on a failed refresh (%d)", i)
		}
		h.advance(2 * time.Minute)
	}
	if n := len(h.actions(sim.VPNBingo)); n > 2 {
		t.Errorf("%d redeploys for 2 degraded nodes while flapping", n)
	}
}
