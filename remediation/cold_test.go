package remediation

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/internal/syncbuf"
	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// What a new user found running the built exporter cold against the
// simulator: remediation starving its own account, a log line per server,
// `for:` clocks surviving an outage, times and words that misled.

// watched wraps a provider: it records how many of its calls are under
// way at once, and runs a hook in each re-read.
type watched struct {
	providers.Provider
	delay time.Duration

	mu          sync.Mutex
	now, most   int
	onGet       func(ctx context.Context) error
	gets, calls int
}

func (w *watched) enter() {
	w.mu.Lock()
	w.now++
	w.most = max(w.most, w.now)
	w.calls++
	w.mu.Unlock()
}

func (w *watched) leave() {
	w.mu.Lock()
	w.now--
	w.mu.Unlock()
}

func (w *watched) maxAtOnce() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.most
}

func (w *watched) Get(ctx context.Context, id string) (providers.Server, error) {
	w.enter()
	defer w.leave()
	w.mu.Lock()
	hook := w.onGet
	w.gets++
	w.mu.Unlock()
	if hook != nil {
		if err := hook(ctx); err != nil {
			return providers.Server{}, err
		}
	}
	time.Sleep(w.delay)
	return w.Provider.Get(ctx, id)
}

func (w *watched) Do(ctx context.Context, id string, a providers.Action, p providers.ActionParams) (providers.ActionResult, error) {
	w.enter()
	defer w.leave()
	time.Sleep(w.delay)
	return w.Provider.Do(ctx, id, a, p)
}

// watch wraps the harness's account (before the engine uses it).
func (h *harness) watch(account string, delay time.Duration) *watched {
	w := &watched{Provider: h.provs[account], delay: delay}
	h.provs[account] = w
	return w
}

// failRefresh is a refresh of the account whose list failed.
func (h *harness) failRefresh(account string) {
	p := h.provs[account]
	h.engine.OnRefresh(context.Background(), h.store.Update(p.Type(), account, nil, errors.New("401 Unauthorized"), h.now(), time.Millisecond))
}

func rebootRunning() config.Rule {
	return config.Rule{Name: "reboot-running", Provider: "vpsorg", State: []string{"running"}, Action: "reboot"}
}

func countRunningVPS(h *harness) int {
	n := 0
	for _, m := range h.sim.Machines(sim.VPSOrg) {
		if m.Status == "active" {
			n++
		}
	}
	return n
}

// A rule over every server of an account: the re-reads and actions go
// to the account one at a time, so that at most one of them waits for a
// token ahead of a list page (before: all at once, so the list missed its
// deadline and the account went down).
func TestOneRemediationCallPerAccountAtATime(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{rebootRunning()}
	h := newHarness(t, 20, cfg)
	running := countRunningVPS(h)
	w := h.watch("vps", 5*time.Millisecond)
	h.refresh("vps")
	if n := len(h.actions(sim.VPSOrg)); n != running {
		t.Fatalf("%d reboots, want one for each of the %d running servers", n, running)
	}
	if most := w.maxAtOnce(); most != 1 {
		t.Errorf("%d remediation calls to the account at once, want 1", most)
	}
}

// The account goes down while the rule's requests are under way: none is
// sent while it is down (before: each went out after its re-read), and
// they are counted stale_data; with the account back, the rule acts.
func TestNoActionWhileTheAccountIsDown(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{rebootRunning()}
	h := newHarness(t, 20, cfg)
	running := countRunningVPS(h)
	w := h.watch("vps", 0)
	var once sync.Once
	w.onGet = func(context.Context) error {
		// The account's list fails while the first re-read is on the
		// wire.
		once.Do(func() { h.failRefresh("vps") })
		return nil
	}
	h.refresh("vps")
	if acts := h.actions(sim.VPSOrg); len(acts) != 0 {
		t.Fatalf("%d reboots sent while the account was down: %+v", len(acts), acts)
	}
	if got := h.suppressed("vps", ReasonStaleData); got != float64(running) {
		t.Errorf("stale_data suppressions %v, want one per running server (%d)", got, running)
	}
	h.advance(time.Minute)
	h.refresh("vps")
	if n := len(h.actions(sim.VPSOrg)); n != running {
		t.Errorf("%d reboots once the account was back, want %d", n, running)
	}
}

// A request waits for its account's turn at most the bound; then it is
// suppressed not_sent and nothing went out for it.
func TestTurnWaitIsBounded(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{rebootRunning()}
	h := newHarness(t, 20, cfg)
	running := countRunningVPS(h)
	if running < 3 {
		t.Fatalf("%d running servers, want 3 or more", running)
	}
	h.engine.maxTurnWait = 50 * time.Millisecond
	h.watch("vps", 300*time.Millisecond)
	h.refresh("vps")
	if n := len(h.actions(sim.VPSOrg)); n != 1 {
		t.Errorf("%d reboots, want 1: the others waited longer than their bound", n)
	}
	if got := h.suppressed("vps", ReasonNotSent); got != float64(running-1) {
		t.Errorf("not_sent suppressions %v, want %d", got, running-1)
	}
}

// The re-read an action is decided on must be recent when the call is
// handed to the provider's client.
func TestFinalRefusesAnOldReRead(t *testing.T) {
	cfg := baseConfig(t)
	h := newHarness(t, 10, cfg)
	snap := h.refresh("vps")
	srv, _ := lookupServer(snap.Servers, "12001")
	g, d := h.engine.admit(Request{Provider: "vpsorg", Account: "vps", ID: "12001", Action: providers.ActionReboot, Source: "alert", Rule: "x"}, &snap, &srv, false)
	if d != nil {
		t.Fatalf("admit: %+v", d)
	}
	g.readAt = h.now().Add(-maxReadAge - time.Second)
	d = h.engine.final(g)
	h.engine.release(g)
	if d == nil || d.Reason != ReasonStaleData || !strings.Contains(d.Detail, "re-read") {
		t.Errorf("final on a re-read %s old: %+v, want stale_data", maxReadAge+time.Second, d)
	}
}

// An account seen once, then down for 8 minutes, then up: a rule with
// `for: 2m` does not fire on two observations 8 minutes apart (before:
// at once); it fires once the condition has held for 2 minutes of good
// refreshes.
func TestForClockRestartsAfterAFailedRefresh(t *testing.T) {
	cfg := baseConfig(t)
	r := startStopped()
	r.For = model.Duration(2 * time.Minute)
	cfg.Rules = []config.Rule{r}
	h := newHarness(t, 10, cfg)
	h.refresh("vps")
	for i := 0; i < 8; i++ {
		h.advance(time.Minute)
		h.failRefresh("vps")
	}
	h.advance(time.Minute)
	h.refresh("vps")
	if acts := h.actions(sim.VPSOrg); len(acts) != 0 {
		t.Fatalf("the rule fired on the first good refresh after an outage: %+v", acts)
	}
	h.advance(time.Minute)
	h.refresh("vps")
	if acts := h.actions(sim.VPSOrg); len(acts) != 0 {
		t.Fatalf("the rule fired after 1 minute of good refreshes: %+v", acts)
	}
	h.advance(time.Minute + time.Second)
	h.refresh("vps")
	if acts := h.actions(sim.VPSOrg); len(acts) == 0 {
		t.Error("the rule did not fire after its condition held for 2 minutes of good refreshes")
	}
}

// The re-reads of a rule's requests fail for every server: one line for
// the rule at the next refresh, each server at debug (before: one info
// line per server within milliseconds). At shutdown the same: the
// requests waiting for their turn are counted in one line.
func TestBackgroundSuppressionsLoggedOncePerRule(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{rebootRunning()}
	h := newHarness(t, 20, cfg)
	running := countRunningVPS(h)
	var buf syncbuf.Buffer
	h.engine.logger = log.NewLogfmtLogger(&buf)
	w := h.watch("vps", 0)
	w.onGet = func(context.Context) error { return errors.New("connection reset") }
	h.refresh("vps")
	perServer := func() int {
		n := 0
		for _, l := range strings.Split(buf.String(), "\n") {
			if strings.Contains(l, "level=info") && strings.Contains(l, `msg="action suppressed"`) {
				n++
			}
		}
		return n
	}
	if n := perServer(); n != 0 {
		t.Errorf("%d info lines for the servers one by one, want 0:\n%s", n, buf.String())
	}
	h.advance(time.Minute)
	h.refresh("vps")
	var summary []string
	for _, l := range strings.Split(buf.String(), "\n") {
		if strings.Contains(l, "level=info") && strings.Contains(l, `msg="rule's actions suppressed"`) {
			summary = append(summary, l)
		}
	}
	if len(summary) != 1 || !strings.Contains(summary[0], "stale_data="+strconv.Itoa(running)) || !strings.Contains(summary[0], "rule=reboot-running") {
		t.Errorf("summary lines %q, want one for the rule with stale_data=%d", summary, running)
	}
	if n := strings.Count(buf.String(), `level=debug msg="action suppressed"`); n < 2*running {
		t.Errorf("%d debug lines, want each server's", n)
	}

	// Shutdown while the requests wait for their turn: the first's re-read
	// hangs until the engine stops.
	from := len(buf.String())
	w.mu.Lock()
	w.onGet = func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	w.mu.Unlock()
	h.advance(time.Minute)
	h.engine.OnRefresh(context.Background(), h.store.Update("vpsorg", "vps", mustList(t, h), nil, h.now(), time.Millisecond))
	waitFor(t, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.now == 1
	})
	h.engine.Close()
	if n := perServer(); n != 0 {
		t.Errorf("%d info lines for the servers one by one at shutdown, want 0:\n%s", n, buf.String())
	}
	if n := strings.Count(buf.String()[from:], "shutdown="+strconv.Itoa(running)); n != 1 {
		t.Errorf("want one line with shutdown=%d:\n%s", running, buf.String()[from:])
	}
}

func mustList(t *testing.T, h *harness) []providers.Server {
	t.Helper()
	servers, err := h.provs["vps"].List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return servers
}

// A dry run's record time is when it was recorded, a live action's when
// it was sent, not when it was decided; the cooldown runs from it, and a
// dry-run cooldown says so.
func TestRecordTimeIsWhenSent(t *testing.T) {
	for _, dry := range []bool{false, true} {
		t.Run(map[bool]string{false: "live", true: "dry run"}[dry], func(t *testing.T) {
			cfg := baseConfig(t)
			cfg.DryRun = dry
			cfg.Rules = []config.Rule{startStopped()}
			h := newHarness(t, 10, cfg)
			var waited sync.Once
			// The decision, then 40 s waiting for the account's turn.
			h.engine.reserved = func() { waited.Do(func() { h.advance(40 * time.Second) }) }
			decided := h.now()
			h.refresh("vps")
			recs, _ := h.engine.Recent(10)
			if len(recs) == 0 {
				t.Fatal("no record")
			}
			for _, r := range recs {
				if want := decided.Add(40 * time.Second); !r.Time.Equal(want) {
					t.Errorf("record time %s, want when it was sent %s (decided %s)", r.Time.Format(time.RFC3339), want.Format(time.RFC3339), decided.Format(time.RFC3339))
				}
			}
			if !dry {
				return
			}
			// An hour after the decision, 20 s before an hour after the
			// record: still in its cooldown.
			h.advance(time.Hour - 20*time.Second)
			h.settle()
			h.refresh("vps")
			hist, err := h.engine.History(context.Background(), Filter{Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			if again, _ := h.engine.Recent(10); len(again) != len(recs) {
				t.Errorf("%d records, %d before: the cooldown ran from the decision, not the record", len(again), len(recs))
			}
			if len(hist.Suppressions) == 0 || !strings.Contains(hist.Suppressions[0].Detail, "last dry-run action 59m40s ago") {
				t.Errorf("suppressions %+v, want the cooldown of the last dry-run action 59m40s ago", hist.Suppressions)
			}
		})
	}
}

// An unusable state file: the engine says what is true. At start (its
// first Configure) the exporter exits, so the line says it cannot start,
// never "remediation is off" (issue 24); on a reload the exporter goes on
// with remediation off, and the line says that.
func TestUnusableStateFileMessage(t *testing.T) {
	const atStart = `msg="remediation state file unusable; the exporter cannot start with remediation on"`
	const off = `msg="remediation state file unusable; remediation is off"`
	for _, tc := range []struct {
		name      string
		reload    bool // a good Configure first
		missing   bool // the state file's directory is missing (else: not a database)
		want, not string
	}{
		{"at start, not a database", false, false, atStart, "remediation is off"},
		{"at start, in a missing directory", false, true, atStart, "remediation is off"},
		{"on a reload, not a database", true, false, off, "cannot start"},
		{"on a reload, in a missing directory", true, true, off, "cannot start"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf syncbuf.Buffer
			e := NewEngine(Deps{
				Snapshot: func(string) (collector.Snapshot, bool) { return collector.Snapshot{}, false },
				Provider: func(string) (providers.Provider, bool) { return nil, false },
			}, prometheus.NewRegistry(), log.NewLogfmtLogger(&buf), nil)
			defer e.Close()
			dir := t.TempDir()
			cfg := baseConfig(t)
			if tc.reload {
				cfg.StateFile = filepath.Join(dir, "good.db")
				if err := e.Configure(cfg, time.Minute, nil); err != nil {
					t.Fatal(err)
				}
			}
			cfg.StateFile = filepath.Join(dir, "corrupt.db")
			if tc.missing {
				cfg.StateFile = filepath.Join(dir, "missing", "state.db")
			} else if err := os.WriteFile(cfg.StateFile, []byte("not a bbolt file, not at all, not even close to one"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := e.Configure(cfg, time.Minute, nil); err == nil {
				t.Fatal("an unusable state file was accepted")
			}
			out := buf.String()
			if !strings.Contains(out, tc.want) || strings.Contains(out, tc.not) || strings.Contains(out, "goes on") {
				t.Errorf("log %q: want %s, nothing of %q", out, tc.want, tc.not)
			}
		})
	}
}

// A reload that removes the rule (here: renames it) while its request
// waits for the account's turn: the request is no longer the
// configuration's intent, and nothing is sent for it.
func TestRuleRemovedDuringTheWaitIsNotActedOn(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Rules = []config.Rule{startStopped()}
	h := newHarness(t, 10, cfg)
	var once sync.Once
	h.engine.reserved = func() {
		once.Do(func() {
			c := h.cfg
			renamed := startStopped()
			renamed.Name = "start-stopped-v2"
			c.Rules = []config.Rule{renamed}
			if err := h.engine.Configure(c, time.Minute, h.accounts()); err != nil {
				t.Error(err)
			}
		})
	}
	h.refresh("vps")
	if acts := h.actions(sim.VPSOrg); len(acts) != 0 {
		t.Errorf("acted for a rule a reload removed: %+v", acts)
	}
	hist, err := h.engine.History(context.Background(), Filter{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(hist.Suppressions) == 0 || hist.Suppressions[0].Reason != ReasonNotAllowed || !strings.Contains(hist.Suppressions[0].Detail, "removed or changed by a reload") {
		t.Errorf("suppressions %+v, want not_allowed: the rule was removed", hist.Suppressions)
	}
}
