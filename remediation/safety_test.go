package remediation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/internal/syncbuf"
	"github.com/vps-exporter/vps_exporter/providers/apiclient"
	"github.com/vps-exporter/vps_exporter/providers/sim"
	"github.com/vps-exporter/vps_exporter/providers/vpsorg"
)

// alert is one alert of a webhook payload.
type alert struct {
	provider, account, id, action string
	startsAt, endsAt              time.Time
}

func payload(as ...alert) string {
	var parts []string
	for _, a := range as {
		ends := "0001-01-01T00:00:00Z"
		if !a.endsAt.IsZero() {
			ends = a.endsAt.UTC().Format(time.RFC3339)
		}
		parts = append(parts, fmt.Sprintf(`{"status":"firing","labels":{"alertname":"A","provider":%q,"account":%q,"id":%q,"remediation":%q},"annotations":{},"startsAt":%q,"endsAt":%q,"fingerprint":"fp-%s"}`,
			a.provider, a.account, a.id, a.action, a.startsAt.UTC().Format(time.RFC3339), ends, a.id))
	}
	return `{"version":"4","status":"firing","receiver":"vps","alerts":[` + strings.Join(parts, ",") + `]}`
}

func (h *harness) webhook(t *testing.T, workers int) *Webhook {
	ctx, cancel := context.WithCancel(context.Background())
	wh := NewWebhook(ctx, h.engine, 64, workers)
	t.Cleanup(func() { cancel(); wh.Wait() })
	return wh
}

// Three alerts in one payload under max_actions_per_hour 1, handled by
// three workers at once while the provider answers slowly: one provider
// call (before, the gate counted only finished records: 2 calls, 4 of 4);
// the other two are held in the journal until the budget has room.
func TestBudgetCountsPendingIntents(t *testing.T) {
	cfg := baseConfig(t)
	cfg.MaxActionsPerHour = 1
	h := newHarness(t, 10, cfg)
	h.refresh("vps")
	h.sim.SetLatency(sim.VPSOrg, 200*time.Millisecond)
	wh := h.webhook(t, 3)
	at := h.now().Add(-time.Minute)
	if code, body := post(t, wh, payload(
		alert{"vpsorg", "vps", "12000", "reboot", at, time.Time{}},
		alert{"vpsorg", "vps", "12001", "reboot", at, time.Time{}},
		alert{"vpsorg", "vps", "12002", "reboot", at, time.Time{}})); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	// The other two are held (rate_limit passes), not dropped.
	waitFor(t, func() bool { return testutil.ToFloat64(h.engine.m.webhookHeld.WithLabelValues(ReasonRateLimit)) == 2 })
	waitFor(t, func() bool { return len(h.actions(sim.VPSOrg)) == 1 })
	if n := wh.Pending(); n != 2 {
		t.Errorf("%d alerts journaled, want the 2 held", n)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(h.actions(sim.VPSOrg)); n != 1 {
		t.Fatalf("%d provider calls under max_actions_per_hour 1", n)
	}
}

// A suppression that may pass later (stale data here) does not use up the
// alert occurrence: it is held in the intake journal and acted on once the
// account's data is fresh again, with no resend; a resend after the
// action is a duplicate.
func TestTransientSuppressionKeepsTheAlert(t *testing.T) {
	cfg := baseConfig(t)
	h := newHarness(t, 10, cfg)
	wh := h.webhook(t, 1)
	h.refresh("bingo")
	h.advance(10 * time.Minute) // the account's data is old now
	a := alert{"vpnbingo", "bingo", "1003", "redeploy", h.now().Add(-time.Minute), time.Time{}}
	post(t, wh, payload(a)) // stale_data
	waitFor(t, func() bool { return testutil.ToFloat64(h.engine.m.webhookHeld.WithLabelValues(ReasonStaleData)) == 1 })
	if n := wh.Pending(); n != 1 {
		t.Errorf("%d alerts in the intake journal while held, want 1", n)
	}
	h.refresh("bingo")
	waitFor(t, func() bool { return len(h.actions(sim.VPNBingo)) == 1 && wh.Pending() == 0 })
	post(t, wh, payload(a)) // acted on: now a duplicate
	if v := testutil.ToFloat64(h.engine.m.webhookAlerts.WithLabelValues("duplicate")); v != 1 {
		t.Errorf("webhook_alerts_total{outcome=duplicate} = %v, want 1", v)
	}
	if n := h.suppressed("bingo", ReasonStaleData); n != 0 {
		t.Errorf("a hold counted %v times as a suppression; it ended in an action", n)
	}
}

// A redeploy's replacement inherits the cooldown of the node it replaced
// (before: 4 redeploys of one logical node in 22 s under cooldown 1h).
func TestReplacementInheritsCooldown(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{redeployDegraded()}
	h := newHarness(t, 10, cfg)
	h.refresh("bingo")
	acts := h.actions(sim.VPNBingo)
	if len(acts) != 1 {
		t.Fatalf("%d redeploys", len(acts))
	}
	var newID int
	fmt.Sscan(acts[0].NewID, &newID)
	// The replacement is healthy past its verify window: recovered.
	h.settle()
	h.advance(11 * time.Minute)
	h.refresh("bingo")
	for i := 0; i < 4; i++ {
		h.sim.Update(sim.VPNBingo, newID, func(m *sim.Machine) { m.Code, m.Display, m.CanRedepl = 18, "Heartbeat Abnormal", true })
		h.advance(5 * time.Second)
		h.refresh("bingo")
	}
	if n := len(h.actions(sim.VPNBingo)); n != 1 || h.suppressed("bingo", ReasonCooldown) < 4 {
		t.Fatalf("%d redeploys, %v cooldown suppressions: the replacement was redeployed inside the cooldown", n, h.suppressed("bingo", ReasonCooldown))
	}
	// A restart remembers the lineage.
	h.engine.Close()
	h.start()
	h.refresh("bingo")
	if n := len(h.actions(sim.VPNBingo)); n != 1 {
		t.Fatalf("after a restart the replacement was redeployed (%d)", n)
	}
	h.advance(time.Hour)
	h.refresh("bingo")
	if n := len(h.actions(sim.VPNBingo)); n != 2 {
		t.Fatalf("after the cooldown: %d redeploys, want 2", n)
	}
}

// Nodes on their way out (Pending Release) do not count in the fleet that
// blast radius divides: 5 live nodes at 0.3 allow one action, not three.
func TestBlastRadiusIgnoresLeavingNodes(t *testing.T) {
	cfg := baseConfig(t)
	cfg.MaxFleetFraction = 0.3
	cfg.Rules = []config.Rule{redeployDegraded()}
	h := newHarness(t, 10, cfg)
	for id := 1000; id < 1010; id++ {
		code := 19
		switch {
		case id >= 1005:
			code = 20
		case id == 1001 || id == 1002:
			code = 18
		}
		h.sim.Update(sim.VPNBingo, id, func(m *sim.Machine) { m.Code, m.Display, m.CanRedepl = code, sim.BingoDisplay(code), true })
	}
	h.refresh("bingo")
	if n := len(h.actions(sim.VPNBingo)); n != 1 || h.suppressed("bingo", ReasonBlastRadius) != 1 {
		t.Fatalf("%d redeploys, blast_radius %v", n, h.suppressed("bingo", ReasonBlastRadius))
	}
}

// Turning remediation off, or pausing it, while a request is re-reading
// the server stops it before the call (before: two reboots landed 3 s
// after a reload set enabled: false).
func TestTurnedOffDuringTheReRead(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(h *harness)
		reason string
	}{
		{"disabled", func(h *harness) {
			c := h.cfg
			c.Enabled = false
			_ = h.engine.Configure(c, time.Minute, h.accounts())
		}, ReasonNotAllowed},
		{"paused", func(h *harness) { _, _ = h.engine.Pause(0, "change freeze") }, ReasonPaused},
		{"dry-run", func(h *harness) {
			c := h.cfg
			c.DryRun = true
			_ = h.engine.Configure(c, time.Minute, h.accounts())
		}, ReasonNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(t)
			h := newHarness(t, 10, cfg)
			h.refresh("vps")
			h.sim.SetLatency(sim.VPSOrg, 400*time.Millisecond)
			done := make(chan Decision)
			go func() {
				done <- h.engine.Submit(context.Background(), Request{Provider: "vpsorg", Account: "vps", ID: "12000", Action: "reboot", Source: "alert"})
			}()
			// Change once the request holds its reservation: its
			// re-read is under way (the provider answers in 400 ms).
			waitFor(t, func() bool {
				h.engine.mu.Lock()
				defer h.engine.mu.Unlock()
				return len(h.engine.inFlight) == 1
			})
			tc.change(h)
			d := <-done
			if d.Acted || d.Reason != tc.reason {
				t.Fatalf("decided %+v, want %s", d, tc.reason)
			}
			if n := len(h.actions(sim.VPSOrg)); n != 0 {
				t.Fatalf("%d calls after remediation was turned off", n)
			}
		})
	}
}

// Dry-run decisions live in their own namespace: switching to live mode
// finds no cooldown, budget or handled alert left by the dry run.
func TestDryRunDoesNotPoisonLive(t *testing.T) {
	cfg := baseConfig(t)
	cfg.DryRun = true
	cfg.MaxActionsPerHour = 1
	cfg.Rules = []config.Rule{startStopped()}
	h := newHarness(t, 10, cfg)
	h.refresh("vps")
	wh := h.webhook(t, 1)
	a := alert{"vpsorg", "vps", "12000", "reboot", h.now().Add(-time.Minute), time.Time{}}
	post(t, wh, payload(a))
	waitFor(t, func() bool {
		return testutil.ToFloat64(h.engine.m.actions.WithLabelValues("vpsorg", "vps", "start", "start-stopped", ResultDryRun)) == 1
	})
	// The dry-run budget is spent: the alert is held (rate_limit passes).
	waitFor(t, func() bool { return testutil.ToFloat64(h.engine.m.webhookHeld.WithLabelValues(ReasonRateLimit)) == 1 })
	h.cfg.DryRun = false
	h.cfg.MaxActionsPerHour = 10
	if err := h.engine.Configure(h.cfg, time.Minute, h.accounts()); err != nil {
		t.Fatal(err)
	}
	h.refresh("vps")
	post(t, wh, payload(a))
	waitFor(t, func() bool { return len(h.actions(sim.VPSOrg)) == 2 })
}

// A call the provider answered no to is failed; one that got no answer
// (a timeout after it was sent) is unknown: the provider may have done it,
// so its cooldown stands and it does not count as failed.
func TestOutcomes(t *testing.T) {
	cfg := baseConfig(t)
	h := newHarness(t, 10, cfg)
	h.provs["vps"] = vpsorg.New(vpsorg.Options{Account: "vps", BaseURL: h.urls[sim.VPSOrg], Token: "t",
		HTTP: apiclient.Config{Timeout: 300 * time.Millisecond, MaxRetries: -1}})
	h.refresh("vps")
	h.sim.SetFault(sim.VPSOrg, sim.Fault{Kind: sim.FaultHang, Only: "/12000/reboot/"})
	d := h.engine.Submit(context.Background(), Request{Provider: "vpsorg", Account: "vps", ID: "12000", Action: "reboot", Source: "alert", Rule: "A"})
	if !d.Acted || d.Result != ResultUnknown {
		t.Fatalf("no answer: %+v, want unknown", d)
	}
	h.sim.SetFault(sim.VPSOrg, sim.Fault{Kind: sim.FaultStatus, Status: 402, Only: "/12001/reboot/"})
	d = h.engine.Submit(context.Background(), Request{Provider: "vpsorg", Account: "vps", ID: "12001", Action: "reboot", Source: "alert", Rule: "A"})
	if !d.Acted || d.Result != ResultFailed {
		t.Fatalf("refused: %+v, want failed", d)
	}
	for _, tc := range []struct {
		result string
		want   float64
	}{{ResultUnknown, 1}, {ResultFailed, 1}, {ResultSuccess, 0}} {
		if v := testutil.ToFloat64(h.engine.m.actions.WithLabelValues("vpsorg", "vps", "reboot", RuleAlertmanager, tc.result)); v != tc.want {
			t.Errorf("actions_total{result=%q} = %v, want %v", tc.result, v, tc.want)
		}
	}
	h.sim.ClearFaults()
	d = h.engine.Submit(context.Background(), Request{Provider: "vpsorg", Account: "vps", ID: "12000", Action: "reboot", Source: "alert", Rule: "A"})
	if d.Reason != ReasonCooldown {
		t.Errorf("after an unknown outcome: %+v, want the cooldown to stand", d)
	}
	recs, _ := h.engine.Recent(5)
	if len(recs) != 2 || recs[1].Result != ResultUnknown || recs[0].Result != ResultFailed {
		t.Errorf("audit %+v", recs)
	}
}

// The gate knows what each API documents: a metric-only rule never
// reboots a stopped VPS.org server (the API answers 400), a start needs a
// stopped server, a VPN.bingo redeploy needs status 9/10/18/19.
func TestProviderPreconditions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rule    config.Rule
		account string
		prepare func(*sim.Sim)
		victim  string // the server that must not be called
	}{
		{"reboot a stopped server", config.Rule{Name: "hot", Provider: "vpsorg", Metric: "cpu_usage_ratio", Above: ptr(0.95), Action: "reboot"}, "vps",
			func(s *sim.Sim) { s.Update(sim.VPSOrg, 12001, func(m *sim.Machine) { m.Status = "stopped" }) }, "12001"},
		{"start a suspended server", config.Rule{Name: "up", Provider: "vpsorg", Status: []string{"suspended"}, Action: "start"}, "vps", func(*sim.Sim) {}, "12008"},
		{"redeploy a preparing node", config.Rule{Name: "prep", Provider: "vpnbingo", State: []string{"provisioning"}, Action: "redeploy", Params: config.RuleParams{Force: true}}, "bingo", func(*sim.Sim) {}, "1011"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(t)
			cfg.Rules = []config.Rule{tc.rule}
			h := newHarness(t, 50, cfg)
			tc.prepare(h.sim)
			h.refresh(tc.account)
			for _, a := range h.sim.Actions() {
				if a.ID == tc.victim {
					t.Fatalf("called %s on %s: %+v", a.Action, a.ID, a)
				}
			}
			if h.suppressed(tc.account, ReasonPrecondition) == 0 {
				t.Fatal("no precondition suppression")
			}
		})
	}
}

func ptr(v float64) *float64 { return &v }

// The webhook: a bearer token when configured (constant time), alerts for
// accounts that are not configured counted only by the webhook counter,
// an alert whose endsAt has passed treated as resolved.
func TestWebhookCredentialAndInputs(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Webhook.BearerToken = "hook-SECRET-1"
	h := newHarness(t, 10, cfg)
	h.refresh("bingo")
	wh := h.webhook(t, 1)
	body := payload(alert{"vpnbingo", "bingo", "1003", "redeploy", h.now().Add(-time.Minute), time.Time{}})
	send := func(auth, body string) int {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest("POST", "/webhook/alertmanager", strings.NewReader(body))
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		wh.ServeHTTP(rec, r)
		return rec.Code
	}
	for _, auth := range []string{"", "Bearer wrong", "Basic aG9vazpTRUNSRVQ=", "hook-SECRET-1"} {
		if code := send(auth, body); code != http.StatusUnauthorized {
			t.Errorf("Authorization %q: %d, want 401", auth, code)
		}
	}
	ok := "Bearer hook-SECRET-1"
	if code := send(ok, payload(alert{"vpnbingo", "nobody", "1", "redeploy", h.now(), time.Time{}},
		alert{"vpsorg", "bingo", "1", "reboot", h.now(), time.Time{}})); code != 200 {
		t.Fatalf("unknown accounts: %d", code)
	}
	if v := testutil.ToFloat64(h.engine.m.webhookAlerts.WithLabelValues("unknown_account")); v != 2 {
		t.Errorf("unknown_account %v, want 2", v)
	}
	if n := testutil.CollectAndCount(h.engine.m.suppressed, "vps_remediation_suppressed_total"); n != len(reasons)*2 {
		t.Errorf("%d suppression series: an unconfigured account made new ones", n)
	}
	past := alert{"vpnbingo", "bingo", "1003", "redeploy", h.now().Add(-time.Hour), h.now().Add(-time.Minute)}
	if code := send(ok, payload(past)); code != 200 {
		t.Fatal(code)
	}
	if v := testutil.ToFloat64(h.engine.m.webhookAlerts.WithLabelValues("resolved")); v != 1 {
		t.Errorf("an alert whose endsAt passed: resolved %v, want 1", v)
	}
	if code := send(ok, body); code != 200 {
		t.Fatal(code)
	}
	waitFor(t, func() bool { return len(h.actions(sim.VPNBingo)) == 1 })
}

// parseRemediation builds a validated remediation config from YAML, with
// the harness's two accounts.
func parseRemediation(t *testing.T, state, yaml string) config.Remediation {
	t.Helper()
	c, err := config.Parse([]byte(`providers:
  - {type: vpnbingo, name: bingo, token: t}
  - {type: vpsorg, name: vps, token: t}
remediation:
  enabled: true
  dry_run: false
  max_actions_per_hour: 100
  max_fleet_fraction: 1
  state_file: `+state+"\n"+yaml), ".")
	if err != nil {
		t.Fatal(err)
	}
	return c.Remediation
}

// Operator controls: an excluded server is never touched; outside every
// window nothing is done; a pause holds everything, survives a restart
// and ends with resume; the history shows actions and suppressions.
func TestOperatorControls(t *testing.T) {
	base := baseConfig(t)
	rules := "  rules:\n  - {name: start-stopped, provider: vpsorg, state: [stopped], action: start}\n"
	t.Run("exclude", func(t *testing.T) {
		cfg := parseRemediation(t, base.StateFile, rules+"  exclude:\n  - {provider: vpsorg, name: 'web-000.'}\n")
		h := newHarness(t, 20, cfg) // 12006 web-0006 and 12016 web-0016 are stopped
		h.refresh("vps")
		acts := h.actions(sim.VPSOrg)
		if len(acts) != 1 || acts[0].ID != "12016" || h.suppressed("vps", ReasonExcluded) != 1 {
			t.Fatalf("actions %+v, excluded %v", acts, h.suppressed("vps", ReasonExcluded))
		}
	})
	t.Run("windows", func(t *testing.T) {
		now := time.Now().UTC()
		closed := fmt.Sprintf("  windows:\n  - {start: %q, end: %q}\n", now.Add(2*time.Hour).Format("15:04"), now.Add(3*time.Hour).Format("15:04"))
		cfg := parseRemediation(t, t.TempDir()+"/s.db", rules+closed)
		h := newHarness(t, 10, cfg)
		h.refresh("vps")
		if n := len(h.actions(sim.VPSOrg)); n != 0 || h.suppressed("vps", ReasonOutsideWindow) != 1 {
			t.Fatalf("outside the window: %d actions", n)
		}
		h.advance(2*time.Hour + time.Minute)
		h.refresh("vps")
		if n := len(h.actions(sim.VPSOrg)); n != 1 {
			t.Fatalf("inside the window: %d actions", n)
		}
	})
	t.Run("pause", func(t *testing.T) {
		cfg := parseRemediation(t, t.TempDir()+"/s.db", rules)
		h := newHarness(t, 10, cfg)
		ctl := NewControlHandler(h.engine)
		call := func(method, path, body string) (int, string) {
			rec := httptest.NewRecorder()
			ctl.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
			return rec.Code, rec.Body.String()
		}
		if code, body := call("POST", "/api/v1/remediation/pause", `{"duration":"soon"}`); code != 400 || !strings.Contains(body, "duration") {
			t.Errorf("bad duration: %d %s", code, body)
		}
		if code, body := call("POST", "/api/v1/remediation/pause", `{"reason":"database migration"}`); code != 200 {
			t.Fatalf("pause: %d %s", code, body)
		}
		h.refresh("vps")
		if n := len(h.actions(sim.VPSOrg)); n != 0 || h.suppressed("vps", ReasonPaused) != 1 {
			t.Fatalf("paused: %d actions", n)
		}
		h.engine.Close()
		h.start()
		if v := testutil.ToFloat64(h.engine.m.paused); v != 1 {
			t.Fatalf("after a restart vps_remediation_paused = %v", v)
		}
		h.refresh("vps")
		if n := len(h.actions(sim.VPSOrg)); n != 0 {
			t.Fatal("a restart forgot the pause")
		}
		ctl = NewControlHandler(h.engine)
		if code, _ := call("POST", "/api/v1/remediation/resume", ""); code != 200 {
			t.Fatal(code)
		}
		h.refresh("vps")
		if n := len(h.actions(sim.VPSOrg)); n != 1 {
			t.Fatalf("after resume: %d actions", n)
		}
		code, body := call("GET", "/api/v1/remediation?account=vps&since=1h&limit=10", "")
		var hist History
		if code != 200 || json.Unmarshal([]byte(body), &hist) != nil {
			t.Fatalf("history: %d %s", code, body)
		}
		if len(hist.Actions) != 1 || hist.Actions[0].ID != "12006" || len(hist.Suppressions) == 0 || hist.Suppressions[0].Reason != ReasonPaused {
			t.Errorf("history %+v", hist)
		}
		if code, _ := call("GET", "/api/v1/remediation?limit=0", ""); code != 400 {
			t.Errorf("limit=0: %d", code)
		}
		if code, _ := call("GET", "/api/v1/remediation?account=bingo", ""); code != 200 {
			t.Error(code)
		}
	})
}

// A suppression is logged when its reason for the server changes, not on
// every refresh, and is not written to disk one by one.
func TestSuppressionLoggedOnChange(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{startStopped()}
	h := newHarness(t, 10, cfg)
	var buf syncbuf.Buffer
	h.engine.logger = log.NewLogfmtLogger(&buf)
	h.refresh("vps")
	h.settle()
	h.sim.Update(sim.VPSOrg, 12006, func(m *sim.Machine) { m.Status = "stopped" })
	for i := 0; i < 5; i++ {
		h.advance(time.Minute)
		h.refresh("vps")
	}
	if n := strings.Count(buf.String(), `level=info msg="rule's actions suppressed"`); n != 1 {
		t.Errorf("%d info lines for one server held back by its cooldown five times; want 1\n%s", n, buf.String())
	}
	if got := h.suppressed("vps", ReasonCooldown); got != 5 {
		t.Errorf("cooldown suppressions counted %v, want 5", got)
	}
}

// A second daemon on the same state file waits for the first one's lock
// and takes over when it is free, without a reload.
func TestSecondDaemonTakesOverTheStateFile(t *testing.T) {
	old := lockWait
	lockWait = 50 * time.Millisecond
	defer func() { lockWait = old }()
	cfg := baseConfig(t)
	first, err := OpenState(cfg.StateFile)
	if err != nil {
		t.Fatal(err)
	}
	e := accountlessEngine()
	defer e.Close()
	if err := e.Configure(cfg, time.Minute, nil); err == nil || e.Enabled() {
		t.Fatal("opened a state file another process holds")
	}
	_ = first.Close()
	waitFor(t, e.Enabled)
	if v := testutil.ToFloat64(e.m.stateOK); v != 1 {
		t.Errorf("state_ok %v after taking over", v)
	}
}

// The webhook's counter exists at zero for every outcome from the start.
func TestWebhookCounterStartsAtZero(t *testing.T) {
	e := accountlessEngine()
	if n := testutil.CollectAndCount(e.m.webhookAlerts); n != len(webhookOutcomes) {
		t.Errorf("%d webhook outcome series, want %d", n, len(webhookOutcomes))
	}
}

// The flusher's housekeeping: a pause that ran out clears the gauge, and
// handled-alert marks older than remediation.retention are pruned (before,
// the bucket grew forever).
func TestFlusherHousekeeping(t *testing.T) {
	cfg := baseConfig(t)
	h := newHarness(t, 5, cfg)
	if _, err := h.engine.Pause(time.Minute, "short"); err != nil {
		t.Fatal(err)
	}
	st := h.engine.state
	if err := st.MarkSeen("old@1", h.now().Add(-31*24*time.Hour), ""); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkSeen("new@1", h.now(), ""); err != nil {
		t.Fatal(err)
	}
	h.advance(2 * time.Minute)
	waitFor(t, func() bool { return testutil.ToFloat64(h.engine.m.paused) == 0 })
	waitFor(t, func() bool { seen, _ := st.Seen("old@1"); return !seen })
	if seen, _ := st.Seen("new@1"); !seen {
		t.Error("a recent handled alert was pruned")
	}
}

// A call the provider keeps refusing is not repeated forever: a refused
// step gets no verdict (nothing was done to verify) and is due again
// after its cooldown, doubled by each refusal; each refusal is an attempt,
// so max_attempts in attempts_window exhausts the server (nothing more,
// across a restart). When it recovers anyway (started by hand) it is
// handed back; the run of refusals still doubles the cooldown of its next
// action, which ends the run.
func TestRefusedActionsBackOff(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{startStopped()}
	h := newHarness(t, 10, cfg) // 12006 is stopped
	h.sim.SetFault(sim.VPSOrg, sim.Fault{Kind: sim.FaultStatus, Status: 402, Only: "/12006/start/"})
	failed := func() float64 {
		return testutil.ToFloat64(h.engine.m.actions.WithLabelValues("vpsorg", "vps", "start", "start-stopped", ResultFailed))
	}
	// Refused at 0, again after 2h (1h doubled), 6h (+4h); at 14h
	// (+8h) max_attempts 3 in 24h exhausts it.
	h.refresh("vps")
	for i, wait := range []time.Duration{2 * time.Hour, 4 * time.Hour} {
		h.advance(wait - time.Minute)
		h.refresh("vps")
		if failed() != float64(i+1) {
			t.Fatalf("%v refused starts %v after the last, want %d: the doubled cooldown did not hold", failed(), wait-time.Minute, i+1)
		}
		h.advance(time.Minute)
		h.refresh("vps")
		if failed() != float64(i+2) {
			t.Fatalf("%v refused starts, want %d", failed(), i+2)
		}
	}
	h.advance(8 * time.Hour)
	h.refresh("vps")
	if x := h.engine.Exhausted(); failed() != 3 || len(x) != 1 || !strings.Contains(x[0].Reason, "max_attempts 3") {
		t.Fatalf("%v refused starts, exhausted %+v: want max_attempts to exhaust it", failed(), x)
	}
	for _, v := range []string{VerdictRecovered, VerdictNotRecovered} {
		if n := testutil.ToFloat64(h.engine.m.verifications.WithLabelValues("vpsorg", "vps", "start", "rule", v)); n != 0 {
			t.Errorf("verifications_total{start,%s} = %v: refused starts were scored", v, n)
		}
	}
	h.engine.Close()
	h.start()
	h.advance(time.Hour)
	h.refresh("vps")
	if failed() != 3 || h.suppressed("vps", ReasonExhausted) == 0 {
		t.Fatalf("%v refused starts, %v exhausted suppressions: a refused start was repeated", failed(), h.suppressed("vps", ReasonExhausted))
	}
	// Started by hand: clear for its verify window, handed back.
	h.sim.ClearFaults()
	h.sim.Update(sim.VPSOrg, 12006, func(m *sim.Machine) { m.Status = "active" })
	h.refresh("vps")
	h.advance(11 * time.Minute)
	h.refresh("vps")
	if len(h.engine.Exhausted()) != 0 {
		t.Fatal("still exhausted after its condition was clear for its verify window")
	}
	// It stops again past attempts_window: three refusals in a row made
	// the cooldown 8 h from the last one, over by now: it acts, and
	// succeeds.
	h.advance(10 * time.Hour)
	h.sim.Update(sim.VPSOrg, 12006, func(m *sim.Machine) { m.Status = "stopped" })
	h.refresh("vps")
	if v := testutil.ToFloat64(h.engine.m.actions.WithLabelValues("vpsorg", "vps", "start", "start-stopped", ResultSuccess)); v != 1 {
		t.Fatalf("after the release: %v successful starts, want 1", v)
	}
}

// The run of refusals lengthens the cooldown: a refused action doubles
// it, across a restart.
func TestRefusalDoublesCooldown(t *testing.T) {
	cfg := baseConfig(t)
	h := newHarness(t, 10, cfg)
	h.refresh("vps")
	h.sim.SetFault(sim.VPSOrg, sim.Fault{Kind: sim.FaultStatus, Status: 402, Only: "/12000/reboot/"})
	req := Request{Provider: "vpsorg", Account: "vps", ID: "12000", Action: "reboot", Source: "alert", Rule: "A", alert: "fp-A"}
	if d := h.engine.Submit(context.Background(), req); d.Result != ResultFailed {
		t.Fatalf("%+v", d)
	}
	h.sim.ClearFaults()
	// Recovered anyway: Alertmanager resolves the alert; the episode ends.
	h.engine.store(h.engine.alertResolved("vpsorg", "vps", "12000", "fp-A", time.Time{}, time.Time{}))
	if hist, _ := h.engine.History(context.Background(), Filter{}); len(hist.Episodes) != 1 || hist.Episodes[0].Outcome != EpisodeRecovered {
		t.Fatalf("episodes %+v", hist.Episodes)
	}
	h.engine.Close()
	h.start()
	h.advance(90 * time.Minute) // past one cooldown, inside two
	h.refresh("vps")
	if d := h.engine.Submit(context.Background(), req); d.Reason != ReasonCooldown || !strings.Contains(d.Detail, "refused the last 1") {
		t.Fatalf("90 min after a refused reboot: %+v, want the doubled cooldown", d)
	}
	h.advance(31 * time.Minute)
	h.refresh("vps")
	if d := h.engine.Submit(context.Background(), req); d.Result != ResultSuccess {
		t.Fatalf("after two cooldowns: %+v", d)
	}
}
