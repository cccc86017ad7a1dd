package remediation

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/apiclient"
	"github.com/vps-exporter/vps_exporter/providers/sim"
	"github.com/vps-exporter/vps_exporter/providers/vpsorg"
	"github.com/vps-exporter/vps_exporter/remediation/journal"
)

// Tests of the findings of a hostile review of the closed loop.

// namedAlert is a webhook payload of one firing alert named name.
func namedAlert(name, provider, account, id, action string, startsAt time.Time) string {
	return fmt.Sprintf(`{"version":"4","status":"firing","receiver":"vps","alerts":[{"status":"firing","labels":{"alertname":%q,"provider":%q,"account":%q,"id":%q,"remediation":%q},"annotations":{},"startsAt":%q,"endsAt":"0001-01-01T00:00:00Z","fingerprint":"fp-%s-%s"}]}`,
		name, provider, account, id, action, startsAt.UTC().Format(time.RFC3339), name, id)
}

// runningVPS returns the ids of n VPS.org servers that run.
func runningVPS(t *testing.T, h *harness, n int) []string {
	t.Helper()
	var ids []string
	for _, m := range h.sim.Machines(sim.VPSOrg) {
		if m.Status == "active" && len(ids) < n {
			ids = append(ids, fmt.Sprint(m.ID))
		}
	}
	if len(ids) < n {
		t.Fatalf("only %d running VPS.org servers", len(ids))
	}
	return ids
}

// seriesWith counts the series of the registry that carry label=value.
func (h *harness) seriesWith(label, value string) int {
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					n++
				}
			}
		}
	}
	return n
}

// Finding 1: alerts with invented alertnames on real servers (dry run, no
// credential needed) each made a vps_remediation_actions_total series
// (rule=<alertname>) and a durable counter forever. Actions from alerts
// count under rule="alertmanager", from zero; the alertname stays in the
// audit record.
func TestAlertActionsCountUnderOneRuleLabel(t *testing.T) {
	cfg := baseConfig(t)
	cfg.DryRun = true
	h := newHarness(t, 10, cfg)
	h.refresh("vps")
	wh := h.webhook(t, 2)
	before := h.seriesCount()
	ids := runningVPS(t, h, 3)
	at := h.now().Add(-time.Minute)
	for i, id := range ids {
		if code, body := post(t, wh, namedAlert(fmt.Sprintf("Invented%d", i), "vpsorg", "vps", id, "reboot", at)); code != 200 {
			t.Fatalf("%d %s", code, body)
		}
	}
	count := func() float64 {
		return testutil.ToFloat64(h.engine.m.actions.WithLabelValues("vpsorg", "vps", "reboot", RuleAlertmanager, ResultDryRun))
	}
	// The record is written, then counted: wait for both.
	waitFor(t, func() bool { recs, _ := h.engine.Recent(10); return len(recs) == 3 && count() >= 3 })
	if after := h.seriesCount(); after != before {
		t.Errorf("%d series after 3 alerts with invented alertnames, %d before", after, before)
	}
	recs, _ := h.engine.Recent(10)
	for _, r := range recs {
		if r.Result != ResultDryRun || !strings.HasPrefix(r.Rule, "Invented") || r.Source != "alert" {
			t.Errorf("audit record %+v: want the alertname kept", r)
		}
	}
	if v := count(); v != 3 {
		t.Errorf("actions_total{rule=%q} = %v, want 3", RuleAlertmanager, v)
	}
	// The durable count comes back under the same label.
	h.engine.Close()
	h.start()
	if v := count(); v != 3 {
		t.Errorf("after a restart actions_total{rule=%q} = %v, want 3", RuleAlertmanager, v)
	}
	if n := h.seriesWith("rule", "Invented0"); n != 0 {
		t.Errorf("%d series named after an alert after a restart", n)
	}
}

// A rule's action series leave /metrics when the rule leaves the
// configuration and come back with its durable totals; durable totals
// under a label no configuration makes (an alertname, as 0.2.0 wrote
// them) make no series.
func TestRuleSeriesFollowTheConfiguration(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{startStopped()}
	h := newHarness(t, 10, cfg)
	h.refresh("vps")
	if n := len(h.actions(sim.VPSOrg)); n != 1 {
		t.Fatalf("%d starts", n)
	}
	if err := h.engine.state.db.Update(func(tx journal.Tx) error {
		return add(tx, "a|vpsorg|vps|reboot|OldAlertName|success", 2)
	}); err != nil {
		t.Fatal(err)
	}
	without := cfg
	without.Rules = nil
	if err := h.engine.Configure(without, time.Minute, h.accounts()); err != nil {
		t.Fatal(err)
	}
	if n := h.seriesWith("rule", "start-stopped"); n != 0 {
		t.Errorf("%d series of a rule no longer configured", n)
	}
	if err := h.engine.Configure(cfg, time.Minute, h.accounts()); err != nil {
		t.Fatal(err)
	}
	started := func() float64 {
		return testutil.ToFloat64(h.engine.m.actions.WithLabelValues("vpsorg", "vps", "start", "start-stopped", ResultSuccess))
	}
	if v := started(); v != 1 {
		t.Errorf("the rule came back with actions_total %v, want its durable 1", v)
	}
	h.engine.Close()
	h.start()
	if v := started(); v != 1 {
		t.Errorf("after a restart actions_total %v, want 1", v)
	}
	if n := h.seriesWith("rule", "OldAlertName"); n != 0 {
		t.Errorf("%d series from a durable total under an alertname", n)
	}
}

// Finding 2: before an account's first successful list, alerts with
// made-up ids reached the gate (stale_data) and each left a last-reason
// entry and a history event. Now they are journaled (at most maxUnlisted
// per account: a batch beyond it is refused whole, for Alertmanager to
// retry), held as not_ready, and when the list comes, those for ids it
// lacks are counted as unknown_server and leave nothing behind.
func TestAlertsBeforeTheFirstListAreOnlyCounted(t *testing.T) {
	cfg := baseConfig(t)
	h := newHarness(t, 10, cfg) // no refresh yet
	ctx, cancel := context.WithCancel(context.Background())
	wh := NewWebhook(ctx, h.engine, 1024, 2)
	defer func() { cancel(); wh.Wait() }()
	batch := func(n int) string {
		var as []string
		for i := 0; i < n; i++ {
			as = append(as, fmt.Sprintf(`{"status":"firing","labels":{"alertname":"A","provider":"vpsorg","account":"vps","id":"made-up-%d","remediation":"reboot"},"startsAt":%q,"fingerprint":"m%d"}`,
				i, h.now().UTC().Format(time.RFC3339), i))
		}
		return `{"version":"4","status":"firing","alerts":[` + strings.Join(as, ",") + `]}`
	}
	if code, body := post(t, wh, batch(maxUnlisted+1)); code != 429 {
		t.Fatalf("%d made-up ids before the first list: %d %s, want 429", maxUnlisted+1, code, body)
	}
	if n := wh.Pending(); n != 0 {
		t.Fatalf("%d alerts journaled from a refused batch", n)
	}
	if code, body := post(t, wh, batch(100)); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	waitFor(t, func() bool { return testutil.ToFloat64(h.engine.m.webhookHeld.WithLabelValues(ReasonNotReady)) == 100 })
	h.refresh("vps")
	waitFor(t, func() bool { return wh.Pending() == 0 })
	for outcome, want := range map[string]float64{"queued": 100, "rejected": float64(maxUnlisted + 1), "unknown_server": 100} {
		if v := testutil.ToFloat64(h.engine.m.webhookAlerts.WithLabelValues(outcome)); v != want {
			t.Errorf("webhook_alerts_total{outcome=%q} = %v, want %v", outcome, v, want)
		}
	}
	h.engine.mu.Lock()
	memory := len(h.engine.lastReason) + len(h.engine.events)
	h.engine.mu.Unlock()
	wh.mu.Lock()
	memory += len(wh.holds) + len(wh.occs) + len(wh.handling)
	wh.mu.Unlock()
	if memory != 0 {
		t.Errorf("%d per-alert memories kept for made-up ids", memory)
	}
}

// Finding 3: History wrote (a flush: a bbolt write and an fsync) on every
// GET and status page view, and so waited for the state file's writers.
// It now writes nothing and shows the suppressions not yet flushed.
func TestHistoryDoesNotWrite(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{startStopped()}
	h := newHarness(t, 10, cfg)
	if _, err := h.engine.Pause(time.Hour, "maintenance"); err != nil {
		t.Fatal(err)
	}
	// A writer holds the state file's lifecycle lock (a flush, a pause, a
	// reload switching files): nothing is flushed meanwhile.
	h.engine.stateMu.Lock()
	locked := true
	unlock := func() {
		if locked {
			locked = false
			h.engine.stateMu.Unlock()
		}
	}
	defer unlock()
	h.refresh("vps") // 12006 is stopped: a paused suppression
	got := make(chan History, 1)
	go func() {
		hist, _ := h.engine.History(context.Background(), Filter{})
		got <- hist
	}()
	select {
	case hist := <-got:
		if len(hist.Suppressions) != 1 || hist.Suppressions[0].Reason != ReasonPaused || hist.Suppressions[0].ID != "12006" {
			t.Errorf("history without the unflushed suppression: %+v", hist.Suppressions)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("History waits for the state file's writers")
	}
	h.engine.mu.Lock()
	unflushed := len(h.engine.unflushed)
	h.engine.mu.Unlock()
	if unflushed == 0 {
		t.Error("History flushed the suppression counts")
	}
	unlock()
	// Once the flusher wrote it, it is shown once.
	waitFor(t, func() bool {
		h.engine.mu.Lock()
		defer h.engine.mu.Unlock()
		return len(h.engine.events) == 0 && h.engine.flushing == nil
	})
	hist, err := h.engine.History(context.Background(), Filter{})
	if err != nil || len(hist.Suppressions) != 1 {
		t.Errorf("after the flush: %d suppressions, %v; want 1", len(hist.Suppressions), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.engine.History(ctx, Filter{}); err == nil {
		t.Error("History read on with its context ended")
	}
}

// doProvider is a provider whose Do goes to another client (the Get and
// List of the harness's).
type doProvider struct {
	providers.Provider
	act providers.Provider
}

func (p doProvider) Do(ctx context.Context, id string, a providers.Action, ap providers.ActionParams) (providers.ActionResult, error) {
	return p.act.Do(ctx, id, a, ap)
}

// closedURL is the URL of a loopback port nothing listens on.
func closedURL(t *testing.T) *url.URL {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("http://" + l.Addr().String())
	_ = l.Close()
	return u
}

// Finding 4: every call that was not sent counted as `shutdown`, a
// refused dial while the daemon runs included. It is `not_sent` unless
// the daemon is stopping.
func TestUnsentActionIsNotShutdown(t *testing.T) {
	cfg := baseConfig(t)
	h := newHarness(t, 10, cfg)
	h.refresh("vps")
	id := runningVPS(t, h, 1)[0]
	fast := apiclient.Config{BackoffBase: time.Millisecond, MaxRetries: -1}
	h.provs["vps"] = doProvider{Provider: h.provs["vps"], act: vpsorg.New(vpsorg.Options{Account: "vps", BaseURL: closedURL(t), Token: "t", HTTP: fast})}
	d := h.engine.Submit(context.Background(), Request{Provider: "vpsorg", Account: "vps", ID: id, Action: "reboot", Source: "alert", Rule: "A"})
	if d.Acted || d.Reason != ReasonNotSent {
		t.Fatalf("refused dial: %+v, want %s", d, ReasonNotSent)
	}
	if v := h.suppressed("vps", ReasonShutdown); v != 0 {
		t.Errorf("counted as shutdown %v times while running", v)
	}
	if v := h.suppressed("vps", ReasonNotSent); v != 1 {
		t.Errorf("not_sent %v, want 1", v)
	}
	if recs, _ := h.engine.Recent(5); len(recs) != 0 {
		t.Errorf("audit records for a call never sent: %+v", recs)
	}
}

// Finding 5: handled alert occurrences were pruned after a day, but
// Alertmanager resends a firing alert with its startsAt every
// repeat_interval: a stuck alert acted again after a day. They are kept
// for remediation.retention.
func TestHandledAlertsKeptForRetention(t *testing.T) {
	cfg := baseConfig(t)
	h := newHarness(t, 5, cfg)
	st := h.engine.state
	for key, at := range map[string]time.Time{"stuck@1": h.now().Add(-48 * time.Hour), "old@1": h.now().Add(-31 * 24 * time.Hour)} {
		if err := st.MarkSeen(key, at, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.engine.pruneRetention(); err != nil {
		t.Fatal(err)
	}
	if seen, _ := st.Seen("stuck@1"); !seen {
		t.Error("an alert occurrence handled two days ago was forgotten: its resend would act again")
	}
	if seen, _ := st.Seen("old@1"); seen {
		t.Error("an alert occurrence older than retention was kept")
	}
}

// Finding 6: two identical notifications (an HA Alertmanager pair)
// handled at once could both act: the check for a handled occurrence and
// its mark were not one step. Now the intake journal holds one entry per
// server, and the copy is a duplicate of it, whether it comes while the
// first is pending, under way, or after it was acted on (its occurrence
// is marked in the action's transaction).
func TestConcurrentDuplicateNotificationsActOnce(t *testing.T) {
	cfg := baseConfig(t)
	cfg.DryRun = true
	cfg.Cooldown = 0
	h := newHarness(t, 10, cfg)
	h.refresh("vps")
	ctx, cancel := context.WithCancel(context.Background())
	wh := NewWebhook(ctx, h.engine, 16, 2)
	defer func() { cancel(); wh.Wait() }()
	body := namedAlert("A", "vpsorg", "vps", runningVPS(t, h, 1)[0], "reboot", h.now().Add(-time.Minute))
	records := func() int { recs, _ := h.engine.Recent(10); return len(recs) }
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ { // the HA peers' copies, at once
		wg.Add(1)
		go func() { defer wg.Done(); post(t, wh, body) }()
	}
	wg.Wait()
	waitFor(t, func() bool { return records() >= 1 && wh.Pending() == 0 })
	post(t, wh, body) // a copy after the action
	if v := testutil.ToFloat64(h.engine.m.webhookAlerts.WithLabelValues("duplicate")); v != 2 {
		t.Errorf("webhook_alerts_total{outcome=duplicate} = %v, want 2", v)
	}
	time.Sleep(3 * intakeTick) // room for a wrong second action
	if n := records(); n != 1 {
		t.Errorf("%d dry-run records for one alert occurrence sent three times", n)
	}
}

// gatedDo is a provider whose first Do waits for release.
type gatedDo struct {
	providers.Provider
	once             sync.Once
	started, release chan struct{}
}

func (p *gatedDo) Do(ctx context.Context, id string, a providers.Action, ap providers.ActionParams) (providers.ActionResult, error) {
	p.once.Do(func() { close(p.started) })
	<-p.release
	return p.Provider.Do(ctx, id, a, ap)
}

// Finding 8: a reload that changed state_file closed the old file under
// an action under way: its audit record was never written and its intent
// stayed, to be recovered as `unknown`. The switch waits for it, without
// holding up the controls meanwhile.
func TestStateFileSwitchWaitsForActionsUnderWay(t *testing.T) {
	cfg := baseConfig(t)
	h := newHarness(t, 10, cfg)
	h.refresh("vps")
	id := runningVPS(t, h, 1)[0]
	gate := &gatedDo{Provider: h.provs["vps"], started: make(chan struct{}), release: make(chan struct{})}
	h.provs["vps"] = gate
	old := h.engine.state
	decided := make(chan Decision, 1)
	go func() {
		decided <- h.engine.Submit(context.Background(), Request{Provider: "vpsorg", Account: "vps", ID: id, Action: "reboot", Source: "alert", Rule: "A"})
	}()
	<-gate.started
	next := h.cfg
	next.StateFile = filepath.Join(t.TempDir(), "next.db")
	configured := make(chan error, 1)
	go func() { configured <- h.engine.Configure(next, time.Minute, h.accounts()) }()
	// Until the old file is closed, or long enough for a switch that
	// does not wait to have closed it.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if old.db.View(func(journal.Tx) error { return nil }) != nil {
			break
		}
	}
	// The controls do not wait for the old file (before: a pause waited
	// up to 2m30s behind the switch): they act on the new one.
	paused := make(chan error, 1)
	go func() { _, err := h.engine.Pause(time.Minute, "during the switch"); paused <- err }()
	select {
	case err := <-paused:
		if err != nil {
			t.Errorf("pause during the switch: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Error("a pause waited for the old state file to be closed")
	}
	close(gate.release)
	if d := <-decided; !d.Acted || d.Result != ResultSuccess {
		t.Fatalf("decided %+v", d)
	}
	select {
	case err := <-configured:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the switch did not end after the action")
	}
	st, err := OpenState(cfg.StateFile)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pending := 0
	_ = st.db.View(func(tx journal.Tx) error { pending = tx.Bucket(bucketPending).KeyN(); return nil })
	recs, _ := st.Since(time.Time{}, 10)
	if pending != 0 || len(recs) != 1 || recs[0].Result != ResultSuccess {
		t.Errorf("old state file: %d intents left, records %+v; want the action recorded success", pending, recs)
	}
}

// Finding 9: once the workers stopped, the webhook still answered 200 and
// queued alerts no one would handle. It answers 503 (Alertmanager
// retries) and queues nothing.
func TestWebhookRefusesOnceStopping(t *testing.T) {
	cfg := baseConfig(t)
	h := newHarness(t, 10, cfg)
	h.refresh("vps")
	body := namedAlert("A", "vpsorg", "vps", runningVPS(t, h, 1)[0], "reboot", h.now().Add(-time.Minute))
	ctx, cancel := context.WithCancel(context.Background())
	wh := NewWebhook(ctx, h.engine, 16, 2)
	cancel()
	wh.Wait()
	if code, resp := post(t, wh, body); code != 503 || wh.Pending() != 0 {
		t.Errorf("after the workers stopped: %d %q, %d queued; want 503 and nothing queued", code, resp, wh.Pending())
	}
	// The engine stopping (SIGTERM) before the webhook's context ends.
	live := h.webhook(t, 1)
	h.engine.Shutdown()
	if code, _ := post(t, live, body); code != 503 {
		t.Errorf("engine shutting down: %d, want 503", code)
	}
}

// Finding 11: a rule name with `|` broke the durable counter's key: its
// total was not restored after a restart.
func TestRuleNameWithBarKeepsItsCount(t *testing.T) {
	cfg := baseConfig(t)
	r := startStopped()
	r.Name = "start|stopped%7C"
	cfg.Rules = []config.Rule{r}
	h := newHarness(t, 10, cfg)
	h.refresh("vps")
	if n := len(h.actions(sim.VPSOrg)); n != 1 {
		t.Fatalf("%d starts", n)
	}
	h.engine.Close()
	h.start()
	if v := testutil.ToFloat64(h.engine.m.actions.WithLabelValues("vpsorg", "vps", "start", r.Name, ResultSuccess)); v != 1 {
		t.Errorf("after a restart actions_total{rule=%q} = %v, want 1", r.Name, v)
	}
}

// countingGet is a provider that counts its re-reads.
type countingGet struct {
	providers.Provider
	n atomic.Int64
}

func (p *countingGet) Get(ctx context.Context, id string) (providers.Server, error) {
	p.n.Add(1)
	return p.Provider.Get(ctx, id)
}

// Finding 7: a refresh's action was added to the engine's wait group after
// the lock its reservation was made under, so Close could stop waiting
// before it started; now the reservation and the Add are one step under
// that lock. No action a refresh started re-reads its server after Close
// returned. (The window was a few instructions wide: this runs the race
// many times rather than proving it on every run.)
func TestCloseWaitsForEveryStartedAction(t *testing.T) {
	cfg := baseConfig(t)
	cfg.DryRun = true
	cfg.Rules = []config.Rule{{Name: "reboot-running", Provider: "vpsorg", State: []string{"running"}, Action: "reboot"}}
	h := newHarness(t, 30, cfg)
	p := &countingGet{Provider: h.provs["vps"]}
	h.provs["vps"] = p
	servers, err := p.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		if i > 0 {
			h.cfg.StateFile = filepath.Join(t.TempDir(), "state.db")
			h.start()
		}
		snap := h.store.Update(p.Type(), "vps", servers, nil, h.now(), time.Millisecond)
		refreshed := make(chan struct{})
		go func() { defer close(refreshed); h.engine.OnRefresh(context.Background(), snap) }()
		h.engine.Close()
		at := p.n.Load()
		<-refreshed
		h.engine.Wait()
		if after := p.n.Load(); after != at {
			t.Fatalf("run %d: %d re-reads by actions after Close returned", i, after-at)
		}
	}
}

// The same, made certain: Close runs right after a refresh's request got
// its reservation. It returns only once that action has ended (before,
// at once: the action then re-read its server after Close).
func TestCloseWaitsForAnActionReservedBeforeIt(t *testing.T) {
	cfg := baseConfig(t)
	cfg.DryRun = true
	cfg.Rules = []config.Rule{startStopped()}
	h := newHarness(t, 10, cfg) // 12006 is stopped
	p := &countingGet{Provider: h.provs["vps"]}
	h.provs["vps"] = p
	closed := make(chan struct{})
	var atClose atomic.Int64
	h.engine.reserved = func() {
		go func() {
			h.engine.Close()
			atClose.Store(p.n.Load())
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(300 * time.Millisecond): // Close waits for this action
		}
	}
	h.refresh("vps")
	<-closed
	if n, at := p.n.Load(), atClose.Load(); n != at {
		t.Errorf("%d re-reads after Close returned (%d before): Close did not wait for an action reserved before it", n-at, at)
	}
}
