package remediation

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/internal/syncbuf"
	"github.com/vps-exporter/vps_exporter/providers/sim"
	"github.com/vps-exporter/vps_exporter/remediation/journal"
)

// seriesCount is the number of series of every remediation family.
func (h *harness) seriesCount() int {
	n, err := testutil.GatherAndCount(h.reg)
	if err != nil {
		h.t.Fatal(err)
	}
	return n
}

// Sixty alerts with made-up actions, ids and accounts: each is counted in
// the webhook counter and nothing else, no series, no memory, no history
// (before: 60 new vps_remediation_* series and 60 suppression records).
func TestWebhookInputCreatesNothing(t *testing.T) {
	cfg := baseConfig(t)
	cfg.DryRun = true
	h := newHarness(t, 10, cfg)
	h.refresh("bingo")
	h.refresh("vps")
	wh := h.webhook(t, 2)
	before := h.seriesCount()
	at := h.now().Add(-time.Minute)
	var as []alert
	for i := 0; i < 20; i++ {
		as = append(as,
			alert{"vpsorg", "vps", "12000", fmt.Sprintf("made-up-%d", i), at, time.Time{}},   // action nobody allows
			alert{"vpnbingo", "bingo", fmt.Sprintf("999%d", i), "redeploy", at, time.Time{}}, // no such server
			alert{"vpsorg", "vps", "12001", "redeploy", at, time.Time{}})                     // allowed, but not a VPS.org action
	}
	if code, body := post(t, wh, payload(as...)); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	for outcome, want := range map[string]float64{"not_allowed": 40, "unknown_server": 20, "queued": 0} {
		if v := testutil.ToFloat64(h.engine.m.webhookAlerts.WithLabelValues(outcome)); v != want {
			t.Errorf("webhook_alerts_total{outcome=%q} = %v, want %v", outcome, v, want)
		}
	}
	if after := h.seriesCount(); after != before {
		t.Errorf("%d series after the made-up alerts, %d before", after, before)
	}
	h.engine.mu.Lock()
	memory := len(h.engine.lastReason) + len(h.engine.events)
	h.engine.mu.Unlock()
	if memory != 0 {
		t.Errorf("%d per-alert memories kept", memory)
	}
	hist, err := h.engine.History(context.Background(), Filter{})
	if err != nil || len(hist.Suppressions) != 0 || len(hist.Actions) != 0 {
		t.Errorf("history after made-up alerts: %+v %v", hist, err)
	}
}

// One rule over 40 servers held back by max_actions_per_hour: one info
// line per refresh for the rule, with the counts by reason; per-server
// lines at debug (before: 41 info lines).
func TestSuppressionsSummarisedPerRule(t *testing.T) {
	cfg := baseConfig(t)
	cfg.DryRun = true
	cfg.MaxActionsPerHour = 1
	cfg.Rules = []config.Rule{{Name: "reboot-running", Provider: "vpsorg", State: []string{"running"}, Action: "reboot"}}
	h := newHarness(t, 50, cfg)
	var buf syncbuf.Buffer
	h.engine.logger = log.NewLogfmtLogger(&buf)
	running := 0
	for _, m := range h.sim.Machines(sim.VPSOrg) {
		if m.Status == "active" {
			running++
		}
	}
	if running < 40 {
		t.Fatalf("only %d running servers", running)
	}
	var out string
	for i := 0; i < 3; i++ {
		from := len(buf.String())
		h.refresh("vps")
		out = buf.String()[from:]
		info := 0
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "level=info") && strings.Contains(line, "suppress") {
				info++
			}
		}
		if info > 1 {
			t.Fatalf("refresh %d: %d info lines about suppressions, want at most 1:\n%s", i, info, out)
		}
		if i == 0 && (info != 1 || !strings.Contains(out, "rate_limit=")) {
			t.Errorf("refresh %d: no summary line with the counts by reason:\n%s", i, out)
		}
		h.advance(time.Minute)
	}
	if n := strings.Count(out, "level=debug"); n < running-2 {
		t.Errorf("%d debug lines, want one per held-back server", n)
	}
}

// pause, resume and reset take the credential when one is set, whether
// or not the webhook is on; the history is read without it, as DESIGN.md
// says and the status page shows it.
func TestControlNeedsTheCredential(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Webhook.Enabled = false
	cfg.Webhook.BearerToken = "ctl-SECRET"
	h := newHarness(t, 5, cfg)
	ctl := NewControlHandler(h.engine)
	rec := httptest.NewRecorder()
	ctl.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/remediation", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"suppressions"`) {
		t.Errorf("GET the history without the credential: %d %.200s", rec.Code, rec.Body.String())
	}
	for _, path := range []string{"/api/v1/remediation/pause", "/api/v1/remediation/resume", "/api/v1/remediation/reset"} {
		for _, auth := range []string{"", "Bearer nope"} {
			rec := httptest.NewRecorder()
			r := httptest.NewRequest("POST", path, strings.NewReader(`{}`))
			if auth != "" {
				r.Header.Set("Authorization", auth)
			}
			ctl.ServeHTTP(rec, r)
			if rec.Code != 401 {
				t.Errorf("POST %s with %q: %d, want 401", path, auth, rec.Code)
			}
		}
	}
	if v := testutil.ToFloat64(h.engine.m.paused); v != 0 {
		t.Error("paused without the credential")
	}
}

// The engine's lock is never held across state-file I/O: while a write
// waits for the file, decisions (Enabled, the gate) go on.
func TestEngineLockNotHeldAcrossStateIO(t *testing.T) {
	cfg := baseConfig(t)
	h := newHarness(t, 5, cfg)
	db := h.engine.state.db
	// Hold the store's writer lock: every write to the file waits.
	release := make(chan struct{})
	held := make(chan struct{})
	go func() {
		err := db.Update(func(journal.Tx) error {
			close(held)
			<-release
			return nil
		})
		if err != nil {
			select {
			case <-held:
			default:
				close(held)
			}
		}
	}()
	<-held
	defer close(release)
	for name, op := range map[string]func(){
		"pause":  func() { _, _ = h.engine.Pause(time.Hour, "x") },
		"resume": func() { _ = h.engine.Resume() },
	} {
		go op()
		time.Sleep(50 * time.Millisecond) // op is waiting for the file now
		done := make(chan struct{})
		go func() { h.engine.Enabled(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Second):
			t.Fatalf("%s holds the engine lock while it waits for the state file", name)
		}
	}
}

// Configure switching to a state file another process holds waits for its
// lock without the engine's.
func TestConfigureDoesNotBlockDecisions(t *testing.T) {
	old := lockWait
	lockWait = 1500 * time.Millisecond
	defer func() { lockWait = old }()
	cfg := baseConfig(t)
	h := newHarness(t, 5, cfg)
	other := baseConfig(t)
	first, err := OpenState(other.StateFile)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	configured := make(chan struct{})
	go func() { _ = h.engine.Configure(other, time.Minute, h.accounts()); close(configured) }()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	h.engine.Enabled()
	d := time.Since(start)
	<-configured
	if d > 700*time.Millisecond {
		t.Fatalf("a decision waited %v for Configure's file lock", d)
	}
}

// A refresh whose context ended (SIGTERM, a reload replacing the poller)
// starts no action; after Shutdown nothing does.
func TestNoNewActionAfterShutdown(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{startStopped()}
	h := newHarness(t, 10, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := h.provs["vps"]
	servers, err := p.List(context.Background())
	snap := h.store.Update(p.Type(), "vps", servers, err, h.now(), time.Millisecond)
	h.engine.OnRefresh(ctx, snap)
	h.engine.Wait()
	if n := len(h.sim.Actions()); n != 0 {
		t.Fatalf("%d actions from a refresh whose context had ended", n)
	}
	h.engine.Shutdown()
	h.refresh("vps")
	d := h.engine.Submit(context.Background(), Request{Provider: "vpsorg", Account: "vps", ID: "12000", Action: "reboot", Source: "alert"})
	if d.Acted || d.Reason != ReasonShutdown {
		t.Errorf("after Shutdown: %+v", d)
	}
	if n := len(h.sim.Actions()); n != 0 {
		t.Fatalf("%d actions after Shutdown", n)
	}
}

// A crash while a dry run was being recorded is recovered as the dry run
// it was: not a live `unknown`, no live cooldown.
func TestDryRunCrashStaysDryRun(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{startStopped()}
	h := newHarness(t, 10, cfg)
	h.engine.Close()
	st, err := OpenState(cfg.StateFile)
	if err != nil {
		t.Fatal(err)
	}
	root := serverKey("vpsorg", "vps", "12006")
	if err := st.Begin(&Record{Time: h.now(), Provider: "vpsorg", Account: "vps", ID: "12006", Action: "start", Source: "rule", Rule: "start-stopped", Result: ResultDryRun}, root); err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	h.start()
	recs, _ := h.engine.Recent(5)
	if len(recs) != 1 || recs[0].Result != ResultDryRun {
		t.Fatalf("recovered %+v, want the dry run", recs)
	}
	if v := testutil.ToFloat64(h.engine.m.actions.WithLabelValues("vpsorg", "vps", "start", "start-stopped", ResultUnknown)); v != 0 {
		t.Errorf("unknown counted %v", v)
	}
	h.refresh("vps")
	if n := len(h.actions(sim.VPSOrg)); n != 1 {
		t.Fatalf("the recovered dry run held back the live start: %d calls", n)
	}
}

// accountSeries counts the remediation series that carry account="name".
func (h *harness) accountSeries(name string) int {
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "account" && l.GetValue() == name {
					n++
				}
			}
		}
	}
	return n
}

// A removed account's series leave /metrics, do not come back at a
// restart, and come back with their durable totals with the account.
func TestRemovedAccountSeriesLeave(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{startStopped()}
	h := newHarness(t, 10, cfg)
	h.refresh("vps")
	if n := len(h.actions(sim.VPSOrg)); n != 1 {
		t.Fatalf("%d starts", n)
	}
	if h.accountSeries("vps") == 0 {
		t.Fatal("no series for vps")
	}
	only := []config.Provider{{Type: "vpnbingo", Name: "bingo"}}
	if err := h.engine.Configure(h.cfg, time.Minute, only); err != nil {
		t.Fatal(err)
	}
	if n := h.accountSeries("vps"); n != 0 {
		t.Errorf("%d series of the removed account", n)
	}
	// A restart with the account still gone: its durable counters stay
	// in the file but make no series.
	h.engine.Close()
	h.startWith(only)
	if n := h.accountSeries("vps"); n != 0 {
		t.Errorf("after a restart: %d series of the removed account", n)
	}
	if err := h.engine.Configure(h.cfg, time.Minute, h.accounts()); err != nil {
		t.Fatal(err)
	}
	if v := testutil.ToFloat64(h.engine.m.actions.WithLabelValues("vpsorg", "vps", "start", "start-stopped", ResultSuccess)); v != 1 {
		t.Errorf("the account came back with actions_total %v, want its durable 1", v)
	}
}

// When a server leaves its account, the maps keyed by it go too, once its
// cooldown has run out: memory is bounded by the fleet.
func TestServerMapsPrunedWhenServerLeaves(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{startStopped()}
	h := newHarness(t, 10, cfg)
	h.refresh("vps")
	if n := len(h.actions(sim.VPSOrg)); n != 1 {
		t.Fatalf("%d starts", n)
	}
	h.sim.Update(sim.VPSOrg, 12006, func(m *sim.Machine) { m.Status = "stopped" })
	h.refresh("vps") // cooldown: held back, remembered
	h.sim.Remove(sim.VPSOrg, 12006)
	h.advance(2 * time.Hour)
	h.refresh("vps")
	key := serverKey("vpsorg", "vps", "12006")
	h.engine.mu.Lock()
	defer h.engine.mu.Unlock()
	for name, has := range map[string]bool{
		"cooldown":   hasKey(h.engine.live.cooldown, key),
		"failures":   hasKey(h.engine.live.failures, key),
		"lastReason": hasPrefix(h.engine.lastReason, key),
		"since":      hasInfix(h.engine.since, key),
	} {
		if has {
			t.Errorf("%s still holds the server that left", name)
		}
	}
}

func hasKey[V any](m map[string]V, k string) bool { _, ok := m[k]; return ok }

func hasPrefix[V any](m map[string]V, p string) bool {
	for k := range m {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

func hasInfix[V any](m map[string]V, p string) bool {
	for k := range m {
		if strings.Contains(k, p) {
			return true
		}
	}
	return false
}

// Records older than remediation.retention leave the state file: audit,
// cooldowns, lineage, handled alerts and suppression history.
func TestRetentionPrunes(t *testing.T) {
	cfg := baseConfig(t)
	h := newHarness(t, 5, cfg)
	st := h.engine.state
	old, recent := h.now().Add(-31*24*time.Hour), h.now().Add(-time.Hour)
	for i, at := range []time.Time{old, recent} {
		id := fmt.Sprint(12000 + i)
		root := serverKey("vpsorg", "vps", id)
		r := &Record{Time: at, Provider: "vpsorg", Account: "vps", ID: id, Action: "reboot", Source: "alert", Rule: "A"}
		if err := st.Begin(r, root); err != nil {
			t.Fatal(err)
		}
		r.Result = ResultSuccess
		if err := st.Finish(r, ""); err != nil {
			t.Fatal(err)
		}
		if err := st.SetLineage(serverKey("vpsorg", "vps", "new"+id), root); err != nil {
			t.Fatal(err)
		}
		if err := st.MarkSeen("fp"+id, at, ""); err != nil {
			t.Fatal(err)
		}
		if err := st.Flush(nil, []Event{{Time: at, Provider: "vpsorg", Account: "vps", ID: id, Reason: ReasonCooldown}}); err != nil {
			t.Fatal(err)
		}
		ep := &Episode{Seq: uint64(i + 1), Provider: "vpsorg", Account: "vps", ID: id, Opened: at, Outcome: EpisodeRecovered, Ended: at, Version: 1}
		tr := mustJSON(&track{Root: root, Attempts: []time.Time{at}, Version: 1})
		if err := st.PutLoop(&loopWrite{root: root, track: tr, ver: 1, eps: []*Episode{ep}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.engine.pruneRetention(); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Since(time.Time{}, 100)
	evs, _ := st.Events(func(Event) bool { return true }, 100)
	live, _, _ := st.Cooldowns()
	lin, _ := st.Lineage()
	oldSeen, _ := st.Seen("fp12000")
	newSeen, _ := st.Seen("fp12001")
	eps, _ := st.Episodes(func(*Episode) bool { return true }, 100)
	loop, _ := st.loadLoop()
	if len(recs) != 1 || recs[0].ID != "12001" || len(evs) != 1 || evs[0].ID != "12001" || len(live) != 1 || len(lin) != 1 || oldSeen || !newSeen ||
		len(eps) != 1 || eps[0].ID != "12001" || len(loop.tracks) != 1 {
		t.Errorf("after pruning: %d records, %d events, %d cooldowns, %d lineage, old seen %v, new seen %v, %d episodes, %d tracks",
			len(recs), len(evs), len(live), len(lin), oldSeen, newSeen, len(eps), len(loop.tracks))
	}
}
